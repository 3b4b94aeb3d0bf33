"""PostgreSQL access for catalogs, schemas, grants and the securable chains that authorization reads."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.registry.access import Chain, Securable, SecurableType
from services.registry.entities import Catalog, Schema, TopLevelSecurable


def grants_column(catalog_expr: str, schema_expr: str, object_expr: str = "NULL") -> str:
    """A column with the principal's grants on a chain (`type|name|privilege`), in the same round trip."""
    return (
        "(SELECT coalesce(array_agg(g.securable_type || '|' || g.securable_name || '|' || g.privilege), '{}')"
        " FROM grants g WHERE g.principal = %(principal)s AND g.securable_name IN"
        f" ({catalog_expr}, {catalog_expr} || '.' || {schema_expr}, {object_expr})) AS grants"
    )


def chain_from_row(row: dict, target: Securable | None = None) -> Chain:
    """Build a chain from a row with catalog_name/catalog_owner[/schema_name/schema_owner] and grants."""
    levels = [Securable(SecurableType.CATALOG, row["catalog_name"], row["catalog_owner"])]
    if row.get("schema_name") is not None:
        levels.append(
            Securable(SecurableType.SCHEMA, f"{row['catalog_name']}.{row['schema_name']}", row["schema_owner"])
        )
    if target is not None:
        levels.append(target)
    grants: dict[tuple[str, str], set[str]] = {}
    for item in row.get("grants") or ():
        kind, name, privilege = item.split("|", 2)
        grants.setdefault((kind, name), set()).add(privilege)
    return Chain(tuple(levels), {k: frozenset(v) for k, v in grants.items()})


async def catalog_chain(conn: AsyncConnection, name: str, principal: str) -> Chain | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.name AS catalog_name, c.owner AS catalog_owner, "
        + grants_column("c.name", "''")
        + " FROM catalogs c WHERE c.name = %(name)s",
        {"name": name, "principal": principal},
    )
    row = await cur.fetchone()
    return chain_from_row(row) if row else None


async def schema_chain(conn: AsyncConnection, catalog: str, schema: str, principal: str) -> Chain | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.name AS catalog_name, c.owner AS catalog_owner, s.name AS schema_name, s.owner AS schema_owner, "
        + grants_column("c.name", "s.name")
        + " FROM schemas s JOIN catalogs c ON c.name = s.catalog_name"
        " WHERE s.catalog_name = %(catalog)s AND s.name = %(schema)s",
        {"catalog": catalog, "schema": schema, "principal": principal},
    )
    row = await cur.fetchone()
    return chain_from_row(row) if row else None


async def top_level_chain(conn: AsyncConnection, kind: SecurableType, name: str, principal: str) -> Chain | None:
    """An endpoint's or a monitor's chain: one level, its owner and the principal's grants on it."""
    cur = await conn.execute(
        "SELECT t.owner, (SELECT coalesce(array_agg(g.privilege), '{}') FROM grants g WHERE g.principal = %s"
        " AND g.securable_type = t.securable_type AND g.securable_name = t.name)"
        " FROM top_level_securables t WHERE t.securable_type = %s AND t.name = %s",
        (principal, kind.value, name),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Chain((Securable(kind, name, row[0]),), {(kind.value, name): frozenset(row[1])})


async def dataset_chain(conn: AsyncConnection, catalog: str, schema: str, name: str, principal: str) -> Chain | None:
    """A dataset's chain: its catalog and schema, then the dataset (kept with the registered securables)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.name AS catalog_name, c.owner AS catalog_owner, s.name AS schema_name, s.owner AS schema_owner,"
        " t.owner AS dataset_owner, "
        + grants_column("c.name", "s.name", "t.name")
        + " FROM top_level_securables t JOIN schemas s ON s.catalog_name = %(catalog)s AND s.name = %(schema)s"
        " JOIN catalogs c ON c.name = s.catalog_name"
        " WHERE t.securable_type = 'DATASET' AND t.name = %(full)s",
        {"catalog": catalog, "schema": schema, "full": f"{catalog}.{schema}.{name}", "principal": principal},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    target = Securable(SecurableType.DATASET, f"{catalog}.{schema}.{name}", row["dataset_owner"])
    return chain_from_row(row, target)


async def insert_top_level(conn: AsyncConnection, kind: str, name: str, owner: str) -> TopLevelSecurable | None:
    """None when the name is taken."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO top_level_securables (securable_type, name, owner) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING *",
        (kind, name, owner),
    )
    row = await cur.fetchone()
    return TopLevelSecurable(**row) if row else None


