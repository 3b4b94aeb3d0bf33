import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    COSINE: _ClassVar[Metric]
    L2: _ClassVar[Metric]
    INNER_PRODUCT: _ClassVar[Metric]

class FieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_TYPE_UNSPECIFIED: _ClassVar[FieldType]
    STRING: _ClassVar[FieldType]
    INT64: _ClassVar[FieldType]
    DOUBLE: _ClassVar[FieldType]
    BOOL: _ClassVar[FieldType]
    TIMESTAMP: _ClassVar[FieldType]

class BuildState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUILD_STATE_UNSPECIFIED: _ClassVar[BuildState]
    NOT_BUILT: _ClassVar[BuildState]
    BUILDING: _ClassVar[BuildState]
    READY: _ClassVar[BuildState]

class QueryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUERY_MODE_UNSPECIFIED: _ClassVar[QueryMode]
    ANN: _ClassVar[QueryMode]
    HYBRID: _ClassVar[QueryMode]
    FULL_TEXT: _ClassVar[QueryMode]
METRIC_UNSPECIFIED: Metric
COSINE: Metric
L2: Metric
INNER_PRODUCT: Metric
FIELD_TYPE_UNSPECIFIED: FieldType
STRING: FieldType
INT64: FieldType
DOUBLE: FieldType
BOOL: FieldType
TIMESTAMP: FieldType
BUILD_STATE_UNSPECIFIED: BuildState
NOT_BUILT: BuildState
BUILDING: BuildState
READY: BuildState
QUERY_MODE_UNSPECIFIED: QueryMode
ANN: QueryMode
HYBRID: QueryMode
FULL_TEXT: QueryMode

class MetadataField(_message.Message):
    __slots__ = ("name", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FieldType
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FieldType, str]] = ...) -> None: ...

class EmbeddingSource(_message.Message):
    __slots__ = ("model", "text_columns")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    model: str
    text_columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., text_columns: _Optional[_Iterable[str]] = ...) -> None: ...

class HnswSettings(_message.Message):
    __slots__ = ("m", "ef_construction")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construction: int
    def __init__(self, m: _Optional[int] = ..., ef_construction: _Optional[int] = ...) -> None: ...

class Index(_message.Message):
    __slots__ = ("name", "dimension", "metric", "row_count", "hnsw", "metadata_schema", "embedding", "build_state", "owner", "created_at", "last_recall")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    METADATA_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    BUILD_STATE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RECALL_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    metric: Metric
    row_count: int
    hnsw: HnswSettings
    metadata_schema: _containers.RepeatedCompositeFieldContainer[MetadataField]
    embedding: EmbeddingSource
    build_state: BuildState
    owner: str
    created_at: _timestamp_pb2.Timestamp
    last_recall: float
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., row_count: _Optional[int] = ..., hnsw: _Optional[_Union[HnswSettings, _Mapping]] = ..., metadata_schema: _Optional[_Iterable[_Union[MetadataField, _Mapping]]] = ..., embedding: _Optional[_Union[EmbeddingSource, _Mapping]] = ..., build_state: _Optional[_Union[BuildState, str]] = ..., owner: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_recall: _Optional[float] = ...) -> None: ...

class CreateIndexRequest(_message.Message):
    __slots__ = ("name", "dimension", "metric", "hnsw", "metadata_schema", "embedding", "deferred_build")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    METADATA_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_BUILD_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    metric: Metric
    hnsw: HnswSettings
    metadata_schema: _containers.RepeatedCompositeFieldContainer[MetadataField]
    embedding: EmbeddingSource
    deferred_build: bool
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., hnsw: _Optional[_Union[HnswSettings, _Mapping]] = ..., metadata_schema: _Optional[_Iterable[_Union[MetadataField, _Mapping]]] = ..., embedding: _Optional[_Union[EmbeddingSource, _Mapping]] = ..., deferred_build: _Optional[bool] = ...) -> None: ...

class DescribeIndexRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListIndexesRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListIndexesResponse(_message.Message):
    __slots__ = ("indexes", "page")
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedCompositeFieldContainer[Index]
    page: _common_pb2.PageResponse
    def __init__(self, indexes: _Optional[_Iterable[_Union[Index, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DeleteIndexRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteIndexResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BuildIndexRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "version", "vector", "text", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    vector: _containers.RepeatedScalarFieldContainer[float]
    text: str
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., vector: _Optional[_Iterable[float]] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertDocumentsRequest(_message.Message):
    __slots__ = ("index", "documents")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    index: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, index: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class DocumentRef(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("index", "documents")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    index: str
    documents: _containers.RepeatedCompositeFieldContainer[DocumentRef]
    def __init__(self, index: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[DocumentRef, _Mapping]]] = ...) -> None: ...

class WriteDocumentsRequest(_message.Message):
    __slots__ = ("upsert", "delete")
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    upsert: UpsertDocumentsRequest
    delete: DeleteDocumentsRequest
    def __init__(self, upsert: _Optional[_Union[UpsertDocumentsRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteDocumentsRequest, _Mapping]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("applied", "skipped")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    skipped: int
    def __init__(self, applied: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("comparison", "all_of", "any_of")
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    ALL_OF_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NOT_FIELD_NUMBER: _ClassVar[int]
    comparison: Comparison
    all_of: FilterList
    any_of: FilterList
    def __init__(self, comparison: _Optional[_Union[Comparison, _Mapping]] = ..., all_of: _Optional[_Union[FilterList, _Mapping]] = ..., any_of: _Optional[_Union[FilterList, _Mapping]] = ..., **kwargs) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("column", "op", "value", "values")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[Comparison.Op]
        EQ: _ClassVar[Comparison.Op]
        NE: _ClassVar[Comparison.Op]
        LT: _ClassVar[Comparison.Op]
        LTE: _ClassVar[Comparison.Op]
        GT: _ClassVar[Comparison.Op]
        GTE: _ClassVar[Comparison.Op]
        IN: _ClassVar[Comparison.Op]
    OP_UNSPECIFIED: Comparison.Op
    EQ: Comparison.Op
    NE: Comparison.Op
    LT: Comparison.Op
    LTE: Comparison.Op
    GT: Comparison.Op
    GTE: Comparison.Op
    IN: Comparison.Op
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    column: str
    op: Comparison.Op
    value: _struct_pb2.Value
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, column: _Optional[str] = ..., op: _Optional[_Union[Comparison.Op, str]] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("index", "vector", "text", "k", "filter", "ef_search", "mode", "columns", "include_text")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TEXT_FIELD_NUMBER: _ClassVar[int]
    index: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    text: str
    k: int
    filter: Filter
    ef_search: int
    mode: QueryMode
    columns: _containers.RepeatedScalarFieldContainer[str]
    include_text: bool
    def __init__(self, index: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., text: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., ef_search: _Optional[int] = ..., mode: _Optional[_Union[QueryMode, str]] = ..., columns: _Optional[_Iterable[str]] = ..., include_text: _Optional[bool] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class QueryBatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[QueryRequest]
    def __init__(self, queries: _Optional[_Iterable[_Union[QueryRequest, _Mapping]]] = ...) -> None: ...

class QueryBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResponse, _Mapping]]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "metadata", "version", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    metadata: _struct_pb2.Struct
    version: int
    text: str
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class MeasureRecallRequest(_message.Message):
    __slots__ = ("index", "k", "sample_size", "ef_search")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    index: str
    k: int
    sample_size: int
    ef_search: int
    def __init__(self, index: _Optional[str] = ..., k: _Optional[int] = ..., sample_size: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class MeasureRecallResponse(_message.Message):
    __slots__ = ("recall", "k", "queries", "ef_search")
    RECALL_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    recall: float
    k: int
    queries: int
    ef_search: int
    def __init__(self, recall: _Optional[float] = ..., k: _Optional[int] = ..., queries: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...
