"""The monitoring service's settings (`TESSERA_*` environment variables)."""

from __future__ import annotations

import dataclasses

from services.common import topics
from services.common.config import CommonSettings


@dataclasses.dataclass(frozen=True)
class MonitoringSettings(CommonSettings):
    service_name: str = "monitoring"
    grpc_port: int = 50056
    metrics_port: int = 9106
    # The PostgreSQL schema (tests use their own).
    monitoring_schema: str = "monitoring"
    monitoring_payload_topic: str = topics.PAYLOAD_LOGS
    monitoring_drift_topic: str = topics.DRIFT_EVENTS
    monitoring_consumer_group: str = "tessera-monitoring"
    # The evaluation service's results: online evaluations' windows become quality metrics.
    monitoring_quality_topic: str = topics.EVAL_RESULTS
    # Empty: `<monitoring_consumer_group>-quality`, so a test's or a bench's own group gets its own one too.
    monitoring_quality_consumer_group: str = ""
    # Records per consumer batch: one COPY, one transaction, one profile pass each.
    monitoring_batch_size: int = 5000
    # A window is evaluated this long after the watermark passed its end (room for stragglers).
    monitoring_window_grace_s: float = 2.0
    # With no record for this long, the wall clock advances the watermark (closes the last window).
    monitoring_idle_watermark_s: float = 5.0
    # How often the drift-event outbox publisher looks for events written by other replicas.
    monitoring_outbox_poll_s: float = 0.5
    # Sent outbox rows are kept this long (hours), then deleted (drift_events keeps every event).
    monitoring_outbox_retention_h: float = 168.0
    # How often the evaluator looks for windows to close.
    monitoring_evaluate_every_s: float = 1.0
    # Days of the inference table kept: older daily partitions are dropped whole (0 keeps everything).
    monitoring_retention_days: int = 30
    # How often retention looks for partitions to drop.
    monitoring_retention_every_s: float = 3600.0
    # `registry`: reads and monitors follow the registry's grants; `none`: everyone may do everything.
    monitoring_authz: str = "registry"
    # Where the registry answers privilege questions and registers monitors.
    registry_address: str = "127.0.0.1:50051"
    # Seconds a privilege answer is reused (registry events drop the cache at once).
    monitoring_privilege_cache_s: float = 30.0
    registry_events_topic: str = topics.REGISTRY_EVENTS
