"""Where the demo finds the services `make up` started (TESSERA_* environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import DEV_ADMIN_TOKEN, CommonSettings


@dataclasses.dataclass(frozen=True)
class DemoSettings(CommonSettings):
    service_name: str = "demo"
    registry_address: str = "127.0.0.1:50051"
    serving_address: str = "127.0.0.1:50053"
    # Serving's OpenAI-compatible API: the demo calls the tiny Llama through the stock openai SDK too.
    serving_openai_url: str = "http://127.0.0.1:8000/v1"
    retrieval_address: str = "127.0.0.1:50054"
    monitoring_address: str = "127.0.0.1:50056"
    training_address: str = "127.0.0.1:50052"
    evaluation_address: str = "127.0.0.1:50055"
    # Printed at the end: where a person continues in a browser.
    playground_url: str = "http://127.0.0.1:8080"
    mlflow_url: str = "http://127.0.0.1:5000"
    # TESSERA_DEMO_LLM=0 skips the tiny Llama (its engine takes a minute or so to start on a CPU).
    demo_llm: bool = True
    # Catalog holding the demo's models ({catalog}.models) and retrieval indexes ({catalog}.docs).
    demo_catalog: str = "demo"
    # The demo acts as a user who creates catalogs: the local superuser (TESSERA_DEMO_TOKEN elsewhere).
    demo_token: str = DEV_ADMIN_TOKEN

    @property
    def token(self) -> str:
        return self.demo_token
