"""Protobuf <-> entities for the evaluation API and its Kafka records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.events.v1 import evaluation_pb2 as events_pb

from services.evaluation.entities import (
    Assessment,
    Calibration,
    IntervalValue,
    OnlineEvaluation,
    RowResult,
    Run,
    RunSpec,
    Sampling,
    Summary,
)

_STATES = {
    "QUEUED": pb.RUN_STATE_QUEUED,
    "RUNNING": pb.RUN_STATE_RUNNING,
    "SUCCEEDED": pb.RUN_STATE_SUCCEEDED,
    "PARTIAL": pb.RUN_STATE_PARTIAL,
    "FAILED": pb.RUN_STATE_FAILED,
    "CANCELLED": pb.RUN_STATE_CANCELLED,
}
_KINDS = {"LABEL": pb.ASSESSMENT_KIND_LABEL, "PREFERENCE": pb.ASSESSMENT_KIND_PREFERENCE}
_VERDICTS = {"": pb.VERDICT_UNSPECIFIED, "GOOD": pb.VERDICT_GOOD, "BAD": pb.VERDICT_BAD}
_PREFERENCES = {
    "": pb.PREFERENCE_UNSPECIFIED,
    "A": pb.PREFERENCE_A,
    "B": pb.PREFERENCE_B,
    "TIE": pb.PREFERENCE_TIE,
    "BOTH_BAD": pb.PREFERENCE_BOTH_BAD,
}


def _time(target, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value.astimezone(UTC))


def sampling(message) -> Sampling:
    return Sampling(
        temperature=message.temperature if message.HasField("temperature") else None,
        top_p=message.top_p if message.HasField("top_p") else None,
        max_tokens=message.max_tokens if message.HasField("max_tokens") else None,
        stop=tuple(message.stop),
        seed=message.seed if message.HasField("seed") else None,
        ignore_eos=message.ignore_eos,
    )


def sampling_message(s: Sampling, out) -> None:
    if s.temperature is not None:
        out.temperature = s.temperature
    if s.top_p is not None:
        out.top_p = s.top_p
    if s.max_tokens is not None:
        out.max_tokens = s.max_tokens
    if s.seed is not None:
        out.seed = s.seed
    out.stop.extend(s.stop)
    out.ignore_eos = s.ignore_eos


def run_spec(message: events_pb.EvalRunSpec) -> RunSpec:
    return RunSpec(
        eval_run_id=message.eval_run_id,
        dataset=message.dataset,
        dataset_version=message.dataset_version,
        target_endpoint=message.target_endpoint,
        metrics=tuple(message.metrics),
        judge_endpoint=message.judge_endpoint,
        repeats=message.repeats,
        concurrency=message.concurrency,
        seed=message.seed,
        sampling=sampling(message.sampling),
        k=message.k,
        experiment=message.experiment,
        human_label_column=message.human_label_column,
        tags=dict(message.tags),
    )


def run_spec_message(spec: RunSpec) -> events_pb.EvalRunSpec:
    out = events_pb.EvalRunSpec(
        eval_run_id=spec.eval_run_id,
        dataset=spec.dataset,
        dataset_version=spec.dataset_version,
        target_endpoint=spec.target_endpoint,
        metrics=list(spec.metrics),
        judge_endpoint=spec.judge_endpoint,
        repeats=spec.repeats,
        concurrency=spec.concurrency,
        seed=spec.seed,
        k=spec.k,
        experiment=spec.experiment,
        human_label_column=spec.human_label_column,
        tags=spec.tags,
    )
    sampling_message(spec.sampling, out.sampling)
    return out


def interval(value: IntervalValue | None) -> pb.Interval | None:
    if value is None:
        return None
    return pb.Interval(
        estimate=value.estimate,
        low=value.low,
        high=value.high,
        method=value.method,
        n=value.n,
        confidence=value.confidence,
    )


def summary(s: Summary) -> pb.MetricSummary:
    out = pb.MetricSummary(
        metric=s.metric,
        measured=s.measured,
        unmeasured=s.unmeasured,
        coverage=s.coverage,
        prompt_hash=s.prompt_hash,
        prompt_version=s.prompt_version,
    )
    if s.interval is not None:
        out.interval.CopyFrom(interval(s.interval))
    for value in s.per_repeat:
        out.per_repeat.add().CopyFrom(interval(value) or pb.Interval(method="none"))
    return out


def calibration(c: Calibration) -> pb.JudgeCalibration:
    return pb.JudgeCalibration(
        metric=c.metric,
        prompt_hash=c.prompt_hash,
        judge_model=c.judge_model,
        n=c.n,
        agreement=c.agreement,
        cohen_kappa=c.cohen_kappa,
        confusion=pb.ConfusionMatrix(counts=list(c.confusion)),
        note=c.note,
    )


def manifest(data: dict[str, Any]) -> pb.Manifest:
    if not data:
        return pb.Manifest()
    out = pb.Manifest(
        dataset=data["dataset"],
        dataset_version=data["dataset_version"],
        target_endpoint=data["target_endpoint"],
        target_models=data["target_models"],
        judge_endpoint=data["judge_endpoint"],
        judge_models=data["judge_models"],
        prompt_hashes=data["prompt_hashes"],
        seed=data["seed"],
        repeats=data["repeats"],
        service_version=data["service_version"],
    )
    sampling_message(Sampling.from_json(data["sampling"]), out.sampling)
    return out


def run(r: Run) -> pb.EvalRun:
    out = pb.EvalRun(
        eval_run_id=r.eval_run_id,
        spec=run_spec_message(r.spec),
        state=_STATES[r.state],
        created_by=r.created_by,
        completed=r.completed,
        total=r.total,
        failed=r.failed,
        metrics=[summary(s) for s in r.summaries],
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        mlflow_run_id=r.mlflow_run_id,
        experiment_id=r.experiment_id,
        manifest=manifest(r.manifest),
        calibrations=[calibration(c) for c in r.calibrations],
        error_message=r.error_message,
    )
    if r.latency:
        out.latency.CopyFrom(
            pb.LatencySummary(p50_ms=r.latency["p50_ms"], p95_ms=r.latency["p95_ms"], mean_ms=r.latency["mean_ms"])
        )
    if r.cost_usd is not None:
        out.cost_usd = r.cost_usd
    _time(out.created_at, r.created_at)
    _time(out.finished_at, r.finished_at)
    return out


def result(r: RowResult) -> events_pb.EvalResult:
    out = events_pb.EvalResult(
        eval_run_id=r.eval_run_id,
        example_id=r.example_id,
        repeat=r.repeat,
        response=r.response,
        retrieved_ids=list(r.retrieved_ids),
        latency_ms=r.latency_ms,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        request_id=r.request_id,
        status=r.status,
        error_message=r.error_message,
        target_endpoint=r.target_endpoint,
        online_evaluation_id=r.online_evaluation_id,
    )
    for v in r.metrics:
        value = out.metrics.add(
            metric=v.metric,
            judge_reply=v.judge_reply,
            unmeasured_reason=v.unmeasured_reason,
            measured=v.measured,
            unmeasured=v.unmeasured,
        )
        if v.value is not None:
            value.value = v.value
    if r.cost_usd is not None:
        out.cost_usd = r.cost_usd
    _time(out.at, r.at)
    _time(out.window_start, r.window_start)
    _time(out.window_end, r.window_end)
    return out


def comparison(baseline: str, candidate: str, differences: list[dict[str, Any]]) -> pb.RunComparison:
    out = pb.RunComparison(baseline_run_id=baseline, candidate_run_id=candidate)
    for d in differences:
        item = out.differences.add(metric=d["metric"], paired=d["paired"], unpaired=d["unpaired"])
        if "difference" not in d:
            item.test = "none: " + d.get("note", "")
            continue
        item.difference.CopyFrom(interval(d["difference"]))
        item.test = d["test"]
        item.p_value = d["p_value"]
        item.significant = d["significant"]
        item.minimum_detectable_difference = d["minimum_detectable_difference"]
        item.detectable = d["detectable"]
        item.baseline_only = d["baseline_only"]
        item.candidate_only = d["candidate_only"]
        item.row_differences.extend(d["row_differences"])
    return out


def assessment_entity(message: pb.Assessment) -> Assessment:
    kinds = {v: k for k, v in _KINDS.items()}
    verdicts = {v: k for k, v in _VERDICTS.items()}
    preferences = {v: k for k, v in _PREFERENCES.items()}
    return Assessment(
        kind=kinds.get(message.kind, ""),
        endpoint=message.endpoint,
        request_id=message.request_id,
        verdict=verdicts.get(message.verdict, ""),
        expected_response=message.expected_response,
        guideline=message.guideline,
        comment=message.comment,
        prompt=message.prompt,
        endpoint_a=message.endpoint_a,
        endpoint_b=message.endpoint_b,
        request_id_a=message.request_id_a,
        request_id_b=message.request_id_b,
        sides_swapped=message.sides_swapped,
        preference=preferences.get(message.preference, ""),
    )


def assessment_kind(kind: int) -> str:
    return {v: k for k, v in _KINDS.items()}.get(kind, "")


def assessment(a: Assessment) -> pb.Assessment:
    out = pb.Assessment(
        assessment_id=a.assessment_id,
        kind=_KINDS[a.kind],
        endpoint=a.endpoint,
        request_id=a.request_id,
        verdict=_VERDICTS[a.verdict],
        expected_response=a.expected_response,
        guideline=a.guideline,
        comment=a.comment,
        prompt=a.prompt,
        endpoint_a=a.endpoint_a,
        endpoint_b=a.endpoint_b,
        request_id_a=a.request_id_a,
        request_id_b=a.request_id_b,
        sides_swapped=a.sides_swapped,
        preference=_PREFERENCES[a.preference],
        created_by=a.created_by,
    )
    _time(out.created_at, a.created_at)
    return out


def online_entity(message: pb.OnlineEvaluation) -> OnlineEvaluation:
    return OnlineEvaluation(
        endpoint=message.endpoint,
        metrics=tuple(message.metrics),
        judge_endpoint=message.judge_endpoint,
        sample_rate=message.sample_rate or 1.0,
        interval_seconds=message.interval_seconds,
        max_rows_per_window=message.max_rows_per_window,
    )


def online(o: OnlineEvaluation) -> pb.OnlineEvaluation:
    out = pb.OnlineEvaluation(
        online_evaluation_id=o.online_evaluation_id,
        endpoint=o.endpoint,
        metrics=list(o.metrics),
        judge_endpoint=o.judge_endpoint,
        sample_rate=o.sample_rate,
        interval_seconds=o.interval_seconds,
        max_rows_per_window=o.max_rows_per_window,
        created_by=o.created_by,
        latest=[summary(s) for s in o.latest],
    )
    _time(out.created_at, o.created_at)
    _time(out.last_window_end, o.last_window_end)
    return out
