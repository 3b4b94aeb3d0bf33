"""PostgreSQL access for MLflow 3 logged models (what `log_model` creates before registration)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.registry.entities import LoggedModel


def _logged(row: dict) -> LoggedModel:
    return LoggedModel(
        model_id=row["model_id"],
        experiment_id=str(row["experiment_id"]),
        name=row["name"],
        artifact_location=row["artifact_location"],
        source_run_id=row["source_run_id"] or "",
        model_type=row["model_type"],
        status=row["status"],
        lifecycle_stage=row["lifecycle_stage"],
        creation_time=row["creation_time"],
        last_updated_time=row["last_updated_time"],
        tags=dict(row["tags"]),
        params=dict(row["params"]),
        metrics=list(row["metrics"]),
    )


async def insert(conn: AsyncConnection, model: LoggedModel) -> None:
    await conn.execute(
        "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, source_run_id, model_type,"
        " status, creation_time, last_updated_time, tags, params) VALUES"
        " (%s, %s::bigint, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            model.model_id,
            model.experiment_id,
            model.name,
            model.artifact_location,
            model.source_run_id or None,
            model.model_type,
            model.status,
            model.creation_time,
            model.last_updated_time,
            Jsonb(model.tags),
            Jsonb(model.params),
        ),
    )


async def get(conn: AsyncConnection, model_id: str) -> LoggedModel | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM logged_models WHERE model_id = %s", (model_id,))
    row = await cur.fetchone()
    return _logged(row) if row else None


async def update(conn: AsyncConnection, model_id: str, now_ms: int, **changes: object) -> None:
    for key in ("tags", "params", "metrics"):
        if key in changes:
            changes[key] = Jsonb(changes[key])
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    await conn.execute(
        f"UPDATE logged_models SET {sets}, last_updated_time = %(now)s WHERE model_id = %(id)s",
        {**changes, "now": now_ms, "id": model_id},
    )


async def search(conn: AsyncConnection, experiment_ids: list[int], offset: int, limit: int) -> list[LoggedModel]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM logged_models WHERE experiment_id = ANY(%s) AND lifecycle_stage = 'active'"
        " ORDER BY creation_time DESC, model_id LIMIT %s OFFSET %s",
        (experiment_ids, limit, offset),
    )
    return [_logged(row) for row in await cur.fetchall()]
