"""Wiring: settings -> database, registry clients, core, gRPC server (workers run in worker.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from tessera.events.v1 import registry_pb2 as registry_events
from tessera.training.v1 import training_pb2_grpc

from services.common import telemetry
from services.common.db import Database, migrate
from services.common.grpc_server import TesseraServer
from services.common.kafka_consumer import ConsumerLoop
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.training.core import TrainingCore, warm_imports
from services.training.grpc_api import SERVICE_NAME, InferenceTableReader, TrainingServicer
from services.training.kafka_api import JobQueue
from services.training.metrics import TRAINING_METRICS
from services.training.registry_client import TrainingRegistry
from services.training.settings import TrainingSettings
from services.training.store import TrainingStore

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class TrainingApp:
    def __init__(
        self, settings: TrainingSettings, *, serve_metrics: bool = True, registry_events_topic: str = ""
    ) -> None:
        self.settings = settings
        self.serve_metrics = serve_metrics
        self.registry_events_topic = registry_events_topic or "tessera.registry.events"
        self.db: Database | None = None
        self.core: TrainingCore | None = None
        self.server: TesseraServer | None = None
        self.producer: EventProducer | None = None
        self.privileges: RegistryPrivileges | None = None
        self.registry: TrainingRegistry | None = None
        self._consumer: ConsumerLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            self.metrics_port = telemetry.start_metrics_server(s.metrics_port, s.host)
        self.db = await Database(s.resolved_pg_dsn(), s.training_schema).open()
        await migrate(self.db, MIGRATIONS)
        self.producer = EventProducer(s.kafka_bootstrap, client_id=s.service_name)
        self.privileges = RegistryPrivileges(s.registry_address, s.service_token, enforce=s.auth_mode != "none")
        self.registry = TrainingRegistry(s.registry_address, s.service_token, s.training_run_as_token)
        self.core = TrainingCore(
            s, TrainingStore(self.db), self.privileges, self.registry, JobQueue(self.producer, s.training_jobs_topic)
        )
        await asyncio.to_thread(warm_imports)
        # Grant changes drop cached privilege answers at once.
        self._consumer = ConsumerLoop(
            bootstrap=s.kafka_bootstrap,
            group_id=f"training-api-{id(self)}",
            topics=[self.registry_events_topic],
            message_type=registry_events.RegistryEvent,
            handler=self._on_registry_events,
            dlq_producer=self.producer,
            **{"auto.offset.reset": "latest"},
        )
        self._tasks.append(asyncio.create_task(self._consumer.run()))
        # Workers have no port: their jobs' figures reach PostgreSQL, and this process exports them.
        TRAINING_METRICS.attach(self.core.metrics_snapshot, s.training_metrics_read_timeout_s)
        self.server = TesseraServer(s)
        self.server.add(
            training_pb2_grpc.add_TrainingServiceServicer_to_server,
            TrainingServicer(self.core, InferenceTableReader(s.monitoring_address)),
            SERVICE_NAME,
        )
        self.port = await self.server.start()

    async def _on_registry_events(self, records) -> None:
        for record in records:
            self.privileges.on_registry_event(record.value)

    async def stop(self) -> None:
        if self.core is not None:
            TRAINING_METRICS.detach(self.core.metrics_snapshot)
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s)
        if self._consumer is not None:
            self._consumer.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        if self.privileges is not None:
            await self.privileges.close()
        if self.registry is not None:
            await self.registry.close()
        if self.producer is not None:
            self.producer.close()
        if self.db is not None:
            await self.db.close()
