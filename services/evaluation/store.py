"""PostgreSQL for the evaluation schema: runs, per-row results, assessments, online evaluations."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from services.common.db import Database
from services.common.errors import AlreadyExists, Unavailable
from services.evaluation.entities import (
    FAILED,
    Assessment,
    Calibration,
    OnlineEvaluation,
    RowResult,
    Run,
    RunSpec,
    Summary,
)
from services.evaluation.kafka_api import OUTBOX, ResultRecords


def _translated(exc: psycopg.Error) -> Exception:
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return AlreadyExists("already exists")
    return Unavailable(f"the evaluation database failed: {exc.__class__.__name__}")


def _finite(value: float) -> float | None:
    # JSON has no NaN: an undefined kappa is stored as null and read back as NaN.
    return None if value is None or math.isnan(value) else value


def _calibration_json(c: Calibration) -> dict[str, Any]:
    return {**c.__dict__, "cohen_kappa": _finite(c.cohen_kappa), "confusion": list(c.confusion)}


def _calibration(data: dict[str, Any]) -> Calibration:
    kappa = data.get("cohen_kappa")
    return Calibration(
        **{**data, "cohen_kappa": float("nan") if kappa is None else kappa, "confusion": tuple(data["confusion"])}
    )


def _run(row: dict) -> Run:
    summary = row["summary"] or {}
    return Run(
        eval_run_id=row["eval_run_id"],
        spec=RunSpec.from_json(row["spec"]),
        state=row["state"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        completed=row["completed"],
        total=row["total"],
        failed=row["failed"],
        summaries=[Summary.from_json(s) for s in summary.get("metrics", ())],
        latency=summary.get("latency", {}),
        prompt_tokens=summary.get("prompt_tokens", 0),
        completion_tokens=summary.get("completion_tokens", 0),
        cost_usd=summary.get("cost_usd"),
        mlflow_run_id=row["mlflow_run_id"],
        experiment_id=row["experiment_id"],
        manifest=row["manifest"] or {},
        calibrations=[_calibration(c) for c in row["calibrations"] or ()],
        error_message=row["error_message"],
    )


def _assessment(row: dict) -> Assessment:
    return Assessment(**{**row["body"], "created_at": row["created_at"]})


def _online(row: dict) -> OnlineEvaluation:
    body = row["body"]
    return OnlineEvaluation(
        online_evaluation_id=row["online_evaluation_id"],
        endpoint=row["endpoint"],
        metrics=tuple(body["metrics"]),
        judge_endpoint=body["judge_endpoint"],
        sample_rate=body["sample_rate"],
        interval_seconds=body["interval_seconds"],
        max_rows_per_window=body["max_rows_per_window"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_window_end=row["last_window_end"],
        latest=tuple(Summary.from_json(s) for s in row["latest"] or ()),
    )


class EvaluationStore:
    def __init__(self, db: Database, records: ResultRecords) -> None:
        self.db = db
        # Encodes results as outbox events for `tessera.eval.results` (kafka_api.py).
        self.records = records

    async def _one(self, query: str, params: tuple | dict) -> dict | None:
        return await self.db.fetch_one(query, params, translate=_translated)

    async def _all(self, query: str, params: tuple | dict) -> list[dict]:
        return await self.db.fetch_all(query, params, translate=_translated)

    # -- runs -------------------------------------------------------------------

    async def insert_run(self, run: Run, instance: str, lease_s: float) -> tuple[Run, bool]:
        """(the stored run, whether it is new): a run id seen before returns the first run."""
        row = await self._one(
            "INSERT INTO runs (eval_run_id, spec, dataset, dataset_version, target_endpoint, state, created_by,"
            " instance, lease_expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s * interval '1 second')"
            " ON CONFLICT (eval_run_id) DO NOTHING RETURNING *",
            (
                run.eval_run_id,
                Jsonb(run.spec.to_json()),
                run.spec.dataset,
                run.spec.dataset_version,
                run.spec.target_endpoint,
                run.state,
                run.created_by,
                instance,
                lease_s,
            ),
        )
        if row is not None:
            return _run(row), True
        return await self.get_run(run.eval_run_id), False

    async def get_run(self, eval_run_id: str) -> Run | None:
        row = await self._one("SELECT * FROM runs WHERE eval_run_id = %s", (eval_run_id,))
        return _run(row) if row else None

    async def list_runs(self, dataset: str, target: str, after: tuple[datetime, str] | None, limit: int) -> list[Run]:
        rows = await self._all(
            "SELECT * FROM runs WHERE (%(dataset)s = '' OR dataset = %(dataset)s)"
            " AND (%(target)s = '' OR target_endpoint = %(target)s)"
            " AND (%(after_at)s::timestamptz IS NULL OR (created_at, eval_run_id) < (%(after_at)s, %(after_id)s))"
            " ORDER BY created_at DESC, eval_run_id DESC LIMIT %(limit)s",
            {
                "dataset": dataset,
                "target": target,
                "after_at": after[0] if after else None,
                "after_id": after[1] if after else "",
                "limit": limit,
            },
        )
        return [_run(r) for r in rows]

    async def update_run(self, eval_run_id: str, record: RowResult | None = None, **fields: Any) -> None:
        """Set columns of a run (`summary`, `manifest` and `calibrations` are JSON); `record`, a summary
        record for `tessera.eval.results`, is written in the same transaction."""
        if not fields:
            return
        values = {}
        for key, value in fields.items():
            if key == "calibrations":
                value = Jsonb([_calibration_json(c) for c in value])
            elif key in ("summary", "manifest", "spec"):
                value = Jsonb(value)
            values[key] = value
        assignments = ", ".join(f"{key} = %({key})s" for key in values)
        query = f"UPDATE runs SET {assignments} WHERE eval_run_id = %(eval_run_id)s"
        try:
            async with self.db.transaction() as conn:
                await conn.execute(query, {**values, "eval_run_id": eval_run_id})
                if record is not None:
                    await self._records(conn, [record])
        except psycopg.Error as exc:
            raise _translated(exc) from exc
        if record is not None:
            self.records.notify()

    async def heartbeat(self, eval_run_id: str, completed: int, failed: int, lease_s: float) -> bool:
        """Renew the lease and record progress; whether a cancel was asked for."""
        row = await self._one(
            "UPDATE runs SET completed = %s, failed = %s, lease_expires_at = now() + %s * interval '1 second'"
            " WHERE eval_run_id = %s RETURNING cancel_requested",
            (completed, failed, lease_s, eval_run_id),
        )
        return bool(row and row["cancel_requested"])

    async def request_cancel(self, eval_run_id: str) -> None:
        await self._one("UPDATE runs SET cancel_requested = true WHERE eval_run_id = %s", (eval_run_id,))

    async def fail_interrupted(self) -> list[str]:
        """Runs left QUEUED/RUNNING by a dead process (their lease lapsed) -> FAILED, finished rows kept."""
        rows = await self._all(
            "UPDATE runs SET state = %s, finished_at = now(),"
            " error_message = 'interrupted: the process running it stopped; its finished rows are kept',"
            " completed = (SELECT count(*) FROM results r WHERE r.eval_run_id = runs.eval_run_id)"
            " WHERE state IN ('QUEUED', 'RUNNING') AND lease_expires_at < now()"
            " RETURNING eval_run_id",
            (FAILED,),
        )
        return [r["eval_run_id"] for r in rows]

    # -- results ------------------------------------------------------------------

    async def put_results(self, rows: list[tuple[int, RowResult]]) -> None:
        """Store per-row results and their records for `tessera.eval.results`, in one transaction."""
        if not rows:
            return
        try:
            async with self.db.transaction() as conn:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO results (eval_run_id, row_number, repeat, result) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (eval_run_id, row_number, repeat) DO UPDATE SET result = EXCLUDED.result",
                        [(r.eval_run_id, n, r.repeat, Jsonb(r.to_json())) for n, r in rows],
                    )
                await self._records(conn, [r for _, r in rows])
        except psycopg.Error as exc:
            raise _translated(exc) from exc
        self.records.notify()

    async def _records(self, conn, results: list[RowResult]) -> None:
        await OUTBOX.add(conn, self.records.topic, [self.records.event(r) for r in results])

    async def results(
        self, eval_run_id: str, after: tuple[int, int] | None = None, limit: int = 1_000_000
    ) -> list[tuple[int, RowResult]]:
        rows = await self._all(
            "SELECT row_number, result FROM results WHERE eval_run_id = %s AND (row_number, repeat) > (%s, %s)"
            " ORDER BY row_number, repeat LIMIT %s",
            (eval_run_id, *(after or (-1, -1)), limit),
        )
        return [(r["row_number"], RowResult.from_json(r["result"])) for r in rows]

    # -- assessments ----------------------------------------------------------------

    async def insert_assessment(self, a: Assessment) -> Assessment:
        row = await self._one(
            "INSERT INTO assessments (assessment_id, kind, endpoint, request_id, endpoint_a, endpoint_b, body,"
            " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (
                a.assessment_id,
                a.kind,
                a.endpoint,
                a.request_id,
                a.endpoint_a,
                a.endpoint_b,
                Jsonb(a.body()),
                a.created_by,
            ),
        )
        return _assessment(row)

    async def list_assessments(
        self, kind: str, endpoint: str, after: tuple[datetime, str] | None, limit: int, since: datetime | None = None
    ) -> list[Assessment]:
        rows = await self._all(
            "SELECT * FROM assessments WHERE (%(kind)s = '' OR kind = %(kind)s)"
            " AND (%(endpoint)s = '' OR endpoint = %(endpoint)s OR endpoint_a = %(endpoint)s OR endpoint_b = %(endpoint)s)"
            " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)"
            " AND (%(after_at)s::timestamptz IS NULL OR (created_at, assessment_id) < (%(after_at)s, %(after_id)s))"
            " ORDER BY created_at DESC, assessment_id DESC LIMIT %(limit)s",
            {
                "kind": kind,
                "endpoint": endpoint,
                "since": since,
                "after_at": after[0] if after else None,
                "after_id": after[1] if after else "",
                "limit": limit,
            },
        )
        return [_assessment(r) for r in rows]

    async def labels_for_requests(self, request_ids: list[str]) -> list[Assessment]:
        rows = await self._all(
            "SELECT * FROM assessments WHERE kind = 'LABEL' AND request_id = ANY(%s) ORDER BY created_at",
            (request_ids,),
        )
        return [_assessment(r) for r in rows]

    # -- online evaluations -------------------------------------------------------------

    async def insert_online(self, o: OnlineEvaluation) -> OnlineEvaluation:
        body = {
            "metrics": list(o.metrics),
            "judge_endpoint": o.judge_endpoint,
            "sample_rate": o.sample_rate,
            "interval_seconds": o.interval_seconds,
            "max_rows_per_window": o.max_rows_per_window,
        }
        row = await self._one(
            "INSERT INTO online_evaluations (online_evaluation_id, endpoint, body, created_by, last_window_end)"
            " VALUES (%s, %s, %s, %s, now()) RETURNING *",
            (o.online_evaluation_id, o.endpoint, Jsonb(body), o.created_by),
        )
        return _online(row)

    async def get_online(self, online_evaluation_id: str) -> OnlineEvaluation | None:
        row = await self._one(
            "SELECT * FROM online_evaluations WHERE online_evaluation_id = %s", (online_evaluation_id,)
        )
        return _online(row) if row else None

    async def list_online(self, endpoint: str, after: str, limit: int) -> list[OnlineEvaluation]:
        rows = await self._all(
            "SELECT * FROM online_evaluations WHERE (%s = '' OR endpoint = %s) AND online_evaluation_id > %s"
            " ORDER BY online_evaluation_id LIMIT %s",
            (endpoint, endpoint, after, limit),
        )
        return [_online(r) for r in rows]

    async def delete_online(self, online_evaluation_id: str) -> None:
        await self._one("DELETE FROM online_evaluations WHERE online_evaluation_id = %s", (online_evaluation_id,))

    async def claim_due_online(self, claim_s: float, lag_s: float) -> list[OnlineEvaluation]:
        """Schedules whose next window ended `lag_s` ago, claimed for `claim_s` so one replica scores each window."""
        rows = await self._all(
            "UPDATE online_evaluations SET claimed_until = now() + %s * interval '1 second'"
            " WHERE online_evaluation_id IN (SELECT online_evaluation_id FROM online_evaluations"
            "  WHERE last_window_end + ((body->>'interval_seconds')::int + %s) * interval '1 second' <= now()"
            "  AND (claimed_until IS NULL OR claimed_until < now()) FOR UPDATE SKIP LOCKED)"
            " RETURNING *",
            (claim_s, lag_s),
        )
        return [_online(r) for r in rows]

    async def finish_window(
        self, online_evaluation_id: str, window_end: datetime, latest: list[Summary], records: list[RowResult] = ()
    ) -> None:
        """Move the schedule past the window and write its records, in one transaction."""
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    "UPDATE online_evaluations SET last_window_end = %s, latest = %s, claimed_until = NULL"
                    " WHERE online_evaluation_id = %s",
                    (window_end, Jsonb([s.to_json() for s in latest]), online_evaluation_id),
                )
                await self._records(conn, list(records))
        except psycopg.Error as exc:
            raise _translated(exc) from exc
        if records:
            self.records.notify()
