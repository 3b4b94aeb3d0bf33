"""PostgreSQL access for registered models, their versions and aliases (with history)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.registry.access import Chain, Securable, SecurableType
from services.registry.entities import AliasMove, ModelVersion, RegisteredModel
from services.registry.names import ModelName
from services.registry.store.securables import chain_from_row, grants_column

_MODEL_CHAIN = (
    "SELECT m.*, c.owner AS catalog_owner, s.owner AS schema_owner,"
    " coalesce((SELECT jsonb_object_agg(a.alias, a.version) FROM model_aliases a WHERE a.model_pk = m.model_pk),"
    " '{}') AS aliases, "
    + grants_column("m.catalog_name", "m.schema_name", "m.catalog_name || '.' || m.schema_name || '.' || m.name")
    + " FROM registered_models m JOIN schemas s ON s.catalog_name = m.catalog_name AND s.name = m.schema_name"
    " JOIN catalogs c ON c.name = m.catalog_name"
)

_MODEL_FIELDS = (
    "catalog_name",
    "schema_name",
    "name",
    "description",
    "owner",
    "tags",
    "latest_version",
    "created_at",
    "updated_at",
)


def _model(row: dict) -> RegisteredModel:
    return RegisteredModel(**{k: row[k] for k in _MODEL_FIELDS}, aliases=dict(row["aliases"]))


def _chain(row: dict) -> Chain:
    full = f"{row['catalog_name']}.{row['schema_name']}.{row['name']}"
    return chain_from_row(row, Securable(SecurableType.REGISTERED_MODEL, full, row["owner"]))


async def model_with_chain(conn: AsyncConnection, name: ModelName, principal: str, *, lock: bool = False):
    """(model_pk, RegisteredModel, Chain) or None; `lock` serializes version numbering and alias moves."""
    cur = conn.cursor(row_factory=dict_row)
    if lock:
        await cur.execute(
            "SELECT model_pk FROM registered_models WHERE catalog_name = %s AND schema_name = %s AND name = %s FOR UPDATE",
            (name.catalog, name.schema, name.name),
        )
    await cur.execute(
        _MODEL_CHAIN + " WHERE m.catalog_name = %(c)s AND m.schema_name = %(s)s AND m.name = %(n)s",
        {"c": name.catalog, "s": name.schema, "n": name.name, "principal": principal},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return row["model_pk"], _model(row), _chain(row)


async def search_models(conn: AsyncConnection, principal: str, catalog: str, schema: str, name_contains: str):
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _MODEL_CHAIN + " WHERE (%(c)s = '' OR m.catalog_name = %(c)s) AND (%(s)s = '' OR m.schema_name = %(s)s)"
        " AND m.name ILIKE %(like)s ORDER BY m.catalog_name, m.schema_name, m.name",
        {"c": catalog, "s": schema, "like": f"%{_escape_like(name_contains)}%", "principal": principal},
    )
    return [(_model(row), _chain(row)) for row in await cur.fetchall()]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")


async def insert_model(conn: AsyncConnection, name: ModelName, description: str, owner: str, tags: dict) -> bool:
    cur = await conn.execute(
        "INSERT INTO registered_models (catalog_name, schema_name, name, description, owner, tags)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING model_pk",
        (name.catalog, name.schema, name.name, description, owner, Jsonb(tags)),
    )
    return (await cur.fetchone()) is not None


async def update_model(conn: AsyncConnection, model_pk: int, *, description: str | None, tags: dict | None) -> None:
    await conn.execute(
        "UPDATE registered_models SET description = coalesce(%s, description), tags = coalesce(%s, tags),"
        " updated_at = now() WHERE model_pk = %s",
        (description, Jsonb(tags) if tags is not None else None, model_pk),
    )


async def rename_model(conn: AsyncConnection, model_pk: int, new_name: str) -> bool:
    cur = await conn.execute(
        "UPDATE registered_models m SET name = %s, updated_at = now() WHERE model_pk = %s AND NOT EXISTS"
        " (SELECT 1 FROM registered_models o WHERE o.catalog_name = m.catalog_name AND o.schema_name = m.schema_name"
        "  AND o.name = %s)",
        (new_name, model_pk, new_name),
    )
    return cur.rowcount == 1


async def delete_model(conn: AsyncConnection, model_pk: int, full_name: str) -> None:
    await conn.execute(
        "DELETE FROM grants WHERE securable_type = 'REGISTERED_MODEL' AND securable_name = %s", (full_name,)
    )
    await conn.execute("DELETE FROM registered_models WHERE model_pk = %s", (model_pk,))


# -- versions --------------------------------------------------------------------


def _version(row: dict, model_name: str) -> ModelVersion:
    return ModelVersion(
        model_name=model_name,
        version=row["version"],
        source=row["source"],
        run_id=row["run_id"],
        model_id=row["model_id"],
        status=row["status"],
        status_message=row["status_message"],
        description=row["description"],
        created_by=row["created_by"],
        storage_location=row["storage_location"],
        tags=dict(row["tags"]),
        aliases=sorted(row.get("aliases") or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_VERSION_SELECT = (
    "SELECT v.*, coalesce((SELECT array_agg(a.alias) FROM model_aliases a"
    " WHERE a.model_pk = v.model_pk AND a.version = v.version), '{}') AS aliases FROM model_versions v"
)


async def next_version(conn: AsyncConnection, model_pk: int) -> int:
    """Call with the model row locked: numbers are never reused, even after a delete."""
    cur = await conn.execute(
        "UPDATE registered_models SET latest_version = latest_version + 1, updated_at = now()"
        " WHERE model_pk = %s RETURNING latest_version",
        (model_pk,),
    )
    return (await cur.fetchone())[0]


async def insert_version(conn: AsyncConnection, model_pk: int, model_name: str, **fields: object) -> ModelVersion:
    fields["tags"] = Jsonb(fields.get("tags") or {})
    columns = ", ".join(["model_pk", *fields])
    values = ", ".join(["%s"] * (len(fields) + 1))
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"INSERT INTO model_versions ({columns}) VALUES ({values}) RETURNING *", [model_pk, *fields.values()]
    )
    return _version(await cur.fetchone(), model_name)


async def get_version(conn: AsyncConnection, model_pk: int, model_name: str, version: int) -> ModelVersion | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_VERSION_SELECT + " WHERE v.model_pk = %s AND v.version = %s", (model_pk, version))
    row = await cur.fetchone()
    return _version(row, model_name) if row else None


async def search_versions(
    conn: AsyncConnection, model_pk: int, model_name: str, run_id: str, offset: int, limit: int
) -> list[ModelVersion]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _VERSION_SELECT + " WHERE v.model_pk = %s AND (%s = '' OR v.run_id = %s) ORDER BY v.version DESC"
        " LIMIT %s OFFSET %s",
        (model_pk, run_id, run_id, limit, offset),
    )
    return [_version(row, model_name) for row in await cur.fetchall()]


async def update_version(conn: AsyncConnection, model_pk: int, version: int, **changes: object) -> None:
    if "tags" in changes:
        changes["tags"] = Jsonb(changes["tags"])
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    await conn.execute(
        f"UPDATE model_versions SET {sets}, updated_at = now() WHERE model_pk = %(pk)s AND version = %(v)s",
        {**changes, "pk": model_pk, "v": version},
    )


async def delete_version(conn: AsyncConnection, model_pk: int, version: int) -> list[str]:
    """Deletes the version and the aliases on it; returns those aliases."""
    cur = await conn.execute(
        "DELETE FROM model_aliases WHERE model_pk = %s AND version = %s RETURNING alias", (model_pk, version)
    )
    aliases = [row[0] for row in await cur.fetchall()]
    await conn.execute("DELETE FROM model_versions WHERE model_pk = %s AND version = %s", (model_pk, version))
    return aliases


# -- aliases ---------------------------------------------------------------------


async def set_alias(conn: AsyncConnection, model_pk: int, alias: str, version: int, actor: str) -> int:
    """Points the alias at version; returns the previous version (0 if none). Records the move."""
    cur = await conn.execute("SELECT version FROM model_aliases WHERE model_pk = %s AND alias = %s", (model_pk, alias))
    row = await cur.fetchone()
    previous = row[0] if row else 0
    await conn.execute(
        "INSERT INTO model_aliases (model_pk, alias, version) VALUES (%s, %s, %s)"
        " ON CONFLICT (model_pk, alias) DO UPDATE SET version = EXCLUDED.version",
        (model_pk, alias, version),
    )
    await record_alias_move(conn, model_pk, alias, "SET", version, previous, actor)
    return previous


async def delete_alias(conn: AsyncConnection, model_pk: int, alias: str, actor: str) -> int | None:
    cur = await conn.execute(
        "DELETE FROM model_aliases WHERE model_pk = %s AND alias = %s RETURNING version", (model_pk, alias)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await record_alias_move(conn, model_pk, alias, "DELETED", 0, row[0], actor)
    return row[0]


async def record_alias_move(
    conn: AsyncConnection, model_pk: int, alias: str, action: str, version: int, previous: int, actor: str
) -> None:
    await conn.execute(
        "INSERT INTO alias_history (model_pk, alias, action, version, previous_version, actor)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (model_pk, alias, action, version, previous, actor),
    )


async def alias_history(conn: AsyncConnection, model_pk: int, alias: str, offset: int, limit: int) -> list[AliasMove]:
    cur = await conn.execute(
        "SELECT alias, action, version, previous_version, actor, at FROM alias_history"
        " WHERE model_pk = %s AND (%s = '' OR alias = %s) ORDER BY id DESC LIMIT %s OFFSET %s",
        (model_pk, alias, alias, limit, offset),
    )
    return [AliasMove(*row) for row in await cur.fetchall()]


async def model_name_by_pk(conn: AsyncConnection, model_pk: int) -> ModelName | None:
    cur = await conn.execute(
        "SELECT catalog_name, schema_name, name FROM registered_models WHERE model_pk = %s", (model_pk,)
    )
    row = await cur.fetchone()
    return ModelName(*row) if row else None
