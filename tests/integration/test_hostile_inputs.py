"""Hostile inputs against the whole mesh: each is refused cleanly and every service keeps answering health.

A prober in a process of its own (tests/integration/health_prober.py) calls
grpc.health.v1 Check on registry, serving, retrieval and monitoring every
100 ms with a 1 s deadline for the whole module; the services run in this
test's process, so a stalled event loop or a held GIL shows up as a missed
deadline there. `test_every_service_answered_health_throughout`, the last
test, asserts no probe failed and names the test that was running when one did.

The inputs, and what each must get:
- 12 KB request ids and names (OIP ModelInfer id and model name, Generate
  request_id, CreateEndpoint name, monitoring endpoint and monitor ids,
  retrieval index names): INVALID_ARGUMENT with a short status message (not
  the value echoed back); and a good request logged after
  the long id still reaches the inference table (the ingest is not wedged);
- an 8,000-digit registry search filter, a 64 KB one and a deeply nested one
  (gRPC and MLflow REST): INVALID_ARGUMENT;
- tensors beyond serving's max request bytes (to a real endpoint and to one
  that does not exist): RESOURCE_EXHAUSTED;
- a TorchScript model whose forward reads a file with torch.from_file: its
  endpoint is refused or its model FAILED with a reason, and the file's bytes
  never come back;
- a lineage cycle A -> B -> A walked with max_depth 0: answers, with two nodes;
- garbage bytes and oversize records on the serving requests, payload logs and
  retrieval sync topics: each lands in the topic's DLQ with a `tessera-error`
  header, and a good record sent after each is processed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, TopicPartition
from tessera.events.v1 import payload_log_pb2 as plpb
from tessera.events.v1 import retrieval_pb2 as rspb
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2 as qpb
from tessera.serving.v1 import serving_pb2 as spb

from services.common.kafka_consumer import ERROR_HEADER
from services.common.kafka_producer import EventProducer
from services.fixtures.tabular import build_tabular_model
from tests.integration.mesh_support import (
    TOKENS,
    HealthWatch,
    Mesh,
    as_,
    eventually,
    running_mesh,
    tabular_request,
)

pytestmark = pytest.mark.integration

LONG = 12 * 1024
# Serving's request limit for this module: small, so "oversize" stays cheap to send.
MAX_REQUEST_BYTES = 1024 * 1024
# Beyond any per-record bound a consumer should accept, below Kafka's 16 MiB message limit (room for DLQ headers).
OVERSIZE_RECORD = 15 * 1024 * 1024
# A status message longer than this echoes client input it should have bounded.
MAX_STATUS_MESSAGE = 4096


def long_text(n: int = LONG) -> str:
    """Incompressible URL-safe text of exactly n characters (index rows cannot compress it below the btree limit)."""
    return secrets.token_urlsafe(n)[:n]


@dataclass
class Stage:
    mesh: Mesh
    watch: HealthWatch
    catalog: str
    schema: str
    model: str
    endpoint: str
    index: str
    experiment_id: str
    producer: EventProducer
    # The file-reading model, scripted before the prober starts (scripting holds the GIL for long stretches).
    reader: Path
    secret: Path


@pytest_asyncio.fixture(scope="module")
async def stage(pg_dsn: str, kafka_bootstrap: str, tmp_path_factory) -> Stage:
    async with running_mesh(
        pg_dsn,
        kafka_bootstrap,
        registry_http=True,
        retrieval_sync=True,
        serving_max_request_bytes=MAX_REQUEST_BYTES,
    ) as mesh:
        u = uuid.uuid4().hex[:8]
        catalog, schema = f"hostile{u}", f"hostile{u}.s"
        model = f"{schema}.scorer"
        md = as_("admin")
        await mesh.admin.ensure_schema(catalog, "s")
        folder = await asyncio.to_thread(build_tabular_model, tmp_path_factory.mktemp("tabular"), 1.0)
        version = await mesh.admin.register(model, folder)
        await mesh.grant_service_reads(catalog, schema, model)
        endpoint = f"hostile-ep-{u}"
        created = await mesh.serving_stub().CreateEndpoint(
            spb.CreateEndpointRequest(
                name=endpoint, served_models=[spb.ServedModel(model_name=model, version=version)], wait=True
            ),
            metadata=md,
        )
        assert created.state == "READY", created
        index = f"{catalog}.s.docs"
        await mesh.retrieval_stub().CreateIndex(qpb.CreateIndexRequest(name=index, dimension=3), metadata=md)
        experiment = await mesh.registry_stub().CreateExperiment(
            rpb.CreateExperimentRequest(name=f"hostile-exp-{u}", schema_full_name=schema), metadata=md
        )
        await mesh.registry_stub().CreateRun(rpb.CreateRunRequest(experiment_id=experiment.experiment_id), metadata=md)
        producer = EventProducer(mesh.kafka_bootstrap, client_id=f"hostile-{u}")
        scratch = tmp_path_factory.mktemp("reader")
        secret = scratch / "secret.txt"
        secret.write_bytes(b"TESSERA-HOSTILE-SECRET-" + uuid.uuid4().hex.encode())
        reader = build_file_reading_model(scratch / "model", secret)

        # The prober starts once the mesh is set up: the guarantee is about hostile input, not start-up.
        watch = HealthWatch(mesh.addresses)
        await asyncio.to_thread(watch.wait_ready)
        try:
            yield Stage(
                mesh, watch, catalog, schema, model, endpoint, index, experiment.experiment_id, producer, reader, secret
            )
        finally:
            watch.stop()
            producer.close()


@pytest.fixture(autouse=True)
def attributed(request, stage: Stage):
    """Probe failures are reported with the test that was running when they happened."""
    stage.watch.mark(request.node.name)
    yield
    stage.watch.mark(f"after {request.node.name}")


def assert_refused(exc: pytest.ExceptionInfo, wanted: grpc.StatusCode) -> None:
    code, details = exc.value.code(), exc.value.details() or ""
    # gRPC clients drop trailers over 8 KB (at random between 8 and 16 KB): a status message that echoes
    # the oversize value may never arrive, so the message itself must stay short.
    assert "metadata size exceeds" not in details, f"the service echoed the oversize value in its error: {details}"
    assert len(details) <= MAX_STATUS_MESSAGE, f"a {len(details)}-character status message: {details[:200]}..."
    assert code == wanted, f"{code.name}: {details[:300]}"


# -- long ids and names --------------------------------------------------------------------------------


async def test_long_oip_request_id_is_refused_and_ingest_keeps_going(stage: Stage) -> None:
    mesh, md = stage.mesh, as_("admin")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.oip_stub().ModelInfer(tabular_request(stage.endpoint, long_text()), metadata=md, timeout=30)
    assert_refused(refused, grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await mesh.oip_stub().ModelInfer(tabular_request(long_text(), "hostile-long-name"), metadata=md, timeout=30)
    assert_refused(unknown, grpc.StatusCode.INVALID_ARGUMENT)

    # Whatever was logged for those calls must not wedge monitoring's ingest: a good call after them is recorded.
    good = f"hostile-after-long-{uuid.uuid4().hex[:8]}"
    await mesh.oip_stub().ModelInfer(tabular_request(stage.endpoint, good), metadata=md, timeout=30)
    assert await eventually(lambda: recorded(mesh, stage.endpoint, good), timeout=45), (
        "a good request after a long id never reached the inference table"
    )


async def recorded(mesh: Mesh, endpoint: str, request_id: str) -> bool:
    reply = await mesh.monitoring_stub().ListInferenceRecords(
        mpb.ListInferenceRecordsRequest(endpoint=endpoint), metadata=as_("admin"), timeout=10
    )
    return request_id in {r.request_id for r in reply.records}


async def test_long_generate_request_id_is_refused(stage: Stage) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stage.mesh.serving_stub().Generate(
            spb.GenerateRequest(endpoint=stage.endpoint, prompt="hi", request_id=long_text()),
            metadata=as_("admin"),
            timeout=30,
        )
    assert_refused(refused, grpc.StatusCode.INVALID_ARGUMENT)


async def test_long_endpoint_name_is_refused(stage: Stage) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stage.mesh.serving_stub().CreateEndpoint(
            spb.CreateEndpointRequest(
                name=long_text(), served_models=[spb.ServedModel(model_name=stage.model, version=1)]
            ),
            metadata=as_("admin"),
            timeout=30,
        )
    assert_refused(refused, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "call",
    [
        "ListInferenceRecords",
        "CreateMonitor",
        "GetMonitor",
        "ListMonitors",
        "GetProfiles",
    ],
)
async def test_long_monitoring_names_are_refused(stage: Stage, call: str) -> None:
    name = long_text()
    monitor = mpb.Monitor(endpoint=name, window_seconds=60, features=[mpb.FeatureSpec(path="latency_ms")])
    monitor.baseline.reference.values.add(feature="latency_ms", numbers=[1.0, 2.0, 3.0])
    requests = {
        "ListInferenceRecords": mpb.ListInferenceRecordsRequest(endpoint=name),
        "CreateMonitor": mpb.CreateMonitorRequest(monitor=monitor),
        "GetMonitor": mpb.GetMonitorRequest(monitor_id=name),
        "ListMonitors": mpb.ListMonitorsRequest(endpoint=name),
        "GetProfiles": mpb.GetProfilesRequest(monitor_id=name),
    }
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stage.mesh.monitoring_stub(), call)(requests[call], metadata=as_("admin"), timeout=30)
    assert_refused(refused, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize("call", ["CreateIndex", "DescribeIndex", "Query", "UpsertDocuments"])
async def test_long_retrieval_names_are_refused(stage: Stage, call: str) -> None:
    # A well-formed catalog.schema.index name whose index part is 12 KB long.
    name = f"{stage.catalog}.s.i{long_text().lower().replace('-', '_')}"
    requests = {
        "CreateIndex": qpb.CreateIndexRequest(name=name, dimension=3),
        "DescribeIndex": qpb.DescribeIndexRequest(name=name),
        "Query": qpb.QueryRequest(index=name, vector=[1, 0, 0], k=1),
        "UpsertDocuments": qpb.UpsertDocumentsRequest(
            index=stage.index, documents=[qpb.Document(id=long_text(), version=1, vector=[1, 0, 0])]
        ),
    }
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stage.mesh.retrieval_stub(), call)(requests[call], metadata=as_("admin"), timeout=30)
    assert_refused(refused, grpc.StatusCode.INVALID_ARGUMENT)


# -- registry search filters -----------------------------------------------------------------------------

DIGITS = "metrics.x < " + "1" * 8000 + "a"
LONG_FILTER = "attributes.run_id IN (" + ",".join(["'r'"] * 16000) + ")"
NESTED = "(" * 5000 + "params.p = 'v'" + ")" * 5000
FILTERS = {"8000 digits": DIGITS, "64 KB": LONG_FILTER, "nested": NESTED}


@pytest.mark.parametrize("kind", sorted(FILTERS))
async def test_pathological_search_filters_are_refused(stage: Stage, kind: str) -> None:
    registry, md, text = stage.mesh.registry_stub(), as_("admin"), FILTERS[kind]
    with pytest.raises(grpc.aio.AioRpcError) as runs:
        await registry.SearchRuns(
            rpb.SearchRunsRequest(experiment_ids=[stage.experiment_id], filter=text), metadata=md, timeout=60
        )
    assert_refused(runs, grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError) as experiments:
        await registry.SearchExperiments(rpb.SearchExperimentsRequest(filter=text), metadata=md, timeout=60)
    assert_refused(experiments, grpc.StatusCode.INVALID_ARGUMENT)


async def test_pathological_search_filter_over_mlflow_rest_is_refused(stage: Stage) -> None:
    body = json.dumps({"experiment_ids": [stage.experiment_id], "filter": DIGITS}).encode()
    request = urllib.request.Request(stage.mesh.registry_http + "/api/2.0/mlflow/runs/search", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {TOKENS['admin']}")
    request.add_header("Content-Type", "application/json")

    def send() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    status, answer = await asyncio.to_thread(send)
    assert (status, answer.get("error_code")) == (400, "INVALID_PARAMETER_VALUE"), (status, answer)


# -- oversize tensors -------------------------------------------------------------------------------------


def big_request(endpoint: str, rows: int):
    request = tabular_request(endpoint, f"hostile-big-{uuid.uuid4().hex[:8]}")
    request.inputs[0].shape[:] = [rows, 4]
    request.inputs[1].shape[:] = [rows]
    request.raw_input_contents[0] = bytes(rows * 16)
    request.raw_input_contents[1] = bytes(rows * 8)
    return request


@pytest.mark.parametrize(("where", "size"), [("endpoint", 2 * MAX_REQUEST_BYTES), ("nowhere", 8 * MAX_REQUEST_BYTES)])
async def test_oversize_tensor_is_refused(stage: Stage, where: str, size: int) -> None:
    endpoint = stage.endpoint if where == "endpoint" else f"no-such-endpoint-{uuid.uuid4().hex[:6]}"
    request = big_request(endpoint, size // 24)
    assert request.ByteSize() > MAX_REQUEST_BYTES
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stage.mesh.oip_stub().ModelInfer(request, metadata=as_("admin"), timeout=60)
    assert_refused(refused, grpc.StatusCode.RESOURCE_EXHAUSTED)


# -- a model that reads files -----------------------------------------------------------------------------


def build_file_reading_model(out_dir: Path, secret: Path) -> Path:
    """A TorchScript model whose forward returns the bytes of `secret` (torch.from_file)."""
    import torch

    class Reader(torch.nn.Module):
        def __init__(self, path: str, size: int) -> None:
            super().__init__()
            self.path = path
            self.size = size

        def forward(self, features: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
            data = torch.from_file(self.path, size=self.size, dtype=torch.uint8)
            return data.to(torch.float32).unsqueeze(0)

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Reader(str(secret), secret.stat().st_size)).save(str(out_dir / "model.pt"))
    signature = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "category", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, -1]}],
    }
    (out_dir / "signature.json").write_text(json.dumps(signature))
    return out_dir


async def test_a_file_reading_model_never_serves_the_file(stage: Stage) -> None:
    mesh, md, secret = stage.mesh, as_("admin"), stage.secret
    model = f"{stage.schema}.reader_{uuid.uuid4().hex[:6]}"
    version = await mesh.admin.register(model, stage.reader)
    await mesh.grant_service_reads(stage.catalog, stage.schema, model)
    endpoint = f"hostile-reader-{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    try:
        try:
            created = await mesh.serving_stub().CreateEndpoint(
                spb.CreateEndpointRequest(
                    name=endpoint, served_models=[spb.ServedModel(model_name=model, version=version)], wait=True
                ),
                metadata=md,
                timeout=120,
            )
        except grpc.aio.AioRpcError as refused:
            # Refused outright (e.g. a graph check at upload or deploy): fine, as long as it says why.
            assert refused.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
            assert secret.read_text() not in refused.details()
            return
        seen.append(str(created))
        states = [(s.state, s.state_reason) for s in created.status]
        if any(state == "READY" for state, _ in states):
            try:
                reply = await mesh.oip_stub().ModelInfer(tabular_request(endpoint, "hostile-reader"), metadata=md)
                seen.append(
                    bytes(b for chunk in reply.raw_output_contents for b in _floats_as_bytes(chunk)).decode("latin-1")
                )
            except grpc.aio.AioRpcError as exc:
                seen.append(exc.details() or "")
        assert not any(secret.read_text() in text for text in seen), "the model served the file's bytes"
        assert not any(str(secret.stat().st_size) + " is smaller" in text for text in seen), (
            "an error told the file size"
        )
        assert states and all(state == "FAILED" and reason for state, reason in states), (
            f"a model that reads files must fail to load with a reason, got {states}"
        )
    finally:
        try:
            await mesh.serving_stub().DeleteEndpoint(spb.DeleteEndpointRequest(name=endpoint), metadata=md)
        except grpc.aio.AioRpcError:
            pass


def _floats_as_bytes(chunk: bytes) -> list[int]:
    """The reader returns each byte of the file as one FP32 value."""
    return [min(255, max(0, int(v))) for v in struct.unpack(f"<{len(chunk) // 4}f", chunk)]


# -- lineage cycles ---------------------------------------------------------------------------------------


async def test_a_lineage_cycle_walk_is_finite(stage: Stage) -> None:
    registry, md = stage.mesh.registry_stub(), as_("admin")
    a = rpb.LineageNode(type="TABLE", name=f"hostile.cycle_a_{uuid.uuid4().hex[:6]}")
    b = rpb.LineageNode(type="TABLE", name=f"hostile.cycle_b_{uuid.uuid4().hex[:6]}")
    await registry.CreateLineageEdge(rpb.CreateLineageEdgeRequest(source=a, target=b), metadata=md)
    await registry.CreateLineageEdge(rpb.CreateLineageEdgeRequest(source=b, target=a), metadata=md)
    try:
        for direction in (rpb.LINEAGE_DIRECTION_DOWNSTREAM, rpb.LINEAGE_DIRECTION_UPSTREAM):
            walk = await registry.GetLineage(
                rpb.GetLineageRequest(node=a, direction=direction, max_depth=0), metadata=md, timeout=60
            )
            assert {(n.type, n.name) for n in walk.nodes} == {(a.type, a.name), (b.type, b.name)}
            assert len(walk.edges) == 2, walk.edges
    finally:
        for source, target in ((a, b), (b, a)):
            await registry.DeleteLineageEdge(rpb.DeleteLineageEdgeRequest(source=source, target=target), metadata=md)


# -- garbage and oversize Kafka records -------------------------------------------------------------------


def dlq_records(bootstrap: str, topic: str, keys: set[str], timeout_s: float = 60.0) -> dict[str, dict[str, str]]:
    """Headers of the DLQ records of `topic` whose key is in `keys` (read from the start, until all are seen)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"hostile-dlq-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic + ".dlq", 0, 0)])
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and set(found) != keys:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            key = (message.key() or b"").decode("utf-8", "replace")
            if key in keys:
                found[key] = {k: (v or b"").decode("utf-8", "replace")[:200] for k, v in message.headers() or []}
    finally:
        consumer.close()
    return found


