"""One platform (registry, serving with the tiny Llama, training, monitoring, evaluation) for the evaluation tests."""

from __future__ import annotations

import pytest
import pytest_asyncio

pytest.importorskip("vllm", reason="vLLM is not installed: run `bash infra/vllm/install.sh`")

from tests.integration.evaluation.stack import start_stack, work_dir  # noqa: E402


# Package scope: its engines and consumers stop when this package's tests end, not weigh on the next ones.
@pytest_asyncio.fixture(scope="package")
async def stack(kafka_bootstrap: str, pg_dsn: str):
    async for running in start_stack(kafka_bootstrap, pg_dsn, work_dir()):
        yield running
