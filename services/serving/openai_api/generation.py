"""What chat and completions share: one core call per choice, unary answers and SSE streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from services.common.auth import Principal
from services.serving.entities import GenerateCall, TextChunk, TextResult
from services.serving.inference import InferenceCore
from services.serving.openai_api.errors import stream_error
from services.serving.openai_api.protocol import GenerationRequest

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Connection": "keep-alive"}


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request as the handlers see it."""

    request: web.Request
    principal: Principal
    request_id: str  # the payload log's request id of the first choice, and the response's id
    size_bytes: int
    created: int


def calls_of(parsed: GenerationRequest, http: HttpCall) -> list[GenerateCall]:
    """One core call per prompt and choice; choice i > 0 is logged as `<request id>-<i>`."""
    prompts: list[str | None] = list(parsed.prompts) if parsed.prompts is not None else [None]
    calls = []
    for prompt in prompts:
        for _ in range(parsed.n):
            index = len(calls)
            calls.append(
                GenerateCall(
                    endpoint=parsed.model,
                    request_id=http.request_id if index == 0 else f"{http.request_id}-{index}",
                    source="http",
                    prompt=prompt,
                    messages=parsed.messages,
                    sampling=parsed.sampling,
                    size_bytes=http.size_bytes,
                    labels=parsed.labels,
                )
            )
    return calls


async def generate_all(inference: InferenceCore, calls: list[GenerateCall], principal: Principal) -> list[TextResult]:
    """Every choice at once; the first failure cancels the others and is raised."""
    if len(calls) == 1:
        return [await inference.generate_all(calls[0], principal)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(inference.generate_all(call, principal)) for call in calls]
    return [task.result() for task in tasks]


async def open_stream(
    inference: InferenceCore, call: GenerateCall, principal: Principal
) -> tuple[AsyncIterator[TextChunk], TextChunk | None]:
    """Start a streamed generation and wait for its first chunk, before any header is sent.

    Admission, EXECUTE and bounds fail here and become a plain HTTP error; a failure closes the
    generation, so nothing keeps running in the engine for a caller who got an error.
    """
    chunks = inference.generate(call, principal)
    try:
        return chunks, await anext(chunks)
    except StopAsyncIteration:
        return chunks, None
    except BaseException:
        with contextlib.suppress(Exception):
            await chunks.aclose()
        raise


async def stream_events(
    request: web.Request,
    request_id: str,
    chunks: AsyncIterator[TextChunk],
    first: TextChunk | None,
    events: Callable[[TextChunk], list[dict]],
    closing: Callable[[TextChunk | None], list[dict]],
    opening: list[dict],
) -> web.StreamResponse:
    """Send `opening`, then the events of each chunk, then `closing` and `[DONE]`.

    The stream ends as soon as the finished chunk is sent: the core's bookkeeping (usage
    settlement, the payload-log record) runs after the caller has its answer, never before.
    An error after the stream started is sent as an error event: the status line is gone.
    Closing `chunks` (the caller went away) aborts the generation in the engine.
    """
    response = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": request_id})
    await response.prepare(request)
    last, ended = first, False

    async def send(chunk: TextChunk, before: list[dict]) -> None:
        nonlocal ended
        if ended:
            return  # the generation's own end (its bookkeeping) runs after the caller's
        if chunk.finished:
            await _end(response, [*before, *events(chunk), *closing(chunk)])
            ended = True
        else:
            await _send(response, [*before, *events(chunk)])

    async with contextlib.aclosing(chunks):
        try:
            if first is None:
                await _send(response, opening)
            else:
                await send(first, opening)
            async for chunk in chunks:
                last = chunk
                await send(chunk, [])
            if not ended:
                await _end(response, closing(last))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the stream, logged by the core
            if not ended:
                await _end(response, [stream_error(exc)])
    return response


async def _end(response: web.StreamResponse, events: list[dict]) -> None:
    """The last events and `[DONE]` in one write, then the end of the chunked body."""
    await response.write(_encode(events) + b"data: [DONE]\n\n")
    await response.write_eof()


async def _send(response: web.StreamResponse, events: list[dict]) -> None:
    if events:
        await response.write(_encode(events))


def _encode(events: list[dict]) -> bytes:
    return b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events)
