"""Evaluation settings: `TESSERA_*` variables with local defaults."""

from __future__ import annotations

from dataclasses import dataclass

from services.common import topics
from services.common.config import CommonSettings


@dataclass(frozen=True)
class EvaluationSettings(CommonSettings):
    service_name: str = "evaluation"
    grpc_port: int = 50055
    metrics_port: int = 9105
    evaluation_schema: str = "evaluation"
    registry_address: str = "127.0.0.1:50051"
    training_address: str = "127.0.0.1:50052"
    serving_address: str = "127.0.0.1:50053"
    monitoring_address: str = "127.0.0.1:50056"
    registry_events_topic: str = topics.REGISTRY_EVENTS
    evaluation_requests_topic: str = topics.EVAL_REQUESTS
    evaluation_results_topic: str = topics.EVAL_RESULTS
    evaluation_consumer_group: str = "tessera-evaluation"
    # The principal that owns eval runs' MLflow runs in the registry (creates experiments and runs,
    # logs metrics and artifacts, hands new experiments to the run's creator). Dev default: admin.
    evaluation_run_as_token: str = "tessera-dev-token"
    # The principal online evaluations read payload logs and call judges as; give it SELECT on the
    # watched endpoints and EXECUTE on the judges. Each window first checks that the schedule's
    # creator still holds those rights (see README). Dev default: admin.
    evaluation_online_token: str = "tessera-dev-token"
    # Serving's price table (the same TESSERA_SERVING_PRICES variable serving reads):
    # {"catalog.schema.model": [prompt_usd_per_million, completion_usd_per_million]}; absent = unpriced.
    serving_prices: str = ""
    # Bounds on what a client may ask for.
    evaluation_max_concurrency: int = 64
    evaluation_default_concurrency: int = 8
    evaluation_max_repeats: int = 20
    evaluation_max_rows: int = 10_000
    evaluation_max_k: int = 100
    evaluation_max_tags: int = 32
    evaluation_max_tag_chars: int = 256
    evaluation_max_metrics: int = 16
    evaluation_max_max_tokens: int = 4096
    evaluation_max_response_chars: int = 100_000
    # How long one target or judge call may take.
    evaluation_call_timeout_s: float = 300.0
    # A run's owning process renews its lease this often; a run whose lease lapsed is marked
    # FAILED "interrupted" by any replica (its finished rows kept).
    evaluation_heartbeat_s: float = 5.0
    evaluation_lease_s: float = 30.0
    evaluation_log_every_s: float = 5.0
    # Online evaluation: how often the scheduler looks for due windows, and bounds on schedules.
    evaluation_online_poll_s: float = 5.0
    # A window ends this long before now, so payload logs still on their way to monitoring are counted.
    evaluation_online_lag_s: float = 60.0
    evaluation_online_min_interval_s: int = 10
    evaluation_online_max_interval_s: int = 86_400
    evaluation_online_max_rows: int = 1_000
