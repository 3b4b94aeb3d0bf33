"""Wiring: settings -> database, core, gRPC server, payload-log consumer, evaluator loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common import telemetry
from services.common.db import Database, migrate
from services.common.grpc_server import TesseraServer
from services.common.kafka_producer import EventProducer
from services.monitoring.settings import MonitoringSettings
from services.monitoring.core import MonitoringCore
from services.monitoring.grpc_api import SERVICE_NAME, MonitoringServicer
from services.monitoring.kafka_api import DriftEventPublisher, payload_log_consumer
from services.monitoring.store import MonitoringStore

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
        self.consumer = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            self.metrics_port = telemetry.start_metrics_server(s.metrics_port, s.host)
        self.db = await Database(s.resolved_pg_dsn(), s.monitoring_schema).open()
        await migrate(self.db, MIGRATIONS)
        self.producer = EventProducer(s.kafka_bootstrap, client_id=s.service_name)
        self.core = MonitoringCore(
            MonitoringStore(self.db),
            DriftEventPublisher(self.producer, s.monitoring_drift_topic),
            window_grace_s=s.monitoring_window_grace_s,
            idle_watermark_s=s.monitoring_idle_watermark_s,
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
        self._tasks.append(asyncio.create_task(self._evaluate_forever(), name="monitoring-evaluator"))

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

    async def stop(self) -> None:
        self._stopping.set()
        if self.server is not None:
            await self.server.stop()
        if self.consumer is not None:
            self.consumer.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close)
        if self.db is not None:
            await self.db.close()
