"""PostgreSQL access for lineage edges; walks fetch one level of edges at a time (the core keeps the visited set)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.registry.entities import LineageEdge, LineageNode


def _edge(row: tuple) -> LineageEdge:
    return LineageEdge(LineageNode(row[0], row[1]), LineageNode(row[2], row[3]), dict(row[4]), row[5], row[6])


_COLUMNS = "source_type, source_name, target_type, target_name, properties, created_by, created_at"


async def add_edge(
    conn: AsyncConnection, source: LineageNode, target: LineageNode, properties: dict, actor: str
) -> LineageEdge:
    await conn.execute(
        "INSERT INTO lineage_edges (source_type, source_name, target_type, target_name, properties, created_by)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (source.type, source.name, target.type, target.name, Jsonb(properties), actor),
    )
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM lineage_edges WHERE source_type = %s AND source_name = %s"
        " AND target_type = %s AND target_name = %s",
        (source.type, source.name, target.type, target.name),
    )
    return _edge(await cur.fetchone())


async def delete_edge(conn: AsyncConnection, source: LineageNode, target: LineageNode) -> bool:
    cur = await conn.execute(
        "DELETE FROM lineage_edges WHERE source_type = %s AND source_name = %s AND target_type = %s AND target_name = %s",
        (source.type, source.name, target.type, target.name),
    )
    return cur.rowcount > 0


async def edges_from(
    conn: AsyncConnection, frontier: list[LineageNode], downstream: bool, limit: int
) -> list[LineageEdge]:
    """The edges leaving (downstream) or entering (upstream) any frontier node, at most `limit`."""
    near = "source" if downstream else "target"
    cur = await conn.execute(
        f"SELECT {', '.join('e.' + c.strip() for c in _COLUMNS.split(','))} FROM lineage_edges e"
        f" JOIN unnest(%s::text[], %s::text[]) AS f(node_type, node_name)"
        f" ON e.{near}_type = f.node_type AND e.{near}_name = f.node_name"
        " ORDER BY e.created_at, e.source_type, e.source_name, e.target_type, e.target_name LIMIT %s",
        ([n.type for n in frontier], [n.name for n in frontier], limit),
    )
    return [_edge(row) for row in await cur.fetchall()]


async def rename_nodes(conn: AsyncConnection, kind: str, old_prefix: str, new_prefix: str) -> None:
    """Keep edges attached when a model is renamed (its versions are `<name>/<n>`)."""
    for side in ("source", "target"):
        await conn.execute(
            f"UPDATE lineage_edges SET {side}_name = %(new)s || substr({side}_name, length(%(old)s) + 1)"
            f" WHERE {side}_type = %(kind)s AND ({side}_name = %(old)s OR {side}_name LIKE %(like)s)",
            {"new": new_prefix, "old": old_prefix, "kind": kind, "like": old_prefix.replace("_", r"\_") + "/%"},
        )
