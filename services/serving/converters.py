"""Wire types <-> core types for the tessera.serving.v1 API and the Kafka messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from google.protobuf import json_format, struct_pb2
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.errors import InvalidArgument
from services.serving.entities import (
    EndpointSpec,
    EndpointView,
    EngineSpec,
    GenerateCall,
    Passage,
    SamplingSpec,
    ServedModelSpec,
    TensorCall,
    TextResult,
)
from services.serving.usage import EVERY_ENDPOINT, UsageLimit, UsageRow


def spec_from_proto(name: str, served: Iterable[pb.ServedModel], max_concurrency: int) -> EndpointSpec:
    models = []
    for m in served:
        selector = m.WhichOneof("selector")
        models.append(
            ServedModelSpec(
                m.model_name,
                version=m.version if selector == "version" else None,
                alias=m.alias if selector == "alias" else None,
                traffic_percent=m.traffic_percent,
                engine=engine_from_proto(m.engine),
            )
        )
    return EndpointSpec(name, tuple(models), max_concurrency)


_ENGINE_FIELDS = (
    "max_model_len",
    "max_num_seqs",
    "kv_cache_mib",
    "enable_prefix_caching",
    "max_loras",
    "max_lora_rank",
)


def engine_from_proto(engine: pb.EngineSettings) -> EngineSpec:
    return EngineSpec(**{name: getattr(engine, name) if engine.HasField(name) else None for name in _ENGINE_FIELDS})


def engine_to_proto(engine: EngineSpec) -> pb.EngineSettings:
    return pb.EngineSettings(**engine.to_json())


def endpoint_to_proto(view: EndpointView) -> pb.Endpoint:
    stored = view.stored
    message = pb.Endpoint(
        name=stored.spec.name,
        state=view.state,
        state_reason=view.reason,
        max_concurrency=stored.spec.max_concurrency,
        created_by=stored.created_by,
    )
    for m in stored.spec.served_models:
        served = message.served_models.add(model_name=m.model_name, traffic_percent=m.traffic_percent)
        if m.alias:
            served.alias = m.alias
        else:
            served.version = m.version or 0
        if not m.engine.is_default():
            served.engine.CopyFrom(engine_to_proto(m.engine))
    for s in view.served:
        message.status.add(
            model_name=s.spec.model_name,
            alias=s.spec.alias or "",
            version=s.version,
            state=s.state,
            state_reason=s.reason,
            runtime=s.runtime,
            traffic_percent=s.spec.traffic_percent,
            base_model=s.base_model,
            base_version=s.base_version,
        )
    message.created_at.FromDatetime(stored.created_at)
    message.updated_at.FromDatetime(stored.updated_at)
    return message


def sampling_from_proto(params: events_pb.SamplingParams) -> SamplingSpec:
    return SamplingSpec(
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        stop=tuple(params.stop),
        seed=params.seed if params.HasField("seed") else None,
        ignore_eos=params.ignore_eos,
    )


def generate_call(request: pb.GenerateRequest, *, source: str, request_id: str) -> GenerateCall:
    which = request.WhichOneof("input")
    return GenerateCall(
        endpoint=request.endpoint,
        request_id=request_id,
        source=source,
        prompt=request.prompt if which == "prompt" else None,
        messages=_messages(request.chat) if which == "chat" else None,
        sampling=sampling_from_proto(request.sampling),
        size_bytes=request.ByteSize(),
    )


def generate_response(result: TextResult) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        request_id=result.request_id,
        text=result.text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        served_model=result.served_model,
        model_version=str(result.model_version),
        citations=citations_to_proto(result.passages, result.citations),
    )


def citations_to_proto(passages: Sequence[Passage], citations: Sequence[str]) -> list[events_pb.Citation]:
    """An agent's citations with the score and text of each cited passage."""
    by_id = {p.id: p for p in passages}
    cited = [by_id.get(doc_id, Passage(doc_id, "", 0.0)) for doc_id in citations]
    return [events_pb.Citation(id=p.id, score=p.score, text=p.text) for p in cited]


def _messages(chat: events_pb.ChatList) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in chat.messages]


# -- Kafka ----------------------------------------------------------------------


def kafka_call(request: events_pb.InferenceRequest, size_bytes: int) -> GenerateCall | TensorCall:
    which = request.WhichOneof("input")
    if which == "tensors":
        return TensorCall(
            endpoint=request.endpoint,
            request_id=request.request_id,
            source="kafka",
            tensors=tensors_from_struct(request.tensors),
            size_bytes=size_bytes,
        )
    return GenerateCall(
        endpoint=request.endpoint,
        request_id=request.request_id,
        source="kafka",
        prompt=request.prompt if which == "prompt" else None,
        messages=_messages(request.chat) if which == "chat" else None,
        sampling=sampling_from_proto(request.sampling),
        size_bytes=size_bytes,
    )


def tensors_from_struct(struct: struct_pb2.Struct) -> dict[str, np.ndarray]:
    tensors = {}
    for name, value in json_format.MessageToDict(struct).items():
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise InvalidArgument(f"tensor {name!r} is not a rectangular list of numbers: {exc}") from exc
        if array.dtype.kind not in "fiub":
            raise InvalidArgument(f"tensor {name!r} must hold numbers only")
        tensors[name] = array
    return tensors


def tensors_to_struct(tensors: dict[str, np.ndarray]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({name: np.asarray(value).tolist() for name, value in tensors.items()})
    return struct


def usage_limit_from_proto(limit: pb.UsageLimit) -> UsageLimit:
    return UsageLimit(
        limits_scope(limit.endpoint, limit.every_endpoint), limit.principal, limit.metric, limit.period, limit.limit
    )


def limits_scope(endpoint: str, every_endpoint: bool) -> str:
    """The endpoint a limit is on, EVERY_ENDPOINT ("") for one spanning all; exactly one must be given."""
    if every_endpoint == bool(endpoint):
        raise InvalidArgument("give an endpoint, or every_endpoint for a limit across all of them", field="endpoint")
    return EVERY_ENDPOINT if every_endpoint else endpoint


def usage_limit_to_proto(limit: UsageLimit) -> pb.UsageLimit:
    return pb.UsageLimit(
        endpoint=limit.endpoint,
        principal=limit.principal,
        metric=limit.metric,
        period=limit.period,
        limit=limit.limit,
        every_endpoint=limit.endpoint == EVERY_ENDPOINT,
    )


def usage_row_to_proto(row: UsageRow) -> pb.UsageRow:
    return pb.UsageRow(
        day=row.day.isoformat(),
        endpoint=row.endpoint,
        principal=row.principal,
        served_model=row.served_model,
        requests=row.requests,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_usd=row.cost_usd,
        unpriced_requests=row.unpriced_requests,
    )
