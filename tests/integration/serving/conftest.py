"""One registry, one serving process (with one vLLM engine) and their topics for the serving tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from inference import grpc_service_pb2_grpc
from tessera.events.v1 import payload_log_pb2
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb
from tessera.serving.v1 import serving_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.common.kafka_producer import EventProducer
from services.fixtures.registry_client import RegistryClient
from services.fixtures.tabular import build_tabular_model
from tests.integration.serving.topic_reader import TopicReader

pytest.importorskip("vllm", reason="vLLM is not installed: run `bash infra/vllm/install.sh`")

from services.fixtures.tiny_llama import build_tiny_llama  # noqa: E402
from services.registry.app import RegistryApp  # noqa: E402
from services.registry.settings import RegistrySettings  # noqa: E402
from services.serving.app import ServingApp  # noqa: E402
from services.serving.settings import ServingSettings  # noqa: E402

ADMIN, ALICE, BOB, SERVICE = "admin-token", "alice-token", "bob-token", "service-token"
# Serving talks to the registry as a service principal (not a superuser), as deployed.
TOKENS = f"{ADMIN}=admin,{ALICE}=alice,{BOB}=bob,{SERVICE}=tessera-services"
MAX_REQUEST_BYTES = 64 * 1024
MAX_TOKENS = 128
# USD per million prompt and completion tokens of the tiny Llama; the tabular model has no price.
LLM_PRICES = (1.0, 2.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# External providers (test_external_models.py starts them): vLLM's own OpenAI server on the tiny
# Llama, and one that answers 500 to everything. Only alice may put them behind an endpoint.
PROVIDER_PORT, BROKEN_PROVIDER_PORT = _free_port(), _free_port()
PROVIDER_KEY_ENV, PROVIDER_KEY = "TESSERA_TEST_PROVIDER_KEY", f"provider-{uuid.uuid4().hex}"
EXTERNAL_PROVIDERS = {
    "vllm": {
        "base_url": f"http://127.0.0.1:{PROVIDER_PORT}/v1",
        "api_key_env": PROVIDER_KEY_ENV,
        "principals": ["alice"],
        "timeout_s": 120,
    },
    "broken": {
        "base_url": f"http://127.0.0.1:{BROKEN_PROVIDER_PORT}/v1",
        "principals": ["alice"],
        "max_retries": 2,
        "backoff_s": 0.05,
    },
}
os.environ.setdefault(PROVIDER_KEY_ENV, PROVIDER_KEY)


@dataclass
class Mesh:
    registry: RegistryClient
    serving: ServingApp
    address: str
    llm_model: str
    tabular_model: str
    tabular_versions: tuple[int, int]
    llm_endpoint: str
    tabular_endpoint: str
    requests_topic: str
    responses_topic: str
    registry_topic: str
    registry_address: str
    payloads: TopicReader
    responses: TopicReader
    producer: EventProducer
    channel: grpc.aio.Channel
    kafka_bootstrap: str

    def serving_stub(self) -> serving_pb2_grpc.ServingServiceStub:
        return serving_pb2_grpc.ServingServiceStub(self.channel)

    def oip_stub(self) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    async def send_request(self, request: events_pb.InferenceRequest) -> None:
        await self.producer.send(self.requests_topic, request, key=request.request_id or None)


# Package scope: its engines and consumers stop when this package's tests end, not weigh on the next ones.
@pytest_asyncio.fixture(scope="package")
async def mesh(kafka_bootstrap: str, pg_dsn: str):
    u = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="serving-test-"))
    topics = {name: f"test.serving.{name}.{u}" for name in ("registry", "requests", "responses", "payloads")}
    kafka_admin.ensure_topics(kafka_bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    registry = RegistryApp(
        load(
            RegistrySettings,
            grpc_port=0,
            registry_http_port=-1,
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=TOKENS,
            registry_schema=f"registry_st{u}",
            registry_artifact_root=work / "artifacts",
            registry_events_topic=topics["registry"],
        ),
        serve_metrics=False,
    )
    await registry.start()
    client = RegistryClient(f"127.0.0.1:{registry.grpc_port}", ADMIN)
    catalog, schema = f"c{u}", "models"
    await client.ensure_schema(catalog, schema)
    llm_model, tabular_model = f"{catalog}.{schema}.tiny_llama", f"{catalog}.{schema}.tabular"
    await client.register(llm_model, build_tiny_llama())
    v1 = await client.register(tabular_model, build_tabular_model(work / "tab1", 1.0))
    v2 = await client.register(tabular_model, build_tabular_model(work / "tab2", 2.0), new_model=False)
    await client.set_alias(tabular_model, "champion", v1)
    # alice may use both models; bob may see the schema but use nothing in it.
    await client.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, "alice", [rpb.PRIVILEGE_USE_CATALOG])
    await client.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", "alice", [rpb.PRIVILEGE_USE_SCHEMA])
    await client.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, "bob", [rpb.PRIVILEGE_USE_CATALOG])
    await client.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", "bob", [rpb.PRIVILEGE_USE_SCHEMA])
    for model in (llm_model, tabular_model):
        await client.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])

    serving = ServingApp(
        load(
            ServingSettings,
            grpc_port=0,
            serving_http_port=0,
            serving_prices=json.dumps({llm_model: LLM_PRICES}),
            serving_external_providers=json.dumps(EXTERNAL_PROVIDERS),
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=TOKENS,
            service_token=SERVICE,
            registry_address=f"127.0.0.1:{registry.grpc_port}",
            serving_schema=f"serving_t{u}",
            serving_model_cache=work / "cache",
            serving_requests_topic=topics["requests"],
            serving_responses_topic=topics["responses"],
            serving_payload_topic=topics["payloads"],
            serving_registry_events_topic=topics["registry"],
            serving_consumer_group=f"serving-test-{u}",
            serving_max_request_bytes=MAX_REQUEST_BYTES,
            serving_max_tokens=MAX_TOKENS,
            serving_max_model_len=1024,
            serving_max_num_seqs=16,
            serving_kv_cache_mib=128,
        ),
        serve_metrics=False,
    )
    await serving.start()
    address = f"127.0.0.1:{serving.port}"
    channel = grpc.aio.insecure_channel(address)
    stub = serving_pb2_grpc.ServingServiceStub(channel)
    llm_endpoint, tabular_endpoint = f"llm-{u}", f"tabular-{u}"
    await stub.CreateEndpoint(
        pb.CreateEndpointRequest(
            name=llm_endpoint, served_models=[pb.ServedModel(model_name=llm_model, version=1)], wait=True
        ),
        metadata=bearer(ALICE),
    )
    await stub.CreateEndpoint(
        pb.CreateEndpointRequest(
            name=tabular_endpoint, served_models=[pb.ServedModel(model_name=tabular_model, alias="champion")], wait=True
        ),
        metadata=bearer(ALICE),
    )
    payloads = TopicReader(
        kafka_bootstrap, topics["payloads"], payload_log_pb2.PayloadLog.FromString, lambda m: m.request_id
    )
    responses = TopicReader(
        kafka_bootstrap, topics["responses"], events_pb.InferenceResponse.FromString, lambda m: m.request_id
    )
    producer = EventProducer(kafka_bootstrap, client_id=f"serving-test-{u}")
    yield Mesh(
        registry=client,
        serving=serving,
        address=address,
        llm_model=llm_model,
        tabular_model=tabular_model,
        tabular_versions=(v1, v2),
        llm_endpoint=llm_endpoint,
        tabular_endpoint=tabular_endpoint,
        requests_topic=topics["requests"],
        responses_topic=topics["responses"],
        registry_topic=topics["registry"],
        registry_address=f"127.0.0.1:{registry.grpc_port}",
        payloads=payloads,
        responses=responses,
        producer=producer,
        channel=channel,
        kafka_bootstrap=kafka_bootstrap,
    )
    producer.close()
    payloads.close()
    responses.close()
    await channel.close()
    await client.channel.close()
    await serving.stop()
    await registry.stop()
    shutil.rmtree(work, ignore_errors=True)
