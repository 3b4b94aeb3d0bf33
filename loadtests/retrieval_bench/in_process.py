"""The service's own CPU per Query, without gRPC: its query path against the bare SELECT, in one process.

    python -m loadtests.retrieval_bench.in_process [--calls 2000] [--rounds 3]

`floor` measures whole servers; this one runs the retrieval core in-process
(authorization off, as in the bench) and times, with the process's CPU clock,
alternately: a Query through `converters` -> `RetrievalCore.query` ->
`converters` (validation, planning, the pooled connection, hits), and the same
SELECT on one dedicated async psycopg connection turned into the same reply.
The difference is what the service's Python adds per call. It also times the
pool checkout alone (`Database.connection()` with nothing in it), the piece
once suspected to dominate.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from tessera.retrieval.v1 import retrieval_pb2 as pb

from services.common.auth import Principal
from services.common.config import CommonSettings, load
from services.retrieval import converters
from services.retrieval.app import RetrievalApp
from services.retrieval.entities import Document
from services.retrieval.settings import RetrievalSettings


async def run(calls: int, rounds: int) -> None:
    dsn = load(CommonSettings).resolved_pg_dsn()
    schema = f"retrieval_in_process_{uuid.uuid4().hex[:6]}"
    settings = load(
        RetrievalSettings,
        pg_dsn=dsn,
        grpc_port=0,
        retrieval_schema=schema,
        retrieval_authz="none",
        retrieval_run_sync_consumer=False,
        auth_tokens="bench-token=bench",
    )
    app = RetrievalApp(settings, serve_metrics=False)
    await app.start()
    conn = None
    try:
        principal, core, index = Principal("bench"), app.core, "bench.in_process.vectors"
        await core.create_index(principal, converters.spec_from_proto(pb.CreateIndexRequest(name=index, dimension=384)))
        data = np.random.default_rng(0).normal(size=(2000, 384)).astype(np.float32)
        await core.upsert(principal, index, [Document(id=str(i), vector=list(v)) for i, v in enumerate(data)])
        requests = [pb.QueryRequest(index=index, vector=v.tolist(), k=10, ef_search=40) for v in data[:200]]
        table = (await core._info(index)).table
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await register_vector_async(conn)
        await conn.execute("SET hnsw.ef_search = 40")
        statement = sql.SQL(
            "SELECT id, version, embedding <=> %b AS distance FROM {} ORDER BY distance LIMIT %s"
        ).format(sql.Identifier(schema, table))
        rendered = statement.as_bytes(conn)

        async def service() -> None:
            for i in range(calls):
                request = requests[i % len(requests)]
                converters.hits_to_proto(await core.query(principal, converters.query_from_proto(request)))

        async def bare() -> None:
            for i in range(calls):
                request = requests[i % len(requests)]
                cur = await conn.execute(rendered, (np.asarray(request.vector, dtype=np.float32), request.k))
                rows = await cur.fetchall()
                pb.QueryResponse(hits=[pb.Hit(id=r[0], version=r[1], score=1 - r[2]) for r in rows])

        async def checkout() -> None:
            for _ in range(calls):
                async with app.search_store._db.connection():
                    pass

        await service()  # warm: prepared statements on every pooled connection, caches filled
        await bare()
        for round_ in range(rounds):
            spent = {}
            for name, body in (("service", service), ("bare", bare), ("checkout", checkout)):
                started = time.process_time()
                await body()
                spent[name] = (time.process_time() - started) / calls * 1e6
            print(
                f"round {round_ + 1}: service path {spent['service']:,.0f} µs CPU/query, bare SELECT + reply"
                f" {spent['bare']:,.0f} µs, difference {spent['service'] - spent['bare']:,.0f} µs;"
                f" pool checkout alone {spent['checkout']:,.0f} µs",
                flush=True,
            )
    finally:
        if conn is not None:
            await conn.close()
        await app.stop()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop  # the service runs on uvloop when it is installed
    except ImportError:
        uvloop = None
    (uvloop.run if uvloop else asyncio.run)(run(args.calls, args.rounds))


if __name__ == "__main__":
    main()
