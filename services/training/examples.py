"""Dataset rows -> token ids and labels: the one place the loss mask is decided.

Pre-flight and the trainer both call `build_examples`, so what pre-flight checks
is what training sees. Chat rows are rendered with the base model's chat
template; each assistant turn (its content and the end-of-turn token the template
puts after it) is in the loss mask, everything else is -100. A turn whose
end-of-turn token falls outside the mask (the template leaves it out, or the
sequence length cuts it off) is a problem: such a model never learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass
class BuiltExamples:
    examples: list[Example] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tokens: int = 0
    trained_tokens: int = 0

    def problem(self, text: str, limit: int = 20) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)


def end_of_turn_ids(tokenizer, generation_eos: list[int] | None = None) -> set[int]:
    """Tokens that end a turn: the tokenizer's eos and the generation config's eos ids."""
    ids = set(generation_eos or ())
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def check_chat_template(tokenizer) -> str | None:
    """Why the chat template cannot be used, or None."""
    if not getattr(tokenizer, "chat_template", None):
        return "the base model's tokenizer has no chat template"
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    try:
        text = _render(tokenizer, probe, False)
        _render(tokenizer, probe[:1], True)
    except Exception as exc:  # noqa: BLE001 - a template is user content; any failure is a refusal
        return f"the chat template does not render: {exc.__class__.__name__}: {str(exc)[:160]}"
    if "pong" not in text or "ping" not in text:
        return "the chat template does not render message contents"
    return None


def _chat_example(tokenizer, messages: list[dict], seq_len: int, eot: set[int]) -> tuple[Example | None, str | None]:
    full = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else ""
        through = _render(tokenizer, messages[: i + 1], False)
        if not full.startswith(through) or not through.startswith(before):
            return None, "the chat template does not render a conversation as the sum of its turns"
        spans.append((len(before), len(through)))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = encoded["offset_mapping"]
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        for t, (a, _b) in enumerate(offsets):
            if start <= a < end:
                labels[t] = ids[t]
    ids, labels = ids[:seq_len], labels[:seq_len]
    for start, end in spans:
        turn = [ids[t] for t, (a, _b) in enumerate(offsets[: len(ids)]) if start <= a < end and labels[t] != IGNORE]
        if not any(token in eot for token in turn):
            if offsets and end > (offsets[len(ids) - 1][1] if ids else 0):
                return None, f"the end-of-turn token is cut off by sequence_length {seq_len}"
            return None, "the end-of-turn token is outside the loss mask (the chat template does not end the turn)"
    return Example(ids, labels), None


def build_examples(tokenizer, rows: list[dict], task: str, seq_len: int, eot: set[int]) -> BuiltExamples:
    """Token ids and labels for every row (1-based row numbers in problems)."""
    out = BuiltExamples()
    if task == "CHAT":
        problem = check_chat_template(tokenizer)
        if problem:
            out.problem(problem)
            return out
    eos = tokenizer.eos_token_id
    if task != "CHAT" and eos is None:
        out.problem("the base model's tokenizer has no end-of-sequence token")
        return out
    for number, row in enumerate(rows, start=1):
        if task == "CHAT":
            example, problem = _chat_example(tokenizer, row["messages"], seq_len, eot)
        elif task == "INSTRUCTION":
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            response = tokenizer(row["response"], add_special_tokens=False)["input_ids"] + [eos]
            ids = (prompt + response)[:seq_len]
            labels = ([IGNORE] * len(prompt) + response)[:seq_len]
            example, problem = Example(ids, labels), None
            if len(prompt) + len(response) > seq_len:
                problem = f"the end-of-sequence token is cut off by sequence_length {seq_len}"
        else:
            ids = (tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [eos])[:seq_len]
            example, problem = Example(ids, list(ids)), None
        if problem:
            out.problem(f"row {number}: {problem}")
            continue
        if example.trained_tokens == 0:
            out.problem(f"row {number}: no token is trained on")
            continue
        out.examples.append(example)
        out.tokens += len(example.input_ids)
        out.trained_tokens += example.trained_tokens
    return out
