"""Agent specs: every bound checked before anything runs, the prompt filled in one pass, the context capped.

No services needed: these are the rules `agent.json` is held to when a version loads
(tests/integration/serving/test_agents.py shows the same refusals through a real endpoint).
"""

from __future__ import annotations

import json

import pytest
from tessera.retrieval.v1 import retrieval_pb2 as qpb

from services.common.errors import InvalidArgument
from services.fixtures.agents import agent_spec, write_agent_folder
from services.serving.agents import MAX_K, build_context, load_spec, parse_spec, question_of, render_prompt

GOOD = agent_spec("llm-endpoint", "main.docs.runbooks", k=3)


def test_a_good_spec_parses_with_its_defaults() -> None:
    spec = parse_spec({"llm_endpoint": "llm", "index": "a.b.c", "prompt_template": "{context} {question}"})
    assert (spec.k, spec.query_mode, spec.citation_format, spec.llm_input) == (4, "hybrid", "[{id}]", "prompt")
    assert parse_spec(GOOD).k == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"k": 0}, "k must be"),
        ({"k": MAX_K + 1}, "k must be"),
        ({"k": True}, "k must be"),
        ({"query_mode": "semantic"}, "query_mode"),
        ({"index": "Main.Docs.Runbooks"}, "index"),
        ({"index": "two.parts"}, "index"),
        ({"llm_endpoint": "has space"}, "llm_endpoint"),
        ({"llm_endpoint": ""}, "'llm_endpoint' is required"),
        ({"prompt_template": "no placeholders"}, "{context}"),
        ({"prompt_template": "{context} only"}, "{question}"),
        ({"prompt_template": "{context}{question}" + "x" * 20000}, "over"),
        ({"citation_format": "no id"}, "citation_format"),
        ({"max_context_chars": 0}, "max_context_chars"),
        ({"llm_input": "tools"}, "llm_input"),
        ({"filter": {"comparison": {"column": "team", "op": "LIKE"}}}, "filter"),
        ({"filter": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {}}}}}}}}}}, "nested"),
        ({"tools": ["search"]}, "unknown field"),
    ],
)
def test_bad_specs_are_invalid_argument_with_the_reason(change: dict, reason: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_spec({**GOOD, **change})
    assert reason in refused.value.message and refused.value.message.startswith("agent.json: ")


def test_a_file_that_is_not_json_or_too_large_is_refused(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        load_spec(write_agent_folder(tmp_path / "a", "{'k': 1"))
    with pytest.raises(InvalidArgument, match="over"):
        load_spec(write_agent_folder(tmp_path / "b", json.dumps({**GOOD, "pad": "x" * 70000})))
    assert load_spec(write_agent_folder(tmp_path / "c", GOOD)).index == "main.docs.runbooks"


def test_the_prompt_is_filled_in_one_pass() -> None:
    spec = parse_spec({**GOOD, "prompt_template": "C:{context} Q:{question}"})
    # A question or a document that contains a placeholder stays as it is.
    assert render_prompt(spec, "doc says {question}", "what is {context}?") == (
        "C:doc says {question} Q:what is {context}?"
    )


def test_the_context_labels_passages_and_stops_at_the_cap() -> None:
    hits = [qpb.Hit(id=f"d{i}", text="x" * 40, score=1.0 - i / 10) for i in range(5)]
    spec = parse_spec({**GOOD, "max_context_chars": 100})
    passages, context = build_context(spec, hits)
    assert [p.id for p in passages] == ["d0", "d1"]
    assert context.startswith("[d0] " + "x" * 40) and len(context) <= 100
    # A first passage longer than the cap is cut, never dropped: an answer always has a source.
    passages, context = build_context(parse_spec({**GOOD, "max_context_chars": 20}), hits)
    assert [p.id for p in passages] == ["d0"] and len(context) <= 20


def test_the_question_is_the_prompt_or_the_last_user_message() -> None:
    assert question_of("why?") == "why?"
    chat = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "second"},
    ]
    assert question_of(chat) == "second"
    with pytest.raises(InvalidArgument):
        question_of([{"role": "system", "content": "be brief"}])
    with pytest.raises(InvalidArgument):
        question_of("   ")