def garbage() -> bytes:
    return b"\x00\xff\xfe garbage \x13\x37" + secrets.token_bytes(64)


async def send_raw(stage: Stage, topic: str, value: bytes, key: str, *, signed: bool = False) -> None:
    headers = [("content-type", b"application/x-protobuf")]
    if signed:
        headers.append(("authorization", f"Bearer {TOKENS['admin']}".encode()))
    await stage.producer.send_bytes(topic, value, key=key, headers=headers)


async def test_bad_serving_requests_are_dead_lettered_and_the_partition_moves_on(stage: Stage) -> None:
    mesh = stage.mesh
    topic, u = mesh.topics["requests"], uuid.uuid4().hex[:8]
    from tests.integration.serving.topic_reader import TopicReader

    responses = TopicReader(
        mesh.kafka_bootstrap, mesh.topics["responses"], events_pb.InferenceResponse.FromString, lambda m: m.request_id
    )
    try:
        oversize = events_pb.InferenceRequest(
            request_id=f"hostile-big-{u}",
            endpoint=stage.endpoint,
            auth_token=TOKENS["admin"],
            prompt="x" * OVERSIZE_RECORD,
        )
        bad = {f"hostile-garbage-{u}": garbage(), f"hostile-big-{u}": oversize.SerializeToString()}
        goods = []
        for key, value in bad.items():
            await send_raw(stage, topic, value, key)
            good = f"hostile-good-{key}"
            goods.append(good)
            request = events_pb.InferenceRequest(request_id=good, endpoint=stage.endpoint, auth_token=TOKENS["admin"])
            request.tensors.update({"features": [[1, 2, 3, 4]], "category": [5]})
            await stage.producer.send(topic, request, key=good)
        answered = await responses.wait_for(goods, timeout=60)
        assert all(r[0].status == "OK" for r in answered.values()), answered
    finally:
        responses.close()
    dead = await asyncio.to_thread(dlq_records, mesh.kafka_bootstrap, topic, set(bad))
    assert set(dead) == set(bad) and all(h.get(ERROR_HEADER) for h in dead.values()), dead