async def touch_top_level(conn: AsyncConnection, kind: str, name: str) -> TopLevelSecurable | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "UPDATE top_level_securables SET updated_at = now() WHERE securable_type = %s AND name = %s RETURNING *",
        (kind, name),
    )
    row = await cur.fetchone()
    return TopLevelSecurable(**row) if row else None


async def delete_top_level(conn: AsyncConnection, kind: str, name: str) -> bool:
    """Removes the securable and every grant on it; False when there was none."""
    cur = await conn.execute("DELETE FROM top_level_securables WHERE securable_type = %s AND name = %s", (kind, name))
    if cur.rowcount == 0:
        return False
    await conn.execute("DELETE FROM grants WHERE securable_type = %s AND securable_name = %s", (kind, name))
    return True


async def principal_grants(conn: AsyncConnection, principal: str) -> dict[tuple[str, str], frozenset[str]]:
    """Every grant a principal holds, for filtering lists in one query."""
    cur = await conn.execute(
        "SELECT securable_type, securable_name, array_agg(privilege) FROM grants WHERE principal = %s"
        " GROUP BY securable_type, securable_name",
        (principal,),
    )
    return {(t, n): frozenset(p) for t, n, p in await cur.fetchall()}


# -- catalogs and schemas ------------------------------------------------------


async def insert_catalog(conn: AsyncConnection, name: str, comment: str, owner: str) -> Catalog | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO catalogs (name, comment, owner) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING *",
        (name, comment, owner),
    )
    row = await cur.fetchone()
    return Catalog(**row) if row else None


async def get_catalog(conn: AsyncConnection, name: str) -> Catalog | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM catalogs WHERE name = %s", (name,))
    row = await cur.fetchone()
    return Catalog(**row) if row else None


async def list_catalogs(conn: AsyncConnection) -> list[Catalog]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM catalogs ORDER BY name")
    return [Catalog(**row) for row in await cur.fetchall()]


async def count_children(conn: AsyncConnection, catalog: str, schema: str | None = None) -> int:
    if schema is None:
        cur = await conn.execute("SELECT count(*) FROM schemas WHERE catalog_name = %s", (catalog,))
    else:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM registered_models WHERE catalog_name = %(c)s AND schema_name = %(s)s)"
            " + (SELECT count(*) FROM experiments WHERE catalog_name = %(c)s AND schema_name = %(s)s)"
            " + (SELECT count(*) FROM top_level_securables WHERE securable_type = 'DATASET' AND name LIKE %(prefix)s)",
            {"c": catalog, "s": schema, "prefix": f"{catalog}.{schema}.".replace("_", r"\_") + "%"},
        )
    return (await cur.fetchone())[0]


async def delete_catalog(conn: AsyncConnection, name: str) -> None:
    await conn.execute(
        "DELETE FROM grants WHERE securable_type NOT IN ('ENDPOINT', 'MONITOR')"
        " AND (securable_name = %(n)s OR securable_name LIKE %(prefix)s)",
        {"n": name, "prefix": name.replace("_", r"\_") + ".%"},
    )
    await _delete_metric_points(conn, "e.catalog_name = %(c)s", {"c": name})
    await _delete_datasets(conn, name + ".")
    await conn.execute("DELETE FROM catalogs WHERE name = %s", (name,))


async def insert_schema(conn: AsyncConnection, catalog: str, name: str, comment: str, owner: str) -> Schema | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO schemas (catalog_name, name, comment, owner) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING *",
        (catalog, name, comment, owner),
    )
    row = await cur.fetchone()
    return Schema(**row) if row else None


async def get_schema(conn: AsyncConnection, catalog: str, name: str) -> Schema | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM schemas WHERE catalog_name = %s AND name = %s", (catalog, name))
    row = await cur.fetchone()
    return Schema(**row) if row else None


async def list_schemas(conn: AsyncConnection, catalog: str) -> list[Schema]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM schemas WHERE catalog_name = %s ORDER BY name", (catalog,))
    return [Schema(**row) for row in await cur.fetchall()]


