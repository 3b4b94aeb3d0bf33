"""OpenAI request bodies -> the core's calls, bounded and checked before any work.

A field the engine cannot honour is refused with 400, never silently ignored:
a client that asks for `tool_choice: auto`, logprobs on a stream or penalties
must learn it did not get them. Fields at their default value (what SDKs send
unasked) are accepted. JSON output and tool calls become guided decoding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.serving.entities import (
    MAX_LABEL_VALUE,
    MAX_LOGPROBS,
    MAX_MESSAGES,
    SamplingSpec,
    TextChunk,
    TextResult,
    TokenLogprob,
    check_labels,
)

# Choices per request (`n`) and prompts per completions request: each is one generation in the engine.
MAX_CHOICES = 16
MAX_PROMPTS = 64
# Tools per request (OpenAI's own limit), and the length of a tool's description.
MAX_TOOLS = 128
MAX_TOOL_DESCRIPTION = 1024
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

_COMMON = {
    "model",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "user",
    "metadata",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "service_tier",
    "ignore_eos",  # vLLM's extension: generate exactly max_tokens (benchmarks)
}
_CHAT = _COMMON | {
    "messages",
    "max_completion_tokens",
    "response_format",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "store",
    "modalities",
}
_COMPLETIONS = _COMMON | {"prompt", "echo", "best_of", "suffix"}


@dataclass
class GenerationRequest:
    """What a chat or completions body asks, in the core's terms."""

    model: str
    prompts: list[str] | None  # completions: one generation per prompt (times n)
    messages: list[dict[str, str]] | None  # chat: one conversation (times n)
    sampling: SamplingSpec
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    echo: bool = False  # completions: the prompt (and its log probabilities) before the answer
    tool_call: ToolCallPlan | None = None  # chat: the answer is a call of one of the request's tools


@dataclass(frozen=True)
class ToolCallPlan:
    """A tool call produced by guided decoding: of the named function, or (`name` None) of any tool,
    in which case the answer is `{"name": ..., "parameters": {...}}`."""

    name: str | None


