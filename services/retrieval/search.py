"""Query planning: which search runs, with which vector, and how its rows become hits."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from services.common.errors import InvalidArgument, NotFound
from services.retrieval import metrics
from services.retrieval.embeddings import EmbeddingModels
from services.retrieval.entities import Hit, IndexInfo, Metric, Query, QueryMode, RecallReport
from services.retrieval.filters import check_columns, compile_filter
from services.retrieval.search_store import SearchStore

MAX_K = 1000
MAX_EF_SEARCH = 1000  # pgvector's own upper bound for hnsw.ef_search
MAX_QUERY_TEXT = 10_000


def _cosine_similarity(distance: float) -> float:
    return 1.0 - distance


def _negated(distance: float) -> float:
    return -distance  # `<->` is a distance and `<#>` the negated inner product


# Higher is better, whatever the metric: one function per metric, looked up once per query, not per row.
_SCORES: dict[Metric, Callable[[float], float]] = {
    Metric.COSINE: _cosine_similarity,
    Metric.L2: _negated,
    Metric.INNER_PRODUCT: _negated,
}


class Searcher:
    def __init__(
        self,
        store: SearchStore,
        embeddings: EmbeddingModels,
        forget_index: Callable[[str], None],
        default_ef_search: int,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self._forget_index = forget_index
        self.default_ef_search = default_ef_search

    async def embed(self, model: str, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = await self.embeddings.get(model).embed(texts)
        metrics.EMBED_SECONDS.labels(model).observe(time.perf_counter() - started)
        return vectors

    def _ef_search(self, requested: int, k: int) -> int:
        if requested < 0 or requested > MAX_EF_SEARCH:
            raise InvalidArgument(f"ef_search must be 0 (default) or 1..{MAX_EF_SEARCH}", field="ef_search")
        # Without an iterative scan HNSW returns at most ef_search rows: never fewer than k.
        return max(requested or self.default_ef_search, k)

    async def _query_vector(self, info: IndexInfo, query: Query) -> np.ndarray:
        spec = info.spec
        if query.vector is not None and len(query.vector):
            vector = np.asarray(query.vector, dtype=np.float32)
            if vector.shape != (spec.dimension,):
                raise InvalidArgument(
                    f"query vector has {vector.shape[0]} dimensions, index {spec.name} needs {spec.dimension}",
                    field="vector",
                )
            if not np.isfinite(vector).all():
                raise InvalidArgument("query vector has NaN or infinite values", field="vector")
            return vector
        if not query.text:
            raise InvalidArgument("give a query vector or text", field="vector")
        if not spec.managed:
            raise InvalidArgument(f"index {spec.name} has self-managed vectors: query it with a vector", field="text")
        return (await self.embed(spec.embedding_model, [query.text]))[0]

    async def query(self, info: IndexInfo, query: Query) -> list[Hit]:
        spec = info.spec
        k = query.k or 10
        if not 1 <= k <= MAX_K:
            raise InvalidArgument(f"k must be 1..{MAX_K}", field="k")
        if len(query.text) > MAX_QUERY_TEXT or "\x00" in query.text:
            raise InvalidArgument(f"query text must be under {MAX_QUERY_TEXT} characters without NUL", field="text")
        ef_search = self._ef_search(query.ef_search, k)
        columns = check_columns(spec, query.columns)
        where, params = compile_filter(spec, query.filter)
        filtered = query.filter is not None
        try:
            if query.mode is QueryMode.FULL_TEXT:
                if not query.text.strip():
                    raise InvalidArgument("full-text queries need text", field="text")
                rows = await self.store.full_text(info, query.text, k, where, params, columns, query.include_text)
                return self._hits(rows, columns, query.include_text, lambda rank: float(rank))
            vector = await self._query_vector(info, query)
            if query.mode is QueryMode.HYBRID:
                if not query.text.strip():
                    raise InvalidArgument(
                        "hybrid queries need text (and a vector for self-managed indexes)", field="text"
                    )
                candidates = max(ef_search, 4 * k)
                rows = await self.store.hybrid(
                    info, vector, query.text, k, candidates, ef_search, where, params, columns, query.include_text
                )
                return self._hits(rows, columns, query.include_text, float)
            rows = await self.store.ann(
                info, vector, k, ef_search, where, params, columns, query.include_text, filtered
            )
            if filtered and len(rows) < k:
                # The HNSW scan gave up before k matches (max_scan_tuples): the exact answer is the only honest one.
                metrics.EXACT_FALLBACKS.labels(spec.name).inc()
                rows = await self.store.exact(info, vector, k, where, params, columns, query.include_text)
            return self._hits(rows, columns, query.include_text, _SCORES[spec.metric])
        except NotFound:
            self._forget_index(spec.name)  # deleted, perhaps by another replica
            raise

    @staticmethod
    def _hits(
        rows: list[tuple], columns: tuple[str, ...], include_text: bool, score: Callable[[float], float]
    ) -> list[Hit]:
        if not columns and not include_text:
            # Most queries ask for ids and scores only: one comprehension, no per-row branching.
            return [Hit(row[0], value if math.isfinite(value := score(row[2])) else 0.0, row[1], {}) for row in rows]
        hits = []
        for row in rows:
            metadata = dict(zip(columns, row[3 : 3 + len(columns)], strict=True)) if columns else {}
            text = row[3 + len(columns)] if include_text else ""
            value = score(row[2])
            hits.append(
                Hit(
                    id=row[0],
                    version=row[1],
                    score=value if math.isfinite(value) else 0.0,
                    metadata=metadata,
                    text=text,
                )
            )
        return hits

    async def measure_recall(self, info: IndexInfo, k: int, sample_size: int, ef_search: int) -> RecallReport:
        """recall@k of the HNSW answers against exact scans, for vectors sampled from the index itself."""
        ef = self._ef_search(ef_search, k)
        samples = await self.store.sample_vectors(info, sample_size)
        found = 0
        expected = 0
        where, params = compile_filter(info.spec, None)
        for vector in samples:
            approx = await self.store.ann(info, vector, k, ef, where, params, (), False, False)
            exact = await self.store.exact(info, vector, k, where, params, (), False)
            truth = {row[0] for row in exact}
            found += len(truth & {row[0] for row in approx})
            expected += len(truth)
        recall = found / expected if expected else 0.0
        return RecallReport(recall=recall, k=k, queries=len(samples), ef_search=ef)
