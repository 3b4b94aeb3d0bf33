"""Feature columns out of a batch of payload logs: one NumPy array (or list) per feature.

A feature path names a payload-log field (`latency_ms`, `status`...), a derived
LLM feature (`prompt_length`, `completion_length`), a JSON field or named tensor
inside the inputs/outputs (`inputs.temperature`, `inputs.pixels[3]`,
`outputs.scores`; a list without an index contributes every element), or a
label (`labels.region`). Each path compiles once into a getter; the batch is
then read column by column.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf.struct_pb2 import Struct, Value

from services.common.errors import InvalidArgument
from services.monitoring.profiles import CATEGORICAL, NUMERIC

NUMERIC_FIELDS = {
    "latency_ms": "latency_ms",
    "time_to_first_token_ms": "time_to_first_token_ms",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
}
CATEGORICAL_FIELDS = ("status", "finish_reason", "model_version", "served_model", "source")
DERIVED = ("prompt_length", "completion_length")
DEFAULT_LLM_FEATURES = (
    "prompt_length",
    "completion_length",
    "latency_ms",
    "time_to_first_token_ms",
    "prompt_tokens",
    "completion_tokens",
)
# Only answered (status OK) requests are profiled, so a status feature would be constant:
# error rates are Prometheus metrics (tessera_monitoring_errors_total), not drift features.
UNPROFILED_FIELDS = ("status",)

# Where LLM prompts and completions live in the inputs/outputs of the front ends.
_PROMPT_KEYS = ("prompt", "text_input", "input", "messages")
_COMPLETION_KEYS = ("text", "completion", "text_output", "output", "choices")
_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclasses.dataclass(frozen=True)
class Feature:
    path: str
    kind: str  # profiles.NUMERIC or profiles.CATEGORICAL


def resolve_kind(path: str, requested: str | None) -> str:
    """The feature's kind: the one requested, or what its name implies."""
    validate_path(path)
    if requested:
        return requested
    if path in CATEGORICAL_FIELDS or path.startswith("labels."):
        return CATEGORICAL
    return NUMERIC


MAX_PATH = 256


def validate_path(path: str) -> None:
    if len(path) > MAX_PATH:
        raise InvalidArgument(f"feature path: at most {MAX_PATH} characters", field="features")
    if path in NUMERIC_FIELDS or path in CATEGORICAL_FIELDS or path in DERIVED:
        return
    root, _, rest = path.partition(".")
    if root in ("inputs", "outputs") and _steps(rest) or root == "labels" and rest:
        return
    raise InvalidArgument(f"unknown feature path {path!r}", field="features")


def _steps(rest: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in rest.split("."):
        found = _PATH_STEP.findall(part)
        if not part or "".join(name or f"[{index}]" for name, index in found) != part:
            return []
        steps += [name if name else int(index) for name, index in found]
    return steps


def _plain(value: Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return value.struct_value
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


def _walk(struct: Struct, steps: Sequence[str | int]) -> Any:
    current: Any = struct
    for step in steps:
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                return None
            current = current[step]
        else:
            if not isinstance(current, Struct):
                return None
            value = current.fields.get(step)
            if value is None:
                return None
            current = _plain(value)
    return current


def _text_length(value: Any) -> float:
    if isinstance(value, str):
        return float(len(value))
    if isinstance(value, list):  # chat messages or choices: add up their contents
        return float(sum(_text_length(item) for item in value))
    if isinstance(value, Struct):
        for key in ("content", "text", "message"):
            if key in value.fields:
                return _text_length(_plain(value.fields[key]))
    return float("nan")


def _first_text(struct: Struct, keys: Sequence[str]) -> float:
    for key in keys:
        value = struct.fields.get(key)
        if value is not None:
            return _text_length(_plain(value))
    return float("nan")


def extract_numeric(path: str, logs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Values as floats (NaN = null). With list-valued paths, also the row index of each value."""
    n = len(logs)
    if path in NUMERIC_FIELDS:
        name = NUMERIC_FIELDS[path]
        return np.fromiter((getattr(log, name) for log in logs), np.float64, n), None
    if path == "prompt_length":
        return np.fromiter((_first_text(log.inputs, _PROMPT_KEYS) for log in logs), np.float64, n), None
    if path == "completion_length":
        return np.fromiter((_first_text(log.outputs, _COMPLETION_KEYS) for log in logs), np.float64, n), None
    getter = _struct_getter(path)
    raw = [getter(log) for log in logs]
    if not any(isinstance(v, list) for v in raw):
        return np.array([_as_float(v) for v in raw], dtype=np.float64), None
    values: list[float] = []
    rows: list[int] = []
    for row, value in enumerate(raw):
        items = value if isinstance(value, list) else [value]
        values += [_as_float(v) for v in items]
        rows += [row] * len(items)
    return np.array(values, dtype=np.float64), np.array(rows, dtype=np.int64)


def extract_categorical(path: str, logs: Sequence[Any]) -> list[str | None]:
    if path in CATEGORICAL_FIELDS:
        return [getattr(log, path, "") or None for log in logs]
    if path.startswith("labels."):
        key = path[len("labels.") :]
        return [log.labels.get(key) for log in logs]
    getter = _struct_getter(path)
    return [_as_category(getter(log)) for log in logs]


def _struct_getter(path: str) -> Callable[[Any], Any]:
    root, _, rest = path.partition(".")
    steps = _steps(rest)
    if root == "labels":
        return lambda log: log.labels.get(rest)
    if root == "inputs":
        return lambda log: _walk(log.inputs, steps)
    return lambda log: _walk(log.outputs, steps)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return float("nan")


def _as_category(value: Any) -> str | None:
    if value is None or isinstance(value, Struct | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
