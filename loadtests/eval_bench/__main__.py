"""Rows/s of a Tessera eval run vs `mlflow.genai.evaluate`: same dataset, metrics, target and judge.

    python -m loadtests.eval_bench [--rows 32] [--rounds 2] [--concurrency 32] [--max-tokens 16]

Both sides evaluate the same rows (made-up capitals, `request` + `expected_response`) against the
same Tessera serving endpoint (the tiny Llama) with exact match, token F1 and the correctness judge
(the evaluation service's prompt template, on a second endpoint of the same model), greedy with the
same max_tokens and seed:

- Tessera: `StartEvalRun`, then `GetEvalRun` polled until the run is finished; per-row results
  from `ListEvalResults`. The service calls serving's gRPC `Generate` with `--concurrency` calls
  in flight.
- MLflow: `mlflow.genai.evaluate(data, predict_fn, scorers)` where predict_fn and the judge scorer
  call the same endpoints through serving's OpenAI API with the openai SDK, on MLflow's own worker
  pool (`--mlflow-workers`, default MLflow's 10), logging to a local SQLite tracking store.

Rounds alternate which side goes first, so load from elsewhere on the machine falls on both alike.
Each side's wall time runs from its call to its last result. Output: rows/s per side, the
Tessera/MLflow ratio (target >= 3x), and whether both sides' answers and scores agree row by row
(they must: greedy decoding, the same seed). JSON under loadtests/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from tessera.evaluation.v1 import evaluation_pb2 as epb
from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.events.v1 import evaluation_pb2 as events
from tessera.events.v1 import serving_pb2 as serving_events

from loadtests.eval_bench.anchor import METRICS, AnchorRun, MlflowAnchor, RowScores
from loadtests.eval_bench.dataset import MAX_ROWS, evaluation_rows
from loadtests.eval_bench.stack import JUDGE, TARGET, TOKEN, tessera_stack
from loadtests.report import save, table
from services.common.auth import bearer
from services.fixtures.tiny_llama import build_tiny_llama

SEED = 7
FINISHED = (epb.RUN_STATE_SUCCEEDED, epb.RUN_STATE_PARTIAL, epb.RUN_STATE_FAILED, epb.RUN_STATE_CANCELLED)
# Scores are computed by the same functions on the same text: they must be equal, not close.
TOLERANCE = 1e-9


def log(message: str) -> None:
    print(f"[eval_bench] {message}", flush=True)


async def tessera_run(
    stub, dataset: str, version: str, questions: dict[str, str], concurrency: int, max_tokens: int, timeout_s: float
) -> tuple[float, dict[str, RowScores], epb.EvalRun]:
    """One eval run, timed from StartEvalRun to the poll that sees it finished; its rows by question."""
    spec = events.EvalRunSpec(
        eval_run_id=f"bench-{uuid.uuid4().hex[:12]}",
        dataset=dataset,
        dataset_version=version,
        target_endpoint=TARGET,
        metrics=list(METRICS),
        judge_endpoint=JUDGE,
        repeats=1,
        concurrency=concurrency,
        seed=SEED,
        sampling=serving_events.SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )
    started = time.perf_counter()
    run = await stub.StartEvalRun(epb.StartEvalRunRequest(spec=spec), metadata=bearer(TOKEN))
    last_log = started
    while run.state not in FINISHED:
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"eval run {run.eval_run_id} not finished after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)
        run = await stub.GetEvalRun(epb.GetEvalRunRequest(eval_run_id=run.eval_run_id), metadata=bearer(TOKEN))
        if time.perf_counter() - last_log >= 5:
            log(f"  tessera: {run.completed}/{run.total} rows")
            last_log = time.perf_counter()
    wall = time.perf_counter() - started
    if run.state not in (epb.RUN_STATE_SUCCEEDED, epb.RUN_STATE_PARTIAL):
        raise RuntimeError(f"eval run {run.eval_run_id}: {epb.RunState.Name(run.state)} {run.error_message}")
    return wall, await tessera_rows(stub, run.eval_run_id, questions), run


async def tessera_rows(stub, run_id: str, questions: dict[str, str]) -> dict[str, RowScores]:
    """The run's per-row results keyed by question (`questions`: row id -> question)."""
    rows: dict[str, RowScores] = {}
    token = ""
    while True:
        request = epb.ListEvalResultsRequest(eval_run_id=run_id)
        request.page.page_size, request.page.page_token = 1000, token
        reply = await stub.ListEvalResults(request, metadata=bearer(TOKEN))
        for result in reply.results:
            if not result.example_id:
                continue  # a summary record
            scores = {v.metric: (v.value if v.HasField("value") else None) for v in result.metrics}
            judge = next((v.judge_reply for v in result.metrics if v.metric == "correctness"), "")
            rows[questions[result.example_id]] = RowScores(result.response, scores, judge)
        token = reply.page.next_page_token
        if not token:
            return rows


