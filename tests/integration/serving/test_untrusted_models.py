"""Model files are untrusted: TorchScript runs in a confined worker, only with allowlisted operators.

Also Triton's repository index, model config and statistics, which describe
those workers' models. One registry and one serving process without an LLM.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import struct
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import torch
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc, model_config_pb2
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb
from tessera.serving.v1 import serving_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.fixtures.registry_client import RegistryClient
from services.fixtures.tabular import build_tabular_model
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.serving.app import ServingApp
from services.serving.oip_api import MAX_STREAM_IN_FLIGHT
from services.serving.settings import ServingSettings

pytestmark = pytest.mark.integration

ADMIN, ALICE, BOB = "admin-token", "alice-token", "bob-token"
SECRET = b"postgresql://tessera:hunter2@db/tessera"
CALL_TIMEOUT_S = 5.0
MEMORY_MIB = 512


class ReadsAFile(torch.nn.Module):
    """What a hostile model author uploads: forward returns the bytes of a file on the serving host."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__()
        self.path, self.size = path, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file(self.path, size=self.size, dtype=torch.uint8).to(torch.float32).reshape(1, -1) + x


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            raise ValueError("engine detail: /srv/tessera/.data/postgres/dsn has size 1234")
        return x


class Loops(torch.nn.Module):
    """Runs x[0, 0] steps: a model as slow as the caller wants."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(int(x[0, 0].item())):
            y = y + 1.0
        return y


class Allocates(torch.nn.Module):
    """Allocates x[0, 0] MiB of floats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(int(x[0, 0].item()), 256, 1024).sum().reshape(1, 1) + x


@dataclass
class Served:
    serving: ServingApp
    channel: grpc.aio.Channel
    endpoints: dict[str, str]  # kind -> endpoint name
    secret_file: Path

    def oip(self) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def runtime(self, kind: str):
        return self.serving.endpoints.deployment(self.endpoints[kind]).routes[0].model.runtime


def _script(module: torch.nn.Module, folder: Path) -> Path:
    folder.mkdir(parents=True)
    torch.jit.script(module).save(str(folder / "model.pt"))
    return folder


@pytest_asyncio.fixture(scope="module")
async def served(kafka_bootstrap: str, pg_dsn: str):
    u = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="untrusted-"))
    secret_file = work / "dsn"
    secret_file.write_bytes(SECRET)
    topics = {name: f"test.untrusted.{name}.{u}" for name in ("registry", "requests", "responses", "payloads")}
    kafka_admin.ensure_topics(kafka_bootstrap, list(topics.values()), partitions=1)
    tokens = f"{ADMIN}=admin,{ALICE}=alice,{BOB}=bob"
    registry = RegistryApp(
        load(
            RegistrySettings,
            grpc_port=0,
            registry_http_port=-1,
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=tokens,
            registry_schema=f"registry_ut{u}",
            registry_artifact_root=work / "artifacts",
            registry_events_topic=topics["registry"],
        ),
        serve_metrics=False,
    )
    await registry.start()
    client = RegistryClient(f"127.0.0.1:{registry.grpc_port}", ADMIN)
    catalog, schema = f"u{u}", "models"
    await client.ensure_schema(catalog, schema)
    folders = {
        "tabular": build_tabular_model(work / "tabular", 1.0),
        "reads": _script(ReadsAFile(str(secret_file), len(SECRET)), work / "reads"),
        "raises": _script(Raises(), work / "raises"),
        "loops": _script(Loops(), work / "loops"),
        "allocates": _script(Allocates(), work / "allocates"),
    }
    for kind, folder in folders.items():
        model = f"{catalog}.{schema}.{kind}"
        await client.register(model, folder)
        await client.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
    for principal in ("alice", "bob"):
        await client.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, principal, [rpb.PRIVILEGE_USE_CATALOG])
        await client.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", principal, [rpb.PRIVILEGE_USE_SCHEMA])

    serving = ServingApp(
        load(
            ServingSettings,
            grpc_port=0,
            serving_http_port=0,
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=tokens,
            service_token=ADMIN,
            registry_address=f"127.0.0.1:{registry.grpc_port}",
            serving_schema=f"serving_ut{u}",
            serving_model_cache=work / "cache",
            serving_requests_topic=topics["requests"],
            serving_responses_topic=topics["responses"],
            serving_payload_topic=topics["payloads"],
            serving_registry_events_topic=topics["registry"],
            serving_consumer_group=f"untrusted-{u}",
            serving_run_request_consumer=False,
            serving_tensor_threads=1,
            serving_tensor_call_timeout_s=CALL_TIMEOUT_S,
            serving_tensor_memory_mib=MEMORY_MIB,
        ),
        serve_metrics=False,
    )
    await serving.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{serving.port}")
    stub = serving_pb2_grpc.ServingServiceStub(channel)
    endpoints = {kind: f"{kind}-{u}" for kind in folders}
    # At once: each endpoint starts its own worker process, and those start-ups overlap.
    await asyncio.gather(
        *(
            stub.CreateEndpoint(
                pb.CreateEndpointRequest(
                    name=name,
                    served_models=[pb.ServedModel(model_name=f"{catalog}.{schema}.{kind}", version=1)],
                    wait=True,
                ),
                metadata=bearer(ALICE),
            )
            for kind, name in endpoints.items()
        )
    )
    yield Served(serving, channel, endpoints, secret_file)
    await channel.close()
    await client.channel.close()
    await serving.stop()
    await registry.stop()
    shutil.rmtree(work, ignore_errors=True)


