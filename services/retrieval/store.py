"""PostgreSQL for retrieval: the catalog of indexes, one table per index, versioned writes.

Each index gets a table of its own (`idx_<hash>`) with typed metadata columns, a
generated tsvector for full-text search, a pgvector HNSW index, and a tombstone
table so a delete at version v also blocks late upserts older than v.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from services.common.db import Database
from services.common.errors import AlreadyExists, NotFound
from services.retrieval.entities import (
    BuildState,
    Document,
    DocumentRef,
    FieldType,
    IndexInfo,
    IndexSpec,
    MetadataField,
    Metric,
    WriteResult,
)

SQL_TYPES = {
    FieldType.STRING: "text",
    FieldType.INT64: "bigint",
    FieldType.DOUBLE: "double precision",
    FieldType.BOOL: "boolean",
    FieldType.TIMESTAMP: "timestamptz",
}
OPCLASS = {Metric.COSINE: "vector_cosine_ops", Metric.L2: "vector_l2_ops", Metric.INNER_PRODUCT: "vector_ip_ops"}
DISTANCE_OP = {Metric.COSINE: "<=>", Metric.L2: "<->", Metric.INNER_PRODUCT: "<#>"}
# Text search configuration for the generated tsvector and the queries against it.
TEXT_CONFIG = "english"
# The numbered SQL files of retrieval's own schema (the catalog and the connectors' state).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@asynccontextmanager
async def index_table(index_name: str) -> AsyncIterator[None]:
    """Turn "the index's table is gone" (deleted by another replica) into NotFound."""
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        raise NotFound(f"index {index_name!r} does not exist") from exc


@dataclass(frozen=True)
class ConnectorState:
    """Where a source-table connector has read up to."""

    watermark: datetime | None = None
    last_id: str = ""
    deletes_seq: int = 0


def new_table_name(index_name: str) -> str:
    """A table per index *creation*: a re-created index never meets statements prepared for its predecessor."""
    return f"idx_{hashlib.sha1(index_name.encode()).hexdigest()[:16]}_{secrets.token_hex(4)}"


def table_of(dsn: str, schema: str, index_name: str) -> str:
    """The table behind an index, for tools that read it directly (benchmarks, tests)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT table_name FROM {}.indexes WHERE name = %s").format(sql.Identifier(schema)), (index_name,)
        ).fetchone()
    if row is None:
        raise NotFound(f"index {index_name!r} does not exist")
    return row[0]


def _info_from_row(row: dict[str, Any], row_count: int = 0) -> IndexInfo:
    spec = IndexSpec(
        name=row["name"],
        dimension=row["dimension"],
        metric=Metric(row["metric"]),
        m=row["m"],
        ef_construction=row["ef_construction"],
        metadata_schema=tuple(MetadataField(f["name"], FieldType(f["type"])) for f in row["metadata_schema"]),
        embedding_model=row["embedding_model"],
        text_columns=tuple(row["text_columns"]),
    )
    return IndexInfo(
        spec=spec,
        table=row["table_name"],
        build_state=BuildState(row["build_state"]),
        owner=row["owner"],
        created_at=row["created_at"],
        row_count=row_count,
        last_recall=row["last_recall"],
    )


