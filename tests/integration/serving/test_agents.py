"""RAG agents served like models: retrieval -> prompt -> the LLM endpoint, answered with citations everywhere.

The serving process, registry, Kafka topics and vLLM engine are the session's
(conftest.py); this module adds a real retrieval service that checks grants
with that registry, a corpus index, and an agent version pointing at both. The
tiny Llama answers nonsense: the tests check the plumbing (the citations are
the documents retrieval returns for the question, the prompt holds them, the
payload logs and spans say so), the rights used, and the refusals.
"""

from __future__ import annotations

import secrets
import struct
import uuid
from dataclasses import dataclass

import grpc
import openai
import pytest
from google.protobuf import json_format
from inference import grpc_service_pb2 as oip
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2 as qpb
from tessera.retrieval.v1 import retrieval_pb2_grpc
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from services.fixtures.agents import (
    RUNBOOKS,
    agent_spec,
    create_agent_endpoint,
    create_corpus_index,
    register_agent,
    retrieval_for_agents,
)
from services.retrieval.app import RetrievalApp
from services.serving.agents import RetrievalClient
from tests.integration.serving.conftest import ALICE, BOB, SERVICE, TOKENS, Mesh
from tests.polling import eventually

pytestmark = pytest.mark.integration

QUESTION = "what to do when the model's input features drift away from the training data"
SAMPLING = events_pb.SamplingParams(temperature=0.0, max_tokens=8)
K = 3


@dataclass
class AgentWorld:
    retrieval: RetrievalApp
    retrieval_stub: retrieval_pb2_grpc.RetrievalServiceStub
    catalog: str
    index: str
    agent_model: str
    agent_version: int
    endpoint: str

    async def expected_ids(self, question: str = QUESTION, token: str = ALICE) -> list[str]:
        """What retrieval itself returns for the question, asked directly as the caller."""
        reply = await self.retrieval_stub.Query(
            qpb.QueryRequest(index=self.index, text=question, k=K, mode=qpb.HYBRID), metadata=bearer(token)
        )
        return [hit.id for hit in reply.hits]


@pytest.fixture(scope="module")
async def world(mesh: Mesh, pg_dsn: str, kafka_bootstrap: str):
    suffix = uuid.uuid4().hex[:8]
    # The session's serving process started before this retrieval service: its agents are pointed here.
    async with retrieval_for_agents(
        mesh.serving.agents,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        auth_tokens=TOKENS,
        service_token=SERVICE,
        registry_address=mesh.registry_address,
        registry_events_topic=mesh.registry_topic,
    ) as (retrieval, channel):
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        catalog = mesh.llm_model.split(".")[0]
        await mesh.registry.stub.CreateSchema(
            rpb.CreateSchemaRequest(catalog_name=catalog, name="docs"), metadata=mesh.registry.md
        )
        docs_schema = f"{catalog}.docs"
        # alice may build and read the index; bob may reach the catalog (conftest) but not this schema.
        await mesh.registry.grant(
            rpb.SECURABLE_TYPE_SCHEMA, docs_schema, "alice", [rpb.PRIVILEGE_USE_SCHEMA, rpb.PRIVILEGE_MODIFY]
        )
        index = f"{docs_schema}.runbooks"
        await create_corpus_index(stub, ALICE, index, RUNBOOKS)
        agent_model = f"{catalog}.models.runbook_agent"
        version = await register_agent(mesh.registry, agent_model, agent_spec(mesh.llm_endpoint, index, k=K))
        await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, agent_model, "alice", [rpb.PRIVILEGE_EXECUTE])
        endpoint = f"agent-{suffix}"
        created = await create_agent_endpoint(mesh.serving_stub(), ALICE, endpoint, agent_model, version)
        assert created.state == "READY", created.state_reason
        assert created.status[0].runtime == "agent"
        yield AgentWorld(retrieval, stub, catalog, index, agent_model, version, endpoint)


def _bytes_tensor(raw: bytes) -> list[str]:
    """An OIP BYTES tensor's raw contents: each element a 4-byte little-endian length and its bytes."""
    items, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return items


def _logged(record) -> dict:
    return json_format.MessageToDict(record, preserving_proto_field_name=True)


