"""Plain types of the serving core: endpoint specs, inference calls and their results.

Every client-chosen string is bounded here, before any work is done on it: the
front ends all build these types, so one check covers gRPC, OIP, Kafka and HTTP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

import numpy as np

from services.common.errors import InvalidArgument

LOADING, READY, FAILED = "LOADING", "READY", "FAILED"
# An agent (services/serving/agents.py) answers text like an LLM, from retrieval and an LLM endpoint;
# an embedding model (a sentence-transformers folder) answers vectors.
LLM, TENSOR, AGENT, EMBEDDING = "llm", "tensor", "agent", "embedding"

# `\Z`, not `$`: `$` also matches before a trailing newline.
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
# Printable ASCII without spaces: ids end up in logs, Kafka keys and monitoring's indexes.
_REQUEST_ID = re.compile(r"[!-~]{1,128}\Z")
# `catalog.schema.model`, as the registry names models.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
_ALIAS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}\Z")
_PARAMETER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}\Z")

MAX_SERVED_MODELS = 16
MAX_LABELS = 16
MAX_LABEL_VALUE = 256
MAX_PARAMETERS = 32
MAX_PARAMETER_VALUE = 1024
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
MAX_MESSAGES = 1024
MAX_ROLE_LENGTH = 32
MAX_LOGPROBS = 20
# A JSON schema for guided decoding, serialized (grammars are compiled from it: keep it bounded).
MAX_SCHEMA_BYTES = 64 * 1024
# Texts per embedding call, and characters per text (the model's own token limit is checked too).
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_CHARS = 32_768


def check_endpoint_name(name: str) -> str:
    if not _ENDPOINT_NAME.match(name):
        raise InvalidArgument(
            "endpoint names are 1-128 letters, digits, '_', '.', '-', starting with a letter or digit",
            field="name",
        )
    return name


def check_request_id(request_id: str) -> str:
    if not _REQUEST_ID.match(request_id):
        raise InvalidArgument("request ids are 1-128 printable ASCII characters without spaces", field="request_id")
    return request_id


def is_valid_request_id(request_id: str) -> bool:
    return bool(_REQUEST_ID.match(request_id))


def is_valid_endpoint_name(name: str) -> bool:
    return bool(_ENDPOINT_NAME.match(name))


def check_labels(labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels, got {len(labels)}", field="labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise InvalidArgument("label keys are 1-63 letters, digits, '_', '.', '-'", field="labels")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or not value.isprintable():
            raise InvalidArgument(
                f"label {key!r}: values are printable text of at most {MAX_LABEL_VALUE} characters", field="labels"
            )


def check_parameters(parameters: Mapping[str, Any]) -> None:
    """A front end's free-form parameter map (OIP `parameters`, extra request fields)."""
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidArgument(f"at most {MAX_PARAMETERS} parameters, got {len(parameters)}", field="parameters")
    for key, value in parameters.items():
        if not isinstance(key, str) or not _PARAMETER_KEY.match(key):
            raise InvalidArgument("parameter names are 1-63 letters, digits, '_', '.', '-'", field="parameters")
        if isinstance(value, str | bytes) and len(value) > MAX_PARAMETER_VALUE:
            raise InvalidArgument(
                f"parameter {key!r} is longer than {MAX_PARAMETER_VALUE} characters", field="parameters"
            )


