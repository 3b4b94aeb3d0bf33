"""Training settings: `TESSERA_*` variables with local defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.config import CommonSettings


@dataclass(frozen=True)
class TrainingSettings(CommonSettings):
    service_name: str = "training"
    grpc_port: int = 50052
    metrics_port: int = 9102
    training_schema: str = "training"
    registry_address: str = "127.0.0.1:50051"
    monitoring_address: str = "127.0.0.1:50056"
    # The principal jobs run as in the registry: it creates runs, logs metrics and registers versions.
    # Give it CREATE_MODEL/MODIFY on the schemas that receive trained models (dev default: admin).
    training_run_as_token: str = "tessera-dev-token"
    training_jobs_topic: str = "tessera.training.jobs"
    training_events_topic: str = "tessera.training.events"
    training_consumer_group: str = "tessera-training-workers"
    # Where dataset versions, model caches and checkpoints live (empty: <data_dir>/training).
    training_root: Path | None = None
    # A worker that has not heartbeaten for this long loses its job to another worker.
    training_lease_s: float = 30.0
    training_heartbeat_s: float = 3.0
    # How often an idle worker looks for queued jobs and expired leases (Kafka wakes it sooner).
    training_poll_s: float = 5.0
    training_checkpoint_every_steps: int = 50
    training_keep_checkpoints: int = 2
    # torch threads per training process (0: torch's default).
    training_threads: int = 0
    # Bounds on what a client may ask for.
    training_max_dataset_bytes: int = 512 * 2**20
    training_max_rows: int = 1_000_000
    training_max_row_bytes: int = 2**20
    training_max_steps: int = 1_000_000
    training_max_sequence_length: int = 32768
    training_max_batch_size: int = 4096
    training_max_workers_per_job: int = 8
    training_max_epochs: int = 1000
    # Sustained FLOP/s per process the time estimate assumes (CPU default; set it for GPUs).
    training_assumed_flops: float = 2e10
    training_log_every_s: float = 5.0
    # The metrics endpoint exports running jobs and those that ended this long ago, at most this many
    # (newest first), reading PostgreSQL on each scrape within the timeout.
    training_metrics_recent_s: float = 900.0
    training_metrics_max_jobs: int = 100
    training_metrics_read_timeout_s: float = 5.0
    # A worker has no gRPC port: it touches this file every training_heartbeat_s while its loop runs, and
    # its container health check calls it alive while the file is fresh (empty: <root>/worker.alive).
    # Keep it off a volume other workers share, or one live worker hides a dead one.
    training_worker_alive_file: Path | None = None

    def root(self) -> Path:
        return self.training_root or (self.data_dir / "training")

    def worker_alive_file(self) -> Path:
        return self.training_worker_alive_file or (self.root() / "worker.alive")