async def test_answers_with_citations_of_the_retrieved_documents_on_every_front_end(
    mesh: Mesh, world: AgentWorld
) -> None:
    expected = await world.expected_ids()
    assert len(expected) == K and expected[0] == "runbook-drift"
    stub = mesh.serving_stub()
    ids = {name: f"agent-{name}-{uuid.uuid4().hex[:8]}" for name in ("grpc", "stream", "oip", "kafka")}

    answer = await stub.Generate(
        pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING, request_id=ids["grpc"]),
        metadata=bearer(ALICE),
        timeout=300,
    )
    assert [c.id for c in answer.citations] == expected
    assert answer.citations[0].text == RUNBOOKS["runbook-drift"]
    assert answer.served_model == world.agent_model and answer.completion_tokens > 0

    chunks = [
        chunk
        async for chunk in stub.GenerateStream(
            pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING, request_id=ids["stream"]),
            metadata=bearer(ALICE),
            timeout=300,
        )
    ]
    assert [c.id for c in chunks[0].citations] == expected
    assert chunks[-1].finish_reason

    request = oip.ModelInferRequest(model_name=world.endpoint, id=ids["oip"])
    text_input = request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    text_input.contents.bytes_contents.append(QUESTION.encode())
    request.parameters["max_tokens"].int64_param = 8
    inferred = await mesh.oip_stub().ModelInfer(request, metadata=bearer(ALICE), timeout=300)
    outputs = {o.name: raw for o, raw in zip(inferred.outputs, inferred.raw_output_contents, strict=True)}
    assert "text_output" in outputs
    assert _bytes_tensor(outputs["citations"]) == expected

    await mesh.send_request(
        events_pb.InferenceRequest(
            request_id=ids["kafka"], endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING, auth_token=ALICE
        )
    )
    (response,) = (await mesh.responses.wait_for([ids["kafka"]], timeout=300))[ids["kafka"]]
    assert response.status == "OK", response.error_message
    assert [c.id for c in response.citations] == expected

    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{mesh.serving.http_port}/v1", api_key=ALICE, max_retries=0, timeout=300
    )
    reply = await client.chat.completions.create(
        model=world.endpoint,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
    )
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].message.model_extra["citations"] == expected
    sources = reply.model_extra["tessera"]
    assert [p["id"] for p in sources["retrieved_context"]] == expected
    assert sources["retrieved_context"][0]["text"] == RUNBOOKS["runbook-drift"]

    streamed = await client.chat.completions.create(
        model=world.endpoint, messages=[{"role": "user", "content": QUESTION}], max_tokens=8, stream=True
    )
    cited = [chunk.model_extra["tessera"]["citations"] async for chunk in streamed if "tessera" in chunk.model_extra]
    assert cited == [expected]

    completion = await client.completions.create(model=world.endpoint, prompt=QUESTION, max_tokens=8, temperature=0)
    assert completion.choices[0].model_extra["citations"] == expected
    assert [p["id"] for p in completion.model_extra["tessera"]["retrieved_context"]] == expected
    streamed = await client.completions.create(model=world.endpoint, prompt=QUESTION, max_tokens=8, stream=True)
    cited = [chunk.model_extra["tessera"]["citations"] async for chunk in streamed if "tessera" in chunk.model_extra]
    assert cited == [expected]

    response = await client.responses.create(model=world.endpoint, input=QUESTION, max_output_tokens=8)
    (annotations,) = [part.annotations for part in response.output[0].content]
    assert [(a.type, a.file_id) for a in annotations] == [("file_citation", i) for i in expected]
    assert {a.index for a in annotations} == {len(response.output_text)}
    assert [p["id"] for p in response.model_extra["tessera"]["retrieved_context"]] == expected
    await client.close()


async def test_payload_logs_hold_the_retrieved_context_and_the_prompt_under_one_trace(
    mesh: Mesh, world: AgentWorld
) -> None:
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"  # sampled: serving records its spans
    rid = f"agent-log-{uuid.uuid4().hex[:8]}"
    expected = await world.expected_ids()
    await mesh.serving_stub().Generate(
        pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING, request_id=rid),
        metadata=(*bearer(ALICE), ("traceparent", traceparent)),
        timeout=300,
    )
    llm_rid = f"{rid}.llm"
    logged = await mesh.payloads.wait_for([rid, llm_rid], timeout=120)
    (agent_record,) = logged[rid]
    (llm_record,) = logged[llm_rid]
    agent_log, llm_log = _logged(agent_record), _logged(llm_record)

    assert agent_log["status"] == "OK" and agent_log["endpoint"] == world.endpoint
    context = agent_log["inputs"]["retrieved_context"]
    assert [p["id"] for p in context] == expected
    assert all(p["text"] == RUNBOOKS[p["id"]] and isinstance(p["score"], float) for p in context)
    assert agent_log["inputs"]["prompt"] == QUESTION
    assert agent_log["outputs"]["citations"] == expected

    # The LLM endpoint's own record: its prompt holds the question and every cited passage, labelled.
    assert llm_log["endpoint"] == mesh.llm_endpoint and llm_log["source"] == "agent"
    assert llm_log["principal"] == "alice"
    prompt = llm_log["inputs"]["prompt"]
    assert QUESTION in prompt
    for doc_id in expected:
        assert f"[{doc_id}] {RUNBOOKS[doc_id]}" in prompt
    assert llm_log["labels"]["agent_request_id"] == rid
    assert agent_record.trace_id == llm_record.trace_id == trace_id

    names = {s.name for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id}
    assert {"agent.retrieve", "agent.prompt", "agent.generate"} <= names


