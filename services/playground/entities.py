"""Plain types the playground's core works with (no transport types)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Compare sends one prompt to this many endpoints at once; blind mode to exactly two.
MIN_COMPARE, MAX_COMPARE = 2, 4
MAX_STOP_STRINGS, MAX_STOP_CHARS = 4, 64
MAX_NAME_CHARS = 256
MAX_NOTE_CHARS = 8_000
# Rows on one review or runs page.
PAGE_SIZES = (10, 20, 50)
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_TOKEN_CHARS = 512
PREFERENCES = ("A", "B", "TIE", "BOTH_BAD")
VERDICTS = ("GOOD", "BAD")


@dataclass(frozen=True)
class Bounds:
    max_prompt_chars: int
    max_system_chars: int
    max_tokens: int


@dataclass(frozen=True)
class ChatParams:
    """What one generation asks for, already bounded."""

    prompt: str
    system: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def body(self, endpoint: str) -> dict:
        """The OpenAI chat-completions request body, streamed with usage."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.prompt})
        body: dict = {
            "model": endpoint,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.top_p is not None:
            body["top_p"] = self.top_p
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.stop:
            body["stop"] = list(self.stop)
        return body


@dataclass(frozen=True)
class Comparison:
    """One prompt sent to several endpoints, in the order shown (sealed into a ticket for the page)."""

    endpoints: tuple[str, ...]
    request_ids: tuple[str, ...]
    params: ChatParams
    blind: bool
    # Blind mode: the two endpoints are shown in the reverse of the order chosen.
    sides_swapped: bool = False
    # Whose comparison it is (a hash of the session's token): another session cannot use the ticket.
    owner: str = ""
    issued_at: float = 0.0


@dataclass(frozen=True)
class StreamEvent:
    """One event of a proxied generation: a token, citations, the end, or an error."""

    kind: str  # "token" | "context" | "done" | "error"
    data: dict = field(default_factory=dict)
