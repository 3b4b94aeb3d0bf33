"""Act (j): evaluate the base and the fine-tuned tiny Llama on the capitals, with intervals, and
let the paired comparison decide whether the fine-tuned version becomes the champion."""

from __future__ import annotations

from services.demo.clients import Clients
from services.demo.console import StepSkipped, progress, say
from services.evaluation.demo import evaluate_and_promote
from services.fixtures import capitals


async def evaluation_act(clients: Clients, schema: str) -> None:
    model = f"{schema}.capitals_llama"
    async with progress("evaluate", "evaluating demo-llm and demo-capitals on the same dataset version"):
        outcome = await evaluate_and_promote(
            clients.channels["evaluation"],
            clients.channels["training"],
            clients.channels["registry"],
            clients.settings.token,
            dataset=f"{schema}.capitals_eval",
            rows=capitals.evaluation_rows(),
            baseline_endpoint="demo-llm",
            candidate_endpoint="demo-capitals",
            model=model,
            alias="champion",
            say=lambda line: say("evaluate", line),
        )
    for run in (outcome.baseline, outcome.candidate):
        say(
            "evaluate",
            f"  run {run.eval_run_id[:8]} of {run.spec.target_endpoint}: latency p50 {run.latency.p50_ms:.0f} ms, "
            f"p95 {run.latency.p95_ms:.0f} ms; MLflow run {run.mlflow_run_id}",
        )
    if outcome.winner != "candidate":
        raise StepSkipped("the fine-tuned model was not detectably better: the champion alias did not move")
    say("evaluate", f"{model}@champion now points at {outcome.promoted}, the version the comparison chose")
