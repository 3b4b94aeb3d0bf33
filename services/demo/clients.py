"""gRPC channels to the running services, and the check that they are there at all."""

from __future__ import annotations

import asyncio

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from inference import grpc_service_pb2_grpc
from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc
from tessera.retrieval.v1 import retrieval_pb2_grpc
from tessera.serving.v1 import serving_pb2_grpc
from tessera.training.v1 import training_pb2_grpc

from services.common.auth import bearer
from services.demo.settings import DemoSettings

# Model files go up in one stream; the registry accepts 64 MiB messages.
_OPTIONS = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]


class Clients:
    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.md = bearer(settings.token)
        self.addresses = {
            "registry": settings.registry_address,
            "serving": settings.serving_address,
            "monitoring": settings.monitoring_address,
            "retrieval": settings.retrieval_address,
            "training": settings.training_address,
            "evaluation": settings.evaluation_address,
        }
        self.channels = {
            name: grpc.aio.insecure_channel(addr, options=_OPTIONS) for name, addr in self.addresses.items()
        }
        self.registry = registry_pb2_grpc.RegistryServiceStub(self.channels["registry"])
        self.serving = serving_pb2_grpc.ServingServiceStub(self.channels["serving"])
        self.oip = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channels["serving"])
        self.monitoring = monitoring_pb2_grpc.MonitoringServiceStub(self.channels["monitoring"])
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self.channels["retrieval"])
        self.training = training_pb2_grpc.TrainingServiceStub(self.channels["training"])
        self.evaluation = evaluation_pb2_grpc.EvaluationServiceStub(self.channels["evaluation"])

    async def not_answering(self) -> list[str]:
        """The services (and the MLflow REST API) that do not answer, as `name (address)`."""
        missing = []
        for name, channel in self.channels.items():
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    missing.append(
                        f"{name} ({self.addresses[name]}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)})"
                    )
            except grpc.aio.AioRpcError as exc:
                missing.append(f"{name} ({self.addresses[name]}: {exc.code().name})")
        try:
            answered = (await asyncio.to_thread(requests.get, f"{self.settings.mlflow_url}/health", timeout=3)).ok
        except requests.RequestException:
            answered = False
        if not answered:
            missing.append(f"the registry's MLflow REST API ({self.settings.mlflow_url})")
        return missing

    async def ensure_schema(self, catalog: str, schema: str) -> str:
        """catalog.schema in the registry, created on the first run and reused after."""
        for call in (
            self.registry.CreateCatalog(rpb.CreateCatalogRequest(name=catalog), metadata=self.md),
            self.registry.CreateSchema(rpb.CreateSchemaRequest(catalog_name=catalog, name=schema), metadata=self.md),
        ):
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
        return f"{catalog}.{schema}"

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
