"""Plain types of the serving core: endpoint specs, inference calls and their results."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from services.common.errors import InvalidArgument

LOADING, READY, FAILED = "LOADING", "READY", "FAILED"
LLM, TENSOR = "llm", "tensor"

_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ServedModelSpec:
    """One model behind an endpoint: a registered model pinned to a version or following an alias."""

    model_name: str
    version: int | None = None
    alias: str | None = None
    traffic_percent: int = 100

    @property
    def selector(self) -> str:
        return f"@{self.alias}" if self.alias else f"v{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "alias": self.alias,
            "traffic_percent": self.traffic_percent,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServedModelSpec:
        return cls(data["model_name"], data.get("version"), data.get("alias"), int(data.get("traffic_percent", 100)))


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    served_models: tuple[ServedModelSpec, ...]
    max_concurrency: int = 0

    def validated(self) -> EndpointSpec:
        if not _ENDPOINT_NAME.match(self.name):
            raise InvalidArgument(
                "endpoint names are 1-128 letters, digits, '_', '.', '-', starting with a letter or digit",
                field="name",
            )
        if not self.served_models:
            raise InvalidArgument("an endpoint needs at least one served model", field="served_models")
        if self.max_concurrency < 0:
            raise InvalidArgument("must not be negative", field="max_concurrency")
        models = list(self.served_models)
        if len(models) == 1 and models[0].traffic_percent == 0:
            models[0] = ServedModelSpec(models[0].model_name, models[0].version, models[0].alias, 100)
        for spec in models:
            if not spec.model_name:
                raise InvalidArgument("model_name is required", field="served_models")
            if (spec.version is None) == (spec.alias is None) or (spec.version is not None and spec.version < 1):
                raise InvalidArgument(
                    f"{spec.model_name}: give either a version (>= 1) or an alias", field="served_models"
                )
            if not 0 <= spec.traffic_percent <= 100:
                raise InvalidArgument(f"{spec.model_name}: traffic_percent must be 0-100", field="served_models")
        if sum(s.traffic_percent for s in models) != 100:
            raise InvalidArgument("traffic percentages must add up to 100", field="served_models")
        if len({(s.model_name, s.selector) for s in models}) != len(models):
            raise InvalidArgument("the same model and version/alias is listed twice", field="served_models")
        return EndpointSpec(self.name, tuple(models), self.max_concurrency)


@dataclass(frozen=True)
class StoredEndpoint:
    spec: EndpointSpec
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ServedModelStatus:
    spec: ServedModelSpec
    version: int  # 0 while none is loaded
    state: str
    reason: str = ""
    runtime: str = ""


@dataclass(frozen=True)
class EndpointView:
    stored: StoredEndpoint
    state: str
    reason: str
    served: tuple[ServedModelStatus, ...]


# -- inference calls ------------------------------------------------------------


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling as the caller asked it; None means the service default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass
class GenerateCall:
    endpoint: str
    request_id: str
    source: str  # "grpc", "oip", "kafka"
    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    size_bytes: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    def inputs_for_log(self) -> dict[str, Any]:
        if self.messages is not None:
            return {"messages": [dict(m) for m in self.messages]}
        return {"prompt": self.prompt or ""}


@dataclass
class TensorCall:
    endpoint: str
    request_id: str
    source: str
    tensors: dict[str, np.ndarray]
    size_bytes: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TextChunk:
    """New text since the previous chunk of one generation."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finished: bool
    finish_reason: str | None
    served_model: str
    model_version: int


@dataclass(frozen=True)
class TensorResult:
    outputs: dict[str, np.ndarray]
    served_model: str
    model_version: int


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output of a model, as the Open Inference Protocol describes it."""

    name: str
    datatype: str  # "FP32", "INT64", "BYTES"
    shape: tuple[int, ...]  # -1: any size