async def test_lineage_index_and_llm_version_to_agent_version_to_endpoint(mesh: Mesh, world: AgentWorld) -> None:
    node = rpb.LineageNode(type="MODEL_VERSION", name=f"{world.agent_model}/{world.agent_version}")

    async def edges(direction: int) -> set[tuple[str, str, str, str]]:
        graph = await mesh.registry.stub.GetLineage(
            rpb.GetLineageRequest(node=node, direction=direction, max_depth=1), metadata=mesh.registry.md
        )
        return {(e.source.type, e.source.name, e.target.type, e.target.name) for e in graph.edges}

    agent = ("MODEL_VERSION", node.name)
    upstream = {("VECTOR_INDEX", world.index, *agent), ("MODEL_VERSION", f"{mesh.llm_model}/1", *agent)}
    assert upstream <= await eventually(lambda: edges(rpb.LINEAGE_DIRECTION_UPSTREAM))
    assert (*agent, "SERVING_ENDPOINT", world.endpoint) in await edges(rpb.LINEAGE_DIRECTION_DOWNSTREAM)


async def test_the_caller_needs_the_index_grant_and_execute_on_the_llm_endpoint(mesh: Mesh, world: AgentWorld) -> None:
    stub = mesh.serving_stub()
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, world.endpoint, "bob", [rpb.PRIVILEGE_EXECUTE])

    async def bob_asks(rid: str) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Generate(
                pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING, request_id=rid),
                metadata=bearer(BOB),
                timeout=300,
            )
        return caught.value

    # No USE_SCHEMA on the index's schema: retrieval refuses bob, though the agent endpoint lets him in.
    no_index = await eventually(lambda: _refusal(bob_asks, f"agent-noindex-{uuid.uuid4().hex[:8]}"), timeout=60)
    assert no_index.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.index in no_index.details()
    assert not any(body in no_index.details() for body in RUNBOOKS.values())
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{mesh.serving.http_port}/v1", api_key=BOB, max_retries=0, timeout=300
    )
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(
            model=world.endpoint, messages=[{"role": "user", "content": QUESTION}], max_tokens=4
        )
    await client.close()
    assert refused.value.status_code == 403
    assert not any(body in str(refused.value.body) for body in RUNBOOKS.values())

    # With the index grant, EXECUTE on the LLM endpoint is still missing: refused again.
    await mesh.registry.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{world.catalog}.docs", "bob", [rpb.PRIVILEGE_USE_SCHEMA])
    await eventually(lambda: _bob_may_query(world), timeout=60)
    rid = f"agent-nollm-{uuid.uuid4().hex[:8]}"
    no_llm = await bob_asks(rid)
    assert no_llm.code() == grpc.StatusCode.PERMISSION_DENIED
    assert mesh.llm_endpoint in no_llm.details()
    assert not any(body in no_llm.details() for body in RUNBOOKS.values())
    # Nothing leaked into the agent's log: the call failed, so no answer, no citations.
    logged = (await mesh.payloads.wait_for([rid], timeout=120))[rid]
    failed = _logged(logged[0])
    assert failed["status"] == "PERMISSION_DENIED"
    assert "citations" not in failed.get("outputs", {})
    assert not failed.get("outputs", {}).get("text")

    # The same caller with EXECUTE on the LLM endpoint gets the answer: the agent adds no rights of its own.
    # (The session's LLM endpoint is shared: the grant is taken back after, for the tests that refuse bob.)
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, mesh.llm_endpoint, "bob", [rpb.PRIVILEGE_EXECUTE])
    try:
        answer = await eventually(_bob_answered(stub, world), timeout=90)
    finally:
        await mesh.registry.revoke(rpb.SECURABLE_TYPE_ENDPOINT, mesh.llm_endpoint, "bob", [rpb.PRIVILEGE_EXECUTE])
    assert answer is not None and [c.id for c in answer.citations] == await world.expected_ids(token=BOB)


