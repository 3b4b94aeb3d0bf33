"""The read path: ANN, exact, full-text and hybrid queries against an index table.

Queries run on a pool of autocommit connections (one round trip per query, no
BEGIN/COMMIT), one of which the store keeps checked out for whichever query finds
it free (no checkout, warm caches). pgvector's scan settings are session GUCs; each connection
remembers what it last set, so a query pays for `set_config` only when its
settings differ from the previous query's on that connection.

Filtered ANN uses pgvector's iterative index scan (relaxed order, re-sorted
here) so a WHERE clause no longer starves
the result; if even that yields fewer than k rows (a very selective filter past
`hnsw.max_scan_tuples`), an exact scan answers instead: k rows whenever k match.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from services.common.db import Database
from services.retrieval.entities import IndexInfo
from services.retrieval.store import DISTANCE_OP, TEXT_CONFIG, index_table

RRF_K = 60


class SearchStore:
    def __init__(self, dsn: str, schema: str, *, pool_size: int = 10, max_scan_tuples: int = 20000) -> None:
        self.schema = schema
        self.max_scan_tuples = max_scan_tuples
        self._gucs: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()
        self._rendered: dict[tuple, bytes] = {}
        self._db = Database(dsn, schema, min_size=2, max_size=pool_size, autocommit=True)
        # One pooled connection kept checked out: a query that finds it free skips the pool's
        # checkout and return and meets a connection whose statements and caches are warm.
        self._warm: psycopg.AsyncConnection | None = None
        self._warm_lease: AbstractAsyncContextManager | None = None
        self._warm_busy = False
        # With a pool of one, a connection kept out would leave every concurrent query waiting.
        self._keep_warm = pool_size > 1

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        if self._warm_lease is not None:
            lease, self._warm, self._warm_lease = self._warm_lease, None, None
            await lease.__aexit__(None, None, None)
        await self._db.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """The warm connection when no other query holds it, else one from the pool (as many as it allows)."""
        if self._warm_busy or not self._keep_warm:
            async with self._db.connection() as conn:
                yield conn
            return
        self._warm_busy = True
        try:
            if self._warm is None:
                lease = self._db.connection()
                self._warm = await lease.__aenter__()
                self._warm_lease = lease
            try:
                yield self._warm
            except BaseException as exc:
                # Whatever went wrong (a lost server, a cancelled call mid-statement), the connection goes
                # back through the pool, which resets or discards it and turns driver errors into core ones;
                # the next query leases a fresh one.
                lease, self._warm, self._warm_lease = self._warm_lease, None, None
                if not await lease.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
        finally:
            self._warm_busy = False

    async def _scan_settings(self, conn: psycopg.AsyncConnection, ef_search: int, iterative_scan: str) -> None:
        wanted = (ef_search, iterative_scan, self.max_scan_tuples)
        if self._gucs.get(conn) == wanted:
            return
        await conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', %s, false),"
            " set_config('hnsw.max_scan_tuples', %s, false)",
            (str(wanted[0]), wanted[1], str(wanted[2])),
        )
        self._gucs[conn] = wanted

    def _select_list(self, columns: tuple[str, ...], include_text: bool, prefix: str = "") -> sql.Composable:
        names = [sql.Identifier(c) for c in columns] + ([sql.Identifier("content")] if include_text else [])
        if prefix:
            names = [sql.SQL(prefix + ".") + n for n in names]
        return sql.SQL("").join(sql.SQL(", ") + n for n in names)

    def _table(self, info: IndexInfo) -> sql.Identifier:
        return sql.Identifier(self.schema, info.table)

    async def ann(
        self,
        info: IndexInfo,
        vector: np.ndarray,
        k: int,
        ef_search: int,
        where: sql.Composable,
        where_params: list[Any],
        columns: tuple[str, ...],
        include_text: bool,
        filtered: bool,
    ) -> list[tuple]:
        """Rows of (id, version, distance, *columns[, content]) by the HNSW index, nearest first."""
        # Unfiltered statements are few per index: keep them rendered, the hot path skips composing SQL.
        key = (info.table, info.spec.metric, columns, include_text) if not filtered else None
        statement = self._rendered.get(key) if key else None
        if statement is None:
            statement = sql.SQL(
                "SELECT id, version, embedding {op} %b AS distance{cols} FROM {t} WHERE {where}"
                " ORDER BY distance LIMIT %s"
            ).format(
                op=sql.SQL(DISTANCE_OP[info.spec.metric]),
                cols=self._select_list(columns, include_text),
                t=self._table(info),
                where=where,
            )
        async with index_table(info.spec.name), self._connection() as conn:
            if key and key not in self._rendered:
                if len(self._rendered) > 10_000:
                    self._rendered.clear()
                statement = self._rendered[key] = statement.as_bytes(conn)
            await self._scan_settings(conn, ef_search, "relaxed_order" if filtered else "off")
            cur = await conn.execute(statement, [vector, *where_params, k])
            rows = await cur.fetchall()
        if filtered:
            # Relaxed order may hand neighbours back slightly out of order. (pgvector's materialized-CTE
            # re-sort does not help on PostgreSQL 17+, whose planner trusts the CTE's own ordering.)
            rows.sort(key=lambda row: row[2])
        return rows

    async def exact(
        self,
        info: IndexInfo,
        vector: np.ndarray,
        k: int,
        where: sql.Composable,
        where_params: list[Any],
        columns: tuple[str, ...],
        include_text: bool,
    ) -> list[tuple]:
        """The true k nearest matching rows: a scan with index scans off, so HNSW cannot truncate it."""
        op = sql.SQL(DISTANCE_OP[info.spec.metric])
        statement = sql.SQL(
            "SELECT id, version, embedding {op} %b AS distance{cols} FROM {t} WHERE {where} ORDER BY distance LIMIT %s"
        ).format(op=op, cols=self._select_list(columns, include_text), t=self._table(info), where=where)
        async with index_table(info.spec.name), self._connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_indexscan = off")
            cur = await conn.execute(statement, [vector, *where_params, k])
            return await cur.fetchall()

    async def full_text(
        self,
        info: IndexInfo,
        text: str,
        k: int,
        where: sql.Composable,
        where_params: list[Any],
        columns: tuple[str, ...],
        include_text: bool,
    ) -> list[tuple]:
        """Rows of (id, version, rank, ...) matching `text` (web-search syntax), best first."""
        statement = sql.SQL(
            "SELECT id, version, ts_rank_cd(content_tsv, q) AS rank{cols}"
            " FROM {t}, websearch_to_tsquery({cfg}, %s) AS q"
            " WHERE content_tsv @@ q AND {where} ORDER BY rank DESC, id LIMIT %s"
        ).format(
            cols=self._select_list(columns, include_text),
            t=self._table(info),
            cfg=sql.Literal(TEXT_CONFIG),
            where=where,
        )
        async with index_table(info.spec.name), self._connection() as conn:
            cur = await conn.execute(statement, [text, *where_params, k])
            return await cur.fetchall()

    async def hybrid(
        self,
        info: IndexInfo,
        vector: np.ndarray,
        text: str,
        k: int,
        candidates: int,
        ef_search: int,
        where: sql.Composable,
        where_params: list[Any],
        columns: tuple[str, ...],
        include_text: bool,
    ) -> list[tuple]:
        """Reciprocal rank fusion of the vector and full-text rankings: rows of (id, version, rrf_score, ...)."""
        op = sql.SQL(DISTANCE_OP[info.spec.metric])
        t = self._table(info)
        statement = sql.SQL(
            "WITH vec AS MATERIALIZED ("
            "  SELECT id, row_number() OVER (ORDER BY distance) AS rank FROM ("
            "    SELECT id, embedding {op} %b AS distance FROM {t} WHERE {where} ORDER BY distance LIMIT %s) v),"
            " txt AS MATERIALIZED ("
            "  SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank FROM ("
            "    SELECT id, ts_rank_cd(content_tsv, q) AS score FROM {t}, websearch_to_tsquery({cfg}, %s) AS q"
            "    WHERE content_tsv @@ q AND {where} ORDER BY score DESC LIMIT %s) s),"
            " fused AS ("
            "  SELECT coalesce(vec.id, txt.id) AS id,"
            "   coalesce(1.0 / ({rrf} + vec.rank), 0) + coalesce(1.0 / ({rrf} + txt.rank), 0) AS score"
            "  FROM vec FULL OUTER JOIN txt ON vec.id = txt.id)"
            " SELECT d.id, d.version, fused.score::float8{cols} FROM fused JOIN {t} d ON d.id = fused.id"
            " ORDER BY fused.score DESC, d.id LIMIT %s"
        ).format(
            op=op,
            t=t,
            where=where,
            cfg=sql.Literal(TEXT_CONFIG),
            rrf=sql.Literal(RRF_K),
            cols=self._select_list(columns, include_text, prefix="d"),
        )
        params = [vector, *where_params, candidates, text, *where_params, candidates, k]
        async with index_table(info.spec.name), self._connection() as conn:
            # Strict order: the vector ranks feed the fusion, so they must be true ranks.
            await self._scan_settings(conn, ef_search, "strict_order")
            cur = await conn.execute(statement, params)
            return await cur.fetchall()

    async def sample_vectors(self, info: IndexInfo, count: int) -> list[np.ndarray]:
        async with index_table(info.spec.name), self._connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT embedding FROM {} ORDER BY random() LIMIT %s").format(self._table(info)), (count,)
            )
            return [row[0].to_numpy() for row in await cur.fetchall()]
