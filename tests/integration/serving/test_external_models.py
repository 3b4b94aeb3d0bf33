"""External models: vLLM's own OpenAI server, started here on the tiny Llama, served behind a Tessera endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import grpc
import httpx
import jsonschema
import openai
import pytest
import pytest_asyncio
from aiohttp import web
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from services.fixtures.tiny_llama import build_tiny_llama
from services.serving.llm_engine import OFFLINE_ENV
from tests.integration.serving.conftest import (
    ALICE,
    BOB,
    BROKEN_PROVIDER_PORT,
    PROVIDER_KEY,
    PROVIDER_PORT,
    Mesh,
)
from tests.integration.serving.support import error_of

pytestmark = pytest.mark.integration

GREEDY = {"temperature": 0.0, "max_tokens": 16, "seed": 1}
MESSAGES = [{"role": "user", "content": "Sort a list."}]
VLLM = "external.vllm.tiny"
BROKEN = "external.broken.tiny"


@pytest_asyncio.fixture(scope="module")
async def provider():
    """vLLM's OpenAI server on the tiny Llama, with an API key (as a hosted provider has)."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(build_tiny_llama()), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(PROVIDER_PORT), "--api-key", PROVIDER_KEY,
        "--max-model-len", "1024", "--max-num-seqs", "16", "--enforce-eager",
        "--kv-cache-memory-bytes", str(128 * 2**20),
        # Compact guided JSON, as Tessera's own engines make it (random weights never close free whitespace).
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **OFFLINE_ENV}, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(900):
            while True:
                assert process.returncode is None, "vLLM's server exited"
                try:
                    if (await http.get(f"http://127.0.0.1:{PROVIDER_PORT}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(1)
        yield openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{PROVIDER_PORT}/v1", api_key=PROVIDER_KEY, max_retries=0)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest_asyncio.fixture(scope="module")
async def broken_provider():
    """An OpenAI-compatible provider that fails every call with 500; counts the attempts."""
    attempts: list[str] = []

    async def fail(request: web.Request) -> web.Response:
        attempts.append(request.headers.get("x-request-id", ""))
        return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)

    app = web.Application()
    app.router.add_post("/v1/{path:.*}", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", BROKEN_PROVIDER_PORT).start()
    yield attempts
    await runner.cleanup()


async def endpoint(mesh: Mesh, *models: tuple[str, int]) -> str:
    name = f"ext-{uuid.uuid4().hex[:6]}"
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name,
            served_models=[pb.ServedModel(model_name=m, version=1, traffic_percent=share) for m, share in models],
            wait=True,
        ),
        metadata=bearer(ALICE),
    )
    return name


def tessera(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{mesh.serving.http_port}/v1", api_key=ALICE, max_retries=0)


async def test_an_external_model_answers_like_its_provider_with_usage_and_payload_logs(
    mesh: Mesh, provider: openai.AsyncOpenAI
) -> None:
    name = await endpoint(mesh, (VLLM, 100))
    sdk = tessera(mesh)

    direct = await provider.chat.completions.create(model="tiny", messages=MESSAGES, **GREEDY)
    through = await sdk.chat.completions.create(model=name, messages=MESSAGES, **GREEDY)
    stream = await sdk.chat.completions.create(
        model=name, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    chunks = [c async for c in stream]
    completion = await sdk.completions.create(model=name, prompt="Return a sorted list.", **GREEDY)
    direct_completion = await provider.completions.create(model="tiny", prompt="Return a sorted list.", **GREEDY)

    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.usage == direct.usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
    assert chunks[-1].usage == direct.usage
    assert completion.choices[0].text == direct_completion.choices[0].text
    logged = await mesh.payloads.wait_for([through.id])
    record = logged[through.id][0]
    assert (record.served_model, record.status, record.source) == (VLLM, "OK", "http")
    assert (record.prompt_tokens, record.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )
    assert not record.HasField("cost_usd")  # no price for it: unpriced, not $0


async def test_a_failing_provider_is_retried_then_falls_back_to_the_next_served_model(
    mesh: Mesh, provider: openai.AsyncOpenAI, broken_provider: list[str]
) -> None:
    name = await endpoint(mesh, (BROKEN, 100), (VLLM, 0))
    before = len(broken_provider)

    answer = await tessera(mesh).chat.completions.create(model=name, messages=MESSAGES, **GREEDY)

    assert answer.choices[0].message.content
    assert broken_provider[before:] == [answer.id] * 3  # the first try and two retries, then the fallback
    logged = await mesh.payloads.wait_for([answer.id])
    assert logged[answer.id][0].served_model == VLLM


async def test_a_failing_provider_without_fallback_is_503_with_retry_after(
    mesh: Mesh, broken_provider: list[str]
) -> None:
    name = await endpoint(mesh, (BROKEN, 100))

    with pytest.raises(openai.InternalServerError) as failed:
        await tessera(mesh).completions.create(model=name, prompt="Sort.", max_tokens=4)

    assert failed.value.status_code == 503 and failed.value.response.headers["retry-after"] == "1"


async def test_a_traffic_split_mixes_a_local_and_an_external_model(mesh: Mesh, provider: openai.AsyncOpenAI) -> None:
    name = await endpoint(mesh, (mesh.llm_model, 50), (VLLM, 50))
    sdk = tessera(mesh)

    answers = await asyncio.gather(
        *(sdk.completions.create(model=name, prompt="Sort.", max_tokens=2) for _ in range(16))
    )

    logged = await mesh.payloads.wait_for([a.id for a in answers])
    assert {records[0].served_model for records in logged.values()} == {mesh.llm_model, VLLM}


async def test_only_the_providers_principals_may_serve_it(mesh: Mesh) -> None:
    refused = await error_of(
        mesh.serving_stub().CreateEndpoint(
            pb.CreateEndpointRequest(
                name=f"bobs-ext-{uuid.uuid4().hex[:6]}", served_models=[pb.ServedModel(model_name=VLLM, version=1)]
            ),
            metadata=bearer(BOB),
        )
    )
    unknown = await error_of(
        mesh.serving_stub().CreateEndpoint(
            pb.CreateEndpointRequest(
                name=f"nowhere-{uuid.uuid4().hex[:6]}",
                served_models=[pb.ServedModel(model_name="external.nowhere.tiny", version=1)],
            ),
            metadata=bearer(ALICE),
        )
    )

    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_a_tool_call_through_an_external_model_is_the_providers_guided_answer(
    mesh: Mesh, provider: openai.AsyncOpenAI
) -> None:
    """Tessera turns the named function into the provider's response_format; the arguments are its answer."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    name = await endpoint(mesh, (VLLM, 100))

    through = await tessera(mesh).chat.completions.create(
        model=name,
        messages=MESSAGES,
        tools=[{"type": "function", "function": {"name": "weather", "parameters": schema}}],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        **{**GREEDY, "max_tokens": 64},
    )
    direct = await provider.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}},
        **{**GREEDY, "max_tokens": 64},
    )

    (call,) = through.choices[0].message.tool_calls
    assert call.function.name == "weather" and through.choices[0].finish_reason == "tool_calls"
    assert call.function.arguments == direct.choices[0].message.content
    jsonschema.validate(json.loads(call.function.arguments), schema)
