"""An external provider's event stream as the gateway reads it: pieces, batches, and answers that are not one."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.common.errors import Unavailable
from services.serving.entities import SamplingSpec
from services.serving.external import ExternalRuntime, Provider, _DataLines


def _event(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]
    body = {"id": "x", "object": "chat.completion.chunk", "choices": choices, **({"usage": usage} if usage else {})}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_data_lines_are_found_whatever_pieces_the_socket_gives() -> None:
    stream = _event("a") + b": a comment\r\n\r\n" + _event("b").replace(b"\n", b"\r\n") + b"data: [DONE]\n\n"
    for size in (1, 2, 7, len(stream)):
        lines, payloads = _DataLines(), []
        for start in range(0, len(stream), size):
            payloads += lines.feed(stream[start : start + size])
        assert [json.loads(p)["choices"][0]["delta"]["content"] for p in payloads[:2]] == ["a", "b"]
        assert payloads[2:] == [b"[DONE]"]


def test_an_endless_line_is_refused_not_buffered() -> None:
    lines = _DataLines()
    with pytest.raises(ValueError, match="over"):
        for _ in range(3):
            lines.feed(b"x" * (1 << 19))


async def _serve(writes: list[bytes], gates: list[asyncio.Event]) -> TestServer:
    """An OpenAI-style streaming server: `writes[i]` is one socket write, sent once `gates[i]` is set."""

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for data, gate in zip(writes, gates, strict=True):
            await gate.wait()
            await response.write(data)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@contextlib.asynccontextmanager
async def _stream(writes: list[bytes], gates: list[asyncio.Event]):
    server = await _serve(writes, gates)
    runtime = ExternalRuntime(Provider("p", str(server.make_url("/v1")), max_retries=0), "m", "external.p.m")
    await runtime.start()
    try:
        messages = [{"role": "user", "content": "hi"}]
        async with contextlib.aclosing(runtime.generate("r", messages, SamplingSpec(max_tokens=8))) as chunks:
            yield chunks
    finally:
        await runtime.stop()
        await server.close()


async def _generate(writes: list[bytes]) -> list:
    """Everything the runtime makes of `writes`, sent as fast as the server can."""
    gates = [asyncio.Event() for _ in writes]
    for gate in gates:
        gate.set()
    async with _stream(writes, gates) as chunks:
        return [chunk async for chunk in chunks]


async def test_events_that_arrive_apart_are_chunks_of_their_own_and_usage_is_the_providers() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    last = _event("c", "length")
    writes = [_event("a"), _event("b") + last[:9], last[9:] + _event(usage=usage), b"data: [DONE]\n\n"]
    gates = [asyncio.Event() for _ in writes]
    async with _stream(writes, gates) as chunks:
        seen = []
        for gate in gates:  # the next write only once the last one was read and made a chunk
            gate.set()
            seen.append(await anext(chunks))
    assert [c.text for c in seen] == ["a", "b", "c", ""]
    assert [c.completion_tokens for c in seen] == [1, 2, 3, 3]
    assert (seen[-1].finished, seen[-1].finish_reason, seen[-1].prompt_tokens) == (True, "length", 5)
    assert {c.served_model for c in seen} == {"external.p.m"}


async def test_events_that_arrive_together_are_one_chunk() -> None:
    chunks = await _generate([_event("a") + _event("b") + _event("c", "stop") + b"data: [DONE]\n\n"])
    assert [c.text for c in chunks] == ["abc", ""]
    assert [c.completion_tokens for c in chunks] == [3, 3]
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: [1, 2]\n\n",
        b"data: {not json\n\n",
        b'data: {"choices": [7]}\n\n',
        b'data: {"choices": [{"delta": 3}]}\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": -40}}\n\n',
        b'data: {"choices": [], "usage": {"completion_tokens": "many"}}\n\n',
    ],
)
async def test_an_answer_that_is_not_an_event_stream_is_unavailable_not_a_crash(garbage: bytes) -> None:
    with pytest.raises(Unavailable, match="broke off"):
        await _generate([_event("a"), garbage])