def agreement(tessera: dict[str, RowScores], mlflow: dict[str, RowScores]) -> dict:
    """Row by row: same answer text, and each metric equal (or unmeasured on both sides)."""
    questions = sorted(set(tessera) | set(mlflow))
    both = [q for q in questions if q in tessera and q in mlflow]
    out = {"rows": len(questions), "rows_on_both_sides": len(both)}
    out["answers_equal"] = sum(tessera[q].answer == mlflow[q].answer for q in both)
    # The judge saw the same prompt with the same sampling when it replied the same text. Long greedy
    # generations may still part late: vLLM's arithmetic depends on what else is in the batch, and the
    # two sides batch differently. How far the differing replies agreed is kept.
    out["judge_replies_equal"] = sum(tessera[q].judge_reply == mlflow[q].judge_reply for q in both)
    prefixes = [
        len(os.path.commonprefix([tessera[q].judge_reply, mlflow[q].judge_reply]))
        for q in both
        if tessera[q].judge_reply != mlflow[q].judge_reply
    ]
    out["differing_judge_replies_agree_for_chars"] = min(prefixes) if prefixes else None
    for metric in METRICS:
        equal = 0
        for q in both:
            a, b = tessera[q].scores.get(metric), mlflow[q].scores.get(metric)
            equal += (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= TOLERANCE)
        out[f"{metric}_equal"] = equal
    out["first_differences"] = [
        {"question": q, "tessera": vars(tessera[q]), "mlflow": vars(mlflow[q])} for q in both if tessera[q] != mlflow[q]
    ][:3]
    return out


def means(rows: dict[str, RowScores]) -> dict[str, tuple[float, int]]:
    """metric -> (mean over measured rows, measured count)."""
    out = {}
    for metric in METRICS:
        values = [r.scores[metric] for r in rows.values() if r.scores.get(metric) is not None]
        out[metric] = (sum(values) / len(values) if values else float("nan"), len(values))
    return out