# The registry tag that makes a model version a LoRA adapter: `catalog.schema.model/N`, its base version.
BASE_MODEL_TAG = "tessera.base_model"
# Ranks vLLM's LoRA layers are built for.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class EngineSpec:
    """A served model's vLLM engine settings as the endpoint asked them; None: the operator's default."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    kv_cache_mib: int | None = None
    enable_prefix_caching: bool | None = None
    max_loras: int | None = None
    max_lora_rank: int | None = None

    def is_default(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> EngineSpec:
        data = data or {}
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class EngineBounds:
    """What the operator lets an endpoint ask of an engine (TESSERA_SERVING_LIMIT_*)."""

    max_model_len: int
    max_num_seqs: int
    kv_cache_mib: int
    max_loras: int
    max_lora_rank: int

    def check(self, spec: EngineSpec, model_name: str) -> None:
        for name in ("max_model_len", "max_num_seqs", "kv_cache_mib", "max_loras", "max_lora_rank"):
            value, bound = getattr(spec, name), getattr(self, name)
            if value is not None and not 1 <= value <= bound:
                raise InvalidArgument(
                    f"{model_name}: engine.{name} must be 1-{bound} (the operator's bound)", field="served_models"
                )
        if spec.max_lora_rank is not None and spec.max_lora_rank not in LORA_RANKS:
            raise InvalidArgument(
                f"{model_name}: engine.max_lora_rank must be one of {', '.join(map(str, LORA_RANKS))}",
                field="served_models",
            )


@dataclass(frozen=True)
class ServedModelSpec:
    """One model behind an endpoint: a registered model pinned to a version or following an alias."""

    model_name: str
    version: int | None = None
    alias: str | None = None
    traffic_percent: int = 100
    engine: EngineSpec = EngineSpec()

    @property
    def selector(self) -> str:
        return f"@{self.alias}" if self.alias else f"v{self.version}"

    def check(self) -> None:
        if not self.model_name:
            raise InvalidArgument("model_name is required", field="served_models")
        if not _MODEL_NAME.match(self.model_name):
            raise InvalidArgument(
                "served model names are `catalog.schema.model`: 1-255 letters, digits, '_', '.', '-'",
                field="served_models",
            )
        if self.alias is not None and not _ALIAS.match(self.alias):
            raise InvalidArgument(
                f"{self.model_name}: aliases are 1-128 letters, digits, '_', '.', '-'", field="served_models"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "alias": self.alias,
            "traffic_percent": self.traffic_percent,
            **({"engine": self.engine.to_json()} if not self.engine.is_default() else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServedModelSpec:
        return cls(
            data["model_name"],
            data.get("version"),
            data.get("alias"),
            int(data.get("traffic_percent", 100)),
            EngineSpec.from_json(data.get("engine")),
        )


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    served_models: tuple[ServedModelSpec, ...]
    max_concurrency: int = 0

    def validated(self) -> EndpointSpec:
        check_endpoint_name(self.name)
        if not self.served_models:
            raise InvalidArgument("an endpoint needs at least one served model", field="served_models")
        if len(self.served_models) > MAX_SERVED_MODELS:
            raise InvalidArgument(f"at most {MAX_SERVED_MODELS} served models", field="served_models")
        if self.max_concurrency < 0:
            raise InvalidArgument("must not be negative", field="max_concurrency")
        models = list(self.served_models)
        if len(models) == 1 and models[0].traffic_percent == 0:
            models[0] = replace(models[0], traffic_percent=100)
        for spec in models:
            spec.check()
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
    base_model: str = ""  # a LoRA adapter's base version, whose engine serves it
    base_version: int = 0


@dataclass(frozen=True)
class EndpointView:
    stored: StoredEndpoint
    state: str
    reason: str
    served: tuple[ServedModelStatus, ...]


@dataclass(frozen=True)
class ResolvedVersion:
    """A model version as the registry has it now; `content_id` changes whenever its files may differ.

    A model deleted and re-created under the same name restarts at v1: the
    name and version alone do not say which files they mean, the content id does.
    """

    model_name: str
    version: int
    content_id: str
    # A LoRA adapter's base version (its `tessera.base_model` tag); "" and 0 for a whole model.
    base_model: str = ""
    base_version: int = 0

    @property
    def is_adapter(self) -> bool:
        return bool(self.base_model)


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
    # Log probabilities: of each generated token with its `logprobs` most likely alternatives, and of
    # each prompt token with `prompt_logprobs` alternatives (what log-likelihood evaluations need).
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    # Guided decoding: the answer is valid JSON (`json_object`), or valid under this JSON schema (serialized).
    json_schema: str | None = None
    json_object: bool = False

    def check(self) -> None:
        if self.temperature is not None and not (math.isfinite(self.temperature) and 0 <= self.temperature <= 100):
            raise InvalidArgument("temperature must be between 0 and 100", field="sampling")
        if self.top_p is not None and not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise InvalidArgument("top_p must be in (0, 1]", field="sampling")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidArgument("max_tokens must be at least 1", field="sampling")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidArgument("seed must be a non-negative 64-bit integer", field="sampling")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                raise InvalidArgument(f"{name} must be from 0 to {MAX_LOGPROBS}", field="sampling")
        if self.json_schema is not None and len(self.json_schema.encode()) > MAX_SCHEMA_BYTES:
            raise InvalidArgument(f"JSON schemas are at most {MAX_SCHEMA_BYTES} bytes", field="response_format")
        if self.json_schema is not None and self.json_object:
            raise InvalidArgument("give a JSON schema or json_object, not both", field="response_format")
        if len(self.stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_LENGTH for s in self.stop):
            raise InvalidArgument(
                f"at most {MAX_STOP_STRINGS} stop strings of at most {MAX_STOP_LENGTH} characters", field="sampling"
            )


@dataclass
class GenerateCall:
    endpoint: str
    request_id: str
    source: str  # "grpc", "oip", "kafka", "http"
    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    size_bytes: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    # A front end's free-form request parameters, bounded like every other client-chosen value.
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """INVALID_ARGUMENT for anything out of bounds; the request id and endpoint first."""
        check_request_id(self.request_id)
        check_endpoint_name(self.endpoint)
        check_labels(self.labels)
        check_parameters(self.parameters)
        self.sampling.check()
        if self.prompt is None and not self.messages:
            raise InvalidArgument("give a prompt or chat messages")
        if self.messages is not None:
            if len(self.messages) > MAX_MESSAGES:
                raise InvalidArgument(f"at most {MAX_MESSAGES} chat messages", field="messages")
            for message in self.messages:
                role = message.get("role", "")
                if not role or len(role) > MAX_ROLE_LENGTH or not role.isprintable():
                    raise InvalidArgument(f"chat roles are 1-{MAX_ROLE_LENGTH} printable characters", field="messages")

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
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        check_request_id(self.request_id)
        check_endpoint_name(self.endpoint)
        check_labels(self.labels)
        check_parameters(self.parameters)


@dataclass
class EmbedCall:
    """Texts to embed; `dimensions`, when given, must be the model's own (no model here can shorten vectors)."""

    endpoint: str
    request_id: str
    source: str
    texts: Sequence[str]
    dimensions: int | None = None
    size_bytes: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        check_request_id(self.request_id)
        check_endpoint_name(self.endpoint)
        check_labels(self.labels)
        if not self.texts or len(self.texts) > MAX_EMBEDDING_INPUTS:
            raise InvalidArgument(f"give 1 to {MAX_EMBEDDING_INPUTS} texts to embed", field="input")
        for text in self.texts:
            if not isinstance(text, str) or not text or len(text) > MAX_EMBEDDING_CHARS:
                raise InvalidArgument(
                    f"each input is a non-empty string of at most {MAX_EMBEDDING_CHARS} characters", field="input"
                )
        if self.dimensions is not None and not 1 <= self.dimensions <= 65_536:
            raise InvalidArgument("dimensions must be from 1 to 65536", field="dimensions")


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: np.ndarray  # (texts, dimension) float32
    prompt_tokens: int
    served_model: str
    model_version: int


@dataclass(frozen=True)
class TokenLogprob:
    """One token, its log probability, and the most likely alternatives at its position."""

    token: str
    logprob: float | None  # None: the first prompt token, which nothing precedes
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Passage:
    """A document an agent retrieved and put in its prompt: what its answer may cite."""

    id: str
    text: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "score": self.score}


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
    # The new tokens' log probabilities (when asked), and the prompt's (on the first chunk, when asked).
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
    # Agents: the retrieved context and the ids it cites, on the first chunk of the answer.
    passages: tuple[Passage, ...] = ()
    citations: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextResult:
    """A whole generation, collected from its chunks."""

    request_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    served_model: str
    model_version: int
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
    passages: tuple[Passage, ...] = ()
    citations: tuple[str, ...] = ()


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
