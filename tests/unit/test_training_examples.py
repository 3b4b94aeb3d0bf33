"""Dataset rows and the loss mask, without infrastructure: the tiny Llama's tokenizer only."""

from __future__ import annotations

import json

import pytest

from services.fixtures import capitals
from services.training.dataset_rows import canonical, content_hash, parse_jsonl, split_lines
from services.training.examples import IGNORE, build_examples, end_of_turn_ids

pytestmark = pytest.mark.unit


def _lines(rows) -> list[bytes]:
    return [json.dumps(r).encode() for r in rows]


def test_rows_of_one_format_parse_and_hash_by_content() -> None:
    parsed = parse_jsonl(_lines(capitals.chat_rows()), max_rows=100, max_row_bytes=10_000)

    assert not parsed.problems and parsed.format == "CHAT" and len(parsed.rows) == len(capitals.COUNTRIES)
    assert content_hash(canonical(parsed.rows)) == content_hash(
        canonical(json.loads(line) for line in _lines(capitals.chat_rows()))
    )


def test_bad_rows_are_named_by_number() -> None:
    lines = [b'{"text": "a"}', b"[1, 2]", b'{"prompt": "p", "response": "r"}', b'{"other": 1}']

    problems = parse_jsonl(lines, max_rows=100, max_row_bytes=10_000).problems

    assert "row 2: not a JSON object" in problems
    assert any(p.startswith("row 4: no known columns") for p in problems)
    assert any("mixed formats: text from row 1, prompt_response from row 3" in p for p in problems)


def test_limits_hold_before_parsing() -> None:
    problems = parse_jsonl([b'{"text": "' + b"x" * 100 + b'"}'], max_rows=10, max_row_bytes=50).problems
    assert problems[0] == "row 1: longer than 50 bytes"


def test_lines_split_anywhere_are_joined() -> None:
    assert list(split_lines([b'{"a"', b": 1}\n{", b'"b": 2}'])) == [b'{"a": 1}', b'{"b": 2}']


def test_the_assistant_turn_and_its_end_of_turn_token_are_trained_and_nothing_else() -> None:
    from transformers import AutoTokenizer

    from services.fixtures.tiny_llama import build_tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_llama())
    built = build_examples(tokenizer, capitals.chat_rows()[:1], "CHAT", 64, end_of_turn_ids(tokenizer))

    assert not built.problems
    example = built.examples[0]
    trained = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(trained).startswith(capitals.COUNTRIES[0][1])
    assert tokenizer.eos_token_id in trained
    assert "capital" not in tokenizer.decode(trained)
