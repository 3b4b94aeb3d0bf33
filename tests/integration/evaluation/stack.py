"""The platform an evaluation needs, in one process on the real Kafka and PostgreSQL: registry (with
its MLflow REST API), serving with the tiny Llama on vLLM, training's dataset API, monitoring
(fed by serving's payload logs) and the evaluation service; principals and grants for the tests.

`running_evaluation(...)` starts just the evaluation service against given addresses; other suites
(the playground, monitoring) can use it to start the service in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.events.v1 import evaluation_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc
from tessera.serving.v1 import serving_pb2 as spb
from tessera.serving.v1 import serving_pb2_grpc
from tessera.training.v1 import training_pb2 as tpb
from tessera.training.v1 import training_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.evaluation.app import EvaluationApp
from services.evaluation.settings import EvaluationSettings
from services.fixtures.registry_client import RegistryClient

REPO = Path(__file__).resolve().parents[3]
ADMIN, ALICE, BOB, CAROL, SERVICE = "admin-token", "alice-token", "bob-token", "carol-token", "service-token"
TOKENS = f"{ADMIN}=admin,{ALICE}=alice,{BOB}=bob,{CAROL}=carol,{SERVICE}=tessera-services"
# USD per million prompt and completion tokens of the tiny Llama (serving and evaluation read the same table).
LLM_PRICES = (1.0, 2.0)
FINAL = (pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_PARTIAL, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def running_evaluation(
    *,
    kafka_bootstrap: str,
    pg_dsn: str,
    registry_address: str,
    serving_address: str,
    training_address: str,
    monitoring_address: str,
    auth_tokens: str,
    service_token: str,
    run_as_token: str,
    registry_events_topic: str,
    prices: str = "",
    **overrides,
) -> AsyncIterator[EvaluationApp]:
    """The evaluation service on unique topics, group and schema; yields the started app
    (`app.port`; `app.settings.evaluation_requests_topic` / `evaluation_results_topic`)."""
    u = uuid.uuid4().hex[:8]
    topics = {name: f"test.eval.{name}.{u}" for name in ("requests", "results")}
    kafka_admin.ensure_topics(kafka_bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    settings = load(
        EvaluationSettings,
        grpc_port=0,
        kafka_bootstrap=kafka_bootstrap,
        pg_dsn=pg_dsn,
        auth_tokens=auth_tokens,
        service_token=service_token,
        registry_address=registry_address,
        serving_address=serving_address,
        training_address=training_address,
        monitoring_address=monitoring_address,
        registry_events_topic=registry_events_topic,
        evaluation_schema=f"evaluation_t{u}",
        evaluation_requests_topic=topics["requests"],
        evaluation_results_topic=topics["results"],
        evaluation_consumer_group=f"evaluation-test-{u}",
        evaluation_run_as_token=run_as_token,
        evaluation_online_token=run_as_token,
        serving_prices=prices,
        evaluation_log_every_s=2.0,
        evaluation_heartbeat_s=1.0,
        evaluation_online_poll_s=1.0,
        **{"evaluation_online_lag_s": 15.0, **overrides},
    )
    app = EvaluationApp(settings, serve_metrics=False)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@dataclass
class ServiceProcess:
    """`python -m <module>` as its own process (its own PID, so a test can SIGKILL it)."""

    module: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=REPO, env=self.env, stdout=out, stderr=out
        )
        return self.proc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def scripted_verdict(prompt: str) -> str:
    """What the scripted judge says to a prompt: PASS, FAIL or a reply without a verdict, by the prompt's hash."""
    kind = hashlib.sha256(prompt.encode()).digest()[0] % 5
    return ["VERDICT: PASS", "VERDICT: FAIL", "VERDICT: PASS", "VERDICT: FAIL", "I would rather not say."][kind]


