"""The processes the bench runs, each on free ports with its own schema, topics and groups: a registry
holding the tiny Llama, the training API (datasets), serving (gRPC + the OpenAI API) with a target and a
judge endpoint, and the evaluation service."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from tessera.serving.v1 import serving_pb2 as spb
from tessera.serving.v1 import serving_pb2_grpc
from tessera.training.v1 import training_pb2 as tpb
from tessera.training.v1 import training_pb2_grpc

from loadtests.serving_bench.processes import Process, free_port, python_module, wait_grpc, wait_http
from services.common import kafka_admin
from services.common.auth import bearer
from services.fixtures.registry_client import RegistryClient

TOKEN = "eval-bench-token"
TARGET, JUDGE = "evalbench-target", "evalbench-judge"
ENGINE = {"max_model_len": 1024, "max_num_seqs": 64, "kv_cache_mib": 512}


@dataclass(frozen=True)
class Stack:
    evaluation: str  # gRPC address ("" when not started)
    training: str
    openai_url: str
    dataset: str
    dataset_version: str


def _log(message: str) -> None:
    print(f"[eval_bench] {message}", flush=True)


async def upload_dataset(address: str, dataset: str, rows: list[dict]) -> str:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        await stub.CreateDataset(tpb.CreateDatasetRequest(full_name=dataset), metadata=bearer(TOKEN))

        async def requests():
            yield tpb.UploadDatasetVersionRequest(dataset=dataset)
            yield tpb.UploadDatasetVersionRequest(data=data)

        version = await stub.UploadDatasetVersion(requests(), metadata=bearer(TOKEN))
    return version.version


@contextlib.asynccontextmanager
async def tessera_stack(model_dir: Path, work: Path, bootstrap: str, rows: list[dict], *, evaluation: bool = True):
    u = uuid.uuid4().hex[:8]
    topics = {k: f"bench.eval.{k}.{u}" for k in ("registry", "requests", "responses", "payloads", "jobs", "events")}
    topics |= {"eval_requests": f"bench.eval.eval-requests.{u}", "eval_results": f"bench.eval.eval-results.{u}"}
    kafka_admin.ensure_topics(bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    common = {
        "TESSERA_AUTH_TOKENS": f"{TOKEN}=admin",
        "TESSERA_SERVICE_TOKEN": TOKEN,
        "TESSERA_LOG_LEVEL": "WARNING",
        "TESSERA_KAFKA_BOOTSTRAP": bootstrap,
    }
    ports = {name: free_port() for name in ("registry", "training", "serving", "http", "evaluation")}
    started: list[Process] = []

    def start(name: str, module: str, env: dict[str, str]) -> Process:
        process = Process(
            name, python_module(module), {**common, "TESSERA_METRICS_PORT": str(free_port()), **env}, work
        )
        started.append(process)
        return process

    try:
        registry = start(
            "registry",
            "services.registry",
            {
                "TESSERA_GRPC_PORT": str(ports["registry"]),
                "TESSERA_REGISTRY_HTTP_PORT": "-1",
                "TESSERA_REGISTRY_SCHEMA": f"registry_evalbench{u}",
                "TESSERA_REGISTRY_ARTIFACT_ROOT": str(work / "artifacts"),
                "TESSERA_REGISTRY_EVENTS_TOPIC": topics["registry"],
            },
        )
        registry_address = f"127.0.0.1:{ports['registry']}"
        await wait_grpc(registry, registry_address)
        client = RegistryClient(registry_address, TOKEN)
        await client.ensure_schema(f"evalbench{u}", "bench")
        model = f"evalbench{u}.bench.tiny_llama"
        version = await client.register(model, model_dir)
        await client.channel.close()
        _log(f"registered {model} v{version}")
        training = start(
            "training",
            "services.training",
            {
                "TESSERA_GRPC_PORT": str(ports["training"]),
                "TESSERA_REGISTRY_ADDRESS": registry_address,
                "TESSERA_TRAINING_SCHEMA": f"training_evalbench{u}",
                "TESSERA_TRAINING_ROOT": str(work / "training"),
                "TESSERA_TRAINING_RUN_AS_TOKEN": TOKEN,
                "TESSERA_TRAINING_JOBS_TOPIC": topics["jobs"],
                "TESSERA_TRAINING_EVENTS_TOPIC": topics["events"],
                "TESSERA_TRAINING_CONSUMER_GROUP": f"training-evalbench-{u}",
            },
        )
        serving = start(
            "serving",
            "services.serving",
            {
                "TESSERA_GRPC_PORT": str(ports["serving"]),
                "TESSERA_REGISTRY_ADDRESS": registry_address,
                "TESSERA_SERVING_SCHEMA": f"serving_evalbench{u}",
                "TESSERA_SERVING_MODEL_CACHE": str(work / "cache"),
                "TESSERA_SERVING_REQUESTS_TOPIC": topics["requests"],
                "TESSERA_SERVING_RESPONSES_TOPIC": topics["responses"],
                "TESSERA_SERVING_PAYLOAD_TOPIC": topics["payloads"],
                "TESSERA_SERVING_REGISTRY_EVENTS_TOPIC": topics["registry"],
                "TESSERA_SERVING_CONSUMER_GROUP": f"serving-evalbench-{u}",
                "TESSERA_SERVING_MAX_MODEL_LEN": str(ENGINE["max_model_len"]),
                "TESSERA_SERVING_MAX_NUM_SEQS": str(ENGINE["max_num_seqs"]),
                "TESSERA_SERVING_KV_CACHE_MIB": str(ENGINE["kv_cache_mib"]),
                "TESSERA_SERVING_HTTP_PORT": str(ports["http"]),
            },
        )
        serving_address = f"127.0.0.1:{ports['serving']}"
        await wait_grpc(training, f"127.0.0.1:{ports['training']}")
        dataset = f"evalbench{u}.bench.capitals"
        dataset_version = await upload_dataset(f"127.0.0.1:{ports['training']}", dataset, rows)
        _log(f"dataset {dataset}@{dataset_version[:12]}: {len(rows)} rows")
        await wait_grpc(serving, serving_address)
        async with grpc.aio.insecure_channel(serving_address) as channel:
            stub = serving_pb2_grpc.ServingServiceStub(channel)
            for name in (TARGET, JUDGE):
                created = await stub.CreateEndpoint(
                    spb.CreateEndpointRequest(
                        name=name, served_models=[spb.ServedModel(model_name=model, version=version)], wait=True
                    ),
                    metadata=bearer(TOKEN),
                    timeout=900,
                )
                if created.state != "READY":
                    raise RuntimeError(f"endpoint {name} did not load: {created.state_reason}")
        openai_url = f"http://127.0.0.1:{ports['http']}"
        await wait_http(serving, f"{openai_url}/health")
        _log("serving is ready (target and judge endpoints)")
        if not evaluation:
            yield Stack("", f"127.0.0.1:{ports['training']}", openai_url, dataset, dataset_version)
            return
        evaluation_process = start(
            "evaluation",
            "services.evaluation",
            {
                "TESSERA_GRPC_PORT": str(ports["evaluation"]),
                "TESSERA_EVALUATION_SCHEMA": f"evaluation_evalbench{u}",
                "TESSERA_REGISTRY_ADDRESS": registry_address,
                "TESSERA_TRAINING_ADDRESS": f"127.0.0.1:{ports['training']}",
                "TESSERA_SERVING_ADDRESS": serving_address,
                "TESSERA_MONITORING_ADDRESS": "127.0.0.1:1",  # online evaluation is not benchmarked
                "TESSERA_REGISTRY_EVENTS_TOPIC": topics["registry"],
                "TESSERA_EVALUATION_REQUESTS_TOPIC": topics["eval_requests"],
                "TESSERA_EVALUATION_RESULTS_TOPIC": topics["eval_results"],
                "TESSERA_EVALUATION_CONSUMER_GROUP": f"evaluation-evalbench-{u}",
                "TESSERA_EVALUATION_RUN_AS_TOKEN": TOKEN,
                "TESSERA_EVALUATION_ONLINE_TOKEN": TOKEN,
            },
        )
        evaluation_address = f"127.0.0.1:{ports['evaluation']}"
        await wait_grpc(evaluation_process, evaluation_address)
        _log("evaluation is ready")
        yield Stack(evaluation_address, f"127.0.0.1:{ports['training']}", openai_url, dataset, dataset_version)
    finally:
        for process in reversed(started):
            process.stop()