def parse_chat(body: Any, max_tokens_limit: int) -> GenerationRequest:
    body = _object(body)
    _known(body, _CHAT)
    refuse_unless_default(body, "functions", (None, []))
    refuse_unless_default(body, "function_call", (None, "none"))
    refuse_unless_default(body, "modalities", (None, ["text"]))
    refuse_unless_default(body, "store", (None, False))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument("messages must be a non-empty list", field="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidArgument(f"at most {MAX_MESSAGES} messages", field="messages")
    if "max_tokens" in body and "max_completion_tokens" in body and body["max_tokens"] is not None:
        if body["max_completion_tokens"] is not None and body["max_tokens"] != body["max_completion_tokens"]:
            raise InvalidArgument("give max_tokens or max_completion_tokens, not both", field="max_tokens")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    wants = body.get("logprobs")
    if wants is not None and not isinstance(wants, bool):
        raise InvalidArgument("logprobs must be a boolean", field="logprobs")
    top = _integer(body, "top_logprobs", 0, 0, MAX_LOGPROBS)
    if top and not wants:
        raise InvalidArgument("top_logprobs needs logprobs=true", field="top_logprobs")
    request = _common(body, max_tokens, max_tokens_limit, logprobs=top if wants else None)
    request.messages = [message_of(m) for m in messages]
    schema, json_object = _response_format(body.get("response_format"))
    plan, tool_schema = _tool_choice(body)
    if tool_schema is not None:
        if schema is not None or json_object:
            raise InvalidArgument("give tools or a JSON response_format, not both", field="response_format")
        if request.stream:
            raise InvalidArgument("tool calls are served on unary calls only", field="stream")
        schema = tool_schema
    request.tool_call = plan
    request.sampling = dataclasses.replace(
        request.sampling,
        json_schema=None if schema is None else json.dumps(schema, separators=(",", ":")),
        json_object=json_object,
    )
    request.sampling.check()
    return request


def _response_format(value: Any) -> tuple[dict | None, bool]:
    """(JSON schema, json_object) for guided decoding; text is neither."""
    if value is None or value == {"type": "text"}:
        return None, False
    if value == {"type": "json_object"}:
        return None, True
    if not isinstance(value, dict) or value.get("type") != "json_schema" or set(value) != {"type", "json_schema"}:
        raise InvalidArgument(
            "response_format is {'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', 'json_schema': {...}}",
            field="response_format",
        )
    spec = value["json_schema"]
    if not isinstance(spec, dict) or set(spec) - {"name", "schema", "strict", "description"}:
        raise InvalidArgument("json_schema takes name, schema, strict and description", field="response_format")
    name = spec.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidArgument("json_schema.name is 1-64 letters, digits, '_', '-'", field="response_format")
    if spec.get("strict") not in (None, True, False):
        raise InvalidArgument("json_schema.strict must be a boolean", field="response_format")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise InvalidArgument("json_schema.schema must be a JSON schema object", field="response_format")
    return schema, False


def _tool_choice(body: Mapping[str, Any]) -> tuple[ToolCallPlan | None, dict | None]:
    """The tool call guided decoding must produce, and its schema; (None, None) when no tool is called.

    Calls are made by guided decoding against the function's parameters schema, so `required` and a
    named function are served; `auto` would need the model's own tool-call format and a parser for it.
    """
    tools = body.get("tools")
    choice = body.get("tool_choice")
    refuse_unless_default(body, "parallel_tool_calls", (None, True, False))
    if tools is None or tools == []:
        if choice not in (None, "none"):
            raise InvalidArgument("tool_choice needs tools", field="tool_choice")
        return None, None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise InvalidArgument(f"tools is a list of at most {MAX_TOOLS} functions", field="tools")
    functions = {}
    for tool in tools:
        name, parameters = _function(tool)
        if name in functions:
            raise InvalidArgument(f"tool {name!r} is given twice", field="tools")
        functions[name] = parameters
    if choice == "none":
        return None, None
    if choice is None or choice == "auto":
        raise InvalidArgument(
            "tool_choice 'auto' is not served (it needs the model's own tool-call format): give 'required',"
            " a named function or 'none'",
            field="tool_choice",
        )
    if choice == "required":
        variants = [
            {
                "type": "object",
                "properties": {"name": {"const": name}, "parameters": parameters},
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
            for name, parameters in functions.items()
        ]
        return ToolCallPlan(None), variants[0] if len(variants) == 1 else {"anyOf": variants}
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and set(choice) == {"type", "function"}
    ):
        name = choice["function"].get("name")
        if name not in functions:
            raise InvalidArgument(f"tool_choice names {name!r}, which is not among the tools", field="tool_choice")
        return ToolCallPlan(name), functions[name]
    raise InvalidArgument(
        "tool_choice is 'none', 'required' or {'type': 'function', 'function': {'name': ...}}", field="tool_choice"
    )


def _function(tool: Any) -> tuple[str, dict]:
    if not isinstance(tool, dict) or tool.get("type") != "function" or set(tool) != {"type", "function"}:
        raise InvalidArgument("each tool is {'type': 'function', 'function': {...}}", field="tools")
    function = tool["function"]
    if not isinstance(function, dict) or set(function) - {"name", "description", "parameters", "strict"}:
        raise InvalidArgument("a function takes name, description, parameters and strict", field="tools")
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidArgument("function names are 1-64 letters, digits, '_', '-'", field="tools")
    description = function.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_TOOL_DESCRIPTION:
        raise InvalidArgument(
            f"function descriptions are strings of at most {MAX_TOOL_DESCRIPTION} characters", field="tools"
        )
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise InvalidArgument("function parameters are a JSON schema object", field="tools")
    return name, parameters


def parse_completions(body: Any, max_tokens_limit: int) -> GenerationRequest:
    body = _object(body)
    _known(body, _COMPLETIONS)
    refuse_unless_default(body, "suffix", (None, ""))
    logprobs = None if body.get("logprobs") is None else _integer(body, "logprobs", 0, 0, MAX_LOGPROBS)
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise InvalidArgument("echo must be a boolean", field="echo")
    best_of = body.get("best_of")
    if best_of is not None and best_of != body.get("n", 1):
        raise InvalidArgument("best_of is not served: leave it out or equal to n", field="best_of")
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        raise InvalidArgument("prompt must be a string or a non-empty list of strings", field="prompt")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidArgument(f"at most {MAX_PROMPTS} prompts", field="prompt")
    # The completions API's own default is 16 tokens.
    max_tokens = body.get("max_tokens", 16)
    request = _common(body, max_tokens, max_tokens_limit, logprobs=logprobs, prompt_logprobs=logprobs if echo else None)
    request.prompts = prompts
    request.echo = echo
    if request.stream and len(prompts) * request.n > 1:
        raise InvalidArgument("streaming serves one prompt and n=1", field="stream")
    if request.stream and (echo or logprobs is not None):
        raise InvalidArgument("echo and logprobs are served on unary calls only", field="stream")
    return request


def _common(
    body: Mapping[str, Any],
    max_tokens: Any,
    max_tokens_limit: int,
    *,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> GenerationRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model is required", field="model")
    for name in ("frequency_penalty", "presence_penalty"):
        refuse_unless_default(body, name, (None, 0, 0.0))
    refuse_unless_default(body, "logit_bias", (None, {}))
    refuse_unless_default(body, "service_tier", (None, "auto", "default"))
    n = _integer(body, "n", 1, 1, MAX_CHOICES)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidArgument("stream must be a boolean", field="stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise InvalidArgument("stream_options is only allowed with stream=true", field="stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise InvalidArgument("stream_options takes only include_usage", field="stream_options")
    include_usage = bool((options or {}).get("include_usage", False))
    if stream and n > 1:
        raise InvalidArgument("streaming serves n=1", field="n")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidArgument("max_tokens must be a positive integer", field="max_tokens")
        if max_tokens > max_tokens_limit:
            raise InvalidArgument(
                f"max_tokens {max_tokens} is over the limit of {max_tokens_limit}", field="max_tokens"
            )
    ignore_eos = body.get("ignore_eos") or False
    if not isinstance(ignore_eos, bool):
        raise InvalidArgument("ignore_eos must be a boolean", field="ignore_eos")
    sampling = SamplingSpec(
        ignore_eos=ignore_eos,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        max_tokens=max_tokens,
        stop=_stop(body.get("stop")),
        seed=_seed(body.get("seed")),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )
    sampling.check()
    if stream and logprobs is not None:
        raise InvalidArgument("logprobs are served on unary calls only", field="logprobs")
    return GenerationRequest(
        model=model,
        prompts=None,
        messages=None,
        sampling=sampling,
        n=n,
        stream=stream,
        include_usage=include_usage,
        labels=labels_of(body),
    )


def labels_of(body: Mapping[str, Any]) -> dict[str, str]:
    """`metadata` and `user` become the payload log's labels (bounded like every label)."""
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidArgument("metadata must be an object of strings", field="metadata")
    labels = dict(metadata)
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str) or len(user) > MAX_LABEL_VALUE:
            raise InvalidArgument(f"user must be a string of at most {MAX_LABEL_VALUE} characters", field="user")
        labels["user"] = user
    check_labels(labels)
    return labels


def message_of(message: Any) -> dict[str, str]:
    if not isinstance(message, dict):
        raise InvalidArgument("each message is an object with role and content", field="messages")
    unknown = set(message) - {"role", "content", "name"}
    if unknown:
        raise InvalidArgument(f"message fields not served: {', '.join(sorted(unknown))}", field="messages")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str):
        raise InvalidArgument("each message needs a role", field="messages")
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidArgument("only text content parts are served", field="messages")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise InvalidArgument("message content must be text", field="messages")
    return {"role": role, "content": content}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return body


def _known(body: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidArgument(f"unrecognized request argument supplied: {', '.join(unknown)}", field=unknown[0])


def refuse_unless_default(body: Mapping[str, Any], name: str, defaults: Sequence[Any]) -> None:
    if name in body and not any(body[name] == d and type(body[name]) is type(d) for d in defaults):
        raise InvalidArgument(f"{name} is not served by this endpoint", field=name)


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an integer from {low} to {high}", field=name)
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a number", field=name)
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be from {low} to {high}", field=name)
    return float(value)


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise InvalidArgument("stop must be a string or a list of strings", field="stop")


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgument("seed must be an integer", field="seed")
    return seed


def agent_sources(answer: TextChunk | TextResult) -> dict[str, Any]:
    """An agent's citations and retrieved passages, in an extra field the openai SDK keeps as it is."""
    return {"citations": list(answer.citations), "retrieved_context": [p.to_json() for p in answer.passages]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, list]:
    """The completions API's logprobs object: tokens, their log probabilities, alternatives, text offsets."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    for entry in entries:
        tokens.append(entry.token)
        token_logprobs.append(entry.logprob)
        top.append(dict(entry.top) if entry.logprob is not None else None)
        offsets.append(offset)
        offset += len(entry.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def chat_logprobs(entries: Sequence[TokenLogprob], top: int) -> dict[str, list]:
    """The chat API's logprobs object: one entry per generated token with its `top` alternatives."""

    def item(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top[:top]]} for e in entries
        ],
        "refusal": None,
    }
