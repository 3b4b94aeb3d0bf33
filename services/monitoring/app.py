"""Wiring: settings -> database, core, gRPC server, payload-log and eval-results consumers, evaluator loop,
outbox publisher."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common import telemetry
from services.common.db import Database, migrate
from services.common.grpc_server import TesseraServer
from services.common.kafka_producer import EventProducer
from services.common.outbox import OutboxPublisher
from services.common.registry_privileges import RegistryPrivileges
from services.monitoring.authorization import MonitoringAuthorization
from services.monitoring.core import MonitoringCore
from services.monitoring.grpc_api import SERVICE_NAME, MonitoringServicer
from services.monitoring.kafka_api import payload_log_consumer, quality_consumer, registry_event_consumer
from services.monitoring.settings import MonitoringSettings
from services.monitoring.store import MonitoringStore
from services.monitoring.window_evaluation import OUTBOX

_log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class MonitoringApp:
    """The whole service in one process; `start()` returns once it serves and consumes."""

    def __init__(self, settings: MonitoringSettings, *, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.serve_metrics = serve_metrics
        self.db: Database | None = None
        self.core: MonitoringCore | None = None
        self.server: TesseraServer | None = None
        self.producer: EventProducer | None = None
        self.publisher: OutboxPublisher | None = None
        self.consumer = None
        self.quality_consumer = None
        self.registry_events = None
        self.privileges: RegistryPrivileges | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        s = self.settings
        if s.monitoring_authz not in ("registry", "none"):
            raise ValueError(f"TESSERA_MONITORING_AUTHZ: 'registry' or 'none', not {s.monitoring_authz!r}")
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            self.metrics_port = telemetry.start_metrics_server(s.metrics_port, s.host)
        self.db = await Database(s.resolved_pg_dsn(), s.monitoring_schema).open()
        await migrate(self.db, MIGRATIONS)
        self.producer = EventProducer(s.kafka_bootstrap, client_id=s.service_name)
        # One publisher at a time across replicas (the outbox's advisory lock) keeps each endpoint's order.
        self.publisher = OutboxPublisher(
            self.db, self.producer, OUTBOX, s.monitoring_outbox_poll_s, s.monitoring_outbox_retention_h
        )
        self.publisher.start()
        if s.monitoring_authz == "registry":
            self.privileges = RegistryPrivileges(
                s.registry_address, s.service_token, cache_s=s.monitoring_privilege_cache_s
            )
            # Every replica drops its cached answers itself: a group of its own, from now on.
            self.registry_events = registry_event_consumer(
                self.privileges,
                bootstrap=s.kafka_bootstrap,
                topic=s.registry_events_topic,
                group_id=f"{s.monitoring_consumer_group}-registry-{uuid.uuid4().hex[:12]}",
                dlq_producer=self.producer,
            )
            self._tasks.append(asyncio.create_task(self.registry_events.run(), name="monitoring-registry-events"))
        self.core = MonitoringCore(
            MonitoringStore(self.db),
            s.monitoring_drift_topic,
            on_events_committed=self.publisher.notify,
            window_grace_s=s.monitoring_window_grace_s,
            idle_watermark_s=s.monitoring_idle_watermark_s,
            retention_days=s.monitoring_retention_days,
            authorization=MonitoringAuthorization(self.privileges),
        )
        await self.core.refresh_monitors()
        self.server = TesseraServer(s)
        self.server.add(
            monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server, MonitoringServicer(self.core), SERVICE_NAME
        )
        self.port = await self.server.start()
        self.consumer = payload_log_consumer(
            self.core,
            bootstrap=s.kafka_bootstrap,
            topic=s.monitoring_payload_topic,
            group_id=s.monitoring_consumer_group,
            dlq_producer=self.producer,
            batch_size=s.monitoring_batch_size,
        )
        self._tasks.append(asyncio.create_task(self.consumer.run(), name="monitoring-consumer"))
        self.quality_consumer = quality_consumer(
            self.core,
            bootstrap=s.kafka_bootstrap,
            topic=s.monitoring_quality_topic,
            group_id=s.monitoring_quality_consumer_group or f"{s.monitoring_consumer_group}-quality",
            dlq_producer=self.producer,
        )
        self._tasks.append(asyncio.create_task(self.quality_consumer.run(), name="monitoring-quality-consumer"))
        self._tasks.append(asyncio.create_task(self._evaluate_forever(), name="monitoring-evaluator"))
        if s.monitoring_retention_days > 0:
            self._tasks.append(asyncio.create_task(self._retain_forever(), name="monitoring-retention"))
        if self.registry_events is not None:
            try:
                await self.registry_events.wait_assigned()
            except TimeoutError:  # cached answers still expire after monitoring_privilege_cache_s
                _log.warning("registry events (%s) not assigned yet; continuing", s.registry_events_topic)

    async def _evaluate_forever(self) -> None:
        refresh_every, since_refresh = 5.0, 0.0
        while not self._stopping.is_set():
            try:
                await self.core.evaluate_due()
                since_refresh += self.settings.monitoring_evaluate_every_s
                if since_refresh >= refresh_every:
                    await self.core.refresh_monitors()
                    since_refresh = 0.0
            except Exception:  # noqa: BLE001 - the evaluator retries on the next tick, never dies
                _log.exception("window evaluation failed; retrying")
            try:
                await asyncio.wait_for(self._stopping.wait(), self.settings.monitoring_evaluate_every_s)
            except TimeoutError:
                pass

    async def _retain_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.core.apply_retention()
            except Exception:  # noqa: BLE001 - retention retries on the next tick, never dies
                _log.exception("inference-table retention failed; retrying")
            try:
                await asyncio.wait_for(self._stopping.wait(), self.settings.monitoring_retention_every_s)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stopping.set()
        if self.server is not None:
            await self.server.stop()
        for consumer in (self.consumer, self.quality_consumer, self.registry_events):
            if consumer is not None:
                consumer.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.publisher is not None:
            await self.publisher.stop()
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close)
        if self.privileges is not None:
            await self.privileges.close()
        if self.db is not None:
            await self.db.close()