async def mlflow_only(anchor: MlflowAnchor, rows: list[dict], rounds: int) -> None:
    """The anchor's side alone, with a warm-up: rows/s and the scores it gave."""
    await asyncio.to_thread(anchor.evaluate, rows[:2])
    for round_ in range(rounds):
        result = await asyncio.to_thread(anchor.evaluate, rows)
        log(
            f"round {round_ + 1}: mlflow {len(rows)} rows in {result.wall_s:.1f}s = {len(rows) / result.wall_s:.2f} rows/s"
        )
        log(f"  means {means(result.rows)}")
        sample = next(iter(result.rows.items()))
        log(f"  e.g. {sample[0]!r} -> {sample[1]}")
        for question, reason in list(anchor.unmeasured_reasons.items())[:1]:
            log(f"  correctness unmeasured on {question!r}: {reason}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rows", type=int, default=32, help=f"1-{MAX_ROWS}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="the Tessera run's calls in flight")
    parser.add_argument("--mlflow-workers", type=int, default=0, help="MLflow's worker pool; 0: its default (10)")
    parser.add_argument("--max-tokens", type=int, default=16, help="target answer length (judge: 256, as the service)")
    parser.add_argument("--run-timeout", type=float, default=600.0)
    parser.add_argument(
        "--mlflow-only", action="store_true", help="the anchor alone (no evaluation service): checks the harness"
    )
    args = parser.parse_args()
    rows = evaluation_rows(args.rows)
    model_dir = build_tiny_llama()
    work = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    log(f"model {model_dir}; logs and MLflow store in {work}")
    walls: dict[str, list[float]] = {"tessera": [], "mlflow": []}
    mlflow_table_rows: list[int] = []
    last: dict[str, dict[str, RowScores]] = {}
    checks: list[dict] = []
    questions = {str(i): r["request"] for i, r in enumerate(rows)}  # the service's row ids
    async with tessera_stack(model_dir, work, args.bootstrap, rows, evaluation=not args.mlflow_only) as stack:
        anchor = MlflowAnchor(
            stack.openai_url,
            TOKEN,
            TARGET,
            JUDGE,
            max_tokens=args.max_tokens,
            seed=SEED,
            tracking_dir=str(work),
            workers=args.mlflow_workers or None,
        )
        if args.mlflow_only:
            await mlflow_only(anchor, rows, args.rounds)
            return
        async with grpc.aio.insecure_channel(stack.evaluation) as channel:
            stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
            # Warm-up, not measured: MLflow creates its store and imports its evaluation harness, Tessera
            # opens its channels; both engines see the prompts once.
            log("warm-up (not measured)")
            await asyncio.to_thread(anchor.evaluate, rows[:2])
            await tessera_run(
                stub, stack.dataset, stack.dataset_version, questions, args.concurrency, args.max_tokens, 600
            )

            async def run_tessera() -> None:
                wall, scored, run = await tessera_run(
                    stub,
                    stack.dataset,
                    stack.dataset_version,
                    questions,
                    args.concurrency,
                    args.max_tokens,
                    args.run_timeout,
                )
                walls["tessera"].append(wall)
                last["tessera"] = scored
                log(f"  tessera: {len(rows)} rows in {wall:.1f}s = {len(rows) / wall:.2f} rows/s ({run.eval_run_id})")

            async def run_mlflow() -> None:
                result: AnchorRun = await asyncio.to_thread(anchor.evaluate, rows)
                walls["mlflow"].append(result.wall_s)
                last["mlflow"] = result.rows
                mlflow_table_rows.append(result.reported_rows)
                log(
                    f"  mlflow: {len(rows)} rows in {result.wall_s:.1f}s = {len(rows) / result.wall_s:.2f} rows/s"
                    f" ({len(result.rows)} scored, {result.reported_rows} in its result table)"
                )

            for round_ in range(args.rounds):
                order = (run_tessera, run_mlflow) if round_ % 2 == 0 else (run_mlflow, run_tessera)
                log(f"round {round_ + 1}/{args.rounds}")
                for side in order:
                    await side()
                checks.append(agreement(last["tessera"], last["mlflow"]))

    rates = {side: len(rows) * len(w) / sum(w) for side, w in walls.items()}
    ratio = rates["tessera"] / rates["mlflow"]
    print()
    print(
        table(
            ["side", "rows", "rounds", "wall s (sum)", "rows/s", *(f"{m} mean" for m in METRICS), "judge coverage"],
            [
                [
                    label,
                    len(rows),
                    len(walls[side]),
                    sum(walls[side]),
                    rates[side],
                    *(means(last[side])[m][0] for m in METRICS),
                    f"{means(last[side])['correctness'][1]}/{len(rows)}",
                ]
                for side, label in (
                    ("tessera", f"Tessera eval run (concurrency {args.concurrency})"),
                    ("mlflow", f"mlflow.genai.evaluate ({args.mlflow_workers or 10} workers)"),
                )
            ],
        )
    )
    print()
    print(
        table(
            [
                "round",
                "rows on both",
                "answers equal",
                "judge replies equal",
                "others agree for (chars)",
                *(f"{m} equal" for m in METRICS),
            ],
            [
                [
                    i + 1,
                    c["rows_on_both_sides"],
                    c["answers_equal"],
                    c["judge_replies_equal"],
                    c["differing_judge_replies_agree_for_chars"] or "-",
                    *(c[f"{m}_equal"] for m in METRICS),
                ]
                for i, c in enumerate(checks)
            ],
        )
    )
    agree = all(
        c["rows_on_both_sides"] == len(rows)
        and c["answers_equal"] == len(rows)
        and all(c[f"{m}_equal"] == len(rows) for m in METRICS)
        for c in checks
    )
    log(f"Tessera / MLflow rows/s: {ratio:.2f}x (target >= 3x); answers and scores agree row by row: {agree}")
    if not agree:
        for c in checks:
            for difference in c["first_differences"]:
                log(f"  differs: {difference}")
    path = save(
        "eval_bench",
        {
            "rows": len(rows),
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "mlflow_workers": args.mlflow_workers or 10,
            "max_tokens": args.max_tokens,
            "seed": SEED,
            "walls_s": walls,
            "rows_per_s": rates,
            "ratio": ratio,
            "agreement": checks,
            "scores_agree": agree,
            "mlflow_result_table_rows": mlflow_table_rows,
        },
    )
    log(f"results in {path}")


if __name__ == "__main__":
    asyncio.run(main())
