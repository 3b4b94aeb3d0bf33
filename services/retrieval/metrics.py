"""Prometheus metrics of the retrieval service."""

from prometheus_client import Counter, Gauge, Histogram

RECALL = Gauge(
    "tessera_retrieval_recall", "recall@k of the ANN index against an exact scan (last measurement)", ["index", "k"]
)
SYNC_LAG = Gauge(
    "tessera_retrieval_sync_lag_seconds",
    "Seconds between a source change and its application to the index (last applied record)",
    ["index"],
)
SYNC_APPLIED = Counter("tessera_retrieval_sync_records_total", "Sync records applied, by outcome", ["index", "outcome"])
DOCUMENTS_WRITTEN = Counter(
    "tessera_retrieval_documents_written_total", "Documents upserted or deleted", ["index", "op"]
)
EXACT_FALLBACKS = Counter(
    "tessera_retrieval_exact_fallbacks_total",
    "Filtered queries the HNSW scan could not fill, answered exactly",
    ["index"],
)
EMBED_SECONDS = Histogram(
    "tessera_retrieval_embedding_seconds",
    "Time to embed one batch of texts",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONNECTOR_ROWS = Counter(
    "tessera_retrieval_connector_rows_total", "Source-table changes published", ["connector", "op"]
)
