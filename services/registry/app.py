"""The registry process: PostgreSQL, the core, the gRPC server, the MLflow REST server and the outbox publisher."""

from __future__ import annotations

import logging

from tessera.registry.v1 import registry_pb2_grpc

from services.common.db import Database
from services.common.grpc_server import TesseraServer
from services.common.kafka_producer import EventProducer
from services.common.telemetry import setup_tracing, start_metrics_server
from services.registry.grpc_api import SERVICE_NAME, RegistryServicer
from services.registry.outbox_publisher import OutboxPublisher
from services.registry.registry import Registry
from services.registry.settings import RegistrySettings

_log = logging.getLogger(__name__)


class RegistryApp:
    def __init__(self, settings: RegistrySettings, *, serve_metrics: bool = True) -> None:
        self.settings = settings
        self._serve_metrics = serve_metrics
        self.db: Database | None = None
        self.registry: Registry | None = None
        self.server: TesseraServer | None = None
        self.http = None
        self.publisher: OutboxPublisher | None = None
        self.producer: EventProducer | None = None
        self.grpc_port = 0
        self.http_port = 0

    async def start(self) -> None:
        from services.registry.mlflow_rest.server import MlflowRestServer

        s = self.settings
        setup_tracing(s.service_name, s.otlp_endpoint)
        if self._serve_metrics and s.metrics_port >= 0:
            start_metrics_server(s.metrics_port, s.host)
        self.db = await Database(
            s.pg_dsn_with_statement_timeout(), s.registry_schema, max_size=s.registry_db_pool_size
        ).open()
        self.producer = EventProducer(s.kafka_bootstrap, client_id=f"{s.service_name}-outbox")
        self.publisher = OutboxPublisher(
            self.db, self.producer, s.registry_outbox_poll_s, s.registry_outbox_retention_h
        )
        self.registry = Registry(s, self.db, on_events_committed=self.publisher.notify)
        await self.registry.prepare()
        self.publisher.start()
        self.server = TesseraServer(s)
        self.server.add(
            registry_pb2_grpc.add_RegistryServiceServicer_to_server, RegistryServicer(self.registry), SERVICE_NAME
        )
        self.grpc_port = await self.server.start()
        if s.registry_http_port >= 0:
            self.http = MlflowRestServer(self.registry, self.server.authenticator)
            self.http_port = await self.http.start(s.host, s.registry_http_port)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.server is not None:
            await self.server.stop()
        if self.registry is not None:
            await self.registry.close()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.producer is not None:
            self.producer.close()
        if self.db is not None:
            await self.db.close()
