"""Base vs fine-tuned, decided by statistics: evaluate both endpoints on one dataset version,
compare them row by row, and point an alias at the winner (what `make demo` ends with).

    outcome = await evaluate_and_promote(
        evaluation_channel, training_channel, registry_channel, token,
        dataset="main.demo.capitals_eval", rows=capitals.evaluation_rows(),
        baseline_endpoint="demo-llm", candidate_endpoint="demo-capitals",
        model="main.demo.capitals_llama", alias="champion",
    )

The candidate wins only when its improvement on the deciding metric is significant (its paired
interval excludes 0); the alias then moves to the version that answered for it (from the run's
manifest). Otherwise nothing moves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.events.v1 import evaluation_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc
from tessera.training.v1 import training_pb2 as tpb
from tessera.training.v1 import training_pb2_grpc

from services.common.auth import bearer

FINAL = (pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_PARTIAL, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED)


@dataclass(frozen=True)
class Outcome:
    baseline: pb.EvalRun
    candidate: pb.EvalRun
    comparison: pb.RunComparison
    deciding: pb.PairedDifference
    # "candidate" (the alias moved to it) or "baseline" (nothing moved).
    winner: str
    promoted: str  # "model/version" the alias now points at, or ""


async def dataset_version(
    training: training_pb2_grpc.TrainingServiceStub, metadata, dataset: str, rows: list[dict]
) -> str:
    """The dataset version holding `rows` (created when missing; versions are content-addressed)."""
    try:
        await training.CreateDataset(tpb.CreateDatasetRequest(full_name=dataset), metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    data = b"".join(json.dumps(row).encode() + b"\n" for row in rows)

    async def requests():
        yield tpb.UploadDatasetVersionRequest(dataset=dataset)
        yield tpb.UploadDatasetVersionRequest(data=data)

    return (await training.UploadDatasetVersion(requests(), metadata=metadata)).version


async def wait_for_run(
    evaluation: evaluation_pb2_grpc.EvaluationServiceStub, metadata, eval_run_id: str, timeout_s: float = 1800
) -> pb.EvalRun:
    async with asyncio.timeout(timeout_s):
        while True:
            run = await evaluation.GetEvalRun(pb.GetEvalRunRequest(eval_run_id=eval_run_id), metadata=metadata)
            if run.state in FINAL:
                return run
            await asyncio.sleep(1)


async def evaluate_and_promote(
    evaluation_channel: grpc.aio.Channel,
    training_channel: grpc.aio.Channel,
    registry_channel: grpc.aio.Channel,
    token: str,
    *,
    dataset: str,
    rows: list[dict],
    baseline_endpoint: str,
    candidate_endpoint: str,
    model: str,
    alias: str,
    metrics: tuple[str, ...] = ("exact_match", "token_f1"),
    deciding_metric: str = "exact_match",
    max_tokens: int = 12,
    seed: int = 1,
    say: Callable[[str], None] = print,
) -> Outcome:
    metadata = bearer(token)
    evaluation = evaluation_pb2_grpc.EvaluationServiceStub(evaluation_channel)
    version = await dataset_version(training_pb2_grpc.TrainingServiceStub(training_channel), metadata, dataset, rows)
    say(f"dataset {dataset}@{version[:12]}: {len(rows)} rows")
    runs = []
    for endpoint in (baseline_endpoint, candidate_endpoint):
        spec = events_pb.EvalRunSpec(
            dataset=dataset,
            dataset_version=version,
            target_endpoint=endpoint,
            metrics=list(metrics),
            seed=seed,
            tags={"purpose": "promotion", "alias": alias},
        )
        spec.sampling.temperature = 0.0
        spec.sampling.max_tokens = max_tokens
        started = await evaluation.StartEvalRun(pb.StartEvalRunRequest(spec=spec), metadata=metadata)
        runs.append(started.eval_run_id)
    baseline, candidate = [await wait_for_run(evaluation, metadata, run_id) for run_id in runs]
    for run in (baseline, candidate):
        shown = ", ".join(
            f"{s.metric} {s.interval.estimate:.2f} [{s.interval.low:.2f}, {s.interval.high:.2f}]"
            for s in run.metrics
            if s.HasField("interval")
        )
        say(f"{run.spec.target_endpoint}: {pb.RunState.Name(run.state)}; {shown}")
    comparison = await evaluation.CompareRuns(
        pb.CompareRunsRequest(baseline_run_id=baseline.eval_run_id, candidate_run_id=candidate.eval_run_id),
        metadata=metadata,
    )
    deciding = next(d for d in comparison.differences if d.metric == deciding_metric)
    d = deciding.difference
    say(
        f"{deciding_metric}: candidate - baseline = {d.estimate:+.2f} [{d.low:+.2f}, {d.high:+.2f}] "
        f"({deciding.test} p={deciding.p_value:.3g}, {'significant' if deciding.significant else 'not significant'},"
        f" minimum detectable {deciding.minimum_detectable_difference:.2f} at N={deciding.paired})"
    )
    if not (deciding.significant and d.estimate > 0 and d.low > 0):
        say(f"the candidate is not detectably better: {alias} stays where it is")
        return Outcome(baseline, candidate, comparison, deciding, "baseline", "")
    served = [m for m in candidate.manifest.target_models if m.rpartition("/")[0] == model]
    if not served:
        raise ValueError(f"the candidate run was not served by {model}: {list(candidate.manifest.target_models)}")
    number = int(served[0].rpartition("/")[2])
    await registry_pb2_grpc.RegistryServiceStub(registry_channel).SetModelAlias(
        rpb.SetModelAliasRequest(model_name=model, alias=alias, version=number), metadata=metadata
    )
    say(f"{model}@{alias} -> version {number}")
    return Outcome(baseline, candidate, comparison, deciding, "candidate", served[0])
