"""Wiring: settings -> database, peers, core, gRPC server, Kafka consumer, online scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.events.v1 import registry_pb2 as registry_events

from services.common import telemetry
from services.common.auth import TokenAuthenticator
from services.common.db import Database, migrate
from services.common.grpc_server import TesseraServer
from services.common.kafka_consumer import ConsumerLoop
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.evaluation.core import EvaluationCore
from services.evaluation.grpc_api import SERVICE_NAME, EvaluationServicer
from services.evaluation.kafka_api import EvalRequestConsumer, ResultPublisher
from services.evaluation.peers import MonitoringPeer, ServingPeer, TrainingPeer
from services.evaluation.settings import EvaluationSettings
from services.evaluation.store import EvaluationStore
from services.training.registry_client import TrainingRegistry

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class EvaluationApp:
    def __init__(self, settings: EvaluationSettings, *, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.serve_metrics = serve_metrics
        self.db: Database | None = None
        self.core: EvaluationCore | None = None
        self.server: TesseraServer | None = None
        self.producer: EventProducer | None = None
        self.privileges: RegistryPrivileges | None = None
        self.registry: TrainingRegistry | None = None
        self.peers: list = []
        self._requests: EvalRequestConsumer | None = None
        self._registry_events: ConsumerLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self.port = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            telemetry.start_metrics_server(s.metrics_port, s.host)
        self.db = await Database(s.resolved_pg_dsn(), s.evaluation_schema).open()
        await migrate(self.db, MIGRATIONS)
        self.producer = EventProducer(s.kafka_bootstrap, client_id=s.service_name)
        self.privileges = RegistryPrivileges(s.registry_address, s.service_token, enforce=s.auth_mode != "none")
        # The registry client training uses for its runs: the same MLflow-compatible runs, artifacts and lineage.
        self.registry = TrainingRegistry(s.registry_address, s.service_token, s.evaluation_run_as_token)
        serving, training, monitoring = (
            ServingPeer(s.serving_address),
            TrainingPeer(s.training_address),
            MonitoringPeer(s.monitoring_address),
        )
        self.peers = [serving, training, monitoring]
        self.core = EvaluationCore(
            s,
            EvaluationStore(self.db),
            self.privileges,
            serving,
            training,
            monitoring,
            self.registry,
            ResultPublisher(self.producer, s.evaluation_results_topic),
        )
        await self.core.recover()
        self._requests = EvalRequestConsumer(
            self.core,
            TokenAuthenticator.from_settings(s),
            self.producer,
            bootstrap=s.kafka_bootstrap,
            topic=s.evaluation_requests_topic,
            group_id=s.evaluation_consumer_group,
        )
        # Grant changes drop cached privilege answers at once.
        self._registry_events = ConsumerLoop(
            bootstrap=s.kafka_bootstrap,
            group_id=f"evaluation-privileges-{id(self)}",
            topics=[s.registry_events_topic],
            message_type=registry_events.RegistryEvent,
            handler=self._on_registry_events,
            dlq_producer=self.producer,
            **{"auto.offset.reset": "latest"},
        )
        self._tasks += [
            asyncio.create_task(self._requests.run()),
            asyncio.create_task(self._registry_events.run()),
            asyncio.create_task(self._scheduler()),
        ]
        self.server = TesseraServer(s)
        self.server.add(
            evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server, EvaluationServicer(self.core), SERVICE_NAME
        )
        self.port = await self.server.start()

    async def _on_registry_events(self, records) -> None:
        for record in records:
            self.privileges.on_registry_event(record.value)

    async def _scheduler(self) -> None:
        """Online evaluation windows, and runs interrupted elsewhere (their lease lapsed)."""
        while not self._stopping.is_set():
            try:
                await self.core.run_due_windows()
                await self.core.recover()
            except Exception:  # noqa: BLE001 - the scheduler outlives a failed pass
                _log.exception("evaluation scheduler pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.evaluation_online_poll_s)

    async def stop(self) -> None:
        self._stopping.set()
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s)
        if self._requests is not None:
            self._requests.stop()
        if self._registry_events is not None:
            self._registry_events.stop()
        if self.core is not None:
            await self.core.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)
        for peer in self.peers:
            await peer.close()
        if self.privileges is not None:
            await self.privileges.close()
        if self.registry is not None:
            await self.registry.close()
        if self.producer is not None:
            self.producer.close()
        if self.db is not None:
            await self.db.close()