def payload(endpoint: str, request_id: str) -> plpb.PayloadLog:
    log = plpb.PayloadLog(
        request_id=request_id, endpoint=endpoint, served_model="m", model_version="1", source="grpc", status="OK"
    )
    log.timestamp.FromNanoseconds(time.time_ns())
    return log


async def test_bad_payload_logs_are_dead_lettered_and_the_partition_moves_on(stage: Stage) -> None:
    mesh = stage.mesh
    topic, u = mesh.topics["payloads"], uuid.uuid4().hex[:8]
    oversize = payload(stage.endpoint, f"hostile-big-{u}")
    oversize.error_message = "x" * OVERSIZE_RECORD
    bad = {
        f"hostile-garbage-{u}": garbage(),
        f"hostile-big-{u}": oversize.SerializeToString(),
        f"hostile-long-id-{u}": payload(stage.endpoint, long_text()).SerializeToString(),
    }
    goods = []
    for key, value in bad.items():
        await send_raw(stage, topic, value, key)
        good = f"hostile-good-{key}"
        goods.append(good)
        await stage.producer.send(topic, payload(stage.endpoint, good), key=good, record_id=good)

    async def all_recorded() -> bool:
        return all([await recorded(mesh, stage.endpoint, good) for good in goods])

    assert await eventually(all_recorded, timeout=60), "good payload logs after bad ones were not ingested"
    dead = await asyncio.to_thread(dlq_records, mesh.kafka_bootstrap, topic, set(bad))
    assert set(dead) == set(bad) and all(h.get(ERROR_HEADER) for h in dead.values()), dead


