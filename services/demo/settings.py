"""Where the demo finds the services `make up` started (TESSERA_* environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import CommonSettings


@dataclasses.dataclass(frozen=True)
class DemoSettings(CommonSettings):
    service_name: str = "demo"
    registry_address: str = "127.0.0.1:50051"
    serving_address: str = "127.0.0.1:50053"
    retrieval_address: str = "127.0.0.1:50054"
    monitoring_address: str = "127.0.0.1:50056"
    training_address: str = "127.0.0.1:50052"
    mlflow_url: str = "http://127.0.0.1:5000"
    # The monitoring service's schema, read directly to render the drift PNG.
    monitoring_schema: str = "monitoring"
    # TESSERA_DEMO_LLM=0 skips the tiny Llama (its engine takes a minute or so to start on a CPU).
    demo_llm: bool = True
    # Catalog holding the demo's models ({catalog}.models) and retrieval indexes ({catalog}.docs).
    demo_catalog: str = "demo"

    @property
    def token(self) -> str:
        return self.service_token
