"""Client processes for the queries/s runs: the same client shape for raw SQL and for Tessera.

The older single asyncio process ran the grpc.aio client and async psycopg in
one interpreter, whose per-call costs differ (grpc.aio's client is the dearer),
so Tessera's rounds could have been bounded by the client. Here each of `count`
processes holds
one connection (a psycopg connection or a gRPC channel) and makes blocking
calls back to back, so both sides have the same number of callers, each with
its own interpreter, and gRPC's C core does the client's transport work.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection

import numpy as np

# Seconds between sending a round and its start: every process begins together.
START_DELAY = 0.3


def _client_main(
    pipe: Connection, dsn: str, table: tuple[str, str], k: int, targets: dict[str, str], payload: dict
) -> None:
    import grpc
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql
    from tessera.retrieval.v1 import retrieval_pb2 as pb
    from tessera.retrieval.v1 import retrieval_pb2_grpc

    from .load import METADATA

    queries: np.ndarray = payload["queries"]
    requests = [pb.QueryRequest.FromString(b) for b in payload["requests"]]
    batches = [pb.QueryBatchRequest.FromString(b) for b in payload["batches"]]
    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    statement = sql.SQL("SELECT id, embedding <=> %b AS distance FROM {} ORDER BY distance LIMIT %s").format(
        sql.Identifier(*table)
    )
    # "tessera" (and "batch") call the service; "floor" the bare server beside it, when there is one.
    channels = {
        side: grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        for side, target in targets.items()
    }
    stubs = {side: retrieval_pb2_grpc.RetrievalServiceStub(channel) for side, channel in channels.items()}
    for stub in stubs.values():
        stub.Query(requests[0], metadata=METADATA)  # connect before the first round
    stub = stubs["tessera"]
    pipe.send("ready")
    while (round_ := pipe.recv()) is not None:
        side, worker, stride, ef_search, start_at, stop_at = round_
        if side == "raw":
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
            conn.execute(statement, (queries[0], k)).fetchall()  # the first query after SET stays out of the round
        while time.time() < start_at:
            time.sleep(0.001)
        count, i = 0, worker
        while time.time() < stop_at:
            if side == "raw":
                conn.execute(statement, (queries[i % len(queries)], k)).fetchall()
            elif side == "tessera":
                stub.Query(requests[i % len(requests)], metadata=METADATA)
            elif side == "floor":
                stubs["floor"].Query(requests[i % len(requests)], metadata=METADATA)
            else:
                stub.QueryBatch(batches[i % len(batches)], metadata=METADATA)
            count += 1
            i += stride
        pipe.send((count, time.time() - start_at))
    for channel in channels.values():
        channel.close()
    conn.close()


class ClientProcesses:
    """`count` client processes, started once and reused for every round at that concurrency."""

    def __init__(
        self,
        count: int,
        dsn: str,
        table: tuple[str, str],
        k: int,
        target: str,
        queries: np.ndarray,
        requests: list,
        batches: list,
        floor_target: str | None = None,
    ) -> None:
        """`floor_target`: a bare Query server on the same table (floor.bare_aio), the "floor" side."""
        ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC channels
        payload = {
            "queries": queries,
            "requests": [r.SerializeToString() for r in requests],
            "batches": [b.SerializeToString() for b in batches],
        }
        targets = {"tessera": target, **({"floor": floor_target} if floor_target else {})}
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_client_main, args=(child, dsn, table, k, targets, payload), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a client process failed to start")

    def run(self, side: str, seconds: float, ef_search: int = 0) -> float:
        """Calls/s over every process for one round of `side` ("raw", "tessera", "floor" or "batch")."""
        start_at = time.time() + START_DELAY
        stride = len(self.pipes)
        for worker, pipe in enumerate(self.pipes):
            pipe.send((side, worker, stride, ef_search, start_at, start_at + seconds))
        results = [pipe.recv() for pipe in self.pipes]
        return sum(count for count, _ in results) / max(elapsed for _, elapsed in results)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
