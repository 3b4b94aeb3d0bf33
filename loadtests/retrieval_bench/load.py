"""Query loops: Tessera's Query RPC and the same query as raw pgvector SQL, at a given concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from tessera.retrieval.v1 import retrieval_pb2 as pb

from services.common.auth import bearer

from .server import TOKEN

METADATA = bearer(TOKEN)


async def run_for(seconds: float, concurrency: int, one_query: Callable[[int], Awaitable[object]]) -> tuple[float, int]:
    """Queries/s with `concurrency` workers issuing `one_query(i)` back to back for `seconds`."""
    stop_at = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop_at:
            await one_query(i)
            counts[w] += 1
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, sum(counts)


def tessera_requests(index: str, queries: np.ndarray, k: int, ef_search: int, flt: pb.Filter | None = None):
    return [pb.QueryRequest(index=index, vector=q.tolist(), k=k, ef_search=ef_search, filter=flt) for q in queries]


def tessera_query(stub, requests: list[pb.QueryRequest]) -> Callable[[int], Awaitable[object]]:
    async def one(i: int):
        return await stub.Query(requests[i % len(requests)], metadata=METADATA)

    return one


def query_batches(requests: list[pb.QueryRequest], batch: int) -> list[pb.QueryBatchRequest]:
    return [
        pb.QueryBatchRequest(queries=[requests[(start + j) % len(requests)] for j in range(batch)])
        for start in range(0, len(requests), batch)
    ]


def tessera_batch_query(stub, requests: list[pb.QueryRequest], batch: int) -> Callable[[int], Awaitable[object]]:
    """One QueryBatch call of `batch` queries; `run_for` counts calls, so multiply its rate by `batch`."""
    batches = query_batches(requests, batch)

    async def one(i: int):
        return await stub.QueryBatch(batches[i % len(batches)], metadata=METADATA)

    return one


class RawPgvector:
    """A psycopg connection per worker, with pgvector's session settings as a raw user would set them."""

    def __init__(self, dsn: str, table: sql.Identifier, k: int) -> None:
        self.dsn = dsn
        self.table = table
        self.k = k
        self.conns: list[psycopg.AsyncConnection] = []

    async def open(self, count: int, ef_search: int | None, iterative_scan: str | None = None) -> None:
        for _ in range(count):
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await register_vector_async(conn)
            if ef_search is not None:
                await conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
            if iterative_scan is not None:
                await conn.execute(sql.SQL("SET hnsw.iterative_scan = {}").format(sql.Literal(iterative_scan)))
            self.conns.append(conn)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.conns = []

    def statement(self, where: str = "") -> sql.Composed:
        return sql.SQL("SELECT id, embedding <=> %b AS distance FROM {} {} ORDER BY distance LIMIT %s").format(
            self.table, sql.SQL(where)
        )

    def query(self, queries: np.ndarray, where: str = "", params: tuple = ()) -> Callable[[int], Awaitable[list]]:
        statement = self.statement(where)

        async def one(i: int):
            conn = self.conns[i % len(self.conns)]
            cur = await conn.execute(statement, (queries[i % len(queries)], *params, self.k))
            return await cur.fetchall()

        return one