async def scripted_judge(port: int) -> web.AppRunner:
    """An OpenAI-compatible provider whose verdicts are known in advance (streamed, as serving asks):
    the judge calibration arithmetic is checked against it, since the tiny Llama gives almost no verdicts."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = scripted_verdict(body["messages"][-1]["content"])
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(done)}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@dataclass
class Stack:
    catalog: str
    schema: str
    llm_model: str
    llm_endpoint: str
    dead_endpoint: str
    scripted_endpoint: str
    registry_address: str
    registry_http_url: str
    serving_address: str
    training_address: str
    monitoring_address: str
    kafka_bootstrap: str
    pg_dsn: str
    registry_topic: str
    training_env: dict[str, str]
    work: Path
    evaluation: EvaluationApp
    admin: RegistryClient
    channel: grpc.aio.Channel
    serving_channel: grpc.aio.Channel
    training_channel: grpc.aio.Channel
    registry_channel: grpc.aio.Channel

    @property
    def eval(self) -> evaluation_pb2_grpc.EvaluationServiceStub:
        return evaluation_pb2_grpc.EvaluationServiceStub(self.channel)

    @property
    def serving(self) -> serving_pb2_grpc.ServingServiceStub:
        return serving_pb2_grpc.ServingServiceStub(self.serving_channel)

    @property
    def training(self) -> training_pb2_grpc.TrainingServiceStub:
        return training_pb2_grpc.TrainingServiceStub(self.training_channel)

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.registry_channel)

    @property
    def results_topic(self) -> str:
        return self.evaluation.settings.evaluation_results_topic

    @property
    def requests_topic(self) -> str:
        return self.evaluation.settings.evaluation_requests_topic

    async def dataset(self, name: str, rows: list[dict] | bytes, token: str = ALICE) -> tuple[str, str]:
        """A new dataset with one version of `rows`: (full name, version)."""
        full = f"{self.catalog}.{self.schema}.{name}"
        await self.training.CreateDataset(tpb.CreateDatasetRequest(full_name=full), metadata=bearer(token))
        data = rows if isinstance(rows, bytes) else b"".join(json.dumps(r).encode() + b"\n" for r in rows)

        async def requests():
            yield tpb.UploadDatasetVersionRequest(dataset=full)
            yield tpb.UploadDatasetVersionRequest(data=data)

        version = await self.training.UploadDatasetVersion(requests(), metadata=bearer(token))
        return full, version.version

    async def grant(self, kind: int, name: str, principal: str, privileges: list[int]) -> None:
        await self.admin.grant(kind, name, principal, privileges)

    def spec(self, dataset: str, version: str, metrics: list[str], **kw) -> events_pb.EvalRunSpec:
        values = dict(
            dataset=dataset,
            dataset_version=version,
            target_endpoint=self.llm_endpoint,
            metrics=metrics,
            seed=7,
            concurrency=4,
        )
        values.update(kw)
        spec = events_pb.EvalRunSpec(**{k: v for k, v in values.items() if k not in ("max_tokens", "temperature")})
        spec.sampling.max_tokens = kw.get("max_tokens", 12)
        spec.sampling.temperature = kw.get("temperature", 0.0)
        return spec

    async def start(self, spec: events_pb.EvalRunSpec, token: str = ALICE) -> pb.EvalRun:
        return await self.eval.StartEvalRun(pb.StartEvalRunRequest(spec=spec), metadata=bearer(token))

    async def wait(self, eval_run_id: str, token: str = ALICE, timeout: float = 900) -> pb.EvalRun:
        async with asyncio.timeout(timeout):
            while True:
                run = await self.eval.GetEvalRun(pb.GetEvalRunRequest(eval_run_id=eval_run_id), metadata=bearer(token))
                if run.state in FINAL:
                    return run
                await asyncio.sleep(0.5)

    async def results(self, eval_run_id: str, token: str = ALICE) -> list[events_pb.EvalResult]:
        out, page_token = [], ""
        while True:
            reply = await self.eval.ListEvalResults(
                pb.ListEvalResultsRequest(eval_run_id=eval_run_id, page={"page_size": 50, "page_token": page_token}),
                metadata=bearer(token),
            )
            out += list(reply.results)
            page_token = reply.page.next_page_token
            if not page_token:
                return out

    async def endpoint(self, name: str, model: str, version: int = 1, token: str = ALICE) -> str:
        await self.serving.CreateEndpoint(
            spb.CreateEndpointRequest(
                name=name, served_models=[spb.ServedModel(model_name=model, version=version)], wait=True
            ),
            metadata=bearer(token),
        )
        return name


async def start_stack(kafka_bootstrap: str, pg_dsn: str, work: Path) -> AsyncIterator[Stack]:
    from services.fixtures.tiny_llama import build_tiny_llama
    from services.monitoring.app import MonitoringApp
    from services.monitoring.settings import MonitoringSettings
    from services.registry.app import RegistryApp
    from services.registry.settings import RegistrySettings
    from services.serving.app import ServingApp
    from services.serving.settings import ServingSettings
    from services.training.app import TrainingApp
    from services.training.settings import TrainingSettings

    u = uuid.uuid4().hex[:8]
    topics = {name: f"test.evalstack.{name}.{u}" for name in ("registry", "requests", "responses", "payloads", "drift")}
    topics |= {name: f"test.evalstack.{name}.{u}" for name in ("jobs", "events")}
    kafka_admin.ensure_topics(kafka_bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    registry = RegistryApp(
        load(
            RegistrySettings,
            grpc_port=0,
            registry_http_port=0,
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=TOKENS,
            registry_schema=f"registry_ev{u}",
            registry_artifact_root=work / "artifacts",
            registry_events_topic=topics["registry"],
        ),
        serve_metrics=False,
    )
    await registry.start()
    registry_address = f"127.0.0.1:{registry.grpc_port}"
    admin = RegistryClient(registry_address, ADMIN)
    catalog, schema = f"c{u}", "ml"
    await admin.ensure_schema(catalog, schema)
    llm_model = f"{catalog}.{schema}.tiny_llama"
    await admin.register(llm_model, build_tiny_llama())
    for who in ("alice", "bob", "carol"):
        await admin.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, who, [rpb.PRIVILEGE_USE_CATALOG])
        await admin.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", who, [rpb.PRIVILEGE_USE_SCHEMA])
    # alice creates datasets and models in the schema and may run the tiny Llama; bob and carol get
    # only what a test grants them.
    await admin.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", "alice", [rpb.PRIVILEGE_CREATE_MODEL])
    await admin.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, llm_model, "alice", [rpb.PRIVILEGE_EXECUTE])

    # A provider nobody listens on: an endpoint in front of it is a dead judge.
    dead_port, scripted_port = free_port(), free_port()
    providers = {
        "dead": {"base_url": f"http://127.0.0.1:{dead_port}/v1", "principals": ["alice"], "max_retries": 0},
        "scripted": {"base_url": f"http://127.0.0.1:{scripted_port}/v1", "principals": ["alice"]},
    }
    judge = await scripted_judge(scripted_port)
    prices = json.dumps({llm_model: LLM_PRICES})
    serving = ServingApp(
        load(
            ServingSettings,
            grpc_port=0,
            serving_http_port=0,
            serving_prices=prices,
            serving_external_providers=json.dumps(providers),
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=TOKENS,
            service_token=SERVICE,
            registry_address=registry_address,
            serving_schema=f"serving_ev{u}",
            serving_model_cache=work / "cache",
            serving_requests_topic=topics["requests"],
            serving_responses_topic=topics["responses"],
            serving_payload_topic=topics["payloads"],
            serving_registry_events_topic=topics["registry"],
            serving_consumer_group=f"evalstack-serving-{u}",
            serving_max_tokens=256,
            serving_max_model_len=1024,
            serving_max_num_seqs=16,
            serving_kv_cache_mib=128,
        ),
        serve_metrics=False,
    )
    await serving.start()
    serving_address = f"127.0.0.1:{serving.port}"
    monitoring = MonitoringApp(
        load(
            MonitoringSettings,
            environ={"TESSERA_REGISTRY_ADDRESS": registry_address, "TESSERA_SERVICE_TOKEN": SERVICE},
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            auth_tokens=TOKENS,
            monitoring_schema=f"monitoring_ev{u}",
            monitoring_payload_topic=topics["payloads"],
            monitoring_drift_topic=topics["drift"],
            monitoring_consumer_group=f"evalstack-monitoring-{u}",
        ),
        serve_metrics=False,
    )
    await monitoring.start()
    monitoring_address = f"127.0.0.1:{monitoring.port}"
    # Also the environment of training worker processes a test starts (python -m services.training.worker).
    training_env = {
        "TESSERA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TESSERA_PG_DSN": pg_dsn,
        "TESSERA_AUTH_TOKENS": TOKENS,
        "TESSERA_SERVICE_TOKEN": SERVICE,
        "TESSERA_TRAINING_RUN_AS_TOKEN": ADMIN,
        "TESSERA_REGISTRY_ADDRESS": registry_address,
        "TESSERA_MONITORING_ADDRESS": monitoring_address,
        "TESSERA_TRAINING_SCHEMA": f"training_ev{u}",
        "TESSERA_TRAINING_ROOT": str(work / "training"),
        "TESSERA_TRAINING_JOBS_TOPIC": topics["jobs"],
        "TESSERA_TRAINING_EVENTS_TOPIC": topics["events"],
        "TESSERA_TRAINING_CONSUMER_GROUP": f"evalstack-training-{u}",
        "TESSERA_TRAINING_POLL_S": "1",
        "TESSERA_TRAINING_THREADS": "1",
    }
    training = TrainingApp(
        load(TrainingSettings, environ=training_env, grpc_port=0),
        serve_metrics=False,
        registry_events_topic=topics["registry"],
    )
    await training.start()
    training_address = f"127.0.0.1:{training.port}"
    serving_channel = grpc.aio.insecure_channel(serving_address)
    serving_stub = serving_pb2_grpc.ServingServiceStub(serving_channel)
    llm_endpoint, dead_endpoint, scripted_endpoint = f"llm-{u}", f"dead-{u}", f"judge-{u}"
    await serving_stub.CreateEndpoint(
        spb.CreateEndpointRequest(
            name=llm_endpoint, served_models=[spb.ServedModel(model_name=llm_model, version=1)], wait=True
        ),
        metadata=bearer(ALICE),
    )
    await serving_stub.CreateEndpoint(
        spb.CreateEndpointRequest(
            name=dead_endpoint, served_models=[spb.ServedModel(model_name="external.dead.tiny", version=1)], wait=True
        ),
        metadata=bearer(ALICE),
    )
    await serving_stub.CreateEndpoint(
        spb.CreateEndpointRequest(
            name=scripted_endpoint,
            served_models=[spb.ServedModel(model_name="external.scripted.judge", version=1)],
            wait=True,
        ),
        metadata=bearer(ALICE),
    )
    async with running_evaluation(
        kafka_bootstrap=kafka_bootstrap,
        pg_dsn=pg_dsn,
        registry_address=registry_address,
        serving_address=serving_address,
        training_address=training_address,
        monitoring_address=monitoring_address,
        auth_tokens=TOKENS,
        service_token=SERVICE,
        run_as_token=ADMIN,
        registry_events_topic=topics["registry"],
        prices=prices,
    ) as evaluation:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{evaluation.port}")
        training_channel = grpc.aio.insecure_channel(training_address)
        try:
            yield Stack(
                catalog=catalog,
                schema=schema,
                llm_model=llm_model,
                llm_endpoint=llm_endpoint,
                dead_endpoint=dead_endpoint,
                scripted_endpoint=scripted_endpoint,
                registry_address=registry_address,
                registry_http_url=f"http://127.0.0.1:{registry.http_port}",
                serving_address=serving_address,
                training_address=training_address,
                monitoring_address=monitoring_address,
                kafka_bootstrap=kafka_bootstrap,
                pg_dsn=pg_dsn,
                registry_topic=topics["registry"],
                training_env=training_env,
                work=work,
                evaluation=evaluation,
                admin=admin,
                channel=channel,
                serving_channel=serving_channel,
                training_channel=training_channel,
                registry_channel=admin.channel,
            )
        finally:
            await channel.close()
            await training_channel.close()
    await serving_channel.close()
    await training.stop()
    await monitoring.stop()
    await serving.stop()
    await admin.channel.close()
    await registry.stop()
    await judge.cleanup()
    shutil.rmtree(work, ignore_errors=True)


def work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="evaluation-test-"))
