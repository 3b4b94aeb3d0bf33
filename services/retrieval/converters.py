"""Wire types <-> core types for the gRPC and Kafka front ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from tessera.retrieval.v1 import retrieval_pb2 as pb

from services.common.errors import InvalidArgument
from services.retrieval.entities import (
    AllOf,
    AnyOf,
    BuildState,
    Comparison,
    Document,
    FieldType,
    Filter,
    Hit,
    IndexInfo,
    IndexSpec,
    MetadataField,
    Metric,
    Not,
    Op,
    Query,
    QueryMode,
)

METRICS = {
    pb.METRIC_UNSPECIFIED: Metric.COSINE,
    pb.COSINE: Metric.COSINE,
    pb.L2: Metric.L2,
    pb.INNER_PRODUCT: Metric.INNER_PRODUCT,
}
METRICS_OUT = {Metric.COSINE: pb.COSINE, Metric.L2: pb.L2, Metric.INNER_PRODUCT: pb.INNER_PRODUCT}
FIELD_TYPES = {
    pb.STRING: FieldType.STRING,
    pb.INT64: FieldType.INT64,
    pb.DOUBLE: FieldType.DOUBLE,
    pb.BOOL: FieldType.BOOL,
    pb.TIMESTAMP: FieldType.TIMESTAMP,
}
FIELD_TYPES_OUT = {v: k for k, v in FIELD_TYPES.items()}
BUILD_STATES = {BuildState.NOT_BUILT: pb.NOT_BUILT, BuildState.BUILDING: pb.BUILDING, BuildState.READY: pb.READY}
MODES = {
    pb.QUERY_MODE_UNSPECIFIED: QueryMode.ANN,
    pb.ANN: QueryMode.ANN,
    pb.HYBRID: QueryMode.HYBRID,
    pb.FULL_TEXT: QueryMode.FULL_TEXT,
}
OPS = {
    pb.Comparison.EQ: Op.EQ,
    pb.Comparison.NE: Op.NE,
    pb.Comparison.LT: Op.LT,
    pb.Comparison.LTE: Op.LTE,
    pb.Comparison.GT: Op.GT,
    pb.Comparison.GTE: Op.GTE,
    pb.Comparison.IN: Op.IN,
}


def spec_from_proto(request: pb.CreateIndexRequest) -> IndexSpec:
    if request.metric not in METRICS:
        raise InvalidArgument(f"unknown metric {request.metric}", field="metric")
    fields = []
    for f in request.metadata_schema:
        if f.type not in FIELD_TYPES:
            raise InvalidArgument(f"metadata column {f.name!r} needs a type", field="metadata_schema")
        fields.append(MetadataField(f.name, FIELD_TYPES[f.type]))
    return IndexSpec(
        name=request.name,
        dimension=request.dimension,
        metric=METRICS[request.metric],
        m=request.hnsw.m or 16,
        ef_construction=request.hnsw.ef_construction or 64,
        metadata_schema=tuple(fields),
        embedding_model=request.embedding.model,
        text_columns=tuple(request.embedding.text_columns),
        deferred_build=request.deferred_build,
    )


def index_to_proto(info: IndexInfo) -> pb.Index:
    spec = info.spec
    created = Timestamp()
    created.FromDatetime(info.created_at)
    return pb.Index(
        name=spec.name,
        dimension=spec.dimension,
        metric=METRICS_OUT[spec.metric],
        row_count=info.row_count,
        hnsw=pb.HnswSettings(m=spec.m, ef_construction=spec.ef_construction),
        metadata_schema=[pb.MetadataField(name=f.name, type=FIELD_TYPES_OUT[f.type]) for f in spec.metadata_schema],
        embedding=pb.EmbeddingSource(model=spec.embedding_model, text_columns=spec.text_columns)
        if spec.managed
        else None,
        build_state=BUILD_STATES[info.build_state],
        owner=info.owner,
        created_at=created,
        last_recall=info.last_recall,
    )


def value_from_proto(value: struct_pb2.Value, where: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind in ("number_value", "string_value", "bool_value"):
        return getattr(value, kind)
    raise InvalidArgument(f"{where}: nested structs and lists are not metadata values")


def struct_to_dict(struct: struct_pb2.Struct, where: str) -> dict[str, Any]:
    return {key: value_from_proto(value, f"{where}.{key}") for key, value in struct.fields.items()}


def dict_to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    for key, value in values.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        struct[key] = value
    return struct


def document_from_proto(doc: pb.Document, i: int) -> Document:
    return Document(
        id=doc.id,
        version=doc.version,
        vector=np.asarray(doc.vector, dtype=np.float32) if len(doc.vector) else None,
        text=doc.text,
        metadata=struct_to_dict(doc.metadata, f"documents[{i}].metadata"),
    )


def filter_from_proto(flt: pb.Filter, depth: int = 0) -> Filter:
    if depth > 16:
        raise InvalidArgument("filter nests too deep", field="filter")
    kind = flt.WhichOneof("kind")
    if kind == "comparison":
        cmp = flt.comparison
        if cmp.op not in OPS:
            raise InvalidArgument(f"filter on {cmp.column!r} needs an operator", field="filter")
        return Comparison(
            column=cmp.column,
            op=OPS[cmp.op],
            value=value_from_proto(cmp.value, "filter"),
            values=tuple(value_from_proto(v, "filter") for v in cmp.values),
        )
    if kind == "all_of":
        return AllOf(tuple(filter_from_proto(f, depth + 1) for f in flt.all_of.filters))
    if kind == "any_of":
        return AnyOf(tuple(filter_from_proto(f, depth + 1) for f in flt.any_of.filters))
    if kind == "not":
        return Not(filter_from_proto(getattr(flt, "not"), depth + 1))
    raise InvalidArgument("empty filter", field="filter")


def query_from_proto(request: pb.QueryRequest) -> Query:
    if request.mode not in MODES:
        raise InvalidArgument(f"unknown query mode {request.mode}", field="mode")
    return Query(
        index=request.index,
        k=request.k,
        vector=np.asarray(request.vector, dtype=np.float32) if len(request.vector) else None,
        text=request.text,
        filter=filter_from_proto(request.filter) if request.HasField("filter") else None,
        ef_search=request.ef_search,
        mode=MODES[request.mode],
        columns=tuple(request.columns),
        include_text=request.include_text,
    )


def hits_to_proto(hits: list[Hit]) -> pb.QueryResponse:
    # On every Query: appending in place skips building a list of messages that the response then copies,
    # and unset text/metadata are left unset rather than assigned empty (about half the cost per call).
    response = pb.QueryResponse()
    add = response.hits.add
    for h in hits:
        hit = add(id=h.id, score=h.score, version=h.version)
        if h.text:
            hit.text = h.text
        if h.metadata:
            hit.metadata.CopyFrom(dict_to_struct(h.metadata))
    return response