class IndexStore:
    """The catalog and the per-index document tables, in the service's schema."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.schema = db.schema

    def _t(self, table: str, suffix: str = "") -> sql.Identifier:
        return sql.Identifier(self.schema, table + suffix)

    # -- catalog ----------------------------------------------------------------

    async def create_index(self, spec: IndexSpec, owner: str) -> IndexInfo:
        table = new_table_name(spec.name)
        t, tomb = self._t(table), self._t(table, "_tombstones")
        columns = [
            sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(SQL_TYPES[f.type])) for f in spec.metadata_schema
        ]
        ddl = [
            sql.SQL(
                "CREATE TABLE {t} (id text PRIMARY KEY, version bigint NOT NULL DEFAULT 0,"
                " embedding vector({dim}) NOT NULL, content text NOT NULL DEFAULT '',"
                " content_tsv tsvector GENERATED ALWAYS AS (to_tsvector({cfg}, content)) STORED,"
                " updated_at timestamptz NOT NULL DEFAULT now(){extra})"
            ).format(
                t=t,
                dim=sql.Literal(spec.dimension),
                cfg=sql.Literal(TEXT_CONFIG),
                extra=sql.SQL("").join(sql.SQL(", ") + c for c in columns),
            ),
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, version bigint NOT NULL)").format(tomb),
            sql.SQL("CREATE INDEX {} ON {} USING gin (content_tsv)").format(sql.Identifier(table + "_tsv"), t),
        ]
        if not spec.deferred_build:
            ddl.append(self._hnsw_ddl(spec, table))
        state = BuildState.NOT_BUILT if spec.deferred_build else BuildState.READY
        async with self.db.transaction() as conn:
            try:
                cur = await conn.execute(
                    "INSERT INTO indexes (name, table_name, dimension, metric, m, ef_construction, metadata_schema,"
                    " embedding_model, text_columns, build_state, owner) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (name) DO NOTHING RETURNING created_at",
                    (
                        spec.name,
                        table,
                        spec.dimension,
                        spec.metric.value,
                        spec.m,
                        spec.ef_construction,
                        json.dumps([{"name": f.name, "type": f.type.value} for f in spec.metadata_schema]),
                        spec.embedding_model,
                        list(spec.text_columns),
                        state.value,
                        owner,
                    ),
                )
                row = await cur.fetchone()
            except psycopg.errors.UniqueViolation as exc:
                raise AlreadyExists(f"index {spec.name!r} already exists") from exc
            if row is None:
                raise AlreadyExists(f"index {spec.name!r} already exists")
            for statement in ddl:
                await conn.execute(statement)
        return IndexInfo(spec=spec, table=table, build_state=state, owner=owner, created_at=row[0])

    def _hnsw_ddl(self, spec: IndexSpec, table: str) -> sql.Composed:
        return sql.SQL(
            "CREATE INDEX {name} ON {t} USING hnsw (embedding {ops}) WITH (m = {m}, ef_construction = {ef})"
        ).format(
            name=sql.Identifier(table + "_hnsw"),
            t=self._t(table),
            ops=sql.SQL(OPCLASS[spec.metric]),
            m=sql.Literal(spec.m),
            ef=sql.Literal(spec.ef_construction),
        )

    async def get_index(self, name: str, *, with_count: bool = False) -> IndexInfo:
        async with index_table(name), self.db.connection() as conn:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            await cur.execute("SELECT * FROM indexes WHERE name = %s", (name,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"index {name!r} does not exist")
            count = 0
            if with_count:
                counted = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._t(row["table_name"])))
                count = (await counted.fetchone())[0]
        return _info_from_row(row, count)

    async def list_indexes(self, after: str, limit: int) -> list[IndexInfo]:
        """Up to `limit` indexes named after `after`, by name."""
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            await cur.execute("SELECT * FROM indexes WHERE name > %s ORDER BY name LIMIT %s", (after, limit))
            rows = await cur.fetchall()
        return [_info_from_row(r) for r in rows]

    async def delete_index(self, name: str) -> None:
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM indexes WHERE name = %s RETURNING table_name", (name,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"index {name!r} does not exist")
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t(row[0])))
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t(row[0], "_tombstones")))

    async def set_build_state(self, name: str, state: BuildState) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE indexes SET build_state = %s WHERE name = %s", (state.value, name))

    async def set_last_recall(self, name: str, recall: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE indexes SET last_recall = %s WHERE name = %s", (recall, name))

    async def build_hnsw(self, info: IndexInfo, parallel_workers: int) -> None:
        """Drop and rebuild the HNSW index (bulk builds are far faster than row-by-row inserts)."""
        async with await psycopg.AsyncConnection.connect(self.db.dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(parallel_workers))
            )
            await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(self._t(info.table, "_hnsw")))
            await conn.execute(self._hnsw_ddl(info.spec, info.table))
            # Fresh statistics, or the planner may keep choosing a sequential scan over the new index.
            await conn.execute(sql.SQL("ANALYZE {}").format(self._t(info.table)))

    # -- documents ----------------------------------------------------------------

    async def upsert(
        self, info: IndexInfo, docs: Sequence[Document], vectors: np.ndarray, contents: list[str]
    ) -> WriteResult:
        """Write `docs` unless a newer version (or a newer delete) is stored; one transaction."""
        spec = info.spec
        meta_cols = [sql.Identifier(f.name) for f in spec.metadata_schema]
        casts = [sql.SQL(SQL_TYPES[f.type]) for f in spec.metadata_schema]
        t, tomb = self._t(info.table), self._t(info.table, "_tombstones")
        names = sql.SQL(", ").join([sql.Identifier(c) for c in ("id", "version", "embedding", "content")] + meta_cols)
        values = sql.SQL(", ").join(
            [sql.SQL("%s::text"), sql.SQL("%s::bigint"), sql.SQL("%b::vector"), sql.SQL("%s::text")]
            + [sql.SQL("%s::{}").format(c) for c in casts]
        )
        updates = sql.SQL(", ").join(
            [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in ("embedding", "content")]
            + [sql.SQL("{0} = EXCLUDED.{0}").format(c) for c in meta_cols]
        )
        statement = sql.SQL(
            "INSERT INTO {t} AS cur ({names}) SELECT * FROM (VALUES ({values})) AS v({names})"
            " WHERE v.version = 0 OR NOT EXISTS"
            " (SELECT 1 FROM {tomb} d WHERE d.id = v.id AND d.version >= v.version)"
            " ON CONFLICT (id) DO UPDATE SET {updates}, version = GREATEST(cur.version, EXCLUDED.version),"
            " updated_at = now() WHERE EXCLUDED.version = 0 OR EXCLUDED.version > cur.version"
        ).format(t=t, tomb=tomb, names=names, values=values, updates=updates)
        params = [
            (doc.id, doc.version, vectors[i], contents[i], *(doc.metadata.get(f.name) for f in spec.metadata_schema))
            for i, doc in enumerate(docs)
        ]
        async with index_table(spec.name), self.db.transaction() as conn:
            cur = conn.cursor()
            await cur.executemany(statement, params)
            applied = max(cur.rowcount, 0)
        return WriteResult(applied=applied, skipped=len(docs) - applied)

    async def delete(self, info: IndexInfo, refs: Sequence[DocumentRef]) -> WriteResult:
        t, tomb = self._t(info.table), self._t(info.table, "_tombstones")
        remove = sql.SQL("DELETE FROM {} WHERE id = %s AND (%s = 0 OR version <= %s)").format(t)
        remember = sql.SQL(
            "INSERT INTO {tomb} AS d (id, version) VALUES (%s, %s)"
            " ON CONFLICT (id) DO UPDATE SET version = GREATEST(d.version, EXCLUDED.version)"
        ).format(tomb=tomb)
        async with index_table(info.spec.name), self.db.transaction() as conn:
            cur = conn.cursor()
            await cur.executemany(remove, [(r.id, r.version, r.version) for r in refs])
            applied = max(cur.rowcount, 0)
            versioned = [(r.id, r.version) for r in refs if r.version > 0]
            if versioned:
                await cur.executemany(remember, versioned)
        return WriteResult(applied=applied, skipped=len(refs) - applied)

    # -- source-table connectors ----------------------------------------------------

    async def connector_state(self, connector: str) -> ConnectorState:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT watermark, last_id, deletes_watermark FROM connector_state WHERE connector = %s", (connector,)
            )
            row = await cur.fetchone()
        return ConnectorState(row[0], row[1], row[2]) if row else ConnectorState()

    async def save_connector_state(self, connector: str, state: ConnectorState) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO connector_state (connector, watermark, last_id, deletes_watermark) VALUES (%s,%s,%s,%s)"
                " ON CONFLICT (connector) DO UPDATE SET watermark = EXCLUDED.watermark, last_id = EXCLUDED.last_id,"
                " deletes_watermark = EXCLUDED.deletes_watermark, updated_at = now()",
                (connector, state.watermark, state.last_id, state.deletes_seq),
            )