async def delete_schema(conn: AsyncConnection, catalog: str, name: str) -> None:
    full = f"{catalog}.{name}"
    await conn.execute(
        "DELETE FROM grants WHERE (securable_type IN ('SCHEMA', 'REGISTERED_MODEL', 'DATASET')"
        " AND (securable_name = %(n)s OR securable_name LIKE %(prefix)s))"
        " OR (securable_type = 'EXPERIMENT' AND securable_name IN"
        "     (SELECT experiment_id::text FROM experiments WHERE catalog_name = %(c)s AND schema_name = %(s)s))",
        {"n": full, "prefix": full.replace("_", r"\_") + ".%", "c": catalog, "s": name},
    )
    await _delete_metric_points(conn, "e.catalog_name = %(c)s AND e.schema_name = %(s)s", {"c": catalog, "s": name})
    await _delete_datasets(conn, full + ".")
    await conn.execute("DELETE FROM schemas WHERE catalog_name = %s AND name = %s", (catalog, name))


async def _delete_datasets(conn: AsyncConnection, prefix: str) -> None:
    # Datasets live with the registered securables, keyed by full name: they go with their schema.
    await conn.execute(
        "DELETE FROM top_level_securables WHERE securable_type = 'DATASET' AND name LIKE %s",
        (prefix.replace("_", r"\_") + "%",),
    )


async def _delete_metric_points(conn: AsyncConnection, where: str, params: dict) -> None:
    # metric_chunks has no foreign key (it would cost a lookup per write): clean it up with its runs.
    await conn.execute(
        "DELETE FROM metric_chunks WHERE run_pk IN (SELECT r.run_pk FROM runs r"
        f" JOIN experiments e ON e.experiment_id = r.experiment_id WHERE {where})",
        params,
    )


# -- grants and owners -------------------------------------------------------

_OWNER_TABLES = {
    SecurableType.CATALOG: ("catalogs", "name = %(a)s"),
    SecurableType.SCHEMA: ("schemas", "catalog_name = %(a)s AND name = %(b)s"),
    SecurableType.REGISTERED_MODEL: (
        "registered_models",
        "catalog_name = %(a)s AND schema_name = %(b)s AND name = %(c)s",
    ),
    SecurableType.EXPERIMENT: ("experiments", "experiment_id = %(a)s::bigint"),
    SecurableType.ENDPOINT: ("top_level_securables", "securable_type = 'ENDPOINT' AND name = %(a)s"),
    SecurableType.MONITOR: ("top_level_securables", "securable_type = 'MONITOR' AND name = %(a)s"),
    SecurableType.DATASET: ("top_level_securables", "securable_type = 'DATASET' AND name = %(a)s"),
}


async def set_owner(conn: AsyncConnection, kind: SecurableType, key: dict, owner: str) -> None:
    table, where = _OWNER_TABLES[kind]
    await conn.execute(f"UPDATE {table} SET owner = %(owner)s WHERE {where}", {**key, "owner": owner})


async def add_grants(
    conn: AsyncConnection, kind: str, name: str, principal: str, privileges: list[str], by: str
) -> list[str]:
    """Returns the privileges that were not granted before."""
    cur = await conn.execute(
        "INSERT INTO grants (securable_type, securable_name, principal, privilege, granted_by)"
        " SELECT %s, %s, %s, p, %s FROM unnest(%s::text[]) AS p ON CONFLICT DO NOTHING RETURNING privilege",
        (kind, name, principal, by, privileges),
    )
    return [row[0] for row in await cur.fetchall()]


async def remove_grants(
    conn: AsyncConnection, kind: str, name: str, principal: str, privileges: list[str]
) -> list[str]:
    cur = await conn.execute(
        "DELETE FROM grants WHERE securable_type = %s AND securable_name = %s AND principal = %s"
        " AND privilege = ANY(%s) RETURNING privilege",
        (kind, name, principal, privileges),
    )
    return [row[0] for row in await cur.fetchall()]


async def list_grants(conn: AsyncConnection, kind: str, name: str, principal: str = "") -> dict[str, list[str]]:
    cur = await conn.execute(
        "SELECT principal, array_agg(privilege ORDER BY privilege) FROM grants"
        " WHERE securable_type = %s AND securable_name = %s AND (%s = '' OR principal = %s)"
        " GROUP BY principal ORDER BY principal",
        (kind, name, principal, principal),
    )
    return {p: list(privs) for p, privs in await cur.fetchall()}


async def rename_grants(conn: AsyncConnection, kind: str, old: str, new: str) -> None:
    await conn.execute(
        "UPDATE grants SET securable_name = %s WHERE securable_type = %s AND securable_name = %s", (new, kind, old)
    )
