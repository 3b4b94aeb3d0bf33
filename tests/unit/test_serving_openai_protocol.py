"""The OpenAI front end's parsing and bounds, error mapping, and the usage meter's arithmetic (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted, Unauthenticated, Unavailable
from services.serving.openai_api.errors import http_error
from services.serving.openai_api.protocol import parse_chat, parse_completions
from services.serving.usage import Charge, Prices, UsageLimit, _exhausted, prompt_bound

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_sdk_defaults_are_accepted_and_mapped() -> None:
    parsed = parse_chat(
        {
            **CHAT,
            "temperature": 0,
            "top_p": 1,
            "n": 2,
            "stop": "x",
            "seed": 3,
            "max_completion_tokens": 7,
            "presence_penalty": 0,
            "frequency_penalty": 0.0,
            "logit_bias": {},
            "tools": [],
            "response_format": {"type": "text"},
            "metadata": {"team": "a"},
            "user": "u1",
        },
        max_tokens_limit=100,
    )

    assert (parsed.n, parsed.sampling.max_tokens, parsed.sampling.stop, parsed.sampling.seed) == (2, 7, ("x",), 3)
    assert parsed.labels == {"team": "a", "user": "u1"}


@pytest.mark.parametrize(
    "extra",
    [
        {"beam_width": 2},
        {"presence_penalty": 0.1},
        {"tools": [{"type": "function"}]},
        {"response_format": {"type": "json_object", "strict": True}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": {"d": "x" * 65536}}}},
        {"tools": [{"type": "function", "function": {"name": "f", "description": "d" * 1025}}], "tool_choice": "none"},
        {"tools": [{"type": "function", "function": {"name": "f"}}] * 2, "tool_choice": "none"},
        {"n": 0},
        {"n": 17},
        {"n": True},
        {"max_tokens": 101},
        {"max_tokens": 0},
        {"temperature": 2.5},
        {"temperature": float("nan")},
        {"stop": ["s"] * 17},
        {"stop": ["s" * 257]},
        {"stream": True, "n": 2},
        {"stream_options": {"include_usage": True}},
        {"top_logprobs": 2},
        {"logprobs": True, "top_logprobs": 21},
        {"messages": []},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
        {"metadata": {"bad key!": "x"}},
        {"user": "u" * 257},
    ],
)
def test_what_cannot_be_honoured_or_is_out_of_bounds_is_invalid_argument(extra: dict) -> None:
    with pytest.raises(InvalidArgument):
        parse_chat({**CHAT, **extra}, max_tokens_limit=100)


def test_json_output_and_tool_calls_become_guided_decoding() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tools = [{"type": "function", "function": {"name": n, "parameters": schema}} for n in ("f", "g")]

    as_schema = parse_chat(
        {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}, 100
    )
    as_object = parse_chat({**CHAT, "response_format": {"type": "json_object"}}, 100)
    named = parse_chat({**CHAT, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "g"}}}, 100)
    required = parse_chat({**CHAT, "tools": tools, "tool_choice": "required"}, 100)
    none = parse_chat({**CHAT, "tools": tools, "tool_choice": "none"}, 100)

    assert json.loads(as_schema.sampling.json_schema) == schema and as_schema.tool_call is None
    assert as_object.sampling.json_object and as_object.sampling.json_schema is None
    assert json.loads(named.sampling.json_schema) == schema and named.tool_call.name == "g"
    variants = json.loads(required.sampling.json_schema)["anyOf"]
    assert [v["properties"]["name"]["const"] for v in variants] == ["f", "g"] and required.tool_call.name is None
    assert none.sampling.json_schema is None and none.tool_call is None


def test_completions_take_prompt_lists_echo_and_logprobs() -> None:
    parsed = parse_completions(
        {"model": "m", "prompt": ["a", "b"], "echo": True, "logprobs": 2, "max_tokens": 1}, max_tokens_limit=10
    )

    assert parsed.prompts == ["a", "b"] and parsed.echo
    assert (parsed.sampling.logprobs, parsed.sampling.prompt_logprobs) == (2, 2)
    for bad in ({"prompt": [1, 2]}, {"prompt": ["a"] * 65}, {"prompt": "a", "stream": True, "echo": True}):
        with pytest.raises(InvalidArgument):
            parse_completions({"model": "m", **bad}, max_tokens_limit=10)


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (InvalidArgument("x"), 400, None),
        (Unauthenticated("x"), 401, None),
        (NotFound("x"), 404, None),
        (ResourceExhausted("x"), 429, "1"),
        (Unavailable("x"), 503, "1"),
        (RuntimeError("secret path"), 500, None),
    ],
)
def test_core_errors_become_openai_errors(error: Exception, status: int, retry_after: str | None) -> None:
    response = http_error(error)

    body = json.loads(response.text)
    assert response.status == status and response.headers.get("Retry-After") == retry_after
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "secret" not in body["error"]["message"]


def test_prices_make_unpriced_explicit() -> None:
    prices = Prices.parse(json.dumps({"c.s.a": [1.0, 2.0], "c.s.b": [3.0, 0.5]}))

    assert prices.cost("c.s.a", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.cost("c.s.unknown", 10, 10) is None
    assert prices.highest(["c.s.a", "c.s.b"]) == (3.0, 2.0)
    assert prices.highest(["c.s.a", "c.s.unknown"]) is None
    for bad in ('{"m": [1]}', '{"m": [-1, 1]}', "[1, 2]"):
        with pytest.raises(ValueError):
            Prices.parse(bad)


def test_the_prompt_bound_covers_bytes_and_template_markup() -> None:
    assert prompt_bound("héllo", None) == len("héllo".encode()) + 32
    assert prompt_bound(None, [{"role": "user", "content": "ab"}]) == 2 + 32 + 32


def test_a_refusal_says_when_to_retry_the_window_end() -> None:
    now = datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC)
    minute = Charge("e", "", "requests", "minute", now.replace(second=0), 1, 1)
    month = Charge("e", "alice", "tokens", "month", now.replace(day=1, hour=0, minute=0, second=0), 1, 1)

    assert _exhausted(minute, now, "over").retry_after_s == 30
    assert _exhausted(month, now, "over").retry_after_s == 30
    assert "for alice" in _exhausted(month, now, "over").message


@pytest.mark.parametrize(
    "limit",
    [
        UsageLimit("bad name!", "", "tokens", "day", 1),
        UsageLimit("e", "", "dollars", "day", 1),
        UsageLimit("e", "", "tokens", "week", 1),
        UsageLimit("e", "", "tokens", "day", -1),
        UsageLimit("e", "", "tokens", "day", float("inf")),
        UsageLimit("e", "x" * 129, "tokens", "day", 1),
        UsageLimit("", "bob", "tokens", "fortnight", 1),  # across every endpoint: bounded the same way
    ],
)
def test_usage_limits_are_bounded(limit: UsageLimit) -> None:
    with pytest.raises(InvalidArgument):
        limit.check()


def test_a_limit_across_every_endpoint_is_named_by_a_flag_not_by_an_empty_endpoint() -> None:
    from tessera.serving.v1 import serving_pb2 as pb

    from services.serving.converters import usage_limit_from_proto, usage_limit_to_proto

    spanning = pb.UsageLimit(principal="bob", metric="tokens", period="day", limit=5, every_endpoint=True)
    limit = usage_limit_from_proto(spanning)

    assert limit.endpoint == "" and limit.check() is limit and usage_limit_to_proto(limit) == spanning
    for ambiguous in (pb.UsageLimit(metric="tokens", period="day"), pb.UsageLimit(endpoint="e", every_endpoint=True)):
        with pytest.raises(InvalidArgument):
            usage_limit_from_proto(ambiguous)
