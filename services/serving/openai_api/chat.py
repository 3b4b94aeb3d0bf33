"""POST /v1/chat/completions: messages through the model's chat template, unary or streamed."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.serving.entities import TextChunk
from services.serving.inference import InferenceCore
from services.serving.openai_api.generation import HttpCall, calls_of, generate_all, open_stream, stream_events
from services.serving.openai_api.protocol import (
    GenerationRequest,
    ToolCallPlan,
    agent_sources,
    chat_logprobs,
    usage,
)


async def chat_completions(inference: InferenceCore, parsed: GenerationRequest, http: HttpCall) -> web.StreamResponse:
    calls = calls_of(parsed, http)
    if parsed.stream:
        return await _stream(inference, parsed, http, calls[0])
    results = await generate_all(inference, calls, http.principal)
    body = {
        "id": http.request_id,
        "object": "chat.completion",
        "created": http.created,
        "model": parsed.model,
        "choices": [
            {
                "index": i,
                **_answer(r.text, r.finish_reason or None, parsed.tool_call, f"call_{http.request_id}_{i}"),
                "logprobs": None
                if parsed.sampling.logprobs is None
                else chat_logprobs(r.logprobs, parsed.sampling.logprobs),
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)),
    }
    for choice, result in zip(body["choices"], results, strict=True):
        if result.citations:
            choice["message"]["citations"] = list(result.citations)
    if results and results[0].citations:
        body["tessera"] = agent_sources(results[0])
    return web.json_response(body, headers={"x-request-id": http.request_id})


async def _stream(inference: InferenceCore, parsed: GenerationRequest, http: HttpCall, call) -> web.StreamResponse:
    chunks, first = await open_stream(inference, call, http.principal)
    head = {"id": http.request_id, "object": "chat.completion.chunk", "created": http.created, "model": parsed.model}
    if parsed.include_usage:
        head["usage"] = None

    def event(delta: dict[str, Any], finish_reason: str | None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    def events(chunk: TextChunk) -> list[dict]:
        if chunk.citations:  # an agent's sources come with its first chunk
            sourced = event({"content": chunk.text, "citations": list(chunk.citations)}, chunk.finish_reason)
            return [{**sourced, "tessera": agent_sources(chunk)}]
        if chunk.finished:
            return [event({"content": chunk.text} if chunk.text else {}, chunk.finish_reason)]
        return [event({"content": chunk.text}, None)] if chunk.text else []

    def closing(last: TextChunk | None) -> list[dict]:
        if not parsed.include_usage:
            return []
        counts = usage(last.prompt_tokens, last.completion_tokens) if last else usage(0, 0)
        return [{**head, "choices": [], "usage": counts}]

    opening = [event({"role": "assistant", "content": ""}, None)]
    return await stream_events(http.request, http.request_id, chunks, first, events, closing, opening)


def _answer(text: str, finish_reason: str | None, plan: ToolCallPlan | None, call_id: str) -> dict[str, Any]:
    """The message and finish reason: text, or the tool call guided decoding produced.

    An answer cut short (`length`) may not be complete JSON: it is sent as text, as generated.
    """
    if plan is None or finish_reason != "stop":
        return {"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    name, arguments = plan.name, text
    if name is None:  # `required`: {"name": ..., "parameters": {...}}
        try:
            chosen = json.loads(text)
            name, arguments = chosen["name"], json.dumps(chosen["parameters"], separators=(",", ":"))
        except (ValueError, KeyError, TypeError):  # the grammar allows nothing else; never a 500 if it did
            return {"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return {"message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}
