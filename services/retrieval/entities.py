"""The retrieval core's plain types: index specs, documents, filters, queries and hits."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.errors import InvalidArgument

# `catalog.schema.index`, each part a lower-case identifier.
_PART = r"[a-z_][a-z0-9_]{0,62}"
# Matched with fullmatch: `$` would also accept a trailing newline.
INDEX_NAME = re.compile(rf"{_PART}\.{_PART}\.{_PART}")
COLUMN_NAME = re.compile(_PART)
# Columns of every index table; metadata may not shadow them.
RESERVED_COLUMNS = frozenset(
    {"id", "version", "embedding", "content", "content_tsv", "updated_at", "distance", "score"}
)


class Metric(enum.StrEnum):
    COSINE = "cosine"
    L2 = "l2"
    INNER_PRODUCT = "inner_product"


class FieldType(enum.StrEnum):
    STRING = "string"
    INT64 = "int64"
    DOUBLE = "double"
    BOOL = "bool"
    TIMESTAMP = "timestamp"


class BuildState(enum.StrEnum):
    NOT_BUILT = "not_built"
    BUILDING = "building"
    READY = "ready"


class QueryMode(enum.StrEnum):
    ANN = "ann"
    HYBRID = "hybrid"
    FULL_TEXT = "full_text"


@dataclass(frozen=True)
class MetadataField:
    name: str
    type: FieldType


@dataclass(frozen=True)
class IndexSpec:
    """What a caller asks for when creating an index."""

    name: str
    dimension: int = 0
    metric: Metric = Metric.COSINE
    m: int = 16
    ef_construction: int = 64
    metadata_schema: tuple[MetadataField, ...] = ()
    # Managed embeddings: a model name from the registry; "" for self-managed vectors.
    embedding_model: str = ""
    text_columns: tuple[str, ...] = ()
    deferred_build: bool = False

    @property
    def managed(self) -> bool:
        return bool(self.embedding_model)

    def field(self, name: str) -> MetadataField | None:
        return next((f for f in self.metadata_schema if f.name == name), None)


@dataclass(frozen=True)
class IndexInfo:
    """A stored index: its spec plus what the service knows about it."""

    spec: IndexSpec
    table: str
    build_state: BuildState
    owner: str
    created_at: datetime
    row_count: int = 0
    last_recall: float = 0.0


@dataclass
class Document:
    id: str
    version: int = 0
    vector: Any = None  # a float sequence or numpy array; None for managed indexes
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentRef:
    id: str
    version: int = 0


@dataclass(frozen=True)
class WriteResult:
    applied: int = 0
    skipped: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(self.applied + other.applied, self.skipped + other.skipped)


# -- filters -------------------------------------------------------------------


class Op(enum.StrEnum):
    EQ = "="
    NE = "<>"
    LT = "<"
    LTE = "<="
    GT = ">"
    GTE = ">="
    IN = "in"


@dataclass(frozen=True)
class Comparison:
    column: str
    op: Op
    value: Any = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class AllOf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    filter: Filter


Filter = Comparison | AllOf | AnyOf | Not


@dataclass
class Query:
    index: str
    k: int = 10
    vector: Any = None
    text: str = ""
    filter: Filter | None = None
    ef_search: int = 0
    mode: QueryMode = QueryMode.ANN
    columns: tuple[str, ...] = ()
    include_text: bool = False


@dataclass
class Hit:
    id: str
    score: float
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class RecallReport:
    recall: float
    k: int
    queries: int
    ef_search: int


def validate_index_name(name: str) -> str:
    if not INDEX_NAME.fullmatch(name or ""):
        raise InvalidArgument(
            f"index name {name!r} must be catalog.schema.index (lower-case identifiers)", field="name"
        )
    return name


def schema_of(index_name: str) -> str:
    """`catalog.schema` of `catalog.schema.index`: grants are checked on it."""
    return index_name.rsplit(".", 1)[0]
