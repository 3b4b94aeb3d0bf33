"""The playground over the real mesh (tests/e2e's `running_mesh`, plus training's dataset API and the
evaluation service as their own suites start them), driven by Debian's chromium.

The mesh serves two endpoints: the tiny Llama from the registry on vLLM, priced, and an external
model whose provider (an OpenAI-compatible server started here) answers with markup, so a hostile
completion reaches the page through serving's real path. alice may EXECUTE and SELECT both; bob
may EXECUTE only the Llama.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from aiohttp import web
from psycopg import sql
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as spb

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from tests.e2e.conftest import TOKENS, USERS
from tests.integration.mesh_support import SERVICE_PRINCIPAL, Mesh, running_mesh

pytest.importorskip("vllm", reason="vLLM is not installed: run `bash infra/vllm/install.sh`")
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed: run `make setup`")

from services.fixtures.tiny_llama import build_tiny_llama  # noqa: E402
from services.playground.app import PlaygroundApp  # noqa: E402
from services.playground.settings import PlaygroundSettings  # noqa: E402
from services.training.app import TrainingApp  # noqa: E402
from services.training.settings import TrainingSettings  # noqa: E402
from tests.integration.evaluation.stack import running_evaluation  # noqa: E402

CHROMIUM = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "playground"
# What the external provider answers, streamed in pieces: markup that would run if it were parsed.
HOSTILE_ANSWER = (
    'Here you go: <script>window.__pwned = "script"; alert(1)</script>'
    '<img src="x" onerror="window.__pwned = \'img\'; alert(2)"> done.'
)
# USD per million prompt / completion tokens of the tiny Llama; the external model has no price.
LLM_PRICES = [1.0, 2.0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    mesh: Mesh
    playground: PlaygroundApp
    llm_endpoint: str
    hostile_endpoint: str
    llm_model: str
    schema: str
    prices: str
    training_address: str = ""
    evaluation_address: str = ""

    @property
    def url(self) -> str:
        return self.playground.url


async def _hostile_provider(port: int) -> web.AppRunner:
    """An OpenAI-compatible provider whose every chat answer is HOSTILE_ANSWER, streamed with usage."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        pieces = [HOSTILE_ANSWER[i : i + 12] for i in range(0, len(HOSTILE_ANSWER), 12)]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            chunk = {"id": "x", "object": "chat.completion.chunk", "model": body.get("model"),
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}  # fmt: skip
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.02)
        end = {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        usage = {"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces),
                                                        "total_tokens": 7 + len(pieces)}}  # fmt: skip
        await response.write(f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _grant(mesh: Mesh, kind: int, name: str, who: str, *privileges: int) -> None:
    await mesh.admin.grant(kind, name, who, list(privileges))


@pytest_asyncio.fixture(scope="module")
async def stack(pg_dsn: str, kafka_bootstrap: str):
    u = uuid.uuid4().hex[:8]
    catalog, schema = f"pg{u}", "s"
    llm_model = f"{catalog}.{schema}.tiny_llama"
    provider_port = _free_port()
    provider = await _hostile_provider(provider_port)
    # Serving reads these when the mesh starts: the provider (alice may serve it) and the Llama's price.
    env = {
        "TESSERA_SERVING_EXTERNAL_PROVIDERS": json.dumps(
            {"hostile": {"base_url": f"http://127.0.0.1:{provider_port}/v1", "principals": ["alice"], "max_retries": 0}}
        ),
        "TESSERA_SERVING_PRICES": json.dumps({llm_model: LLM_PRICES}),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        async with running_mesh(pg_dsn, kafka_bootstrap, more_tokens=USERS) as mesh:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
            await mesh.admin.ensure_schema(catalog, schema)
            version = await mesh.admin.register(llm_model, build_tiny_llama())
            await mesh.grant_service_reads(catalog, f"{catalog}.{schema}", llm_model)
            await _grant(mesh, rpb.SECURABLE_TYPE_CATALOG, catalog, "alice", rpb.PRIVILEGE_USE_CATALOG)
            await _grant(mesh, rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", "alice", rpb.PRIVILEGE_USE_SCHEMA)
            await _grant(mesh, rpb.SECURABLE_TYPE_REGISTERED_MODEL, llm_model, "alice", rpb.PRIVILEGE_EXECUTE)
            llm_endpoint, hostile_endpoint = f"llama-{u}", f"hostile-{u}"
            serving = mesh.serving_stub()
            await serving.CreateEndpoint(
                spb.CreateEndpointRequest(
                    name=llm_endpoint, served_models=[spb.ServedModel(model_name=llm_model, version=version)], wait=True
                ),
                metadata=bearer(TOKENS["alice"]),
            )
            await serving.CreateEndpoint(
                spb.CreateEndpointRequest(
                    name=hostile_endpoint,
                    served_models=[spb.ServedModel(model_name="external.hostile.any", version=1)],
                    wait=True,
                ),
                metadata=bearer(TOKENS["alice"]),
            )
            # alice owns both (EXECUTE, MANAGE, SELECT) and may create datasets; bob may call the Llama only.
            await _grant(mesh, rpb.SECURABLE_TYPE_ENDPOINT, llm_endpoint, "bob", rpb.PRIVILEGE_EXECUTE)
            await _grant(mesh, rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", "alice", rpb.PRIVILEGE_CREATE_MODEL)
            playground = await _playground(mesh, f"test-{u}", evaluation=f"127.0.0.1:{_free_port()}")
            try:
                yield Stack(
                    mesh, playground, llm_endpoint, hostile_endpoint, llm_model, f"{catalog}.{schema}",
                    env["TESSERA_SERVING_PRICES"],
                )  # fmt: skip
            finally:
                await playground.stop()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        await provider.cleanup()


async def _playground(mesh: Mesh, secret: str, *, evaluation: str) -> PlaygroundApp:
    playground = PlaygroundApp(
        load(
            PlaygroundSettings,
            playground_http_port=0,
            grpc_port=0,
            playground_openai_url=f"http://127.0.0.1:{mesh.serving.http_port}/v1",
            serving_address=mesh.addresses["serving"],
            monitoring_address=mesh.addresses["monitoring"],
            evaluation_address=evaluation,
            playground_secret=secret,
        ),
        serve_metrics=False,
    )
    await playground.start()
    return playground


@pytest_asyncio.fixture(scope="module")
async def evaluated(stack: Stack):
    """The same mesh plus training's dataset API and the evaluation service, and a playground that
    uses them (the tests of votes, labels and eval runs)."""
    async with _training_and_evaluation(stack.mesh, uuid.uuid4().hex[:8], stack.prices) as (training, evaluation):
        playground = await _playground(stack.mesh, f"test-eval-{uuid.uuid4().hex}", evaluation=evaluation)
        try:
            yield dataclasses.replace(
                stack, playground=playground, training_address=training, evaluation_address=evaluation
            )
        finally:
            await playground.stop()


@contextlib.asynccontextmanager
async def _training_and_evaluation(mesh: Mesh, u: str, prices: str):
    """Training's dataset API and the evaluation service on the mesh's registry, serving and
    monitoring (as tests/integration/evaluation starts them); yields their gRPC addresses."""
    tokens = ",".join(f"{token}={who}" for who, token in TOKENS.items())
    common = {
        "kafka_bootstrap": mesh.kafka_bootstrap,
        "auth_tokens": tokens,
        "service_token": TOKENS[SERVICE_PRINCIPAL],
    }
    jobs, events = f"test.pg.jobs.{u}", f"test.pg.events.{u}"
    kafka_admin.ensure_topics(mesh.kafka_bootstrap, [jobs, events, f"{jobs}.dlq", f"{events}.dlq"], partitions=1)
    schema = f"training_pg_{uuid.uuid4().hex[:8]}"
    training = TrainingApp(
        load(
            TrainingSettings,
            environ={},
            grpc_port=0,
            pg_dsn=mesh.serving.settings.pg_dsn,
            training_run_as_token=TOKENS["admin"],
            registry_address=mesh.addresses["registry"],
            monitoring_address=mesh.addresses["monitoring"],
            training_schema=schema,
            training_root=mesh.work / "training",
            training_jobs_topic=jobs,
            training_events_topic=events,
            training_consumer_group=f"pg-training-{u}",
            **common,
        ),
        serve_metrics=False,
        registry_events_topic=mesh.topics["registry"],
    )
    await training.start()
    try:
        async with running_evaluation(
            pg_dsn=mesh.serving.settings.pg_dsn,
            registry_address=mesh.addresses["registry"],
            serving_address=mesh.addresses["serving"],
            training_address=f"127.0.0.1:{training.port}",
            monitoring_address=mesh.addresses["monitoring"],
            run_as_token=TOKENS["admin"],
            registry_events_topic=mesh.topics["registry"],
            prices=prices,
            **common,
        ) as evaluation:
            yield f"127.0.0.1:{training.port}", f"127.0.0.1:{evaluation.port}"
    finally:
        await training.stop()
        with psycopg.connect(mesh.serving.settings.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest_asyncio.fixture(scope="module")
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: run `bash infra/browser/install.sh`")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