def _bob_answered(stub, world: AgentWorld):

    async def bob_answered():
        try:
            return await stub.Generate(
                pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING),
                metadata=bearer(BOB),
                timeout=300,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            return None

    return bob_answered


async def _refusal(ask, rid: str) -> grpc.aio.AioRpcError | None:
    error = await ask(rid)
    return error if error.code() == grpc.StatusCode.PERMISSION_DENIED else None


async def _bob_may_query(world: AgentWorld) -> bool:
    try:
        await world.expected_ids(token=BOB)
        return True
    except grpc.aio.AioRpcError:
        return False


BAD_SPECS = {
    "not-json": ("{'llm_endpoint': ", "not valid JSON"),
    "no-question": (
        {"llm_endpoint": "x", "index": "a.b.c", "prompt_template": "only {context}"},
        "must contain {question}",
    ),
    "k-too-large": (
        {"llm_endpoint": "x", "index": "a.b.c", "prompt_template": "{context} {question}", "k": 100000},
        "k must be",
    ),
    "unknown-field": (
        {"llm_endpoint": "x", "index": "a.b.c", "prompt_template": "{context} {question}", "tools": []},
        "unknown field",
    ),
    "bad-index": ({"llm_endpoint": "x", "index": "Bad Index", "prompt_template": "{context} {question}"}, "index"),
}


async def test_bad_agent_specs_fail_at_load_with_the_reason(mesh: Mesh, world: AgentWorld) -> None:
    stub = mesh.serving_stub()
    model = f"{world.catalog}.models.bad_agent"
    first = True
    for name, (spec, reason) in BAD_SPECS.items():
        version = await register_agent(mesh.registry, model, spec, new_model=first)
        if first:
            await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
        first = False
        endpoint = f"bad-agent-{name}-{uuid.uuid4().hex[:6]}"
        created = await create_agent_endpoint(stub, ALICE, endpoint, model, version)
        assert created.state == "FAILED", name
        assert "agent.json" in created.state_reason and reason in created.state_reason, created.state_reason
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Generate(pb.GenerateRequest(endpoint=endpoint, prompt=QUESTION), metadata=bearer(ALICE))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason in caught.value.details()
        await stub.DeleteEndpoint(pb.DeleteEndpointRequest(name=endpoint), metadata=bearer(ALICE))


async def test_an_agent_may_not_use_another_agent_as_its_llm(mesh: Mesh, world: AgentWorld) -> None:
    model = f"{world.catalog}.models.agent_on_agent"
    version = await register_agent(mesh.registry, model, agent_spec(world.endpoint, world.index, k=K))
    await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
    endpoint = f"agent-on-agent-{uuid.uuid4().hex[:6]}"
    created = await create_agent_endpoint(mesh.serving_stub(), ALICE, endpoint, model, version)
    assert created.state == "READY"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.serving_stub().Generate(
            pb.GenerateRequest(endpoint=endpoint, prompt=QUESTION, sampling=SAMPLING), metadata=bearer(ALICE)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "serves an agent" in caught.value.details()
    await mesh.serving_stub().DeleteEndpoint(pb.DeleteEndpointRequest(name=endpoint), metadata=bearer(ALICE))


async def test_a_dead_retrieval_service_is_unavailable_and_serving_goes_on(mesh: Mesh, world: AgentWorld) -> None:
    agents = mesh.serving.agents
    live = agents.retrieval
    with socketless_port() as dead:
        agents.retrieval = RetrievalClient(f"127.0.0.1:{dead}", timeout_s=5)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await mesh.serving_stub().Generate(
                    pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING),
                    metadata=bearer(ALICE),
                    timeout=60,
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "retrieval" in caught.value.details()
        finally:
            await agents.retrieval.close()
            agents.retrieval = live
    answer = await mesh.serving_stub().Generate(
        pb.GenerateRequest(endpoint=world.endpoint, prompt=QUESTION, sampling=SAMPLING),
        metadata=bearer(ALICE),
        timeout=300,
    )
    assert [c.id for c in answer.citations] == await world.expected_ids()


class socketless_port:  # noqa: N801 - used as a context manager, reads like one
    """A port nothing listens on: bound (so nobody else takes it) but never listening."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return self._socket.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self._socket.close()
