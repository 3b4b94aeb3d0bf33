"""PostgreSQL access for experiments and runs (metric logging lives in store/metrics.py)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.registry import search_filter
from services.registry.access import Chain, Securable, SecurableType
from services.registry.entities import Experiment, Metric, Run, RunInfo
from services.registry.store.securables import chain_from_row, grants_column

_EXPERIMENT_CHAIN = (
    "SELECT e.*, c.owner AS catalog_owner, s.owner AS schema_owner, "
    + grants_column("e.catalog_name", "e.schema_name", "e.experiment_id::text")
    + " FROM experiments e JOIN schemas s ON s.catalog_name = e.catalog_name AND s.name = e.schema_name"
    " JOIN catalogs c ON c.name = e.catalog_name"
)


def experiment_chain_of(row: dict) -> Chain:
    target = Securable(SecurableType.EXPERIMENT, str(row["experiment_id"]), row["owner"])
    return chain_from_row(row, target)


def _experiment(row: dict, tags: dict[str, str] | None = None) -> Experiment:
    return Experiment(
        experiment_id=str(row["experiment_id"]),
        name=row["name"],
        artifact_location=row["artifact_location"],
        lifecycle_stage=row["lifecycle_stage"],
        owner=row["owner"],
        creation_time=row["creation_time"],
        last_update_time=row["last_update_time"],
        catalog_name=row["catalog_name"],
        schema_name=row["schema_name"],
        tags=tags or {},
    )


async def experiment_with_chain(
    conn: AsyncConnection, principal: str, *, experiment_id: int | None = None, name: str | None = None
) -> tuple[Experiment, Chain] | None:
    cur = conn.cursor(row_factory=dict_row)
    if experiment_id is not None:
        await cur.execute(
            _EXPERIMENT_CHAIN + " WHERE e.experiment_id = %(id)s", {"id": experiment_id, "principal": principal}
        )
    else:
        await cur.execute(_EXPERIMENT_CHAIN + " WHERE e.name = %(name)s", {"name": name, "principal": principal})
    row = await cur.fetchone()
    if row is None:
        return None
    tags = await experiment_tags(conn, [row["experiment_id"]])
    return _experiment(row, tags.get(row["experiment_id"], {})), experiment_chain_of(row)


async def experiment_tags(conn: AsyncConnection, ids: list[int]) -> dict[int, dict[str, str]]:
    cur = await conn.execute(
        "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id = ANY(%s)", (ids,)
    )
    tags: dict[int, dict[str, str]] = {}
    for eid, key, value in await cur.fetchall():
        tags.setdefault(eid, {})[key] = value
    return tags


async def insert_experiment(
    conn: AsyncConnection, name: str, artifact_location: str, catalog: str, schema: str, owner: str, now_ms: int
) -> int | None:
    """Returns the new id (None if the name is taken); `{id}` in artifact_location is replaced by it."""
    cur = await conn.execute(
        "INSERT INTO experiments (name, artifact_location, catalog_name, schema_name, owner, creation_time,"
        " last_update_time) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING experiment_id",
        (name, artifact_location, catalog, schema, owner, now_ms, now_ms),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await conn.execute(
        "UPDATE experiments SET artifact_location = replace(artifact_location, '{id}', experiment_id::text)"
        " WHERE experiment_id = %s",
        (row[0],),
    )
    return row[0]


async def set_experiment_tags(conn: AsyncConnection, experiment_id: int, tags: dict[str, str]) -> None:
    if tags:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (experiment_id, key) DO UPDATE SET value = EXCLUDED.value",
                [(experiment_id, k, v) for k, v in tags.items()],
            )


async def delete_experiment_tag(conn: AsyncConnection, experiment_id: int, key: str) -> None:
    await conn.execute("DELETE FROM experiment_tags WHERE experiment_id = %s AND key = %s", (experiment_id, key))


async def update_experiment(conn: AsyncConnection, experiment_id: int, now_ms: int, **changes: str) -> None:
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    await conn.execute(
        f"UPDATE experiments SET {sets}{', ' if sets else ''}last_update_time = %(now)s WHERE experiment_id = %(id)s",
        {**changes, "now": now_ms, "id": experiment_id},
    )


async def set_runs_stage(conn: AsyncConnection, experiment_id: int, stage: str) -> None:
    """Deleting or restoring an experiment takes its runs along."""
    await conn.execute("UPDATE runs SET lifecycle_stage = %s WHERE experiment_id = %s", (stage, experiment_id))


async def insert_default_experiment(
    conn: AsyncConnection, artifact_location: str, catalog: str, schema: str, owner: str, now_ms: int
) -> None:
    """Experiment 0, "Default": where MLflow clients log when no experiment is set."""
    await conn.execute(
        "INSERT INTO experiments (experiment_id, name, artifact_location, catalog_name, schema_name, owner,"
        " creation_time, last_update_time) VALUES (0, 'Default', %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (artifact_location, catalog, schema, owner, now_ms, now_ms),
    )


async def search_experiments(
    conn: AsyncConnection,
    principal: str,
    clauses: list,
    stages: list[str],
    order_by: list[str],
) -> list[tuple[Experiment, Chain]]:
    """Every match with its chain; the caller filters by privilege, then pages."""
    params: list = []
    conditions = search_filter.experiment_conditions(clauses, params)
    where = " AND ".join(["e.lifecycle_stage = ANY(%s)", *conditions])
    query = (
        _EXPERIMENT_CHAIN.replace("%(principal)s", "%s")
        + f" WHERE {where} ORDER BY {search_filter.experiment_order(order_by)}"
    )
    cur = conn.cursor(row_factory=dict_row)
    # The grants column's placeholder comes first in the statement.
    await cur.execute(query, [principal, stages, *params])
    rows = await cur.fetchall()
    tags = await experiment_tags(conn, [r["experiment_id"] for r in rows])
    return [(_experiment(r, tags.get(r["experiment_id"], {})), experiment_chain_of(r)) for r in rows]


# -- runs ------------------------------------------------------------------------

_RUN_CHAIN = (
    "SELECT r.*, e.owner, e.catalog_name, e.schema_name, e.lifecycle_stage AS experiment_stage,"
    " c.owner AS catalog_owner, s.owner AS schema_owner, "
    + grants_column("e.catalog_name", "e.schema_name", "e.experiment_id::text")
    + " FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id"
    " JOIN schemas s ON s.catalog_name = e.catalog_name AND s.name = e.schema_name"
    " JOIN catalogs c ON c.name = e.catalog_name WHERE r.run_id = %(run_id)s"
)


def _run_info(row: dict) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        run_name=row["run_name"],
        experiment_id=str(row["experiment_id"]),
        user_id=row["user_id"],
        status=row["status"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        artifact_uri=row["artifact_uri"],
        lifecycle_stage=row["lifecycle_stage"],
    )


async def run_with_chain(conn: AsyncConnection, run_id: str, principal: str) -> tuple[dict, Chain] | None:
    """The run's row (run_pk, status, lifecycle_stage, ...) and its experiment's chain, in one round trip."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_RUN_CHAIN, {"run_id": run_id, "principal": principal})
    row = await cur.fetchone()
    if row is None:
        return None
    return row, experiment_chain_of(row)


