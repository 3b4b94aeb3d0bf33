"""The evaluation service's logic: eval runs, their statistics, comparisons, calibration,
assessments and online evaluation.

Every call takes the caller's Principal. Grants live in the registry:

- StartEvalRun: SELECT on the DATASET (checked by training when the rows are read, and here up
  front), EXECUTE on the target ENDPOINT and on the judge ENDPOINT (checked here up front so a
  run without it fails at once, and by serving on every call, which is made with the caller's token).
- Reading a run (Get, List, ListEvalResults, CompareRuns, CalibrateJudge): its creator, or SELECT
  on its dataset. CancelEvalRun: its creator.
- A LABEL assessment: SELECT on its endpoint (the label reads the inference table); a PREFERENCE
  vote: EXECUTE on both endpoints. ListAssessments shows only those the caller could create.
- SaveAssessmentsAsDataset: SELECT on the endpoint here; MODIFY on the dataset (CREATE_MODEL on
  its schema when it is created) is checked by training, which the upload goes through as the caller.
- Online evaluations: creating one needs SELECT on the endpoint and EXECUTE on the judge; listing
  shows those on endpoints the caller holds SELECT on; deleting needs being its creator or
  MANAGE on the endpoint.

A run executes in the process that accepted it, with the caller's token held in memory only
(never in PostgreSQL); the process renews the run's lease, and a run whose lease lapsed is
marked FAILED "interrupted" by any replica, its finished rows kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.training.v1 import training_pb2 as tpb

from services.common.auth import Principal
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TesseraError,
)
from services.common.names import object_name
from services.common.paging import Page, decode_token, encode_token, page_size
from services.common.registry_privileges import RegistryPrivileges
from services.evaluation import metrics as m
from services.evaluation import statistics as st
from services.evaluation.entities import (
    CANCELLED,
    DETERMINISTIC_METRICS,
    FAILED,
    FINAL_STATES,
    JUDGE_METRICS,
    LABEL,
    METRICS,
    PARTIAL,
    PREFERENCE,
    PREFERENCES,
    QUEUED,
    REFERENCE_FREE_METRICS,
    RUNNING,
    SUCCEEDED,
    VERDICTS,
    Assessment,
    Calibration,
    IntervalValue,
    MetricValue,
    OnlineEvaluation,
    RowResult,
    Run,
    RunSpec,
    Sampling,
    Summary,
)
from services.evaluation.judges import JUDGE_TEMPLATES, MAX_VERDICT_CHARS, PASS_FAIL, cohens_kappa
from services.evaluation.peers import Answer, MonitoringPeer, ServingPeer, TrainingPeer, status_name
from services.evaluation.settings import EvaluationSettings
from services.evaluation.store import EvaluationStore

_log = logging.getLogger(__name__)

RUNS = Counter("tessera_eval_runs_total", "Eval runs finished, by final state", ["state"])
ROWS = Counter("tessera_eval_rows_total", "Rows x repeats scored, by status (OK or the failed row's code)", ["status"])
JUDGE_CALLS = Counter(
    "tessera_eval_judge_calls_total", "Judge calls by outcome: measured, unparseable, failed", ["outcome"]
)
ONLINE_WINDOWS = Counter("tessera_eval_online_windows_total", "Online evaluation windows scored", ["endpoint"])

SERVICE_VERSION = "1"
CONFIDENCE = 0.95
DEFAULT_EXPERIMENT_PREFIX = "/tessera/evaluations/"
_VERSION = re.compile(r"[0-9a-f]{64}")
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_EXPERIMENT = re.compile(r"[A-Za-z0-9_/.\- ]{1,256}")
# Pass/fail metrics: summarized with Wilson, compared with McNemar.
_PASS_FAIL_METRICS = frozenset(
    {"exact_match", *(name for name, t in JUDGE_TEMPLATES.items() if t.verdict_format == PASS_FAIL)}
)
_JUDGE_MAX_TOKENS = 256
_TRUE_LABELS = {"true", "pass", "good", "yes", "1", "correct"}
_FALSE_LABELS = {"false", "fail", "bad", "no", "0", "incorrect"}


def check_endpoint(name: str, field: str) -> str:
    if not _ENDPOINT.fullmatch(name or ""):
        raise InvalidArgument(f"{field} must be an endpoint name (1-128 letters, digits, _ . -)", field=field)
    return name


def _human_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_LABELS:
            return True
        if text in _FALSE_LABELS:
            return False
    return None


class Prices:
    """USD per million prompt and completion tokens per served model (serving's price table)."""

    def __init__(self, text: str) -> None:
        self._table: dict[str, tuple[float, float]] = {}
        if text.strip():
            for model, pair in json.loads(text).items():
                prompt, completion = pair
                self._table[model] = (float(prompt), float(completion))

    def cost(self, served_model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self._table.get(served_model)
        if price is None:
            return None
        return (price[0] * prompt_tokens + price[1] * completion_tokens) / 1e6


# -- one dataset row ----------------------------------------------------------------------------


class RowProblem(ValueError):
    """A dataset row the run cannot use; it is kept as a failed row with this reason."""


def _text_list(value: Any, column: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise RowProblem(f"'{column}' must be a string or a list of strings")


def parse_row(row: Any) -> dict[str, Any]:
    """The parts of an evaluation-format row the metrics use; RowProblem when it is malformed."""
    if not isinstance(row, dict):
        raise RowProblem("the row is not a JSON object")
    request = row.get("request")
    if isinstance(request, str):
        if not request.strip():
            raise RowProblem("'request' is empty")
        messages = [{"role": "user", "content": request}]
    elif isinstance(request, dict) and isinstance(request.get("messages"), list):
        messages = request["messages"]
        if not messages or not all(
            isinstance(x, dict)
            and x.get("role") in ("system", "user", "assistant")
            and isinstance(x.get("content"), str)
            for x in messages
        ):
            raise RowProblem("'request.messages' must be a non-empty list of {role, content}")
    elif isinstance(request, dict) and isinstance(request.get("query") or request.get("question"), str):
        messages = [{"role": "user", "content": request.get("query") or request.get("question")}]
    else:
        raise RowProblem("'request' must be a string, {messages: [...]} or {query: ...}")
    question = next((x["content"] for x in reversed(messages) if x["role"] == "user"), messages[-1]["content"])
    expected_context = row.get("expected_retrieved_context")
    relevant: list[str] = []
    if expected_context is not None:
        if not isinstance(expected_context, list):
            raise RowProblem("'expected_retrieved_context' must be a list")
        for item in expected_context:
            if isinstance(item, str):
                relevant.append(item)
            elif isinstance(item, dict) and isinstance(item.get("doc_id") or item.get("id"), str):
                relevant.append(item.get("doc_id") or item.get("id"))
            else:
                raise RowProblem("'expected_retrieved_context' items must be ids or {doc_id, content}")
    context = _text_list(row.get("context"), "context")
    if not context and isinstance(expected_context, list):
        context = [x["content"] for x in expected_context if isinstance(x, dict) and isinstance(x.get("content"), str)]
    return {
        "messages": messages,
        "question": question,
        "references": _text_list(row.get("expected_response"), "expected_response"),
        "facts": _text_list(row.get("expected_facts"), "expected_facts"),
        "relevant": relevant,
        "context": context,
        "guidelines": _text_list(row.get("guidelines"), "guidelines"),
    }


def deterministic_value(metric: str, answer: str, parts: dict[str, Any], retrieved: list[str], k: int) -> MetricValue:
    """One deterministic metric of one answer (None with the reason when it cannot be measured)."""
    references = parts["references"]
    if metric in ("exact_match", "token_f1", "rouge_l", "bleu"):
        if not references:
            return MetricValue(metric, None, unmeasured_reason="the row has no expected_response")
        if metric == "exact_match":
            return MetricValue(metric, 1.0 if m.exact_match(answer, references) else 0.0)
        if metric == "token_f1":
            return MetricValue(metric, m.token_f1(answer, references))
        if metric == "rouge_l":
            return MetricValue(metric, max(m.rouge_l(answer, r).f1 for r in references))
        return MetricValue(metric, m.sentence_bleu(answer, references).score / 100.0)
    relevant = parts["relevant"]
    if not relevant:
        return MetricValue(metric, None, unmeasured_reason="the row has no expected_retrieved_context")
    if not retrieved:
        return MetricValue(metric, None, unmeasured_reason="the target returned no retrieved documents")
    value = {
        "precision_at_k": lambda: m.precision_at_k(retrieved, relevant, k),
        "recall_at_k": lambda: m.recall_at_k(retrieved, relevant, k),
        "mrr": lambda: m.reciprocal_rank(retrieved, relevant, k),
        "ndcg_at_k": lambda: m.ndcg_at_k(retrieved, relevant, k),
    }[metric]()
    if value is None:
        return MetricValue(metric, None, unmeasured_reason="no relevant document to rank")
    return MetricValue(metric, float(value))


def summary_values(summaries, empty_reason: str) -> tuple[MetricValue, ...]:
    """A summary record's metrics: each metric's mean (its interval's estimate) with its counts."""
    return tuple(
        MetricValue(
            s.metric,
            s.interval.estimate if s.interval else None,
            measured=s.measured,
            unmeasured=s.unmeasured,
            unmeasured_reason="" if s.interval else empty_reason,
        )
        for s in summaries
    )


def judge_fields(metric: str, answer: str, parts: dict[str, Any]) -> dict[str, str] | str:
    """The template's fields for one answer, or why the metric cannot be judged on this row."""
    template = JUDGE_TEMPLATES[metric]
    values = {
        "question": parts["question"],
        "answer": answer,
        "reference": "\n".join(parts["references"] + parts["facts"]),
        "context": "\n\n".join(parts["context"]),
        "guidelines": "\n".join(parts["guidelines"]),
    }
    for needed, column in (
        ("reference", "expected_response or expected_facts"),
        ("context", "retrieved context"),
        ("guidelines", "guidelines"),
    ):
        if needed in template.fields and not values[needed]:
            return f"the row has no {column}"
    return {k: v for k, v in values.items() if k in template.fields}


# -- summaries --------------------------------------------------------------------------------


def _interval(interval: st.Interval | None) -> IntervalValue | None:
    if interval is None:
        return None
    return IntervalValue(interval.estimate, interval.low, interval.high, interval.method, interval.n, CONFIDENCE)


def _typed(metric: str, value: float | None) -> float | bool | None:
    if value is None:
        return None
    return bool(value) if metric in _PASS_FAIL_METRICS else value


def summarize_metric(metric: str, results: Iterable[RowResult], repeats: int, seed: int) -> Summary:
    """Wilson for pass rates, bootstrap for means; repeats apart; unmeasured values only in coverage."""
    by_repeat: list[dict[str, float | bool | None]] = [{} for _ in range(repeats)]
    for r in results:
        value = r.value(metric)
        if value is not None and 0 <= r.repeat < repeats:
            by_repeat[r.repeat][r.example_id] = _typed(metric, value.value)
    every = [v for rep in by_repeat for v in rep.values()]
    measured = sum(1 for v in every if v is not None)
    template = JUDGE_TEMPLATES.get(metric)
    extra = {"prompt_hash": template.content_hash, "prompt_version": template.version} if template else {}
    if repeats == 1:
        summary = st.summarize(every, CONFIDENCE, seed=seed)
        return Summary(metric, _interval(summary.interval), measured, len(every) - measured, (), **extra)
    repeated = st.summarize_repeats(by_repeat, CONFIDENCE, seed=seed)
    per_repeat = tuple(_interval(s.interval) for s in repeated.per_repeat)
    across = _interval(repeated.across_repeats)
    return Summary(metric, across, measured, len(every) - measured, per_repeat, **extra)


def latency_summary(results: Iterable[RowResult]) -> dict[str, float]:
    values = [r.latency_ms for r in results if r.status == "OK"]
    if not values:
        return {}
    array = np.asarray(values)
    return {
        "p50_ms": float(np.percentile(array, 50)),
        "p95_ms": float(np.percentile(array, 95)),
        "mean_ms": float(array.mean()),
    }


def calibration_of(metric: str, judge_model: str, pairs: list[tuple[bool, bool | None]], note: str = "") -> Calibration:
    """Agreement, Cohen's kappa and the 2x2 confusion ([FAIL, PASS], rows human) of verdicts against labels."""
    template = JUDGE_TEMPLATES[metric]
    confusion = [[0, 0], [0, 0]]
    unmeasured = 0
    for human, judge in pairs:
        if judge is None:
            unmeasured += 1
            continue
        confusion[int(human)][int(judge)] += 1
    n = sum(map(sum, confusion))
    kappa = cohens_kappa(confusion)
    notes = [note] if note else []
    if unmeasured:
        notes.append(f"{unmeasured} rows without a parseable verdict left out")
    if n == 0:
        notes.append("no row has both a human label and a verdict")
    elif kappa is None:
        notes.append("kappa is undefined: both raters used one label throughout")
    return Calibration(
        metric=metric,
        prompt_hash=template.content_hash,
        judge_model=judge_model,
        n=n,
        agreement=(confusion[0][0] + confusion[1][1]) / n if n else float("nan"),
        cohen_kappa=float("nan") if kappa is None else kappa,
        confusion=(confusion[0][0], confusion[0][1], confusion[1][0], confusion[1][1]),
        note="; ".join(notes),
    )


def results_table(results: list[RowResult], metrics: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The per-row table as JSONL and as CSV (one column per metric, empty = unmeasured)."""
    jsonl = b"".join(json.dumps(r.to_json(), sort_keys=True).encode() + b"\n" for r in results)
    out = io.StringIO()
    writer = csv.writer(out)
    head = ["example_id", "repeat", "status", "request_id", "latency_ms", "prompt_tokens", "completion_tokens"]
    writer.writerow([*head, "cost_usd", *metrics, "response", "error_message"])
    for r in results:
        values = [r.value(x) for x in metrics]
        writer.writerow(
            [
                r.example_id,
                r.repeat,
                r.status,
                r.request_id,
                f"{r.latency_ms:.3f}",
                r.prompt_tokens,
                r.completion_tokens,
                "" if r.cost_usd is None else r.cost_usd,
                *("" if v is None or v.value is None else v.value for v in values),
                r.response,
                r.error_message,
            ]
        )
    return jsonl, out.getvalue().encode()


# -- the core -----------------------------------------------------------------------------------


class EvaluationCore:
    def __init__(
        self,
        settings: EvaluationSettings,
        store: EvaluationStore,
        privileges: RegistryPrivileges,
        serving: ServingPeer,
        training: TrainingPeer,
        monitoring: MonitoringPeer,
        registry,
    ) -> None:
        self.settings = settings
        self.store = store
        self.privileges = privileges
        self.serving = serving
        self.training = training
        self.monitoring = monitoring
        # services.training.registry_client.TrainingRegistry: MLflow-compatible runs, artifacts, lineage.
        self.registry = registry
        self.prices = Prices(settings.serving_prices)
        # This process's id: runs it accepted carry it, so its restart marks them interrupted.
        self.instance = f"evaluation-{uuid.uuid4().hex[:12]}"
        self._tasks: dict[str, asyncio.Task] = {}

    # -- spec bounds ----------------------------------------------------------------

    def check_spec(self, spec: RunSpec) -> RunSpec:
        """Bound every client-chosen value before any work is done on it; defaults filled in."""
        s = self.settings
        if spec.eval_run_id and not _RUN_ID.fullmatch(spec.eval_run_id):
            raise InvalidArgument("eval_run_id must be 1-64 letters, digits, _ or -", field="eval_run_id")
        object_name(spec.dataset, "dataset")
        if spec.dataset_version and not _VERSION.fullmatch(spec.dataset_version):
            raise InvalidArgument("dataset_version must be a dataset version (sha256 hex)", field="dataset_version")
        check_endpoint(spec.target_endpoint, "target_endpoint")
        if not spec.metrics:
            raise InvalidArgument("name at least one metric", field="metrics")
        if len(spec.metrics) > s.evaluation_max_metrics:
            raise InvalidArgument(f"at most {s.evaluation_max_metrics} metrics", field="metrics")
        unknown = [x for x in spec.metrics if x not in METRICS]
        if unknown:
            raise InvalidArgument(f"unknown metric {unknown[0][:64]!r}; known: {', '.join(METRICS)}", field="metrics")
        if len(set(spec.metrics)) != len(spec.metrics):
            raise InvalidArgument("a metric is named twice", field="metrics")
        judged = [x for x in spec.metrics if x in JUDGE_METRICS]
        if judged and not spec.judge_endpoint:
            raise InvalidArgument(f"judge metrics ({', '.join(judged)}) need a judge_endpoint", field="judge_endpoint")
        if spec.judge_endpoint:
            check_endpoint(spec.judge_endpoint, "judge_endpoint")
        repeats = spec.repeats or 1
        if not 1 <= repeats <= s.evaluation_max_repeats:
            raise InvalidArgument(f"repeats must be 1 to {s.evaluation_max_repeats}", field="repeats")
        concurrency = spec.concurrency or s.evaluation_default_concurrency
        if not 1 <= concurrency <= s.evaluation_max_concurrency:
            raise InvalidArgument(f"concurrency must be 1 to {s.evaluation_max_concurrency}", field="concurrency")
        k = spec.k or 5
        if not 1 <= k <= s.evaluation_max_k:
            raise InvalidArgument(f"k must be 1 to {s.evaluation_max_k}", field="k")
        if not -(2**62) <= spec.seed <= 2**62:
            raise InvalidArgument("seed out of range", field="seed")
        sampling = spec.sampling
        if sampling.max_tokens is not None and not 1 <= sampling.max_tokens <= s.evaluation_max_max_tokens:
            raise InvalidArgument(f"sampling.max_tokens must be 1 to {s.evaluation_max_max_tokens}", field="sampling")
        if sampling.temperature is not None and not 0 <= sampling.temperature <= 10:
            raise InvalidArgument("sampling.temperature must be 0 to 10", field="sampling")
        if sampling.top_p is not None and not 0 < sampling.top_p <= 1:
            raise InvalidArgument("sampling.top_p must be in (0, 1]", field="sampling")
        if len(sampling.stop) > 16 or any(len(x) > 256 for x in sampling.stop):
            raise InvalidArgument("at most 16 stop strings of 256 characters", field="sampling")
        if sampling.seed is not None:
            raise InvalidArgument(
                "set the run's seed, not sampling.seed (each repeat gets seed + repeat)", field="sampling"
            )
        experiment = spec.experiment or DEFAULT_EXPERIMENT_PREFIX + spec.dataset
        if not _EXPERIMENT.fullmatch(experiment):
            raise InvalidArgument("experiment must be 1-256 letters, digits, / _ . - or spaces", field="experiment")
        if spec.human_label_column and not _COLUMN.fullmatch(spec.human_label_column):
            raise InvalidArgument("human_label_column must be a column name", field="human_label_column")
        if len(spec.tags) > s.evaluation_max_tags or any(
            not k or len(k) > s.evaluation_max_tag_chars or len(v) > s.evaluation_max_tag_chars
            for k, v in spec.tags.items()
        ):
            raise InvalidArgument(
                f"at most {s.evaluation_max_tags} tags, keys and values up to {s.evaluation_max_tag_chars} characters",
                field="tags",
            )
        return replace(
            spec,
            eval_run_id=spec.eval_run_id or uuid.uuid4().hex,
            repeats=repeats,
            concurrency=concurrency,
            k=k,
            experiment=experiment,
        )

    # -- runs -------------------------------------------------------------------------

    async def start_run(self, principal: Principal, spec: RunSpec) -> Run:
        spec = self.check_spec(spec)
        existing = await self.store.get_run(spec.eval_run_id)
        if existing is not None:
            return await self._idempotent(principal, existing, spec)
        # Up front, so a run the caller may not do fails before any row is read or sent.
        await self.privileges.require(principal, "DATASET", spec.dataset, "SELECT")
        await self.privileges.require(principal, "ENDPOINT", spec.target_endpoint, "EXECUTE")
        if spec.judge_endpoint:
            await self.privileges.require(principal, "ENDPOINT", spec.judge_endpoint, "EXECUTE")
        described = await self.training.describe(principal.token, spec.dataset)
        if not described.versions:
            raise FailedPrecondition(f"dataset {spec.dataset} has no version yet")
        version = next((v for v in described.versions if v.version == spec.dataset_version), None)
        if spec.dataset_version and version is None:
            raise NotFound(f"dataset {spec.dataset} has no version {spec.dataset_version}")
        version = version or described.versions[0]
        if version.format != tpb.ROW_FORMAT_EVALUATION:
            raise FailedPrecondition(
                f"dataset {spec.dataset}@{version.version[:12]} is not in the evaluation format (request, expected_response...)"
            )
        if version.row_count > self.settings.evaluation_max_rows:
            raise InvalidArgument(
                f"the dataset version has {version.row_count} rows; at most {self.settings.evaluation_max_rows}",
                field="dataset",
            )
        spec = replace(spec, dataset_version=version.version)
        run = Run(
            eval_run_id=spec.eval_run_id,
            spec=spec,
            state=QUEUED,
            created_by=principal.name,
            total=version.row_count * spec.repeats,
        )
        stored, new = await self.store.insert_run(run, self.instance, self.settings.evaluation_lease_s)
        if not new:
            return await self._idempotent(principal, stored, spec)
        await self.store.update_run(spec.eval_run_id, total=run.total)
        stored.total = run.total
        self._tasks[spec.eval_run_id] = asyncio.create_task(self._execute(stored, principal))
        return stored

    async def _idempotent(self, principal: Principal, existing: Run, spec: RunSpec) -> Run:
        if existing.created_by != principal.name:
            raise AlreadyExists(f"eval run {spec.eval_run_id} exists and is someone else's")
        return existing

    async def _readable_run(self, principal: Principal, eval_run_id: str) -> Run:
        if not _RUN_ID.fullmatch(eval_run_id or ""):
            raise InvalidArgument("eval_run_id must be 1-64 letters, digits, _ or -", field="eval_run_id")
        run = await self.store.get_run(eval_run_id)
        if run is None:
            raise NotFound(f"eval run {eval_run_id} does not exist")
        if run.created_by != principal.name and not await self._may_read_dataset(principal, run.spec.dataset):
            raise PermissionDenied(
                f"permission denied: {principal.name} neither created eval run {eval_run_id} nor holds SELECT on"
                f" dataset {run.spec.dataset}"
            )
        return run

    async def _may_read_dataset(self, principal: Principal, dataset: str) -> bool:
        try:
            return await self.privileges.allowed(principal, "DATASET", dataset, "SELECT")
        except NotFound:
            return False

    async def get_run(self, principal: Principal, eval_run_id: str) -> Run:
        return await self._readable_run(principal, eval_run_id)

    async def list_runs(self, principal: Principal, dataset: str, target: str, size: int, token: str) -> Page[Run]:
        if dataset:
            object_name(dataset, "dataset")
        if target:
            check_endpoint(target, "target_endpoint")
        size = page_size(size)
        position = decode_token(token)
        after = (datetime.fromisoformat(position["at"]), position["id"]) if position else None
        kept: list[Run] = []
        readable: dict[str, bool] = {}
        while len(kept) <= size:
            batch = await self.store.list_runs(dataset, target, after, size + 1)
            for run in batch:
                if run.created_by != principal.name:
                    if run.spec.dataset not in readable:
                        readable[run.spec.dataset] = await self._may_read_dataset(principal, run.spec.dataset)
                    if not readable[run.spec.dataset]:
                        continue
                kept.append(run)
            if len(batch) < size + 1:
                break
            after = (batch[-1].created_at, batch[-1].eval_run_id)
        if len(kept) <= size:
            return Page(kept)
        last = kept[size - 1]
        return Page(kept[:size], encode_token({"at": last.created_at.isoformat(), "id": last.eval_run_id}))

    async def cancel_run(self, principal: Principal, eval_run_id: str) -> Run:
        run = await self._readable_run(principal, eval_run_id)
        if run.created_by != principal.name:
            raise PermissionDenied(f"permission denied: only {run.created_by} may cancel eval run {eval_run_id}")
        if run.state not in FINAL_STATES:
            await self.store.request_cancel(eval_run_id)
            task = self._tasks.get(eval_run_id)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), 30)
            else:
                # Running elsewhere: that process sees the flag at its next heartbeat.
                pass
        return await self.store.get_run(eval_run_id)

    async def list_results(self, principal: Principal, eval_run_id: str, size: int, token: str) -> Page[RowResult]:
        await self._readable_run(principal, eval_run_id)
        size = page_size(size)
        position = decode_token(token)
        after = (int(position["row"]), int(position["repeat"])) if position else None
        rows = await self.store.results(eval_run_id, after, size + 1)
        if len(rows) <= size:
            return Page([r for _, r in rows])
        last_row, last = rows[size - 1]
        return Page([r for _, r in rows[:size]], encode_token({"row": last_row, "repeat": last.repeat}))

    # -- executing a run ------------------------------------------------------------------

    async def _execute(self, run: Run, principal: Principal) -> None:
        spec = run.spec
        run_id = spec.eval_run_id
        done = {"completed": 0, "failed": 0, "judge_errors": 0}
        results: dict[tuple[int, int], RowResult] = {}
        heartbeat = asyncio.create_task(self._heartbeat(run_id, done))
        try:
            await self.store.update_run(run_id, state=RUNNING)
            data = await self.training.read(
                principal.token, spec.dataset, spec.dataset_version, self.settings.evaluation_max_rows * (1 << 20)
            )
            lines = data.splitlines()
            rows: list[dict | RowProblem] = []
            for line in lines[: self.settings.evaluation_max_rows]:
                try:
                    rows.append(parse_row(json.loads(line)))
                except (ValueError, RowProblem) as exc:
                    rows.append(exc if isinstance(exc, RowProblem) else RowProblem(f"the row is not JSON: {exc}"))
            raw_rows = [json.loads(line) if line.strip().startswith(b"{") else None for line in lines]
            semaphore = asyncio.Semaphore(spec.concurrency)
            _log.info(
                "eval run %s: %d rows x %d repeats against %s (concurrency %d)",
                run_id,
                len(rows),
                spec.repeats,
                spec.target_endpoint,
                spec.concurrency,
            )

            async def one(number: int, repeat: int) -> None:
                async with semaphore:
                    result = await self._row(principal, spec, number, repeat, rows[number], done)
                results[(number, repeat)] = result
                await self.store.put_results([(number, result)])
                done["completed"] += 1
                ROWS.labels(result.status).inc()
                if result.status != "OK":
                    done["failed"] += 1

            # Repeat-major, so an interrupted run has whole repeats first.
            await asyncio.gather(*(one(n, r) for r in range(spec.repeats) for n in range(len(rows))))
            await self._finish(run, principal, [results[k] for k in sorted(results)], raw_rows, done)
        except asyncio.CancelledError:
            await self._close_run(run_id, CANCELLED, done, "cancelled by its creator")
            raise
        except TesseraError as exc:
            _log.warning("eval run %s failed: %s", run_id, exc.message)
            await self._close_run(run_id, FAILED, done, f"{exc.code_name}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - the run fails, the service keeps running
            _log.exception("eval run %s failed", run_id)
            await self._close_run(run_id, FAILED, done, f"INTERNAL: {exc.__class__.__name__}: {exc}")
        finally:
            heartbeat.cancel()
            self._tasks.pop(run_id, None)

    async def _close_run(self, run_id: str, state: str, done: dict, message: str) -> None:
        RUNS.labels(state).inc()
        with contextlib.suppress(Exception):
            await self.store.update_run(
                run_id,
                state=state,
                error_message=message[:4000],
                completed=done["completed"],
                failed=done["failed"],
                finished_at=datetime.now(UTC),
            )

    async def _heartbeat(self, run_id: str, done: dict) -> None:
        """Renew the lease, log progress every few seconds, and notice a cancel asked of another replica."""
        last_log = time.monotonic()
        started = time.monotonic()
        while True:
            await asyncio.sleep(min(self.settings.evaluation_heartbeat_s, self.settings.evaluation_log_every_s))
            try:
                cancel = await self.store.heartbeat(
                    run_id, done["completed"], done["failed"], self.settings.evaluation_lease_s
                )
            except TesseraError as exc:
                _log.warning("eval run %s: heartbeat failed: %s", run_id, exc.message)
                continue
            if cancel and run_id in self._tasks:
                self._tasks[run_id].cancel()
                return
            if time.monotonic() - last_log >= self.settings.evaluation_log_every_s:
                last_log = time.monotonic()
                elapsed = last_log - started
                _log.info(
                    "eval run %s: %d rows done (%d failed) in %.0fs, %.2f rows/s",
                    run_id,
                    done["completed"],
                    done["failed"],
                    elapsed,
                    done["completed"] / elapsed if elapsed else 0.0,
                )

    async def _row(
        self, principal: Principal, spec: RunSpec, number: int, repeat: int, parts: dict | RowProblem, done: dict
    ) -> RowResult:
        base = RowResult(
            eval_run_id=spec.eval_run_id,
            example_id=str(number),
            repeat=repeat,
            target_endpoint=spec.target_endpoint,
            at=datetime.now(UTC),
        )
        if isinstance(parts, RowProblem):
            return replace(base, status="INVALID_ARGUMENT", error_message=f"row {number}: {parts}")
        # Each repeat is a separate call with its own seed; the request id is the payload log's.
        request_id = f"eval-{spec.eval_run_id}-{number}-{repeat}"
        try:
            answer = await self.serving.generate(
                principal.token,
                spec.target_endpoint,
                parts["messages"],
                spec.sampling,
                spec.seed + repeat,
                request_id,
                self.settings.evaluation_call_timeout_s,
            )
        except TesseraError as exc:
            return replace(base, request_id=request_id, status=status_name(exc), error_message=exc.message[:4000])
        text = answer.text[: self.settings.evaluation_max_response_chars]
        # An agent answers with the passages it retrieved: retrieval metrics rank their ids, and the
        # groundedness / chunk-relevance judges read their text instead of the row's context.
        retrieved = [doc_id for doc_id, _ in answer.passages]
        if answer.passages:
            parts = {**parts, "context": [passage for _, passage in answer.passages]}
        values: list[MetricValue] = []
        judge_models: set[str] = set()
        for metric in spec.metrics:
            if metric in DETERMINISTIC_METRICS:
                values.append(deterministic_value(metric, text, parts, retrieved, spec.k))
        judged = [x for x in spec.metrics if x in JUDGE_METRICS]
        if judged:
            verdicts = await asyncio.gather(
                *(self._judge(principal.token, spec.judge_endpoint, x, text, parts, spec.seed + repeat) for x in judged)
            )
            for value, model in verdicts:
                values.append(value)
                if model:
                    judge_models.add(model)
                if value.unmeasured_reason.startswith("the judge endpoint failed"):
                    done["judge_errors"] += 1
        order = {x: i for i, x in enumerate(spec.metrics)}
        return replace(
            base,
            metrics=tuple(sorted(values, key=lambda v: order[v.metric])),
            response=text,
            retrieved_ids=tuple(retrieved),
            latency_ms=answer.latency_ms,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost_usd=self.prices.cost(answer.served_model, answer.prompt_tokens, answer.completion_tokens),
            request_id=answer.request_id or request_id,
            served_model=f"{answer.served_model}/{answer.model_version}" if answer.served_model else "",
            judge_models=tuple(sorted(judge_models)),
        )

    async def _judge(
        self, token: str, endpoint: str, metric: str, answer: str, parts: dict, seed: int
    ) -> tuple[MetricValue, str]:
        """(the verdict, the judge's served model): unmeasured with the reason when it cannot be read."""
        fields = judge_fields(metric, answer, parts)
        if isinstance(fields, str):
            return MetricValue(metric, None, unmeasured_reason=fields), ""
        template = JUDGE_TEMPLATES[metric]
        try:
            reply: Answer = await self.serving.generate(
                token,
                endpoint,
                [{"role": "user", "content": template.render(**fields)}],
                Sampling(temperature=0.0, max_tokens=_JUDGE_MAX_TOKENS),
                seed,
                "",
                self.settings.evaluation_call_timeout_s,
            )
        except TesseraError as exc:
            JUDGE_CALLS.labels("failed").inc()
            reason = f"the judge endpoint failed: {exc.code_name}: {exc.message}"[:1000]
            return MetricValue(metric, None, unmeasured_reason=reason), ""
        text = reply.text[:MAX_VERDICT_CHARS]
        verdict = template.parse(text)
        model = f"{reply.served_model}/{reply.model_version}" if reply.served_model else ""
        JUDGE_CALLS.labels("unparseable" if verdict is None else "measured").inc()
        if verdict is None:
            wanted = "VERDICT: PASS|FAIL" if template.verdict_format == PASS_FAIL else "SCORE: 1-5"
            return MetricValue(
                metric,
                None,
                judge_reply=text[:2000],
                unmeasured_reason=f"the judge's reply has no single '{wanted}' line",
            ), model
        return MetricValue(metric, float(verdict), judge_reply=text[:2000]), model

    async def _finish(
        self, run: Run, principal: Principal, results: list[RowResult], raw_rows: list, done: dict
    ) -> None:
        spec = run.spec
        summaries = [summarize_metric(x, results, spec.repeats, spec.seed) for x in spec.metrics]
        ok = [r for r in results if r.status == "OK"]
        costs = [r.cost_usd for r in ok]
        summary = {
            "metrics": [s.to_json() for s in summaries],
            "latency": latency_summary(results),
            "prompt_tokens": sum(r.prompt_tokens for r in ok),
            "completion_tokens": sum(r.completion_tokens for r in ok),
            # Absent when any row was unpriced: a partial sum would pass for the total.
            "cost_usd": sum(costs) if ok and all(c is not None for c in costs) else None,
        }
        judge_models = sorted({x for r in ok for x in r.judge_models})
        manifest = {
            "dataset": spec.dataset,
            "dataset_version": spec.dataset_version,
            "target_endpoint": spec.target_endpoint,
            "target_models": sorted({r.served_model for r in ok if r.served_model}),
            "judge_endpoint": spec.judge_endpoint,
            "judge_models": judge_models,
            "prompt_hashes": {x: JUDGE_TEMPLATES[x].content_hash for x in spec.metrics if x in JUDGE_TEMPLATES},
            "sampling": spec.sampling.to_json(),
            "seed": spec.seed,
            "repeats": spec.repeats,
            "service_version": SERVICE_VERSION,
        }
        calibrations: list[Calibration] = []
        if spec.human_label_column:
            calibrations = self._calibrate_from_column(spec, results, raw_rows, spec.human_label_column)
        failed = len(results) - len(ok)
        state = PARTIAL if failed or done["judge_errors"] else SUCCEEDED
        message = ""
        if failed:
            message = f"{failed} of {len(results)} rows failed (kept with their errors)"
        if done["judge_errors"]:
            message += ("; " if message else "") + f"{done['judge_errors']} judge calls failed (unmeasured)"
        if not ok:
            state = FAILED
            first = next((r.error_message for r in results if r.error_message), "")
            message = f"every row failed: {first}" if results else "the dataset version has no rows"
        mlflow_run_id, experiment_id = "", ""
        try:
            mlflow_run_id, experiment_id = await self._log_to_registry(
                run, summaries, summary, manifest, results, state
            )
        except TesseraError as exc:
            _log.warning("eval run %s: results not logged to the registry: %s", spec.eval_run_id, exc.message)
            message += ("; " if message else "") + f"not logged to the registry: {exc.message}"
        # The summary record commits with the run's final state (the outbox sends it after).
        record = RowResult(
            eval_run_id=spec.eval_run_id,
            example_id="",
            metrics=summary_values(summaries, "nothing measured"),
            latency_ms=summary["latency"].get("p50_ms", 0.0),
            prompt_tokens=summary["prompt_tokens"],
            completion_tokens=summary["completion_tokens"],
            cost_usd=summary["cost_usd"],
            status="OK" if state != FAILED else "FAILED_PRECONDITION",
            error_message=message[:4000],
            at=datetime.now(UTC),
            target_endpoint=spec.target_endpoint,
        )
        await self.store.update_run(
            spec.eval_run_id,
            record,
            state=state,
            summary=summary,
            manifest=manifest,
            calibrations=calibrations,
            completed=len(results),
            failed=failed,
            error_message=message[:4000],
            mlflow_run_id=mlflow_run_id,
            experiment_id=experiment_id,
            finished_at=datetime.now(UTC),
        )
        RUNS.labels(state).inc()
        _log.info("eval run %s: %s, %d rows (%d failed)", spec.eval_run_id, state, len(results), failed)

    def _calibrate_from_column(
        self, spec: RunSpec, results: list[RowResult], raw_rows: list, column: str
    ) -> list[Calibration]:
        labels: dict[str, bool | None] = {}
        for number, row in enumerate(raw_rows):
            labels[str(number)] = _human_label(row.get(column)) if isinstance(row, dict) else None
        out = []
        for metric in spec.metrics:
            if JUDGE_TEMPLATES.get(metric) is None or JUDGE_TEMPLATES[metric].verdict_format != PASS_FAIL:
                continue
            pairs, models = self._pairs(metric, results, labels)
            out.append(calibration_of(metric, ",".join(models), pairs, f"human labels from column {column!r}"))
        return out

    @staticmethod
    def _pairs(
        metric: str, results: list[RowResult], labels: dict[str, bool | None]
    ) -> tuple[list[tuple[bool, bool | None]], list[str]]:
        pairs: list[tuple[bool, bool | None]] = []
        models: set[str] = set()
        for r in results:
            human = labels.get(r.example_id)
            value = r.value(metric)
            if human is None or value is None or r.status != "OK":
                continue
            pairs.append((human, None if value.value is None else bool(value.value)))
            models.update(r.judge_models)
        return pairs, sorted(models)

    async def _log_to_registry(
        self, run: Run, summaries: list[Summary], summary: dict, manifest: dict, results: list[RowResult], state: str
    ) -> tuple[str, str]:
        """The MLflow-compatible run: metrics, params, the table artifact and the manifest; lineage to it."""
        spec = run.spec
        catalog, schema, _ = object_name(spec.dataset, "dataset")
        experiment_id = await self.registry.experiment_id(spec.experiment, f"{catalog}.{schema}", run.created_by)
        tags = {
            "tessera.eval_run_id": spec.eval_run_id,
            "tessera.dataset": f"{spec.dataset}@{spec.dataset_version}",
            "tessera.target_endpoint": spec.target_endpoint,
            "mlflow.user": run.created_by,
            **{f"tag.{k}": v for k, v in spec.tags.items()},
        }
        mlflow_run_id = await self.registry.create_run(
            experiment_id, f"eval-{spec.eval_run_id[:12]}", run.created_by, tags
        )
        now = int(time.time() * 1000)
        logged: list[tuple[str, float, int, int]] = []
        for s in summaries:
            if s.interval is None:
                logged.append((f"{s.metric}_coverage", 0.0, 0, now))
                continue
            logged += [
                (s.metric, s.interval.estimate, 0, now),
                (f"{s.metric}_ci_low", s.interval.low, 0, now),
                (f"{s.metric}_ci_high", s.interval.high, 0, now),
                (f"{s.metric}_coverage", s.coverage, 0, now),
            ]
            for repeat, interval in enumerate(s.per_repeat):
                if interval is not None:
                    logged.append((f"{s.metric}_per_repeat", interval.estimate, repeat, now))
        for key, value in summary["latency"].items():
            logged.append((f"latency_{key}", value, 0, now))
        logged += [
            ("rows", float(len(results)), 0, now),
            ("failed_rows", float(sum(1 for r in results if r.status != "OK")), 0, now),
            ("prompt_tokens", float(summary["prompt_tokens"]), 0, now),
            ("completion_tokens", float(summary["completion_tokens"]), 0, now),
        ]
        if summary["cost_usd"] is not None:
            logged.append(("cost_usd", summary["cost_usd"], 0, now))
        params = {
            "dataset": spec.dataset,
            "dataset_version": spec.dataset_version,
            "target_endpoint": spec.target_endpoint,
            "judge_endpoint": spec.judge_endpoint,
            "metrics": ",".join(spec.metrics),
            "repeats": spec.repeats,
            "seed": spec.seed,
            "k": spec.k,
            "sampling": json.dumps(spec.sampling.to_json(), sort_keys=True),
            **{f"prompt_hash.{k}": v for k, v in manifest["prompt_hashes"].items()},
        }
        await self.registry.log(mlflow_run_id, params=params, metrics=logged)
        jsonl, table = results_table(results, spec.metrics)
        with tempfile.TemporaryDirectory(prefix="eval-artifacts-") as folder:
            root = Path(folder)
            (root / "eval_results.jsonl").write_bytes(jsonl)
            (root / "eval_results.csv").write_bytes(table)
            (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            await self.registry.upload(rpb.ArtifactTarget(run_id=mlflow_run_id), root)
        await self.registry.finish_run(
            mlflow_run_id, rpb.RUN_STATUS_FINISHED if state != FAILED else rpb.RUN_STATUS_FAILED
        )
        await self.registry.link(
            ("DATASET", f"{spec.dataset}@{spec.dataset_version}"), ("RUN", mlflow_run_id), {"role": "evaluated_on"}
        )
        for model in manifest["target_models"]:
            await self.registry.link(("MODEL_VERSION", model), ("RUN", mlflow_run_id), {"role": "evaluated"})
        return mlflow_run_id, experiment_id

    async def recover(self) -> None:
        """Runs left QUEUED/RUNNING by a dead process (lease lapsed) -> FAILED "interrupted"."""
        failed = await self.store.fail_interrupted()
        for run_id in failed:
            _log.warning("eval run %s was interrupted (its process stopped); marked FAILED", run_id)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)

    # -- comparisons and calibration -----------------------------------------------------

    async def compare_runs(
        self, principal: Principal, baseline_id: str, candidate_id: str, confidence: float
    ) -> list[dict[str, Any]]:
        confidence = confidence or CONFIDENCE
        if not 0.5 <= confidence < 1:
            raise InvalidArgument("confidence must be in [0.5, 1)", field="confidence")
        baseline = await self._readable_run(principal, baseline_id)
        candidate = await self._readable_run(principal, candidate_id)
        for run in (baseline, candidate):
            if run.state not in (SUCCEEDED, PARTIAL):
                raise FailedPrecondition(f"eval run {run.eval_run_id} is {run.state}, not finished")
        if (baseline.spec.dataset, baseline.spec.dataset_version) != (
            candidate.spec.dataset,
            candidate.spec.dataset_version,
        ):
            raise FailedPrecondition(
                "the runs are over different dataset versions "
                f"({baseline.spec.dataset}@{baseline.spec.dataset_version[:12]} vs"
                f" {candidate.spec.dataset}@{candidate.spec.dataset_version[:12]}): a paired comparison needs the same rows"
            )
        shared = [x for x in baseline.spec.metrics if x in candidate.spec.metrics]
        if not shared:
            raise FailedPrecondition("the runs share no metric")
        a_rows = [r for _, r in await self.store.results(baseline_id)]
        b_rows = [r for _, r in await self.store.results(candidate_id)]
        out = []
        for metric in shared:
            a, b = _per_row(metric, a_rows), _per_row(metric, b_rows)
            try:
                c = st.compare_runs(a, b, confidence, seed=baseline.spec.seed)
            except ValueError as exc:
                out.append({"metric": metric, "note": str(exc), "paired": 0, "unpaired": len(set(a) | set(b))})
                continue
            paired = sorted((k for k in a if a[k] is not None and b.get(k) is not None), key=lambda k: (len(k), k))
            out.append(
                {
                    "metric": metric,
                    "difference": IntervalValue(
                        c.difference.estimate, c.difference.low, c.difference.high, "paired_bootstrap", c.n, confidence
                    ),
                    "test": "mcnemar_mid_p" if c.test == "mcnemar-midp" else "paired_t",
                    "p_value": c.p_value,
                    "significant": c.significant,
                    "minimum_detectable_difference": c.minimum_detectable_difference,
                    "detectable": c.detectable,
                    "paired": c.n,
                    "unpaired": c.unpaired,
                    "baseline_only": c.a_better or 0,
                    "candidate_only": c.b_better or 0,
                    "row_differences": [float(b[k]) - float(a[k]) for k in paired],
                }
            )
        return out

    async def calibrate_judge(
        self, principal: Principal, eval_run_id: str, metric: str, label_column: str
    ) -> Calibration:
        run = await self._readable_run(principal, eval_run_id)
        if metric not in run.spec.metrics or metric not in JUDGE_METRICS:
            raise InvalidArgument(f"{metric[:64]!r} is not a judge metric of this run", field="metric")
        if JUDGE_TEMPLATES[metric].verdict_format != PASS_FAIL:
            raise InvalidArgument(f"{metric} is scored 1-5; calibration compares pass/fail verdicts", field="metric")
        if run.state not in (SUCCEEDED, PARTIAL):
            raise FailedPrecondition(f"eval run {eval_run_id} is {run.state}, not finished")
        results = [r for _, r in await self.store.results(eval_run_id)]
        if label_column:
            if not _COLUMN.fullmatch(label_column):
                raise InvalidArgument("label_column must be a column name", field="label_column")
            # The labels are the dataset's: reading them needs SELECT on it, as the caller.
            data = await self.training.read(
                principal.token,
                run.spec.dataset,
                run.spec.dataset_version,
                self.settings.evaluation_max_rows * (1 << 20),
            )
            rows = [json.loads(line) for line in data.splitlines() if line.strip()]
            labels = {str(i): _human_label(row.get(label_column)) for i, row in enumerate(rows)}
            note = f"human labels from column {label_column!r}"
        else:
            # Reviewers' LABEL assessments on the run's logged requests (the playground's labels).
            by_request = {r.request_id: r.example_id for r in results if r.request_id}
            labels = {}
            for a in await self.store.labels_for_requests(list(by_request)):
                if a.verdict in ("GOOD", "BAD") and await self._may_read_endpoint(principal, a.endpoint):
                    labels[by_request[a.request_id]] = a.verdict == "GOOD"
            note = "human labels from LABEL assessments on the run's requests"
            # A label is on one request; repeats of the same row are other requests.
            results = [r for r in results if r.request_id in by_request and labels.get(r.example_id) is not None]
        pairs, models = self._pairs(metric, results, labels)
        calibration = calibration_of(metric, ",".join(models), pairs, note)
        kept = [c for c in run.calibrations if not (c.metric == metric and c.note.split(";")[0] == note)]
        await self.store.update_run(eval_run_id, calibrations=[*kept, calibration])
        return calibration

    async def _may_read_endpoint(self, principal: Principal, endpoint: str) -> bool:
        try:
            return await self.privileges.allowed(principal, "ENDPOINT", endpoint, "SELECT")
        except NotFound:
            return False

    # -- assessments ------------------------------------------------------------------------

    async def create_assessment(self, principal: Principal, a: Assessment) -> Assessment:
        limits = {"expected_response": 100_000, "guideline": 10_000, "comment": 10_000, "prompt": 100_000}
        for field, limit in limits.items():
            if len(getattr(a, field)) > limit:
                raise InvalidArgument(f"{field} longer than {limit} characters", field=field)
        if a.kind == LABEL:
            check_endpoint(a.endpoint, "endpoint")
            if not a.request_id or len(a.request_id) > 128:
                raise InvalidArgument("request_id is required (at most 128 characters)", field="request_id")
            if a.verdict not in VERDICTS or not (a.verdict or a.expected_response or a.guideline):
                raise InvalidArgument("a label needs a verdict, an expected response or a guideline", field="verdict")
            await self.privileges.require(principal, "ENDPOINT", a.endpoint, "SELECT")
            a = replace(a, endpoint_a="", endpoint_b="", request_id_a="", request_id_b="", preference="")
        elif a.kind == PREFERENCE:
            check_endpoint(a.endpoint_a, "endpoint_a")
            check_endpoint(a.endpoint_b, "endpoint_b")
            for field in ("request_id_a", "request_id_b"):
                if len(getattr(a, field)) > 128:
                    raise InvalidArgument(f"{field} longer than 128 characters", field=field)
            if not a.preference or a.preference not in PREFERENCES:
                raise InvalidArgument("a vote needs a preference (A, B, TIE or BOTH_BAD)", field="preference")
            await self.privileges.require(principal, "ENDPOINT", a.endpoint_a, "EXECUTE")
            await self.privileges.require(principal, "ENDPOINT", a.endpoint_b, "EXECUTE")
            a = replace(a, endpoint="", request_id="", verdict="")
        else:
            raise InvalidArgument("kind must be ASSESSMENT_KIND_LABEL or ASSESSMENT_KIND_PREFERENCE", field="kind")
        return await self.store.insert_assessment(replace(a, assessment_id=uuid.uuid4().hex, created_by=principal.name))

    async def _may_read_assessment(self, principal: Principal, a: Assessment, cache: dict) -> bool:
        if a.kind == LABEL:
            checks = [(a.endpoint, "SELECT")]
        else:
            checks = [(a.endpoint_a, "EXECUTE"), (a.endpoint_b, "EXECUTE")]
        for endpoint, privilege in checks:
            key = (endpoint, privilege)
            if key not in cache:
                try:
                    cache[key] = await self.privileges.allowed(principal, "ENDPOINT", endpoint, privilege)
                except NotFound:
                    cache[key] = False
            if not cache[key]:
                return False
        return True

    async def list_assessments(
        self, principal: Principal, kind: str, endpoint: str, size: int, token: str
    ) -> Page[Assessment]:
        if endpoint:
            check_endpoint(endpoint, "endpoint")
        size = page_size(size)
        position = decode_token(token)
        after = (datetime.fromisoformat(position["at"]), position["id"]) if position else None
        kept: list[Assessment] = []
        cache: dict = {}
        while len(kept) <= size:
            batch = await self.store.list_assessments(kind, endpoint, after, size + 1)
            for a in batch:
                if await self._may_read_assessment(principal, a, cache):
                    kept.append(a)
            if len(batch) < size + 1:
                break
            after = (batch[-1].created_at, batch[-1].assessment_id)
        if len(kept) <= size:
            return Page(kept)
        last = kept[size - 1]
        return Page(kept[:size], encode_token({"at": last.created_at.isoformat(), "id": last.assessment_id}))

    async def save_assessments_as_dataset(
        self, principal: Principal, endpoint: str, dataset: str, since: datetime | None
    ) -> tuple[str, str, int]:
        """An evaluation-format version from an endpoint's labels: request (from the inference table),
        expected_response, guidelines and the human label."""
        check_endpoint(endpoint, "endpoint")
        object_name(dataset, "dataset")
        await self.privileges.require(principal, "ENDPOINT", endpoint, "SELECT")
        labels: list[Assessment] = []
        after = None
        while True:
            batch = await self.store.list_assessments(LABEL, endpoint, after, 1000, since)
            labels += batch
            if len(batch) < 1000 or len(labels) > self.settings.evaluation_max_rows:
                break
            after = (batch[-1].created_at, batch[-1].assessment_id)
        if not labels:
            raise FailedPrecondition(f"endpoint {endpoint} has no labeled request")
        labels = labels[: self.settings.evaluation_max_rows]
        first = min(a.created_at for a in labels)
        requests = await self._logged_requests(principal.token, endpoint, {a.request_id for a in labels}, first)
        rows = []
        for a in sorted(labels, key=lambda a: (a.created_at, a.assessment_id)):
            record = requests.get(a.request_id)
            if record is None:
                continue
            row: dict[str, Any] = {"request": record["request"], "request_id": a.request_id}
            row["expected_response"] = a.expected_response or (record["response"] if a.verdict == "GOOD" else "")
            if a.guideline:
                row["guidelines"] = [a.guideline]
            if a.verdict:
                row["human_label"] = a.verdict == "GOOD"
            rows.append(row)
        if not rows:
            raise FailedPrecondition(f"none of the labeled requests of {endpoint} is in its inference table")
        data = b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)
        try:
            await self.training.create(principal.token, dataset, f"labeled requests of {endpoint}")
        except AlreadyExists:
            pass
        version = await self.training.upload(principal.token, dataset, data)
        return dataset, version.version, version.row_count

    async def _logged_requests(
        self, token: str, endpoint: str, request_ids: set[str], since: datetime
    ) -> dict[str, dict[str, str]]:
        """Prompt and answer of the given requests, from the inference table (read as `token`)."""
        start = since - timedelta(days=30)
        found: dict[str, dict[str, str]] = {}
        async for record in self.monitoring.records(
            token, endpoint, start, datetime.now(UTC) + timedelta(minutes=1), limit=1_000_000
        ):
            if record.request_id in request_ids:
                found[record.request_id] = logged_exchange(record)
                if len(found) == len(request_ids):
                    break
        return found

    # -- online evaluation ---------------------------------------------------------------------

    async def create_online(self, principal: Principal, o: OnlineEvaluation) -> OnlineEvaluation:
        s = self.settings
        check_endpoint(o.endpoint, "endpoint")
        if not o.metrics or len(o.metrics) > s.evaluation_max_metrics or len(set(o.metrics)) != len(o.metrics):
            raise InvalidArgument(f"name 1 to {s.evaluation_max_metrics} distinct metrics", field="metrics")
        allowed = (*REFERENCE_FREE_METRICS, "exact_match", "token_f1", "rouge_l", "bleu")
        bad = [x for x in o.metrics if x not in allowed]
        if bad:
            raise InvalidArgument(
                f"metric {bad[0][:64]!r} cannot score logged requests; use {', '.join(allowed)}", field="metrics"
            )
        judged = [x for x in o.metrics if x in JUDGE_METRICS]
        if judged:
            check_endpoint(o.judge_endpoint, "judge_endpoint")
        elif o.judge_endpoint:
            check_endpoint(o.judge_endpoint, "judge_endpoint")
        if not 0 < o.sample_rate <= 1:
            raise InvalidArgument("sample_rate must be in (0, 1]", field="sample_rate")
        if not s.evaluation_online_min_interval_s <= o.interval_seconds <= s.evaluation_online_max_interval_s:
            raise InvalidArgument(
                f"interval_seconds must be {s.evaluation_online_min_interval_s} to {s.evaluation_online_max_interval_s}",
                field="interval_seconds",
            )
        max_rows = o.max_rows_per_window or 100
        if not 1 <= max_rows <= s.evaluation_online_max_rows:
            raise InvalidArgument(
                f"max_rows_per_window must be 1 to {s.evaluation_online_max_rows}", field="max_rows_per_window"
            )
        await self.privileges.require(principal, "ENDPOINT", o.endpoint, "SELECT")
        if judged:
            await self.privileges.require(principal, "ENDPOINT", o.judge_endpoint, "EXECUTE")
        return await self.store.insert_online(
            replace(
                o,
                online_evaluation_id=uuid.uuid4().hex,
                created_by=principal.name,
                max_rows_per_window=max_rows,
                latest=(),
            )
        )

    async def list_online(self, principal: Principal, endpoint: str, size: int, token: str) -> Page[OnlineEvaluation]:
        if endpoint:
            check_endpoint(endpoint, "endpoint")
        size = page_size(size)
        after = decode_token(token).get("id", "")
        kept: list[OnlineEvaluation] = []
        cache: dict[str, bool] = {}
        while len(kept) <= size:
            batch = await self.store.list_online(endpoint, after, size + 1)
            for o in batch:
                if o.endpoint not in cache:
                    cache[o.endpoint] = await self._may_read_endpoint(principal, o.endpoint)
                if cache[o.endpoint]:
                    kept.append(o)
            if len(batch) < size + 1:
                break
            after = batch[-1].online_evaluation_id
        if len(kept) <= size:
            return Page(kept)
        return Page(kept[:size], encode_token({"id": kept[size - 1].online_evaluation_id}))

    async def delete_online(self, principal: Principal, online_evaluation_id: str) -> None:
        if not _RUN_ID.fullmatch(online_evaluation_id or ""):
            raise InvalidArgument("invalid online_evaluation_id", field="online_evaluation_id")
        found = await self.store.get_online(online_evaluation_id)
        if found is None:
            raise NotFound(f"online evaluation {online_evaluation_id} does not exist")
        if found.created_by != principal.name:
            await self.privileges.require(principal, "ENDPOINT", found.endpoint, "MANAGE")
        await self.store.delete_online(online_evaluation_id)

    async def run_due_windows(self) -> int:
        """Score every due window once (one replica claims each); the number of windows scored."""
        claimed = await self.store.claim_due_online(
            max(60.0, self.settings.evaluation_call_timeout_s * 2), self.settings.evaluation_online_lag_s
        )
        for o in claimed:
            try:
                await self.score_window(o)
            except Exception:  # noqa: BLE001 - one schedule's failure must not stop the others
                _log.exception("online evaluation %s: window failed", o.online_evaluation_id)
        return len(claimed)

    async def score_window(self, o: OnlineEvaluation) -> list[Summary]:
        start = o.last_window_end or o.created_at
        end = datetime.now(UTC) - timedelta(seconds=self.settings.evaluation_online_lag_s)
        # The creator's rights are checked at every window: a schedule does not outlive its creator's grants.
        creator = Principal(o.created_by)
        rights = await self.privileges.allowed(creator, "ENDPOINT", o.endpoint, "SELECT")
        if rights and any(x in JUDGE_METRICS for x in o.metrics):
            rights = await self.privileges.allowed(creator, "ENDPOINT", o.judge_endpoint, "EXECUTE")
        if not rights:
            _log.warning(
                "online evaluation %s: %s no longer holds SELECT on %s (or EXECUTE on its judge); window skipped",
                o.online_evaluation_id,
                o.created_by,
                o.endpoint,
            )
            await self.store.finish_window(o.online_evaluation_id, end, list(o.latest))
            return list(o.latest)
        token = self.settings.evaluation_online_token
        records = []
        async for record in self.monitoring.records(token, o.endpoint, start, end, "OK", limit=100_000):
            if _sampled(record.request_id, o.sample_rate):
                records.append(record)
            if len(records) >= o.max_rows_per_window:
                break
        labels = {a.request_id: a for a in await self.store.labels_for_requests([r.request_id for r in records])}
        results: list[RowResult] = []
        seed = int.from_bytes(hashlib.sha256(o.online_evaluation_id.encode()).digest()[:4], "big")

        async def score(record) -> None:
            exchange = logged_exchange(record)
            label = labels.get(record.request_id)
            parts = {
                "question": exchange["question"],
                "references": [label.expected_response] if label and label.expected_response else [],
                "facts": [],
                "relevant": [],
                "context": exchange["context"],
                "guidelines": [label.guideline] if label and label.guideline else [],
            }
            values = []
            for metric in o.metrics:
                if metric in JUDGE_METRICS:
                    value, _ = await self._judge(token, o.judge_endpoint, metric, exchange["response"], parts, seed)
                else:
                    value = deterministic_value(metric, exchange["response"], parts, [], 5)
                values.append(value)
            result = RowResult(
                eval_run_id="",
                example_id=record.request_id,
                metrics=tuple(values),
                response=exchange["response"][:2000],
                latency_ms=record.latency_ms,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cost_usd=record.cost_usd if record.HasField("cost_usd") else None,
                request_id=record.request_id,
                at=datetime.now(UTC),
                target_endpoint=o.endpoint,
            )
            results.append(result)

        semaphore = asyncio.Semaphore(self.settings.evaluation_default_concurrency)

        async def bounded(record) -> None:
            async with semaphore:
                await score(record)

        await asyncio.gather(*(bounded(r) for r in records))
        summaries = [summarize_metric(x, results, 1, seed) for x in o.metrics]
        window = {"online_evaluation_id": o.online_evaluation_id, "window_start": start, "window_end": end}
        window_summary = RowResult(
            eval_run_id="",
            example_id="",
            metrics=summary_values(summaries, "nothing measured in this window"),
            status="OK",
            at=end,
            target_endpoint=o.endpoint,
            **window,
        )
        # The window's records commit with the schedule moving past it: a window is published once.
        records = [*(replace(r, **window) for r in results), window_summary]
        await self.store.finish_window(o.online_evaluation_id, end, summaries, records)
        ONLINE_WINDOWS.labels(o.endpoint).inc()
        _log.info(
            "online evaluation %s: window %s..%s, %d of the endpoint's requests scored",
            o.online_evaluation_id,
            start.isoformat(timespec="seconds"),
            end.isoformat(timespec="seconds"),
            len(results),
        )
        return summaries


def _per_row(metric: str, rows: list[RowResult]) -> dict[str, float | bool | None]:
    """A metric per dataset row: its value, or its mean over repeats (None when no repeat measured it)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        value = r.value(metric)
        values.setdefault(r.example_id, [])
        if value is not None and value.value is not None:
            values[r.example_id].append(value.value)
    out: dict[str, float | bool | None] = {}
    for example, measured in values.items():
        if not measured:
            out[example] = None
        elif len(measured) == 1:
            out[example] = _typed(metric, measured[0])
        else:
            out[example] = sum(measured) / len(measured)
    return out


def _sampled(request_id: str, rate: float) -> bool:
    """A stable sample: the same request is in or out whichever replica scores the window."""
    if rate >= 1:
        return True
    digest = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return digest / 2**64 < rate


def logged_exchange(record) -> dict[str, Any]:
    """Question, request, answer and retrieved context of a payload log (chat, prompt or agent)."""
    inputs = MessageToDict(record.inputs) if record.HasField("inputs") else {}
    outputs = MessageToDict(record.outputs) if record.HasField("outputs") else {}
    messages = inputs.get("messages")
    if isinstance(messages, list) and messages:
        request: Any = {"messages": messages}
        question = next(
            (x.get("content", "") for x in reversed(messages) if isinstance(x, dict) and x.get("role") == "user"), ""
        )
    else:
        question = str(inputs.get("prompt", ""))
        request = question
    response = outputs.get("text")
    if not isinstance(response, str):
        response = json.dumps(outputs)[:10_000] if outputs else ""
    context = []
    for item in outputs.get("retrieved_context") or inputs.get("retrieved_context") or []:
        if isinstance(item, dict) and isinstance(item.get("text") or item.get("content"), str):
            context.append(item.get("text") or item.get("content"))
    return {"request": request, "question": question, "response": response, "context": context}
