"""POST /v1/responses: one turn of a conversation, continued by previous_response_id (stored in PostgreSQL)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.common.errors import InvalidArgument, NotFound
from services.serving.conversations import ConversationStore
from services.serving.entities import GenerateCall, SamplingSpec, TextResult
from services.serving.inference import InferenceCore
from services.serving.openai_api.generation import HttpCall
from services.serving.openai_api.protocol import agent_sources, labels_of, message_of, refuse_unless_default

_FIELDS = {
    "model", "input", "instructions", "previous_response_id", "max_output_tokens", "temperature", "top_p",
    "stream", "store", "metadata", "user", "tools", "tool_choice", "parallel_tool_calls", "text", "truncation",
    "reasoning",
}  # fmt: skip


async def responses(
    inference: InferenceCore, conversations: ConversationStore, body: Any, http: HttpCall
) -> web.Response:
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidArgument(f"unrecognized request argument supplied: {', '.join(unknown)}", field=unknown[0])
    refuse_unless_default(body, "stream", (None, False))
    refuse_unless_default(body, "tools", (None, []))
    refuse_unless_default(body, "tool_choice", (None, "none", "auto"))
    refuse_unless_default(body, "reasoning", (None,))
    refuse_unless_default(body, "truncation", (None, "disabled"))
    if body.get("text") not in (None, {"format": {"type": "text"}}):
        raise InvalidArgument("text: only the plain text format is served", field="text")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model is required", field="model")
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise InvalidArgument("store must be a boolean", field="store")
    previous = body.get("previous_response_id")
    history = []
    if previous is not None:
        if not isinstance(previous, str) or not previous or len(previous) > 128:
            raise InvalidArgument("previous_response_id must be a response id", field="previous_response_id")
        try:
            history = await conversations.messages(previous, http.principal)
        except NotFound:  # as OpenAI answers it: the request is wrong, the model is fine
            raise InvalidArgument(
                f"previous response with id {previous!r} not found", field="previous_response_id"
            ) from None
    turn = _input(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidArgument("instructions must be a string", field="instructions")
    # Instructions apply to this turn only, as the Responses API defines them; they are not stored.
    system = [{"role": "system", "content": instructions}] if instructions else []
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise InvalidArgument("max_output_tokens must be an integer", field="max_output_tokens")
    sampling = SamplingSpec(
        temperature=_number(body, "temperature"), top_p=_number(body, "top_p"), max_tokens=max_tokens
    )
    call = GenerateCall(
        endpoint=model,
        request_id=http.request_id,
        source="http",
        messages=[*system, *history, *turn],
        sampling=sampling,
        size_bytes=http.size_bytes,
        labels=labels_of(body),
    )
    result = await inference.generate_all(call, http.principal)
    if store:
        await conversations.save(
            http.request_id, model, http.principal, [*history, *turn, {"role": "assistant", "content": result.text}]
        )
    incomplete = result.finish_reason == "length"
    return web.json_response(
        {
            "id": http.request_id,
            "object": "response",
            "created_at": http.created,
            "status": "incomplete" if incomplete else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "model": model,
            "instructions": instructions,
            "previous_response_id": previous,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{http.request_id}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": result.text, "annotations": _cited(result)}],
                }
            ],
            "usage": {
                "input_tokens": result.prompt_tokens,
                "output_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
            "max_output_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "parallel_tool_calls": False,
            "tool_choice": "none",
            "tools": [],
            "store": store,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "metadata": body.get("metadata") or {},
            **({"tessera": agent_sources(result)} if result.citations else {}),
        },
        headers={"x-request-id": http.request_id},
    )


def _cited(result: TextResult) -> list[dict[str, Any]]:
    """An agent's cited passages as the Responses API's file citations, placed after the answer."""
    end = len(result.text)
    return [{"type": "file_citation", "file_id": c, "filename": c, "index": end} for c in result.citations]


def _input(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidArgument("input must be a string or a non-empty list of messages", field="input")
    messages = []
    for item in value:
        if isinstance(item, dict) and item.get("type", "message") == "message":
            content = item.get("content")
            if isinstance(content, list):  # input_text / output_text parts
                parts = [p.get("text") for p in content if isinstance(p, dict)]
                if not all(p.get("type") in ("input_text", "output_text") for p in content) or not all(
                    isinstance(t, str) for t in parts
                ):
                    raise InvalidArgument("only text content parts are served", field="input")
                content = "".join(parts)
            messages.append(message_of({"role": item.get("role"), "content": content}))
        else:
            raise InvalidArgument("only message items are served in input", field="input")
    return messages


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number", field=name)
    return float(value)
