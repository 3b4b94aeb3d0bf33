"""Wiring: settings -> database, embeddings, authorizer, core, gRPC server, Kafka consumers, connectors."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common import telemetry
from services.common.db import Database, migrate
from services.common.grpc_server import TesseraServer
from services.common.kafka_consumer import ConsumerLoop
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.retrieval.authorization import AllowAll, Authorizer, RegistryAuthorizer
from services.retrieval.connector import ConnectorSpec, SourceTableConnector
from services.retrieval.core import RetrievalCore
from services.retrieval.embeddings import EmbeddingModels, parse_model_folders
from services.retrieval.grpc_api import SERVICE_NAME, RetrievalServicer
from services.retrieval.kafka_api import RegistryEventFollower, sync_consumer
from services.retrieval.recall_job import RecallJob
from services.retrieval.search_store import SearchStore
from services.retrieval.settings import AUTHZ_NONE, AUTHZ_REGISTRY, RetrievalSettings
from services.retrieval.store import MIGRATIONS, IndexStore

_log = logging.getLogger(__name__)


def build_authorizer(settings: RetrievalSettings) -> Authorizer:
    if settings.retrieval_authz == AUTHZ_NONE:
        _log.warning(
            "!!! TESSERA_RETRIEVAL_AUTHZ=none: index permissions are NOT checked; every caller may read and write"
            " every index. Use only for local runs and tests. !!!"
        )
        return AllowAll()
    if settings.retrieval_authz == AUTHZ_REGISTRY:
        return RegistryAuthorizer(
            RegistryPrivileges(
                settings.registry_address, settings.service_token, cache_s=settings.retrieval_privilege_cache_s
            )
        )
    raise ValueError(f"TESSERA_RETRIEVAL_AUTHZ must be {AUTHZ_REGISTRY!r} or {AUTHZ_NONE!r}")


class RetrievalApp:
    """The whole service in one process; `start()` returns once it serves."""

    def __init__(self, settings: RetrievalSettings, *, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.serve_metrics = serve_metrics
        self.db: Database | None = None
        self.search_store: SearchStore | None = None
        self.core: RetrievalCore | None = None
        self.server: TesseraServer | None = None
        self.producer: EventProducer | None = None
        self.consumer: ConsumerLoop | None = None
        self.registry_events: RegistryEventFollower | None = None
        self.connectors: list[SourceTableConnector] = []
        self.recall_job: RecallJob | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            self.metrics_port = telemetry.start_metrics_server(s.metrics_port, s.host)
        dsn = s.resolved_pg_dsn()
        self.db = await Database(dsn, s.retrieval_schema).open()
        await migrate(self.db, MIGRATIONS)
        self.search_store = SearchStore(
            dsn, s.retrieval_schema, pool_size=s.retrieval_query_pool_size, max_scan_tuples=s.retrieval_max_scan_tuples
        )
        await self.search_store.open()
        embeddings = EmbeddingModels(
            parse_model_folders(s.retrieval_embedding_models), batch_size=s.retrieval_embedding_batch_size
        )
        self.core = RetrievalCore(
            IndexStore(self.db),
            self.search_store,
            embeddings,
            build_authorizer(s),
            default_ef_search=s.retrieval_default_ef_search,
        )
        self.server = TesseraServer(s)
        self.server.add(
            retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server, RetrievalServicer(self.core), SERVICE_NAME
        )
        self.port = await self.server.start()
        follow_grants = s.retrieval_authz == AUTHZ_REGISTRY
        if s.retrieval_run_sync_consumer or s.retrieval_connectors or follow_grants:
            self.producer = EventProducer(s.kafka_bootstrap, client_id=f"{s.service_name}-sync")
        if follow_grants:
            self.registry_events = RegistryEventFollower(
                self.core,
                bootstrap=s.kafka_bootstrap,
                topic=s.retrieval_registry_events_topic,
                group_id=f"{s.service_name}-registry-{socket.gethostname()}-{os.getpid()}-{id(self):x}",
                dlq_producer=self.producer,
            )
            self._tasks.append(asyncio.create_task(self.registry_events.loop.run(), name="retrieval-registry-events"))
            await self.registry_events.loop.wait_assigned()
        if s.retrieval_run_sync_consumer:
            self.consumer = sync_consumer(
                self.core,
                self.server.authenticator,
                bootstrap=s.kafka_bootstrap,
                topic=s.retrieval_sync_topic,
                group_id=s.retrieval_sync_group,
                dlq_producer=self.producer,
            )
            self._tasks.append(asyncio.create_task(self.consumer.run(), name="retrieval-sync"))
        if s.retrieval_recall_interval_s > 0:
            self.recall_job = RecallJob(
                self.core, s.retrieval_recall_interval_s, sample_size=s.retrieval_recall_sample_size
            )
            self._tasks.append(asyncio.create_task(self.recall_job.run(), name="retrieval-recall"))
        for path in s.retrieval_connectors:
            connector = SourceTableConnector(
                ConnectorSpec.from_json(Path(path)),
                self.core.store,
                self.producer,
                s.retrieval_sync_topic,
                s.service_token,
            )
            await connector.install_delete_capture()
            self.connectors.append(connector)
            self._tasks.append(asyncio.create_task(connector.run(s.retrieval_connector_poll_s)))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        for connector in self.connectors:
            connector.stop()
        if self.recall_job is not None:
            self.recall_job.stop()
        for consumer in (self.consumer, self.registry_events.loop if self.registry_events else None):
            if consumer is not None:
                consumer.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close)
        if self.core is not None:
            await self.core.authorizer.close()
        if self.search_store is not None:
            await self.search_store.close()
        if self.db is not None:
            await self.db.close()
