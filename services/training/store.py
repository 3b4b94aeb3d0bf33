"""PostgreSQL for the training schema: datasets, their versions, jobs with leases, job events."""

from __future__ import annotations

import json

import psycopg
from psycopg.types.json import Jsonb

from services.common.db import Database
from services.common.errors import AlreadyExists, Unavailable
from services.training.entities import Dataset, DatasetVersion, Job, JobEvent, JobSpec, Preflight


def _translated(exc: psycopg.Error) -> Exception:
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return AlreadyExists("already exists")
    return Unavailable(f"the training database failed: {exc.__class__.__name__}")


def _version(row: dict) -> DatasetVersion:
    return DatasetVersion(
        dataset=row["dataset"],
        version=row["version"],
        format=row["format"],
        row_count=row["row_count"],
        size_bytes=row["size_bytes"],
        columns=dict(row["columns"]),
        source=row["source"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _job(row: dict) -> Job:
    return Job(
        job_id=row["job_id"],
        spec=JobSpec.from_json(row["spec"]),
        state=row["state"],
        created_by=row["created_by"],
        base_version=row["base_version"],
        run_id=row["run_id"],
        error_message=row["error_message"],
        step=row["step"],
        total_steps=row["total_steps"],
        checkpoint_step=row["checkpoint_step"],
        checkpoint_path=row["checkpoint_path"],
        attempts=row["attempts"],
        worker=row["worker"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        cancel_requested=row["cancel_requested"],
        preflight=Preflight.from_json(row["preflight"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class TrainingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _one(self, query: str, params: tuple | dict) -> dict | None:
        return await self.db.fetch_one(query, params, translate=_translated)

    async def _all(self, query: str, params: tuple | dict) -> list[dict]:
        return await self.db.fetch_all(query, params, translate=_translated)

    # -- datasets -------------------------------------------------------------

    async def insert_dataset(self, full_name: str, description: str, owner: str) -> Dataset:
        row = await self._one(
            "INSERT INTO datasets (full_name, description, owner) VALUES (%s, %s, %s) RETURNING *",
            (full_name, description, owner),
        )
        return Dataset(row["full_name"], row["description"], row["owner"], row["created_at"])

    async def delete_dataset(self, full_name: str) -> None:
        await self._one("DELETE FROM datasets WHERE full_name = %s", (full_name,))

    async def get_dataset(self, full_name: str) -> Dataset | None:
        row = await self._one("SELECT * FROM datasets WHERE full_name = %s", (full_name,))
        if row is None:
            return None
        versions = await self._all(
            "SELECT * FROM dataset_versions WHERE dataset = %s ORDER BY created_at DESC, version", (full_name,)
        )
        return Dataset(
            row["full_name"], row["description"], row["owner"], row["created_at"], tuple(map(_version, versions))
        )

    async def insert_version(self, v: DatasetVersion) -> DatasetVersion:
        """The stored version (an identical upload returns the existing one: versions are content-addressed)."""
        row = await self._one(
            "INSERT INTO dataset_versions (dataset, version, format, row_count, size_bytes, columns, source, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dataset, version) DO UPDATE SET dataset = EXCLUDED.dataset"
            " RETURNING *",
            (v.dataset, v.version, v.format, v.row_count, v.size_bytes, Jsonb(v.columns), v.source, v.created_by),
        )
        return _version(row)

    async def get_version(self, dataset: str, version: str) -> DatasetVersion | None:
        row = await self._one("SELECT * FROM dataset_versions WHERE dataset = %s AND version = %s", (dataset, version))
        return _version(row) if row else None

    # -- jobs -----------------------------------------------------------------

    async def insert_job(self, job: Job) -> Job:
        row = await self._one(
            "INSERT INTO jobs (job_id, spec, state, created_by, base_version, preflight, total_steps)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (
                job.job_id,
                Jsonb(job.spec.to_json()),
                job.state,
                job.created_by,
                job.base_version,
                Jsonb(job.preflight.to_json()),
                job.preflight.total_steps,
            ),
        )
        return _job(row)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._one("SELECT * FROM jobs WHERE job_id = %s", (job_id,))
        return _job(row) if row else None

    async def list_jobs(self, created_by: str | None, register_to: str, offset: int, limit: int) -> list[Job]:
        rows = await self._all(
            "SELECT * FROM jobs WHERE (%(by)s::text IS NULL OR created_by = %(by)s)"
            " AND (%(to)s = '' OR spec->>'register_to' = %(to)s)"
            " ORDER BY created_at DESC, job_id LIMIT %(limit)s OFFSET %(offset)s",
            {"by": created_by, "to": register_to, "limit": limit, "offset": offset},
        )
        return [_job(r) for r in rows]

    async def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one is flagged for its worker to stop."""
        row = await self._one(
            "UPDATE jobs SET cancel_requested = true, updated_at = now(),"
            " state = CASE WHEN state = 'QUEUED' THEN 'CANCELLED' ELSE state END"
            " WHERE job_id = %s AND state IN ('QUEUED', 'RUNNING') RETURNING *",
            (job_id,),
        )
        return _job(row) if row else None

    async def claim(self, worker: str, lease_s: float) -> Job | None:
        """Take the oldest queued job, or a running one whose worker stopped heartbeating."""
        row = await self._one(
            "UPDATE jobs SET state = 'RUNNING', worker = %(w)s, attempts = attempts + 1, updated_at = now(),"
            " lease_expires_at = now() + make_interval(secs => %(lease)s)"
            " WHERE job_id = (SELECT job_id FROM jobs WHERE NOT cancel_requested AND (state = 'QUEUED'"
            "   OR (state = 'RUNNING' AND lease_expires_at < now()))"
            "   ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)"
            " RETURNING *",
            {"w": worker, "lease": lease_s},
        )
        return _job(row) if row else None

    async def heartbeat(self, job_id: str, worker: str, lease_s: float, step: int) -> Job | None:
        """Renew the lease; None when another worker holds the job now (this one must stop)."""
        row = await self._one(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s), step = greatest(step, %s),"
            " updated_at = now() WHERE job_id = %s AND worker = %s AND state = 'RUNNING' RETURNING *",
            (lease_s, step, job_id, worker),
        )
        return _job(row) if row else None

    async def update_job(self, job_id: str, worker: str, **fields) -> Job | None:
        allowed = {
            "run_id",
            "total_steps",
            "step",
            "checkpoint_step",
            "checkpoint_path",
            "model_name",
            "model_version",
            "error_message",
            "state",
        }
        if not fields or set(fields) - allowed:
            raise ValueError(f"unknown job fields {sorted(set(fields) - allowed)}")
        assignments = ", ".join(f"{name} = %({name})s" for name in fields)
        extra = ", lease_expires_at = NULL" if fields.get("state") in ("SUCCEEDED", "FAILED", "CANCELLED") else ""
        row = await self._one(
            f"UPDATE jobs SET {assignments}{extra}, updated_at = now() WHERE job_id = %(job)s AND worker = %(worker)s"
            " RETURNING *",
            {**fields, "job": job_id, "worker": worker},
        )
        return _job(row) if row else None

    async def jobs_by_state(self) -> dict[str, int]:
        rows = await self._all("SELECT state, count(*) AS n FROM jobs GROUP BY state", ())
        return {r["state"]: r["n"] for r in rows}

    async def job_figures(self, recent_s: float, limit: int) -> list[dict]:
        """Running jobs and those that ended in the last `recent_s` (newest first, at most `limit`), each with
        its latest PROGRESS and CHECKPOINT event bodies (the figures its worker reported)."""
        return await self._all(
            "SELECT j.job_id, j.state, j.spec->>'register_to' AS model, j.step, j.total_steps, j.checkpoint_step,"
            " (SELECT body FROM job_events e WHERE e.job_id = j.job_id AND e.type = 'PROGRESS'"
            "   ORDER BY e.seq DESC LIMIT 1) AS progress,"
            " (SELECT body FROM job_events e WHERE e.job_id = j.job_id AND e.type = 'CHECKPOINT'"
            "   ORDER BY e.seq DESC LIMIT 1) AS checkpoint"
            " FROM jobs j WHERE j.state = 'RUNNING'"
            "   OR (j.state <> 'QUEUED' AND j.updated_at > now() - make_interval(secs => %s))"
            " ORDER BY j.updated_at DESC LIMIT %s",
            (recent_s, limit),
        )

    async def add_event(self, event: JobEvent) -> JobEvent:
        body = {
            "step": event.step,
            "total_steps": event.total_steps,
            "metrics": event.metrics,
            "checkpoint_uri": event.checkpoint_uri,
            "model_name": event.model_name,
            "model_version": event.model_version,
            "error_message": event.error_message,
            "worker": event.worker,
            "run_id": event.run_id,
        }
        row = await self._one(
            "INSERT INTO job_events (job_id, type, body) VALUES (%s, %s, %s) RETURNING seq, at",
            (event.job_id, event.type, Jsonb(body)),
        )
        return JobEvent(seq=row["seq"], job_id=event.job_id, type=event.type, at=row["at"], **body)

    async def events_after(self, job_id: str, seq: int, limit: int = 500) -> list[JobEvent]:
        rows = await self._all(
            "SELECT * FROM job_events WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s", (job_id, seq, limit)
        )
        return [
            JobEvent(seq=r["seq"], job_id=r["job_id"], type=r["type"], at=r["at"], **json.loads(json.dumps(r["body"])))
            for r in rows
        ]
