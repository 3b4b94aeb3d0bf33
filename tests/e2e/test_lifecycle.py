"""Tessera's lifecycle across the real services, on the real Kafka and PostgreSQL.

A model registered in the registry is served on an alias, answers over gRPC,
its payload logs reach monitoring's inference table through Kafka, an alias
move switches the answering version, and grants decide who may call it; a
retrieval index lives in a registry schema and obeys its grants; a real
service process answers health and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from inference import grpc_service_pb2 as oip
from psycopg import sql
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2 as qpb
from tessera.serving.v1 import serving_pb2 as spb

from services.common.auth import bearer
from services.fixtures.tabular import build_tabular_model
from tests.e2e.conftest import TOKENS, Mesh
from tests.polling import eventually

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def as_(who: str):
    return bearer(TOKENS[who])


def tabular_request(endpoint: str, request_id: str, features: list[float], category: int) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=endpoint, id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", *features), struct.pack("<q", category)])
    return request


async def infer(mesh: Mesh, who: str, endpoint: str, request_id: str) -> tuple[str, float]:
    """(answering version, score) for features 1,2,3,4 and category 5: v1 scores 15, v2 scores 25."""
    reply = await mesh.oip_stub().ModelInfer(tabular_request(endpoint, request_id, [1, 2, 3, 4], 5), metadata=as_(who))
    (score,) = struct.unpack("<f", reply.raw_output_contents[0])
    return reply.model_version, score


async def grant(mesh: Mesh, kind: int, name: str, who: str, *privileges: int) -> None:
    await mesh.admin.grant(kind, name, who, list(privileges))


async def new_schema(mesh: Mesh, prefix: str) -> str:
    catalog = f"{prefix}{uuid.uuid4().hex[:8]}"
    await mesh.admin.ensure_schema(catalog, "s")
    return f"{catalog}.s"


async def records_of(mesh: Mesh, endpoint: str) -> list:
    reply = await mesh.monitoring_stub().ListInferenceRecords(
        mpb.ListInferenceRecordsRequest(endpoint=endpoint), metadata=as_("admin")
    )
    return list(reply.records)


async def test_registered_model_is_served_logged_monitored_and_follows_its_alias(mesh: Mesh, tmp_path) -> None:
    schema = await new_schema(mesh, "e2e")
    catalog = schema.split(".")[0]
    model = f"{schema}.scorer"
    v1 = await mesh.admin.register(model, build_tabular_model(tmp_path / "v1", 1.0))
    v2 = await mesh.admin.register(model, build_tabular_model(tmp_path / "v2", 2.0), new_model=False)
    await mesh.admin.set_alias(model, "champion", v1)
    # alice may execute the model; bob may reach the schema but not execute anything in it.
    for who in ("alice", "bob"):
        await grant(mesh, rpb.SECURABLE_TYPE_CATALOG, catalog, who, rpb.PRIVILEGE_USE_CATALOG)
        await grant(mesh, rpb.SECURABLE_TYPE_SCHEMA, schema, who, rpb.PRIVILEGE_USE_SCHEMA)
    await grant(mesh, rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", rpb.PRIVILEGE_EXECUTE)

    endpoint = f"scorer-{uuid.uuid4().hex[:6]}"
    created = await mesh.serving_stub().CreateEndpoint(
        spb.CreateEndpointRequest(
            name=endpoint, served_models=[spb.ServedModel(model_name=model, alias="champion")], wait=True
        ),
        metadata=as_("alice"),
    )
    assert [(s.alias, s.version, s.state) for s in created.status] == [("champion", v1, "READY")]

    # Served over gRPC (Open Inference Protocol): v1 answers sum(features) * 1 + category.
    first_ids = [f"e2e-v1-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    answers = [await infer(mesh, "alice", endpoint, rid) for rid in first_ids]
    assert answers == [(str(v1), 15.0)] * 3

    # bob holds USE_SCHEMA but not EXECUTE: refused, and the refusal is logged too.
    denied_id = f"e2e-denied-{uuid.uuid4().hex[:6]}"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await infer(mesh, "bob", endpoint, denied_id)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()

    # The payload logs went serving -> Kafka -> monitoring's inference table, read back over gRPC.
    wanted = {*first_ids, denied_id}
    logged = await eventually(lambda: _records_with(mesh, endpoint, wanted))
    assert {r.request_id for r in logged} == wanted
    by_id = {r.request_id: r for r in logged}
    for rid in first_ids:
        record = by_id[rid]
        assert (record.status, record.served_model, record.model_version) == ("OK", model, str(v1))
        assert record.principal == "alice" and record.source
        assert list(record.inputs["features"][0]) == [1.0, 2.0, 3.0, 4.0]
        assert list(record.outputs["score"][0]) == [15.0]
    assert (by_id[denied_id].status, by_id[denied_id].principal) == ("PERMISSION_DENIED", "bob")

    # Move the alias: the registry's event reaches serving through Kafka and v2 answers.
    await mesh.admin.set_alias(model, "champion", v2)

    async def answered_by_v2():
        answer = await infer(mesh, "alice", endpoint, f"e2e-move-{uuid.uuid4().hex[:6]}")
        return answer if answer[0] == str(v2) else None

    assert await eventually(answered_by_v2) == (str(v2), 25.0)
    status = await mesh.serving_stub().GetEndpoint(spb.GetEndpointRequest(name=endpoint), metadata=as_("alice"))
    assert [(s.alias, s.version, s.state) for s in status.status] == [("champion", v2, "READY")]

    # The registry knows which endpoint serves the new version.
    lineage = await mesh.admin.lineage_of(model, v2)
    assert ("SERVING_ENDPOINT", endpoint) in {(n.type, n.name) for n in lineage.nodes}


async def _records_with(mesh: Mesh, endpoint: str, wanted: set[str]) -> list | None:
    records = await records_of(mesh, endpoint)
    return records if wanted <= {r.request_id for r in records} else None


async def test_retrieval_index_in_a_registry_schema_obeys_its_grants(mesh: Mesh) -> None:
    schema = await new_schema(mesh, "docs")
    catalog = schema.split(".")[0]
    await grant(mesh, rpb.SECURABLE_TYPE_CATALOG, catalog, "bob", rpb.PRIVILEGE_USE_CATALOG)
    await grant(mesh, rpb.SECURABLE_TYPE_SCHEMA, schema, "bob", rpb.PRIVILEGE_USE_SCHEMA)
    index = f"{schema}.notes"
    stub = mesh.retrieval_stub()

    await stub.CreateIndex(qpb.CreateIndexRequest(name=index, dimension=3), metadata=as_("admin"))
    docs = [
        qpb.Document(id="north", vector=[0, 1, 0], text="up"),
        qpb.Document(id="east", vector=[1, 0, 0], text="right"),
        qpb.Document(id="south", vector=[0, -1, 0], text="down"),
    ]
    written = await stub.UpsertDocuments(qpb.UpsertDocumentsRequest(index=index, documents=docs), metadata=as_("admin"))
    assert written.applied == 3

    # bob holds USE_SCHEMA: he may query, nearest first.
    reply = await stub.Query(qpb.QueryRequest(index=index, vector=[0.1, 0.9, 0], k=2), metadata=as_("bob"))
    assert [h.id for h in reply.hits] == ["north", "east"]
    # ...but not write (no MODIFY), and carol, with no grant at all, may not even query.
    refusals = [
        stub.UpsertDocuments(qpb.UpsertDocumentsRequest(index=index, documents=docs[:1]), metadata=as_("bob")),
        stub.Query(qpb.QueryRequest(index=index, vector=[0, 1, 0], k=1), metadata=as_("carol")),
    ]
    for call in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> int | None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status
    except grpc.RpcError:
        return None


def test_registry_process_answers_health_and_exits_cleanly_on_sigterm(pg_dsn, kafka_bootstrap, tmp_path) -> None:
    u = uuid.uuid4().hex[:8]
    schema, port = f"registry_e2e_proc_{u}", _free_port()
    env = {
        **os.environ,
        "TESSERA_PG_DSN": pg_dsn,
        "TESSERA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TESSERA_GRPC_PORT": str(port),
        "TESSERA_METRICS_PORT": str(_free_port()),
        "TESSERA_REGISTRY_HTTP_PORT": str(_free_port()),
        "TESSERA_REGISTRY_SCHEMA": schema,
        "TESSERA_REGISTRY_EVENTS_TOPIC": f"test.e2e.proc.{u}",
        "TESSERA_REGISTRY_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    log = tmp_path / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.registry"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        status = None
        while process.poll() is None and time.monotonic() < deadline:
            status = _health(port)
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.3)
        assert status == health_pb2.HealthCheckResponse.SERVING, log.read_text()[-3000:]

        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, log.read_text()[-3000:]
        assert _health(port) is None  # nothing listens any more
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_tiny_llama_from_the_registry_streams_tokens_and_logs_them(mesh: Mesh) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed: run `bash infra/vllm/install.sh`")
    from services.fixtures.tiny_llama import build_tiny_llama

    schema = await new_schema(mesh, "llm")
    model = f"{schema}.tiny_llama"
    version = await mesh.admin.register(model, build_tiny_llama())
    endpoint = f"llm-{uuid.uuid4().hex[:6]}"
    stub = mesh.serving_stub()
    created = await stub.CreateEndpoint(
        spb.CreateEndpointRequest(
            name=endpoint, served_models=[spb.ServedModel(model_name=model, version=version)], wait=True
        ),
        metadata=as_("admin"),
    )
    assert [(s.version, s.state, s.runtime) for s in created.status] == [(version, "READY", "llm")]

    request_id = f"e2e-llm-{uuid.uuid4().hex[:6]}"
    sampling = events_pb.SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    chunks = [
        c
        async for c in stub.GenerateStream(
            spb.GenerateRequest(endpoint=endpoint, prompt="Sort a list.", sampling=sampling, request_id=request_id),
            metadata=as_("admin"),
        )
    ]
    assert len(chunks) > 1 and chunks[-1].completion_tokens == 12 and chunks[-1].finish_reason == "length"
    assert (chunks[-1].served_model, chunks[-1].model_version) == (model, str(version))

    logged = await eventually(lambda: _records_with(mesh, endpoint, {request_id}))
    (record,) = logged
    assert (record.status, record.completion_tokens, record.source) == ("OK", 12, "grpc")
    assert record.outputs["text"] == "".join(c.text_delta for c in chunks)
