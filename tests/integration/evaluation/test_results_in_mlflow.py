"""The stock mlflow client reads an eval run's summary metrics, params and table artifact from the registry."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb

from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, Stack

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

pytestmark = pytest.mark.integration


def read_with_mlflow(url: str, token: str, run_id: str, out: Path) -> dict:
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    client = MlflowClient(tracking_uri=url)
    run = client.get_run(run_id)
    listed = sorted(f.path for f in client.list_artifacts(run_id))
    folder = Path(client.download_artifacts(run_id, "", str(out)))
    return {
        "metrics": run.data.metrics,
        "params": run.data.params,
        "tags": run.data.tags,
        "status": run.info.status,
        "listed": listed,
        "rows": [json.loads(line) for line in (folder / "eval_results.jsonl").read_text().splitlines()],
        "csv": (folder / "eval_results.csv").read_text(),
        "manifest": json.loads((folder / "manifest.json").read_text()),
    }


async def test_the_stock_mlflow_client_reads_the_eval_runs_metrics_and_table(
    stack: Stack, unique: str, tmp_path: Path
) -> None:
    dataset, version = await stack.dataset(f"mlflow_{unique}", capitals.evaluation_rows()[:4])
    run = await stack.wait((await stack.start(stack.spec(dataset, version, ["exact_match", "token_f1"]))).eval_run_id)
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message

    # As alice, the run's creator: the experiment was handed to her.
    seen = await asyncio.to_thread(read_with_mlflow, stack.registry_http_url, ALICE, run.mlflow_run_id, tmp_path)

    summaries = {s.metric: s for s in run.metrics}
    assert seen["status"] == "FINISHED"
    for metric in ("exact_match", "token_f1"):
        interval = summaries[metric].interval
        assert seen["metrics"][metric] == pytest.approx(interval.estimate)
        assert seen["metrics"][f"{metric}_ci_low"] == pytest.approx(interval.low)
        assert seen["metrics"][f"{metric}_ci_high"] == pytest.approx(interval.high)
        assert seen["metrics"][f"{metric}_coverage"] == 1.0
    assert seen["metrics"]["latency_p95_ms"] == pytest.approx(run.latency.p95_ms)
    assert seen["params"]["dataset_version"] == version and seen["params"]["target_endpoint"] == stack.llm_endpoint
    assert seen["tags"]["tessera.eval_run_id"] == run.eval_run_id
    assert seen["listed"] == ["eval_results.csv", "eval_results.jsonl", "manifest.json"]
    assert sorted(r["example_id"] for r in seen["rows"]) == ["0", "1", "2", "3"]
    assert seen["csv"].splitlines()[0].startswith("example_id,repeat,status,request_id")
    assert seen["manifest"]["dataset_version"] == version and seen["manifest"]["seed"] == 7