async def test_bad_sync_records_are_dead_lettered_and_the_partition_moves_on(stage: Stage) -> None:
    mesh = stage.mesh
    topic, u = mesh.topics["sync"], uuid.uuid4().hex[:8]
    up = rspb.RetrievalSyncRecord.UPSERT
    oversize = rspb.RetrievalSyncRecord(
        index=stage.index, op=up, document_id=f"big-{u}", version=1, vector=[1, 0, 0], text="x" * OVERSIZE_RECORD
    )
    bad = {f"hostile-garbage-{u}": garbage(), f"hostile-big-{u}": oversize.SerializeToString()}
    goods = []
    for n, (key, value) in enumerate(bad.items()):
        # Signed, so the oversize record is refused for its size, not for a missing sender.
        await send_raw(stage, topic, value, key, signed=True)
        good = f"good-{n}-{u}"
        goods.append(good)
        record = rspb.RetrievalSyncRecord(
            record_id=good, index=stage.index, op=up, document_id=good, version=1, vector=[0, 0, 1]
        )
        # Sync records carry their sender's token (retrieval checks MODIFY before applying them).
        await stage.producer.send(
            topic, record, key=stage.index, record_id=good, headers={"authorization": f"Bearer {TOKENS['admin']}"}
        )

    async def all_applied() -> bool:
        hits = await mesh.retrieval_stub().Query(
            qpb.QueryRequest(index=stage.index, vector=[0, 0, 1], k=50), metadata=as_("admin"), timeout=10
        )
        return set(goods) <= {h.id for h in hits.hits}

    assert await eventually(all_applied, timeout=60), "good sync records after bad ones were not applied"
    dead = await asyncio.to_thread(dlq_records, mesh.kafka_bootstrap, topic, set(bad))
    assert set(dead) == set(bad) and all(h.get(ERROR_HEADER) for h in dead.values()), dead


# -- the health guarantee ---------------------------------------------------------------------------------


async def test_every_service_answered_health_throughout(stage: Stage) -> None:
    """Runs last: no health probe of any service missed its 1 s deadline while the inputs above were sent."""
    await asyncio.sleep(1.5)  # a probe sent just before this test has until its deadline to be reported
    failures = stage.watch.failures()
    by_test: dict[str, set[str]] = {}
    for failure in failures:
        by_test.setdefault(failure.during, set()).add(f"{failure.address}: {failure.what[:80]}")
    assert not failures, (
        f"{len(failures)} failed health probes, by test: {json.dumps({k: sorted(v) for k, v in by_test.items()}, indent=1)}"
    )
