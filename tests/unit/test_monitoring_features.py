"""Feature paths read payload-log fields, LLM text lengths, JSON fields, tensors and labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common.errors import InvalidArgument
from services.monitoring.features import extract_categorical, extract_numeric, resolve_kind
from services.monitoring.profiles import CATEGORICAL, NUMERIC

pytestmark = pytest.mark.unit


def logs() -> list[PayloadLog]:
    chat = PayloadLog(latency_ms=12.5, status="OK")
    chat.inputs.update({"messages": [{"role": "user", "content": "hello"}, {"role": "user", "content": "you"}]})
    chat.outputs.update({"text": "hi there"})
    chat.labels["region"] = "eu"
    tensor = PayloadLog(latency_ms=3.0, status="INVALID_ARGUMENT")
    tensor.inputs.update({"pixels": [0.5, 1.5, 2.5], "meta": {"lang": "fr", "age": 41}})
    return [chat, tensor]


def test_llm_lengths_and_fields():
    values, rows = extract_numeric("prompt_length", logs())
    assert rows is None and values[0] == 8 and math.isnan(values[1])
    assert extract_numeric("completion_length", logs())[0][0] == 8
    assert list(extract_numeric("latency_ms", logs())[0]) == [12.5, 3.0]
    assert extract_categorical("status", logs()) == ["OK", "INVALID_ARGUMENT"]
    assert extract_categorical("labels.region", logs()) == ["eu", None]


def test_json_fields_and_tensors():
    age, _ = extract_numeric("inputs.meta.age", logs())
    assert math.isnan(age[0]) and age[1] == 41
    assert extract_categorical("inputs.meta.lang", logs()) == [None, "fr"]
    second, _ = extract_numeric("inputs.pixels[1]", logs())
    assert math.isnan(second[0]) and second[1] == 1.5
    every, rows = extract_numeric("inputs.pixels", logs())
    assert np.array_equal(rows, [0, 1, 1, 1]) and list(every[1:]) == [0.5, 1.5, 2.5]


def test_kinds_and_bad_paths():
    assert resolve_kind("status", None) == CATEGORICAL and resolve_kind("labels.x", None) == CATEGORICAL
    assert resolve_kind("inputs.x", None) == NUMERIC and resolve_kind("inputs.x", CATEGORICAL) == CATEGORICAL
    for bad in ("latency", "inputs.", "inputs.a..b", "labels."):
        with pytest.raises(InvalidArgument):
            resolve_kind(bad, None)