async def insert_run(
    conn: AsyncConnection,
    run_id: str,
    experiment_id: int,
    run_name: str,
    user_id: str,
    start_time: int,
    artifact_uri: str,
) -> int:
    cur = await conn.execute(
        "INSERT INTO runs (run_id, experiment_id, run_name, user_id, start_time, artifact_uri)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING run_pk",
        (run_id, experiment_id, run_name, user_id, start_time, artifact_uri),
    )
    return (await cur.fetchone())[0]


async def update_run(conn: AsyncConnection, run_pk: int, **changes: object) -> None:
    if changes:
        sets = ", ".join(f"{k} = %({k})s" for k in changes)
        await conn.execute(f"UPDATE runs SET {sets} WHERE run_pk = %(pk)s", {**changes, "pk": run_pk})


async def load_runs(conn: AsyncConnection, rows: list[dict]) -> list[Run]:
    """Runs with their latest metrics, params and tags: three queries for the whole page."""
    pks = [r["run_pk"] for r in rows]
    runs = {r["run_pk"]: Run(_run_info(r)) for r in rows}
    cur = await conn.execute(
        "SELECT run_pk, key, value, step, timestamp FROM latest_metrics WHERE run_pk = ANY(%s) ORDER BY key", (pks,)
    )
    for pk, key, value, step, ts in await cur.fetchall():
        runs[pk].metrics.append(Metric(key, value, step, ts))
    cur = await conn.execute("SELECT run_pk, key, value FROM params WHERE run_pk = ANY(%s)", (pks,))
    for pk, key, value in await cur.fetchall():
        runs[pk].params[key] = value
    cur = await conn.execute("SELECT run_pk, key, value FROM run_tags WHERE run_pk = ANY(%s)", (pks,))
    for pk, key, value in await cur.fetchall():
        runs[pk].tags[key] = value
    return [runs[pk] for pk in pks]


async def search_runs(
    conn: AsyncConnection,
    experiment_ids: list[int],
    clauses: list,
    stages: list[str],
    order_by: list[str],
    offset: int,
    limit: int,
) -> list[dict]:
    params: list = [experiment_ids, stages]
    conditions = ["r.experiment_id = ANY(%s)", "r.lifecycle_stage = ANY(%s)"]
    conditions += search_filter.run_conditions(clauses, params)
    order = search_filter.run_order(order_by, params)
    params += [limit, offset]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT r.* FROM runs r WHERE {' AND '.join(conditions)} ORDER BY {order} LIMIT %s OFFSET %s", params
    )
    return await cur.fetchall()


async def delete_run_tag(conn: AsyncConnection, run_pk: int, key: str) -> bool:
    cur = await conn.execute("DELETE FROM run_tags WHERE run_pk = %s AND key = %s", (run_pk, key))
    return cur.rowcount > 0
