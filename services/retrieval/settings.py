"""The retrieval service's settings (`TESSERA_*` environment variables)."""

from __future__ import annotations

import dataclasses

from services.common import topics
from services.common.config import CommonSettings

AUTHZ_REGISTRY = "registry"
AUTHZ_NONE = "none"


@dataclasses.dataclass(frozen=True)
class RetrievalSettings(CommonSettings):
    service_name: str = "retrieval"
    grpc_port: int = 50054
    metrics_port: int = 9104
    # The PostgreSQL schema holding the catalog of indexes and one table per index.
    retrieval_schema: str = "retrieval"
    # `registry`: ask the registry (CheckPrivilege, answers cached); `none`: allow everything (logged loudly).
    retrieval_authz: str = AUTHZ_REGISTRY
    registry_address: str = "127.0.0.1:50051"
    # How long a registry answer is reused; grant events drop the cache sooner.
    retrieval_privilege_cache_s: float = 30.0
    # Where the registry announces grant changes; every replica follows it in a group of its own.
    retrieval_registry_events_topic: str = topics.REGISTRY_EVENTS
    # Extra embedding models as `name=/path/to/sentence-transformers/folder` pairs, comma separated.
    retrieval_embedding_models: str = ""
    retrieval_embedding_batch_size: int = 64
    retrieval_default_ef_search: int = 100
    # How far an iterative HNSW scan may go before the exact fallback (pgvector's hnsw.max_scan_tuples).
    retrieval_max_scan_tuples: int = 20000
    retrieval_query_pool_size: int = 10
    # Run on uvloop when it is installed (`pip install uvloop`); false keeps asyncio's own loop.
    retrieval_uvloop: bool = True
    # The sync consumer: topic and group (tests use their own).
    retrieval_sync_topic: str = topics.RETRIEVAL_SYNC
    retrieval_sync_group: str = "tessera-retrieval-sync"
    retrieval_run_sync_consumer: bool = True
    # Source-table connectors to run continuously: paths of JSON files (see connector.ConnectorSpec).
    retrieval_connectors: tuple[str, ...] = ()
    retrieval_connector_poll_s: float = 2.0
    # Measure every index's recall@10 this often into tessera_retrieval_recall (0: only on MeasureRecall).
    retrieval_recall_interval_s: float = 0.0
    retrieval_recall_sample_size: int = 50
