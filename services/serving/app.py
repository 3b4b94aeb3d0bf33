"""Wiring: settings -> database, registry catalog, runtimes, core, gRPC (serving + OIP), Kafka consumers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from inference import grpc_service_pb2_grpc
from tessera.serving.v1 import serving_pb2_grpc

from services.common import telemetry
from services.common.db import Database, migrate
from services.common.errors import TesseraError
from services.common.grpc_server import TesseraServer
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.serving import grpc_api, oip_api
from services.serving.agents import AgentServices, LineageWriter, RetrievalClient
from services.serving.catalog import ModelCatalog
from services.serving.conversations import ConversationStore
from services.serving.endpoints import EndpointControl
from services.serving.external import CatalogWithExternal, ExternalProviders
from services.serving.inference import InferenceCore, Limits
from services.serving.kafka_api import KafkaRequestServer, ReplyTopics
from services.serving.model_pool import ModelPool
from services.serving.openai_api.router import OpenAIRouter, start_http
from services.serving.payload_log import PayloadLogWriter
from services.serving.registry_catalog import RegistryCatalog
from services.serving.registry_events import RegistryEventFollower
from services.serving.runtimes.base import RuntimeFactory
from services.serving.runtimes.factory import runtime_factory
from services.serving.settings import ServingSettings
from services.serving.store import MIGRATIONS, EndpointStore
from services.serving.usage import Prices, UsageMeter
from services.serving.usage_store import UsageStore

_log = logging.getLogger(__name__)


class ServingApp:
    """The whole service in one process; `start()` returns once it serves (models load in the background)."""

    def __init__(
        self,
        settings: ServingSettings,
        *,
        serve_metrics: bool = True,
        catalog: ModelCatalog | None = None,
        build_runtime: RuntimeFactory | None = None,
    ) -> None:
        self.settings = settings
        self.serve_metrics = serve_metrics
        self.catalog = catalog
        self.build_runtime = build_runtime
        self.db: Database | None = None
        self.producer: EventProducer | None = None
        self.payload_log: PayloadLogWriter | None = None
        self.endpoints: EndpointControl | None = None
        self.inference: InferenceCore | None = None
        self.usage: UsageMeter | None = None
        self.server: TesseraServer | None = None
        self.kafka_requests: KafkaRequestServer | None = None
        self.registry_events: RegistryEventFollower | None = None
        self.privileges: RegistryPrivileges | None = None
        self.agents: AgentServices | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.metrics_port = 0
        self.http_runner = None
        self.http_port = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            self.metrics_port = telemetry.start_metrics_server(s.metrics_port, s.host)
        self.db = await Database(s.resolved_pg_dsn(), s.serving_schema).open()
        await migrate(self.db, MIGRATIONS)
        external = ExternalProviders.parse(s.serving_external_providers)
        self.catalog = CatalogWithExternal(
            self.catalog or RegistryCatalog(s.registry_address, s.service_token, s.model_cache()), external
        )
        self.producer = EventProducer(s.kafka_bootstrap, client_id=f"{s.service_name}-{os.getpid()}")
        self.payload_log = PayloadLogWriter(
            s.kafka_bootstrap,
            s.serving_payload_topic,
            s.payload_spool(),
            queue_size=s.serving_payload_queue,
            batch_size=s.serving_payload_batch,
            spool_max_bytes=s.serving_payload_spool_max_bytes,
            max_record_bytes=s.serving_payload_max_record_bytes,
            message_timeout_ms=s.serving_payload_message_timeout_ms,
            stop_grace_s=s.shutdown_grace_s,
            client_id=f"{s.service_name}-payload-logs-{os.getpid()}",
        )
        await self.payload_log.start()
        self.privileges = RegistryPrivileges(
            s.registry_address,
            s.service_token,
            enforce=s.auth_mode != "none",
            cache_s=s.serving_privilege_cache_s,
        )
        self.agents = AgentServices(
            RetrievalClient(s.retrieval_address, s.serving_agent_retrieval_timeout_s),
            LineageWriter(s.registry_address, s.service_token),
        )
        pool = ModelPool(
            self.catalog,
            self.build_runtime or runtime_factory(s, self.agents),
            drain_timeout_s=s.serving_drain_timeout_s,
            external=lambda v: external.runtime(v) if external.is_external(v.model_name) else None,
            max_loras=s.serving_max_loras,
            max_lora_rank=s.serving_max_lora_rank,
        )
        self.endpoints = EndpointControl(
            EndpointStore(self.db),
            self.catalog,
            pool,
            self.privileges,
            default_concurrency=s.serving_max_concurrency,
            external=external,
            engine_bounds=s.engine_bounds(),
        )
        self.usage = UsageMeter(
            UsageStore(self.db),
            Prices.parse(s.serving_prices),
            self.privileges,
            default_max_tokens=s.serving_default_max_tokens,
            limits_cache_s=s.serving_usage_limits_cache_s,
            lease_s=s.serving_usage_lease_s,
            admins=frozenset(filter(None, (a.strip() for a in s.serving_usage_admins.split(",")))),
        )
        await self.usage.start()
        self.inference = InferenceCore(
            self.endpoints,
            Limits(max_request_bytes=s.serving_max_request_bytes, max_tokens=s.serving_max_tokens),
            self.payload_log,
            self.usage,
        )
        self.agents.bind(self.inference, self._kind_served)
        if s.serving_run_registry_consumer:
            # Every replica follows endpoint changes and alias moves itself: a group of its own.
            self.registry_events = RegistryEventFollower(
                self.endpoints,
                self.privileges,
                self.producer,
                bootstrap=s.kafka_bootstrap,
                topic=s.serving_registry_events_topic,
                group_id=f"{s.serving_consumer_group}-registry-{socket.gethostname()}-{os.getpid()}-{id(self):x}",
            )
            self._tasks.append(asyncio.create_task(self.registry_events.run(), name="serving-registry-events"))
            await self.registry_events.loop.wait_assigned()
        await self.endpoints.start()
        if s.serving_reconcile_s > 0:
            self._tasks.append(
                asyncio.create_task(self._reconcile_every(s.serving_reconcile_s), name="serving-reconcile")
            )
        self.server = TesseraServer(s)
        self.server.add(
            serving_pb2_grpc.add_ServingServiceServicer_to_server,
            grpc_api.ServingServicer(self.endpoints, self.inference),
            grpc_api.SERVICE_NAME,
        )
        self.server.add(
            grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
            oip_api.InferenceServicer(self.endpoints, self.inference),
            oip_api.SERVICE_NAME,
        )
        self.port = await self.server.start()
        if s.serving_http_port >= 0:
            router = OpenAIRouter(self.endpoints, self.inference, self.server.authenticator, ConversationStore(self.db))
            self.http_runner, self.http_port = await start_http(router.app(), s.host, s.serving_http_port)
        if s.serving_run_request_consumer:
            self.kafka_requests = KafkaRequestServer(
                self.inference,
                self.server.authenticator,
                self.producer,
                bootstrap=s.kafka_bootstrap,
                topic=s.serving_requests_topic,
                group_id=s.serving_consumer_group,
                reply_topics=ReplyTopics(s.serving_reply_topics, s.serving_responses_topic),
                batch_size=s.serving_kafka_batch,
                payload_log=self.payload_log,
                request_timeout_s=s.serving_kafka_request_timeout_s,
                request_ttl_s=s.serving_kafka_request_ttl_s,
            )
            self._tasks.append(asyncio.create_task(self.kafka_requests.run(), name="serving-kafka-requests"))
            await self.kafka_requests.loop.wait_assigned()

    def _kind_served(self, endpoint: str) -> str | None:
        try:
            return self.endpoints.deployment(endpoint).kind()
        except TesseraError:
            return None

    async def _reconcile_every(self, seconds: float) -> None:
        """A safety net: an endpoint change whose registry event was lost is picked up here."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.endpoints.reconcile()
            except Exception:  # noqa: BLE001 - the next round tries again
                _log.exception("reconciling endpoints with the store failed")

    async def stop(self) -> None:
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        if self.server is not None:
            await self.server.stop()
        for consumer in (self.kafka_requests, self.registry_events):
            if consumer is not None:
                consumer.stop()
        for task in self._tasks:
            if task.get_name() == "serving-reconcile":
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.endpoints is not None:
            await self.endpoints.stop()
        if self.agents is not None:
            await self.agents.close()
        if self.usage is not None:
            await self.usage.stop()
        if self.payload_log is not None:
            await self.payload_log.stop()
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close)
        if self.catalog is not None:
            await self.catalog.close()
        if self.privileges is not None:
            await self.privileges.close()
        if self.db is not None:
            await self.db.close()
