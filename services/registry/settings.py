"""The registry's settings: `TESSERA_*` environment variables with local defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.common import topics
from services.common.config import CommonSettings


@dataclasses.dataclass(frozen=True)
class RegistrySettings(CommonSettings):
    service_name: str = "registry"
    grpc_port: int = 50051
    metrics_port: int = 9101
    # The MLflow REST API (tracking, model registry, mlflow-artifacts proxy); -1 turns it off.
    registry_http_port: int = 5000
    # PostgreSQL schema of the registry's tables (tests use a unique one).
    registry_schema: str = "registry"
    # Where artifacts live on local disk; empty: `<data_dir>/registry/artifacts`.
    registry_artifact_root: Path | None = None
    # The artifact store: empty (or file:///path) for local disk, `s3://bucket/prefix` for an S3-compatible
    # object store reached at registry_s3_endpoint (empty: AWS) with these keys (empty: the AWS_* variables).
    registry_artifact_uri: str = ""
    registry_s3_endpoint: str = ""
    registry_s3_region: str = ""
    registry_s3_access_key_id: str = ""
    registry_s3_secret_access_key: str = dataclasses.field(default="", repr=False)
    # http:// endpoints (a MinIO inside the cluster) are refused unless this is on.
    registry_s3_allow_http: bool = False
    # Principals allowed everything, everywhere.
    registry_superusers: tuple[str, ...] = ("admin",)
    # Service principals (serving, retrieval, monitoring...): not superusers but a fixed role: CheckPrivilege
    # for others, Register/Touch/UnregisterSecurable, read registered models, create lineage edges.
    registry_service_principals: tuple[str, ...] = ("tessera-services",)
    # Where MLflow names without dots (and experiments without a schema) go; created at start.
    registry_default_catalog: str = "main"
    registry_default_schema: str = "default"
    # Model version sources that are local paths (or file:// URIs) outside the artifact root may be
    # copied in: by superusers from anywhere readable, by others only from under these folders.
    registry_allow_local_sources: bool = False
    registry_local_source_roots: tuple[str, ...] = ()
    # Sent outbox rows are kept this long (hours) for audit, then deleted.
    registry_outbox_retention_h: float = 168.0
    registry_events_topic: str = topics.REGISTRY_EVENTS
    # How often the outbox publisher looks for events written by other replicas.
    registry_outbox_poll_s: float = 0.5
    # GetLineage walks at most this many levels (max_depth 0 means this), nodes and edges.
    registry_lineage_max_depth: int = 20
    registry_lineage_max_nodes: int = 1000
    registry_lineage_max_edges: int = 5000
    registry_max_batch_metrics: int = 1000
    registry_max_batch_params: int = 100
    registry_max_batch_tags: int = 100
    registry_chunk_size: int = 1024 * 1024
    # The largest artifact chunk a caller may ask for (bigger asks get chunks of this size); stays well
    # under gRPC clients' default 4 MiB receive limit.
    registry_max_chunk_size: int = 2 * 1024 * 1024
    # SearchRuns reads each experiment's chain: at most this many experiments per search.
    registry_max_search_experiments: int = 100
    registry_db_pool_size: int = 10
    # Every statement on the registry's pool is cancelled past this (ms): no request holds a connection forever.
    registry_statement_timeout_ms: int = 30_000

    def pg_dsn_with_statement_timeout(self) -> str:
        """The DSN with `statement_timeout` as a connection option, so every pooled connection carries it."""
        params = conninfo_to_dict(self.resolved_pg_dsn())
        options = params.get("options") or ""
        params["options"] = f"{options} -c statement_timeout={int(self.registry_statement_timeout_ms)}".strip()
        return make_conninfo(**params)

    def artifact_root(self) -> Path:
        root = self.registry_artifact_root or (self.data_dir / "registry" / "artifacts")
        return Path(root).resolve()
