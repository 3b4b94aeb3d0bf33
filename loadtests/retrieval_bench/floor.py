"""Server CPU per Query call: Tessera's service against bare servers doing the same SELECT.

    python -m loadtests.retrieval_bench.floor [--calls 1500]

One blocking client, 2,000 random 384-dim vectors. Three servers answer the
same Query on the same table: the retrieval service (its own process), a bare
grpc.aio server with one async psycopg connection, and a bare sync
`grpc.server` with a psycopg connection per thread. The CPU each server
process spends per call (from /proc, so the machine's load hardly moves it)
splits Tessera's cost into the stack's floor and the service's own share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psycopg
from psycopg import sql
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from loadtests.report import RESULTS
from services.common.config import CommonSettings, load

from .load import METADATA
from .server import ServiceProcess

SCHEMA = "retrieval_floor"
SERVICE = "tessera.retrieval.v1.RetrievalService"


def _statement(table: str, schema: str = SCHEMA) -> sql.Composed:
    return sql.SQL("SELECT id, version, embedding <=> %b AS distance FROM {} ORDER BY distance LIMIT %s").format(
        sql.Identifier(schema, table)
    )


def _to_proto(rows: list[tuple]) -> pb.QueryResponse:
    return pb.QueryResponse(hits=[pb.Hit(id=r[0], version=r[1], score=1 - r[2]) for r in rows])


def _handler(query) -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(
        query, request_deserializer=pb.QueryRequest.FromString, response_serializer=pb.QueryResponse.SerializeToString
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Query": method})


def bare_aio(dsn: str, table: str, ports, schema: str = SCHEMA, connections: int = 1) -> None:
    """The least a Python gRPC service can do for a Query: grpc.aio on uvloop, the SELECT on one of
    `connections` async psycopg connections (a query takes a free one), ef_search as the request asks."""
    from pgvector.psycopg import register_vector_async

    async def main() -> None:
        statement = _statement(table, schema)
        free: asyncio.Queue = asyncio.Queue()
        ef: dict = {}
        for _ in range(connections):
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            await register_vector_async(conn)
            ef[conn] = 0
            free.put_nowait(conn)

        async def query(request, context):
            conn = await free.get()
            try:
                wanted = max(request.ef_search or 40, request.k)
                if ef[conn] != wanted:
                    await conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(wanted)))
                    ef[conn] = wanted
                cur = await conn.execute(statement, (np.asarray(request.vector, dtype=np.float32), request.k))
                return _to_proto(await cur.fetchall())
            finally:
                free.put_nowait(conn)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handler(query),))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


@contextlib.contextmanager
def bare_aio_server(dsn: str, table: str, schema: str, connections: int) -> Iterator[str]:
    """`bare_aio` in a process of its own while the block runs: its address."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    process = ctx.Process(target=bare_aio, args=(dsn, table, ports, schema, connections), daemon=True)
    process.start()
    try:
        yield f"127.0.0.1:{ports.get(timeout=60)}"
    finally:
        process.kill()
        process.join(timeout=10)


def bare_sync(dsn: str, table: str, ports) -> None:
    from pgvector.psycopg import register_vector

    local = threading.local()

    def connection() -> psycopg.Connection:
        if getattr(local, "conn", None) is None:
            local.conn = psycopg.connect(dsn, autocommit=True)
            register_vector(local.conn)
            local.conn.execute("SET hnsw.ef_search = 40")  # what the requests ask for
        return local.conn

    def query(request, context):
        vector = np.asarray(request.vector, dtype=np.float32)
        return _to_proto(connection().execute(_statement(table), (vector, request.k)).fetchall())

    server = grpc.server(ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((_handler(query),))
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port: int, pid: int, requests: list, calls: int) -> tuple[float, float]:
    """(server CPU µs per call, wall µs per call) for `calls` blocking Query calls."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for i in range(100):
            stub.Query(requests[i % len(requests)], metadata=METADATA)
        cpu, wall = cpu_seconds(pid), time.perf_counter()
        for i in range(calls):
            stub.Query(requests[i % len(requests)], metadata=METADATA)
        return (cpu_seconds(pid) - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    dsn = load(CommonSettings).resolved_pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    service = ServiceProcess(dsn, SCHEMA, RESULTS / "retrieval_floor_service.log")
    bare = []
    try:
        service.wait_ready()
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            index = "bench.floor.vectors"
            stub.CreateIndex(pb.CreateIndexRequest(name=index, dimension=384, metric=pb.COSINE), metadata=METADATA)
            data = np.random.default_rng(0).normal(size=(2000, 384)).astype(np.float32)
            docs = [pb.Document(id=str(i), vector=v.tolist()) for i, v in enumerate(data)]
            stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=docs), metadata=METADATA)
        with psycopg.connect(dsn) as conn:
            table = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " AND table_name LIKE 'idx\\_%%' AND table_name NOT LIKE '%%\\_tombstones'",
                (SCHEMA,),
            ).fetchone()[0]
        requests = [pb.QueryRequest(index=index, vector=v.tolist(), k=10, ef_search=40) for v in data[:200]]
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        servers = {"tessera": (service.port, service.process.pid)}
        for name, target in (("bare grpc.aio + async psycopg", bare_aio), ("bare sync grpc + psycopg", bare_sync)):
            process = ctx.Process(target=target, args=(dsn, table, ports), daemon=True)
            process.start()
            bare.append(process)
            servers[name] = (ports.get(timeout=60), process.pid)
        for round_ in range(2):  # alternate: the machine is shared
            for name, (port, pid) in servers.items():
                cpu, wall = measure(port, pid, requests, args.calls)
                print(f"round {round_ + 1} {name}: server CPU {cpu:,.0f} µs/call, wall {wall:,.0f} µs/call", flush=True)
        print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for process in bare:
            process.kill()
        service.stop()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    main()
