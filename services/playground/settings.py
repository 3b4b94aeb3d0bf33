"""The playground's settings (`TESSERA_*` environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import CommonSettings


@dataclasses.dataclass(frozen=True)
class PlaygroundSettings(CommonSettings):
    service_name: str = "playground"
    # gRPC health and reflection only (probes, `grpc_health_probe`); the page itself is HTTP.
    grpc_port: int = 50057
    # The web page (HTTP); 0: any free port.
    playground_http_port: int = 8080
    metrics_port: int = 9107
    # Serving's OpenAI-compatible API (generation) and the gRPC services it reads.
    playground_openai_url: str = "http://127.0.0.1:8000/v1"
    serving_address: str = "127.0.0.1:50053"
    monitoring_address: str = "127.0.0.1:50056"
    evaluation_address: str = "127.0.0.1:50055"
    # Seals blind-comparison tickets and derives CSRF tokens; every replica needs the same one.
    # Empty: a random secret per process (one replica, or sticky sessions).
    playground_secret: str = ""
    # Mark the session cookie Secure (serve the page over HTTPS, e.g. behind a TLS proxy).
    playground_cookie_secure: bool = False
    # Sessions (and blind tickets) expire after this many seconds.
    playground_session_s: int = 8 * 3600
    # Bounds on what a browser may ask for.
    playground_max_prompt_chars: int = 16_000
    playground_max_system_chars: int = 8_000
    playground_max_tokens: int = 2048
    # How long one generation may stream before the playground gives up on it.
    playground_generation_timeout_s: float = 300.0
    # gRPC calls to the other services.
    playground_rpc_timeout_s: float = 30.0
