"""The OpenAI-compatible HTTP API with the stock openai SDK, on the real vLLM engine and the real registry."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import openai
import pytest
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, BOB, MAX_REQUEST_BYTES, MAX_TOKENS, Mesh
from tests.integration.serving.support import replica

pytestmark = pytest.mark.integration

GREEDY = {"temperature": 0.0, "max_tokens": 16, "seed": 1}
MESSAGES = [{"role": "user", "content": "Sort a list."}]


def base_url(mesh: Mesh) -> str:
    return f"http://127.0.0.1:{mesh.serving.http_port}/v1"


def client(mesh: Mesh, token: str = ALICE) -> openai.AsyncOpenAI:
    # No retries: a refused call must show its own status, not the SDK's retry of it.
    return openai.AsyncOpenAI(base_url=base_url(mesh), api_key=token, max_retries=0)


async def test_models_lists_only_the_endpoints_the_caller_may_execute(mesh: Mesh) -> None:
    alice = await client(mesh).models.list()
    bob = await client(mesh, BOB).models.list()

    assert {mesh.llm_endpoint, mesh.tabular_endpoint} <= {m.id for m in alice.data}
    assert mesh.llm_endpoint not in {m.id for m in bob.data}


async def test_the_sync_sdk_answers_chat_and_completions(mesh: Mesh) -> None:
    sync = openai.OpenAI(base_url=base_url(mesh), api_key=ALICE, max_retries=0)

    chat = await asyncio.to_thread(sync.chat.completions.create, model=mesh.llm_endpoint, messages=MESSAGES, **GREEDY)
    completion = await asyncio.to_thread(
        sync.completions.create, model=mesh.llm_endpoint, prompt="Return a sorted list.", **GREEDY
    )

    assert chat.choices[0].message.content and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.completion_tokens > 0 and chat.usage.prompt_tokens > 0
    assert completion.choices[0].text and completion.usage.completion_tokens > 0


async def test_streamed_chat_equals_the_unary_greedy_answer_with_the_same_usage(mesh: Mesh) -> None:
    sdk = client(mesh)

    whole = await sdk.chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES, **GREEDY)
    stream = await sdk.chat.completions.create(
        model=mesh.llm_endpoint, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len({c.id for c in chunks}) == 1


async def test_streamed_completions_equal_the_unary_greedy_answer(mesh: Mesh) -> None:
    sdk = client(mesh)
    prompt = "Return a sorted list."

    whole = await sdk.completions.create(model=mesh.llm_endpoint, prompt=prompt, **GREEDY)
    stream = await sdk.completions.create(
        model=mesh.llm_endpoint, prompt=prompt, stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    chunks = [chunk async for chunk in stream]

    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage == whole.usage


async def test_n_choices_and_prompt_lists_each_get_a_choice(mesh: Mesh) -> None:
    sdk = client(mesh)

    chat = await sdk.chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES, n=2, **GREEDY)
    batch = await sdk.completions.create(model=mesh.llm_endpoint, prompt=["One.", "Two.", "Three."], **GREEDY)

    assert [c.index for c in chat.choices] == [0, 1]
    assert chat.choices[0].message.content == chat.choices[1].message.content  # greedy
    assert [c.index for c in batch.choices] == [0, 1, 2] and all(c.text for c in batch.choices)


async def test_stop_strings_end_the_answer(mesh: Mesh) -> None:
    sdk = client(mesh)
    whole = await sdk.completions.create(model=mesh.llm_endpoint, prompt="Return a sorted list.", **GREEDY)
    text = whole.choices[0].text
    stop = text[len(text) // 2 :][:2] or text[:1]

    stopped = await sdk.completions.create(
        model=mesh.llm_endpoint, prompt="Return a sorted list.", stop=[stop], **GREEDY
    )

    assert stop not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


async def test_the_response_id_is_the_payload_log_request_id_with_usage(mesh: Mesh) -> None:
    sdk = client(mesh)

    raw = await sdk.chat.completions.with_raw_response.create(model=mesh.llm_endpoint, messages=MESSAGES, **GREEDY)
    chat = raw.parse()
    stream = await sdk.completions.create(
        model=mesh.llm_endpoint, prompt="Sort.", stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    chunks = [c async for c in stream]

    assert raw.headers["x-request-id"] == chat.id
    logged = await mesh.payloads.wait_for([chat.id, chunks[0].id])
    unary, streamed = logged[chat.id][0], logged[chunks[0].id][0]
    assert (unary.source, unary.status, unary.principal, unary.endpoint) == ("http", "OK", "alice", mesh.llm_endpoint)
    assert (unary.prompt_tokens, unary.completion_tokens) == (chat.usage.prompt_tokens, chat.usage.completion_tokens)
    assert unary.outputs["text"] == chat.choices[0].message.content
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        chunks[-1].usage.prompt_tokens,
        chunks[-1].usage.completion_tokens,
    )


async def test_a_missing_or_wrong_key_is_401(mesh: Mesh) -> None:
    async with httpx.AsyncClient() as http:
        missing = await http.post(f"{base_url(mesh)}/chat/completions", json={"model": mesh.llm_endpoint})
    with pytest.raises(openai.AuthenticationError) as wrong:
        await client(mesh, "not-a-token").chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES)

    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert wrong.value.status_code == 401


async def test_an_endpoint_the_caller_may_see_but_not_execute_is_403_and_a_hidden_one_404(mesh: Mesh) -> None:
    name = f"seen-{uuid.uuid4().hex[:6]}"
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(name=name, served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)]),
        metadata=bearer(ALICE),
    )
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, name, "bob", [rpb.PRIVILEGE_SELECT])
    bob = client(mesh, BOB)

    with pytest.raises(openai.PermissionDeniedError) as seen:
        await bob.chat.completions.create(model=name, messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as hidden:
        await bob.chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as unknown:
        await client(mesh).completions.create(model="nowhere-at-all", prompt="hi")

    assert seen.value.status_code == 403
    assert hidden.value.code == unknown.value.code == "model_not_found"
    await mesh.serving_stub().DeleteEndpoint(pb.DeleteEndpointRequest(name=name), metadata=bearer(ALICE))


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},  # tool_choice auto
        {"top_logprobs": 2},
        {"response_format": {"type": "json_schema"}},  # no schema
        {"presence_penalty": 0.5},
        {"max_tokens": MAX_TOKENS + 1},
        {"n": 17},
        {"temperature": -1},
        {"stop": ["x"] * 17},
    ],
    ids=["tools", "logprobs", "json", "penalty", "max_tokens", "n", "temperature", "stops"],
)
async def test_what_the_engine_cannot_honour_is_400(mesh: Mesh, extra: dict) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client(mesh).chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES, **extra)

    assert refused.value.status_code == 400 and refused.value.body["type"] == "invalid_request_error"


async def test_unknown_fields_bad_json_and_tensor_endpoints_are_400(mesh: Mesh) -> None:
    sdk = client(mesh)
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES, extra_body={"beam": 4})
    with pytest.raises(openai.BadRequestError) as tensor:
        await sdk.chat.completions.create(model=mesh.tabular_endpoint, messages=MESSAGES)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}) as http:
        garbage = await http.post(f"{base_url(mesh)}/completions", content=b"{not json")

    assert "beam" in unknown.value.message
    assert tensor.value.status_code == 400
    assert garbage.status_code == 400 and garbage.json()["error"]["type"] == "invalid_request_error"


async def test_a_body_over_the_limit_is_refused_before_it_is_read(mesh: Mesh) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        await client(mesh).completions.create(model=mesh.llm_endpoint, prompt="x" * (MAX_REQUEST_BYTES + 1))

    assert refused.value.status_code == 413 and refused.value.body["type"] == "invalid_request_error"


async def test_over_the_concurrency_limit_is_429_with_retry_after(mesh: Mesh) -> None:
    name = f"one-http-{uuid.uuid4().hex[:6]}"
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name,
            served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)],
            max_concurrency=1,
            wait=True,
        ),
        metadata=bearer(ALICE),
    )
    sdk = client(mesh)
    holding = await sdk.completions.create(
        model=name, prompt="Sort.", stream=True, max_tokens=MAX_TOKENS, extra_body={}, temperature=1.0
    )
    try:
        await anext(aiter(holding))  # the first call holds the only slot while it streams
        with pytest.raises(openai.RateLimitError) as refused:
            await sdk.completions.create(model=name, prompt="Sort.")
    finally:
        await holding.close()

    assert refused.value.status_code == 429 and refused.value.response.headers["retry-after"] == "1"
    await mesh.serving_stub().DeleteEndpoint(pb.DeleteEndpointRequest(name=name), metadata=bearer(ALICE))


async def test_responses_continue_a_conversation_on_another_replica(mesh: Mesh) -> None:
    first = await client(mesh).responses.create(
        model=mesh.llm_endpoint, input="Sort a list.", max_output_tokens=8, temperature=0.0
    )
    async with replica(mesh) as second:
        await asyncio.wait_for(second.endpoints.deployment(mesh.llm_endpoint).loaded.wait(), 600)
        other = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{second.http_port}/v1", api_key=ALICE, max_retries=0)
        follow_up = await other.responses.create(
            model=mesh.llm_endpoint, input="Again.", previous_response_id=first.id, max_output_tokens=8
        )
    with pytest.raises(openai.BadRequestError) as not_bobs:
        await client(mesh, BOB).responses.create(model=mesh.llm_endpoint, input="Hi.", previous_response_id=first.id)

    assert first.output_text and first.status in ("completed", "incomplete")
    # The follow-up's prompt holds the whole first turn: its question and its answer.
    assert follow_up.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert follow_up.previous_response_id == first.id
    assert not_bobs.value.status_code == 400
    logged = await mesh.payloads.wait_for([first.id, follow_up.id])
    assert logged[follow_up.id][0].inputs["messages"][1]["content"] == first.output_text


async def test_langchain_chat_openai_invokes_and_streams(mesh: Mesh) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        base_url=base_url(mesh), api_key=ALICE, model=mesh.llm_endpoint, temperature=0.0, max_tokens=16, max_retries=0
    )
    expected = await client(mesh).chat.completions.create(model=mesh.llm_endpoint, messages=MESSAGES, **GREEDY)

    whole = await chat.ainvoke("Sort a list.")
    streamed = "".join([chunk.content async for chunk in chat.astream("Sort a list.")])

    assert whole.content == streamed == expected.choices[0].message.content


async def test_completions_echo_the_prompt_with_its_log_probabilities(mesh: Mesh) -> None:
    """What lm-evaluation-harness's log-likelihood tasks ask: echo, logprobs, one token, greedy."""
    prompt = "Return a sorted list of numbers."

    reply = await client(mesh).completions.create(
        model=mesh.llm_endpoint, prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0.0
    )

    choice, usage = reply.choices[0], reply.usage
    assert choice.text.startswith(prompt)
    tokens = choice.logprobs.tokens
    assert len(tokens) == len(choice.logprobs.token_logprobs) == usage.prompt_tokens + usage.completion_tokens
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs[1:])
    # Greedy: the generated token is the most likely one at its position.
    assert choice.logprobs.token_logprobs[-1] == pytest.approx(max(choice.logprobs.top_logprobs[-1].values()))
    assert choice.logprobs.text_offset == sorted(choice.logprobs.text_offset)


