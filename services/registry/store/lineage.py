"""PostgreSQL access for lineage edges and graph walks (recursive CTEs)."""

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


async def walk(conn: AsyncConnection, node: LineageNode, downstream: bool, max_depth: int) -> list[LineageEdge]:
    """Every edge reachable from node in one direction; UNION (not ALL) stops at cycles."""
    near, far = ("source", "target") if downstream else ("target", "source")
    depth_limit = max_depth if max_depth > 0 else 1_000_000
    cur = await conn.execute(
        f"""WITH RECURSIVE reach (node_type, node_name, depth) AS (
              SELECT %(t)s::text, %(n)s::text, 0
              UNION
              SELECT e.{far}_type, e.{far}_name, r.depth + 1 FROM lineage_edges e
              JOIN reach r ON e.{near}_type = r.node_type AND e.{near}_name = r.node_name
              WHERE r.depth < %(d)s)
            SELECT DISTINCT {", ".join("e." + c.strip() for c in _COLUMNS.split(","))} FROM lineage_edges e
            JOIN (SELECT node_type, node_name, min(depth) AS depth FROM reach GROUP BY 1, 2) r
              ON e.{near}_type = r.node_type AND e.{near}_name = r.node_name AND r.depth < %(d)s""",
        {"t": node.type, "n": node.name, "d": depth_limit},
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
