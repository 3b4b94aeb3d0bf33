"""The retrieval core: indexes, versioned document writes, queries and recall. No transport here.

Every public method takes the caller's principal and checks the registry's
grant on the index's schema first (USE_SCHEMA to read, MODIFY to write), the
Kafka sync path included (its records name their sender). Only the scheduled
recall job, which reads nobody's data out, uses the unchecked `*_internal` methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
from tessera.events.v1 import registry_pb2 as events_pb

from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.common.paging import Page, decode_token, encode_token
from services.retrieval import metrics
from services.retrieval.authorization import MODIFY, USE_SCHEMA, Authorizer
from services.retrieval.embeddings import EmbeddingModels
from services.retrieval.entities import (
    COLUMN_NAME,
    RESERVED_COLUMNS,
    BuildState,
    Document,
    DocumentRef,
    FieldType,
    Hit,
    IndexInfo,
    IndexSpec,
    Metric,
    Query,
    RecallReport,
    WriteResult,
    schema_of,
    validate_index_name,
)
from services.retrieval.filters import coerce
from services.retrieval.search import Searcher
from services.retrieval.search_store import SearchStore
from services.retrieval.store import IndexStore

_log = logging.getLogger(__name__)

MAX_DIMENSION = 16000
MAX_BATCH = 10_000
MAX_ID_LENGTH = 512
# A document's text (what is embedded and full-text indexed): a chunk, not a whole book.
MAX_TEXT_LENGTH = 1_000_000
MAX_QUERY_BATCH = 1000
LIST_WINDOW = 100


class RetrievalCore:
    def __init__(
        self,
        store: IndexStore,
        search_store: SearchStore,
        embeddings: EmbeddingModels,
        authorizer: Authorizer,
        *,
        default_ef_search: int = 100,
        build_workers: int = 2,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.authorizer = authorizer
        self.build_workers = build_workers
        self.list_window = LIST_WINDOW
        # Specs never change after creation: cache them so a query costs no catalog read.
        self._infos: dict[str, IndexInfo] = {}
        self.searcher = Searcher(search_store, embeddings, self._forget, default_ef_search)

    # -- catalog ----------------------------------------------------------------

    async def _info(self, name: str) -> IndexInfo:
        info = self._infos.get(name)
        if info is None:
            validate_index_name(name)
            info = await self.store.get_index(name)
            self._infos[name] = info
        return info

    def _forget(self, name: str) -> None:
        self._infos.pop(name, None)

    async def _authorize(self, principal: Principal, index_name: str, privilege: str) -> None:
        await self.authorizer.check(principal, schema_of(validate_index_name(index_name)), privilege)

    async def create_index(self, principal: Principal, spec: IndexSpec) -> IndexInfo:
        await self._authorize(principal, spec.name, MODIFY)
        spec = self._validated_spec(spec)
        info = await self.store.create_index(spec, principal.name)
        self._infos[spec.name] = info
        _log.info("index %s created by %s (%d dims, %s)", spec.name, principal.name, spec.dimension, spec.metric)
        return info

    def _validated_spec(self, spec: IndexSpec) -> IndexSpec:
        seen: set[str] = set()
        for f in spec.metadata_schema:
            if not COLUMN_NAME.fullmatch(f.name) or f.name in RESERVED_COLUMNS:
                raise InvalidArgument(f"metadata column {f.name!r} is not a valid, unreserved identifier")
            if f.name in seen:
                raise InvalidArgument(f"metadata column {f.name!r} declared twice")
            seen.add(f.name)
        for column in spec.text_columns:
            declared = spec.field(column)
            if declared is None or declared.type is not FieldType.STRING:
                raise InvalidArgument(f"text column {column!r} must be a declared STRING metadata column")
        if not 2 <= spec.m <= 100 or not 4 <= spec.ef_construction <= 1000 or spec.ef_construction < 2 * spec.m:
            raise InvalidArgument("hnsw: need 2 <= m <= 100 and 2*m <= ef_construction <= 1000", field="hnsw")
        dimension = spec.dimension
        if spec.managed:
            model_dim = self.embeddings.get(spec.embedding_model).dimension
            if dimension and dimension != model_dim:
                raise InvalidArgument(f"model {spec.embedding_model!r} makes {model_dim}-dim vectors, not {dimension}")
            dimension = model_dim
        elif spec.text_columns:
            raise InvalidArgument("text columns need a managed embedding model", field="embedding")
        if not 1 <= dimension <= MAX_DIMENSION:
            raise InvalidArgument(f"dimension must be 1..{MAX_DIMENSION}", field="dimension")
        return IndexSpec(**{**spec.__dict__, "dimension": dimension})

    async def describe_index(self, principal: Principal, name: str) -> IndexInfo:
        await self._authorize(principal, name, USE_SCHEMA)
        return await self.store.get_index(name, with_count=True)

    async def list_indexes(self, principal: Principal, size: int, token: str = "") -> Page[IndexInfo]:
        """Indexes the caller may use, by name; hidden ones are skipped, never cutting a page short."""
        after = decode_token(token).get("after", "")
        if not isinstance(after, str):
            raise InvalidArgument("invalid page token", field="page_token")
        visible: list[IndexInfo] = []
        # Windows of at least LIST_WINDOW rows: a caller who sees few of many indexes costs few round trips.
        fetch = max(size + 1, self.list_window)
        while len(visible) <= size:
            window = await self.store.list_indexes(after, fetch)
            for info in window:
                if len(visible) > size:
                    break
                if await self._may_use(principal, info.spec.name):
                    visible.append(info)
            if len(window) < fetch:
                break  # the catalog has no more rows
            after = window[-1].spec.name
        if len(visible) <= size:
            return Page(visible)
        return Page(visible[:size], encode_token({"after": visible[size - 1].spec.name}))

    async def _may_use(self, principal: Principal, index_name: str) -> bool:
        try:
            await self._authorize(principal, index_name, USE_SCHEMA)
        except (PermissionDenied, NotFound):
            return False  # hidden from this caller, or its schema is gone from the registry
        return True

    async def delete_index(self, principal: Principal, name: str) -> None:
        await self._authorize(principal, name, MODIFY)
        await self.store.delete_index(name)
        self._forget(name)

    async def build_index(self, principal: Principal, name: str) -> IndexInfo:
        await self._authorize(principal, name, MODIFY)
        info = await self.store.get_index(name)
        await self.store.set_build_state(name, BuildState.BUILDING)
        try:
            await self.store.build_hnsw(info, self.build_workers)
        except BaseException:
            await self.store.set_build_state(name, info.build_state)
            raise
        await self.store.set_build_state(name, BuildState.READY)
        self._forget(name)
        return await self.store.get_index(name, with_count=True)

    # -- writes -------------------------------------------------------------------

    async def upsert(self, principal: Principal, index: str, docs: Sequence[Document]) -> WriteResult:
        """Validate, embed (managed indexes) and write `docs`; older versions are skipped."""
        await self._authorize(principal, index, MODIFY)
        info = await self._info(index)
        if not docs:
            return WriteResult()
        if len(docs) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} documents per batch", field="documents")
        contents = [self._validate_document(info.spec, doc, i) for i, doc in enumerate(docs)]
        if info.spec.managed:
            for i, content in enumerate(contents):
                if not content.strip():
                    raise InvalidArgument("managed-embedding documents need text to embed", field=f"documents[{i}]")
            vectors = await self.searcher.embed(info.spec.embedding_model, contents)
        else:
            vectors = np.asarray([doc.vector for doc in docs], dtype=np.float32)
        try:
            result = await self.store.upsert(info, docs, vectors, contents)
        except NotFound:
            self._forget(index)
            raise
        metrics.DOCUMENTS_WRITTEN.labels(index, "upsert").inc(result.applied)
        return result

    async def delete_documents(self, principal: Principal, index: str, refs: Sequence[DocumentRef]) -> WriteResult:
        await self._authorize(principal, index, MODIFY)
        info = await self._info(index)
        if len(refs) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} documents per batch", field="documents")
        for i, ref in enumerate(refs):
            self._validate_id(ref.id, ref.version, f"documents[{i}]")
        try:
            result = await self.store.delete(info, refs)
        except NotFound:
            self._forget(index)
            raise
        metrics.DOCUMENTS_WRITTEN.labels(index, "delete").inc(result.applied)
        return result

    @staticmethod
    def _validate_id(doc_id: str, version: int, where: str) -> None:
        if not doc_id or len(doc_id) > MAX_ID_LENGTH or "\x00" in doc_id:
            raise InvalidArgument(f"document id must be 1..{MAX_ID_LENGTH} characters without NUL", field=where)
        if version < 0:
            raise InvalidArgument("version must not be negative", field=where)

    def _validate_document(self, spec: IndexSpec, doc: Document, i: int) -> str:
        """Check one document in place (metadata coerced to column types); returns the text it contributes."""
        where = f"documents[{i}]"
        self._validate_id(doc.id, doc.version, where)
        for key in doc.metadata:
            if spec.field(key) is None:
                raise InvalidArgument(f"unknown metadata column {key!r}", field=where)
        doc.metadata = {
            f.name: coerce(doc.metadata.get(f.name), f.type, f"{where}.{f.name}") for f in spec.metadata_schema
        }
        if spec.managed:
            if doc.vector is not None and len(doc.vector):
                raise InvalidArgument("this index embeds its own text; send text, not vectors", field=where)
        else:
            vector = doc.vector
            if vector is None or len(vector) != spec.dimension:
                got = 0 if vector is None else len(vector)
                raise InvalidArgument(
                    f"vector has {got} dimensions, index {spec.name} needs {spec.dimension}", field=where
                )
            vector = doc.vector = np.asarray(vector, dtype=np.float32)
            if not np.isfinite(vector).all():
                raise InvalidArgument("vector has NaN or infinite values", field=where)
            if spec.metric is Metric.COSINE and not vector.any():
                raise InvalidArgument("a zero vector has no cosine distance", field=where)
        if spec.text_columns:
            return "\n".join(doc.metadata[c] or "" for c in spec.text_columns)
        if len(doc.text) > MAX_TEXT_LENGTH:
            raise InvalidArgument(f"text is over {MAX_TEXT_LENGTH} characters; split the document", field=where)
        if "\x00" in doc.text:
            raise InvalidArgument("text may not contain NUL characters", field=where)
        return doc.text

    # -- reads --------------------------------------------------------------------

    async def query(self, principal: Principal, query: Query) -> list[Hit]:
        await self._authorize(principal, query.index, USE_SCHEMA)
        return await self.searcher.query(await self._info(query.index), query)

    async def query_batch(self, principal: Principal, queries: Sequence[Query]) -> list[list[Hit]]:
        """Run `queries` concurrently (the query pool bounds how many reach PostgreSQL at once)."""
        if len(queries) > MAX_QUERY_BATCH:
            raise InvalidArgument(f"at most {MAX_QUERY_BATCH} queries per batch", field="queries")
        for index in dict.fromkeys(q.index for q in queries):
            await self._authorize(principal, index, USE_SCHEMA)
        infos = {index: await self._info(index) for index in dict.fromkeys(q.index for q in queries)}
        return list(await asyncio.gather(*(self.searcher.query(infos[q.index], q) for q in queries)))

    async def measure_recall(
        self, principal: Principal, index: str, k: int = 10, sample_size: int = 100, ef_search: int = 0
    ) -> RecallReport:
        await self._authorize(principal, index, USE_SCHEMA)
        info = await self._info(index)
        if not 1 <= k <= 1000 or not 1 <= sample_size <= 10_000:
            raise InvalidArgument("need 1 <= k <= 1000 and 1 <= sample_size <= 10000")
        report = await self.measure_recall_internal(info, k, sample_size, ef_search)
        if report.queries == 0:
            raise FailedPrecondition(f"index {index!r} is empty: nothing to measure")
        return report

    # -- the scheduled recall job (trusted, no caller) ------------------------------

    async def indexes_to_measure(self, after: str = "", limit: int = 100) -> list[IndexInfo]:
        """A window of the catalog by name (built or not): the recall job walks it all."""
        return await self.store.list_indexes(after, limit)

    async def measure_recall_internal(
        self, info: IndexInfo, k: int, sample_size: int, ef_search: int = 0
    ) -> RecallReport:
        """recall@k of `info`, published as a metric and stored (when there was anything to measure)."""
        report = await self.searcher.measure_recall(info, k, sample_size, ef_search)
        if report.queries:
            metrics.RECALL.labels(info.spec.name, str(k)).set(report.recall)
            await self.store.set_last_recall(info.spec.name, report.recall)
        return report

    # -- registry events ----------------------------------------------------------

    def on_registry_event(self, event: events_pb.RegistryEvent) -> None:
        """A grant or owner changed somewhere: cached answers may be wrong now."""
        self.authorizer.on_registry_event(event)