async def test_chat_log_probabilities_with_alternatives(mesh: Mesh) -> None:
    reply = await client(mesh).chat.completions.create(
        model=mesh.llm_endpoint, messages=MESSAGES, logprobs=True, top_logprobs=3, **GREEDY
    )

    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    # Token texts are decoded one by one: a character split over two tokens shows as replacement characters.
    assert all(item.logprob <= 0 for item in content)
    assert all(len(item.top_logprobs) == 3 and item.logprob == item.top_logprobs[0].logprob for item in content)


TINY_TASK = """
task: tessera_tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


async def test_lm_evaluation_harness_local_completions_runs_a_log_likelihood_task(
    mesh: Mesh, tmp_path, monkeypatch
) -> None:
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from services.fixtures.tiny_llama import build_tiny_llama

    docs = [
        {"question": "Return a sorted list of", "choices": [" numbers.", " purple."], "answer": 0},
        {"question": "Open the file and return a", "choices": [" stream.", " banana."], "answer": 0},
        {"question": "Split the pathname into a", "choices": [" pair.", " song."], "answer": 0},
    ]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tiny.yaml").write_text(TINY_TASK.format(data=data))
    monkeypatch.setenv("OPENAI_API_KEY", ALICE)  # local-completions sends it as the bearer token
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    results = await asyncio.to_thread(
        lm_eval.simple_evaluate,
        model="local-completions",
        model_args={
            "model": mesh.llm_endpoint,
            "base_url": f"{base_url(mesh)}/completions",
            "tokenizer": str(build_tiny_llama()),
            "tokenizer_backend": "huggingface",
            "tokenized_requests": False,
            "max_retries": 1,
        },
        tasks=["tessera_tiny_choice"],
        task_manager=TaskManager(include_path=str(tmp_path)),
    )

    acc = results["results"]["tessera_tiny_choice"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert results["n-samples"]["tessera_tiny_choice"]["effective"] == len(docs)
