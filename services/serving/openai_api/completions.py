"""POST /v1/completions: text prompts (one or many), unary or streamed."""

from __future__ import annotations

from aiohttp import web

from services.serving.entities import TextChunk, TextResult
from services.serving.inference import InferenceCore
from services.serving.openai_api.generation import HttpCall, calls_of, generate_all, open_stream, stream_events
from services.serving.openai_api.protocol import GenerationRequest, agent_sources, completion_logprobs, usage


async def completions(inference: InferenceCore, parsed: GenerationRequest, http: HttpCall) -> web.StreamResponse:
    calls = calls_of(parsed, http)
    if parsed.stream:
        return await _stream(inference, parsed, http, calls[0])
    results = await generate_all(inference, calls, http.principal)
    body = {
        "id": http.request_id,
        "object": "text_completion",
        "created": http.created,
        "model": parsed.model,
        "choices": [_choice(i, r, parsed, calls[i].prompt or "") for i, r in enumerate(results)],
        "usage": usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)),
    }
    if results and results[0].citations:  # an agent's sources, as on chat completions
        body["tessera"] = agent_sources(results[0])
    return web.json_response(body, headers={"x-request-id": http.request_id})


async def _stream(inference: InferenceCore, parsed: GenerationRequest, http: HttpCall, call) -> web.StreamResponse:
    chunks, first = await open_stream(inference, call, http.principal)
    head = {"id": http.request_id, "object": "text_completion", "created": http.created, "model": parsed.model}
    if parsed.include_usage:
        head["usage"] = None

    def events(chunk: TextChunk) -> list[dict]:
        if not chunk.text and not chunk.finished and not chunk.citations:
            return []
        choice = {"index": 0, "text": chunk.text, "logprobs": None, "finish_reason": chunk.finish_reason}
        if chunk.citations:  # an agent's sources come with its first chunk
            return [
                {**head, "choices": [{**choice, "citations": list(chunk.citations)}], "tessera": agent_sources(chunk)}
            ]
        return [{**head, "choices": [choice]}]

    def closing(last: TextChunk | None) -> list[dict]:
        if not parsed.include_usage:
            return []
        counts = usage(last.prompt_tokens, last.completion_tokens) if last else usage(0, 0)
        return [{**head, "choices": [], "usage": counts}]

    return await stream_events(http.request, http.request_id, chunks, first, events, closing, [])


def _choice(index: int, result: TextResult, parsed: GenerationRequest, prompt: str) -> dict:
    text = prompt + result.text if parsed.echo else result.text
    logprobs = None
    if parsed.sampling.logprobs is not None:
        echoed = list(result.prompt_logprobs or ()) if parsed.echo else []
        logprobs = completion_logprobs([*echoed, *result.logprobs])
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": result.finish_reason or None}
    if result.citations:
        choice["citations"] = list(result.citations)
    return choice