def _matrix(endpoint: str, rows: list[list[float]]) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=endpoint)
    request.inputs.add(name="INPUT__0", datatype="FP32", shape=[len(rows), len(rows[0])])
    request.raw_input_contents.append(struct.pack(f"<{len(rows) * len(rows[0])}f", *(v for r in rows for v in r)))
    return request


def _tabular(endpoint: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=endpoint)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", 1, 2, 3, 4), struct.pack("<q", 5)])
    return request


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_model_that_reads_files_fails_to_load_with_the_reason(served: Served) -> None:
    view = await serving_pb2_grpc.ServingServiceStub(served.channel).GetEndpoint(
        pb.GetEndpointRequest(name=served.endpoints["reads"]), metadata=bearer(ALICE)
    )
    assert view.state == "FAILED"
    assert "aten::from_file" in view.state_reason
    assert "operators serving does not run" in view.state_reason

    error = await _error(served.oip().ModelInfer(_matrix(served.endpoints["reads"], [[0.0]]), metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "hunter2" not in error.details() and str(len(SECRET)) not in error.details()


async def test_a_model_that_raises_answers_without_the_engine_text(served: Served) -> None:
    error = await _error(served.oip().ModelInfer(_matrix(served.endpoints["raises"], [[1.0]]), metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "the model could not run on these inputs"
    ok = await served.oip().ModelInfer(_matrix(served.endpoints["raises"], [[0.0]]), metadata=bearer(ALICE))
    assert struct.unpack("<f", ok.raw_output_contents[0]) == (0.0,)  # the worker lives on


async def test_tensor_workers_run_without_serving_secrets_in_their_model_folder(served: Served) -> None:
    runtime = served.runtime("tabular")
    pid = runtime.worker_pid
    assert pid is not None and pid != os.getpid()

    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"TESSERA" not in environ and b"PG_DSN" not in environ
    assert Path(os.readlink(f"/proc/{pid}/cwd")) == runtime.folder

    reply = await served.oip().ModelInfer(_tabular(served.endpoints["tabular"]), metadata=bearer(ALICE))
    assert struct.unpack("<f", reply.raw_output_contents[0]) == (15.0,)  # 1+2+3+4 + 5


async def test_a_worker_killed_mid_call_answers_unavailable_and_comes_back(served: Served) -> None:
    runtime = served.runtime("loops")
    pid = runtime.worker_pid
    call = asyncio.ensure_future(
        served.oip().ModelInfer(_matrix(served.endpoints["loops"], [[1e9]]), metadata=bearer(ALICE))
    )
    model = served.serving.endpoints.deployment(served.endpoints["loops"]).routes[0].model
    for _ in range(600):  # the call reaches the model
        if model.in_flight:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # and, most likely, the worker: killed before, it fails the same way
    os.kill(pid, 9)

    error = await _error(call)

    assert error.code() == grpc.StatusCode.UNAVAILABLE and "restarted" in error.details()
    reply = await served.oip().ModelInfer(_matrix(served.endpoints["loops"], [[2.0]]), metadata=bearer(ALICE))
    assert struct.unpack("<f", reply.raw_output_contents[0]) == (4.0,)
    assert runtime.worker_pid not in (None, pid)


async def test_a_call_over_its_deadline_is_deadline_exceeded_and_the_worker_restarts(served: Served) -> None:
    runtime = served.runtime("loops")
    pid = runtime.worker_pid

    error = await _error(served.oip().ModelInfer(_matrix(served.endpoints["loops"], [[1e9]]), metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    reply = await served.oip().ModelInfer(_matrix(served.endpoints["loops"], [[1.0]]), metadata=bearer(ALICE))
    assert struct.unpack("<f", reply.raw_output_contents[0]) == (2.0,)
    assert runtime.worker_pid != pid


async def test_a_model_over_its_memory_budget_is_resource_exhausted_and_lives_on(served: Served) -> None:
    name = served.endpoints["allocates"]

    error = await _error(served.oip().ModelInfer(_matrix(name, [[8.0 * MEMORY_MIB]]), metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "the model ran out of memory on these inputs"
    reply = await served.oip().ModelInfer(_matrix(name, [[1.0]]), metadata=bearer(ALICE))
    assert struct.unpack("<f", reply.raw_output_contents[0]) == (1.0 + 256 * 1024,)


async def test_one_stream_runs_a_bounded_number_of_requests_at_once(served: Served) -> None:
    name = served.endpoints["loops"]
    model = served.serving.endpoints.deployment(name).routes[0].model
    # Each call a few ms of looping (well inside the call timeout on a loaded machine): the calls queue
    # behind the model's one worker, so the stream holds as many in flight as it admits.
    requests = [_matrix(name, [[2000.0]]) for _ in range(3 * MAX_STREAM_IN_FLIGHT)]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        for _ in itertools.count():
            peak = max(peak, model.in_flight)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    replies = [reply async for reply in served.oip().ModelStreamInfer(iter(requests), metadata=bearer(ALICE))]
    watcher.cancel()

    assert len(replies) == len(requests) and not [r.error_message for r in replies if r.error_message]
    assert 1 < peak <= MAX_STREAM_IN_FLIGHT


async def test_the_repository_index_lists_what_the_caller_may_call_with_states(served: Served) -> None:
    index = await served.oip().RepositoryIndex(oip.RepositoryIndexRequest(), metadata=bearer(ALICE))
    states = {m.name: (m.version, m.state) for m in index.models}
    reads = next(m for m in index.models if m.name == served.endpoints["reads"])

    assert states[served.endpoints["tabular"]] == ("1", "READY")
    assert states[served.endpoints["reads"]] == ("", "UNAVAILABLE") and "aten::from_file" in reads.reason
    ready = await served.oip().RepositoryIndex(oip.RepositoryIndexRequest(ready=True), metadata=bearer(ALICE))
    assert served.endpoints["reads"] not in {m.name for m in ready.models}
    bobs = await served.oip().RepositoryIndex(oip.RepositoryIndexRequest(), metadata=bearer(BOB))
    assert not set(served.endpoints.values()) & {m.name for m in bobs.models}


async def test_model_config_comes_from_the_signature(served: Served) -> None:
    config = (
        await served.oip().ModelConfig(oip.ModelConfigRequest(name=served.endpoints["tabular"]), metadata=bearer(ALICE))
    ).config

    assert (config.platform, config.backend, config.max_batch_size) == ("pytorch_libtorch", "pytorch", 0)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("features", model_config_pb2.TYPE_FP32, [-1, 4]),
        ("category", model_config_pb2.TYPE_INT64, [-1]),
    ]
    assert [(o.name, o.data_type) for o in config.output] == [("score", model_config_pb2.TYPE_FP32)]
    error = await _error(
        served.oip().ModelConfig(oip.ModelConfigRequest(name=served.endpoints["tabular"]), metadata=bearer(BOB))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_model_statistics_count_successes_and_failures(served: Served) -> None:
    name = served.endpoints["raises"]
    before = await served.oip().ModelStatistics(oip.ModelStatisticsRequest(name=name), metadata=bearer(ALICE))
    await served.oip().ModelInfer(_matrix(name, [[0.0], [0.0]]), metadata=bearer(ALICE))
    await _error(served.oip().ModelInfer(_matrix(name, [[1.0]]), metadata=bearer(ALICE)))

    after = await served.oip().ModelStatistics(oip.ModelStatisticsRequest(name=name), metadata=bearer(ALICE))

    (was,), (now,) = before.model_stats, after.model_stats
    assert (now.name, now.version) == (name, "1")
    assert now.inference_count - was.inference_count == 2  # one batch of two rows
    assert now.execution_count - was.execution_count == 2
    assert now.inference_stats.success.count - was.inference_stats.success.count == 1
    assert now.inference_stats.fail.count - was.inference_stats.fail.count == 1
    assert now.inference_stats.success.ns > was.inference_stats.success.ns and now.last_inference > 0
    everything = await served.oip().ModelStatistics(oip.ModelStatisticsRequest(), metadata=bearer(ALICE))
    assert {served.endpoints[k] for k in ("tabular", "raises", "loops")} <= {s.name for s in everything.model_stats}
