"""Indexes, versioned writes and queries over gRPC on the real PostgreSQL/pgvector."""

from __future__ import annotations

import grpc
import numpy as np
import psycopg
import pytest
from psycopg import sql
from tessera.retrieval.v1 import retrieval_pb2 as pb

from services.retrieval import metrics
from services.retrieval.recall_job import RecallJob
from services.retrieval.store import table_of
from tests.integration.retrieval.conftest import METADATA, field, index_name

pytestmark = pytest.mark.integration


def eq(column: str, value) -> pb.Filter:
    flt = pb.Filter()
    flt.comparison.column = column
    flt.comparison.op = pb.Comparison.EQ
    if isinstance(value, str):
        flt.comparison.value.string_value = value
    else:
        flt.comparison.value.number_value = value
    return flt


async def create(stub, **kwargs) -> str:
    name = kwargs.pop("name", None) or index_name()
    await stub.CreateIndex(pb.CreateIndexRequest(name=name, **kwargs), metadata=METADATA)
    return name


async def expect_error(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return err.value.details()


async def test_create_upsert_query_delete_round_trip(retrieval):
    stub = retrieval.stub
    name = await create(stub, dimension=3, metric=pb.L2, metadata_schema=[field("colour", pb.STRING)])
    docs = [
        pb.Document(id="red", vector=[1, 0, 0], text="a red thing"),
        pb.Document(id="green", vector=[0, 1, 0], text="a green thing"),
        pb.Document(id="blue", vector=[0, 0, 1], text="a blue thing"),
    ]
    for doc in docs:
        doc.metadata["colour"] = doc.id
    written = await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=docs), metadata=METADATA)
    assert written.applied == 3

    reply = await stub.Query(
        pb.QueryRequest(index=name, vector=[0.9, 0.1, 0], k=2, columns=["colour"], include_text=True), metadata=METADATA
    )
    assert [h.id for h in reply.hits] == ["red", "green"]
    assert reply.hits[0].metadata["colour"] == "red" and reply.hits[0].text == "a red thing"
    assert reply.hits[0].score > reply.hits[1].score

    described = await stub.DescribeIndex(pb.DescribeIndexRequest(name=name), metadata=METADATA)
    assert described.row_count == 3 and described.metric == pb.L2 and described.build_state == pb.READY
    listed = await stub.ListIndexes(pb.ListIndexesRequest(), metadata=METADATA)
    assert name in [i.name for i in listed.indexes]

    deleted = await stub.DeleteDocuments(
        pb.DeleteDocumentsRequest(index=name, documents=[pb.DocumentRef(id="red")]), metadata=METADATA
    )
    assert deleted.applied == 1
    reply = await stub.Query(pb.QueryRequest(index=name, vector=[1, 0, 0], k=3), metadata=METADATA)
    assert [h.id for h in reply.hits] == ["green", "blue"] or [h.id for h in reply.hits] == ["blue", "green"]

    # Often enough for the driver to prepare the statement server-side...
    for _ in range(30):
        await stub.Query(pb.QueryRequest(index=name, vector=[1, 0, 0], k=1, columns=["colour"]), metadata=METADATA)
    await stub.DeleteIndex(pb.DeleteIndexRequest(name=name), metadata=METADATA)
    await expect_error(
        stub.DescribeIndex(pb.DescribeIndexRequest(name=name), metadata=METADATA), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stub.Query(pb.QueryRequest(index=name, vector=[1, 0, 0]), metadata=METADATA), grpc.StatusCode.NOT_FOUND
    )
    # ...and a re-created index of the same name, whose column changed type, answers all the same.
    await create(stub, name=name, dimension=3, metric=pb.L2, metadata_schema=[field("colour", pb.INT64)])
    doc = pb.Document(id="x", vector=[1, 0, 0])
    doc.metadata["colour"] = 7
    await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=[doc]), metadata=METADATA)
    for _ in range(10):
        reply = await stub.Query(
            pb.QueryRequest(index=name, vector=[1, 0, 0], k=1, columns=["colour"]), metadata=METADATA
        )
        assert reply.hits[0].metadata["colour"] == 7


async def test_an_older_version_never_overwrites_a_newer_one(retrieval):
    stub = retrieval.stub
    name = await create(stub, dimension=2)

    async def upsert(version: int, text: str) -> pb.WriteResponse:
        doc = pb.Document(id="doc", version=version, vector=[1, 1], text=text)
        return await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=[doc]), metadata=METADATA)

    async def stored() -> list[tuple[int, str]]:
        reply = await stub.Query(pb.QueryRequest(index=name, vector=[1, 1], k=5, include_text=True), metadata=METADATA)
        return [(h.version, h.text) for h in reply.hits]

    assert (await upsert(2, "second")).applied == 1
    assert (await upsert(1, "first, arriving late")).skipped == 1
    assert (await upsert(2, "second again")).skipped == 1
    assert await stored() == [(2, "second")]

    stale_delete = pb.DeleteDocumentsRequest(index=name, documents=[pb.DocumentRef(id="doc", version=1)])
    assert (await stub.DeleteDocuments(stale_delete, metadata=METADATA)).applied == 0
    assert await stored() == [(2, "second")]

    delete = pb.DeleteDocumentsRequest(index=name, documents=[pb.DocumentRef(id="doc", version=3)])
    assert (await stub.DeleteDocuments(delete, metadata=METADATA)).applied == 1
    # An upsert older than the delete must not resurrect the document...
    assert (await upsert(2, "resurrected?")).skipped == 1
    assert await stored() == []
    # ...a newer one does.
    assert (await upsert(4, "fourth")).applied == 1
    assert await stored() == [(4, "fourth")]


async def test_a_client_stream_upserts_and_deletes_in_order(retrieval):
    stub = retrieval.stub
    name = await create(stub, dimension=2)

    async def batches():
        for b in range(5):
            docs = [pb.Document(id=f"{b}-{i}", vector=[b + 1, i + 1]) for i in range(20)]
            yield pb.WriteDocumentsRequest(upsert=pb.UpsertDocumentsRequest(index=name, documents=docs))
        gone = [pb.DocumentRef(id=f"0-{i}") for i in range(10)]
        yield pb.WriteDocumentsRequest(delete=pb.DeleteDocumentsRequest(index=name, documents=gone))

    reply = await stub.StreamWriteDocuments(batches(), metadata=METADATA)
    assert reply.applied == 110
    described = await stub.DescribeIndex(pb.DescribeIndexRequest(name=name), metadata=METADATA)
    assert described.row_count == 90


async def test_filtered_queries_return_k_rows_where_raw_pgvector_defaults_return_fewer(retrieval, pg_dsn):
    stub = retrieval.stub
    dim, rows, k = 32, 20_000, 10
    name = await create(stub, dimension=dim, deferred_build=True, metadata_schema=[field("category", pb.INT64)])
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    for start in range(0, rows, 2000):
        docs = []
        for i in range(start, start + 2000):
            doc = pb.Document(id=str(i), vector=vectors[i].tolist())
            doc.metadata["category"] = i % 10  # each category is 10% of the rows
            docs.append(doc)
        await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=docs), metadata=METADATA)
    built = await stub.BuildIndex(pb.BuildIndexRequest(name=name), metadata=METADATA, timeout=300)
    assert built.build_state == pb.READY

    queries = rng.standard_normal((10, dim)).astype(np.float32)
    schema = retrieval.settings.retrieval_schema
    table = sql.Identifier(schema, table_of(pg_dsn, schema, name))
    raw_counts, tessera_counts = [], []
    with psycopg.connect(pg_dsn) as conn:
        for q in queries:
            literal = "[" + ",".join(f"{x:.6f}" for x in q) + "]"
            cur = conn.execute(
                sql.SQL("SELECT id FROM {} WHERE category = 3 ORDER BY embedding <=> %s::vector LIMIT %s").format(
                    table
                ),
                (literal, k),
            )
            raw_counts.append(len(cur.fetchall()))
    for q in queries:
        reply = await stub.Query(
            pb.QueryRequest(
                index=name, vector=q.tolist(), k=k, filter=eq("category", 3), columns=["category"], ef_search=40
            ),
            metadata=METADATA,
        )
        tessera_counts.append(len(reply.hits))
        assert all(h.metadata["category"] == 3 for h in reply.hits)
        assert [h.score for h in reply.hits] == sorted((h.score for h in reply.hits), reverse=True)
    assert tessera_counts == [k] * len(queries)
    assert sum(raw_counts) < k * len(queries), f"raw pgvector with defaults returned {raw_counts}"

    # A filter so selective the HNSW scan cannot fill k: the exact fallback still finds every match.
    rare = pb.Filter()
    rare.any_of.filters.extend([eq("category", 3), eq("category", 4)])
    rare_and = pb.Filter()
    rare_and.all_of.filters.extend([rare])
    below = rare_and.all_of.filters.add()
    below.comparison.column = "category"
    below.comparison.op = pb.Comparison.IN
    below.comparison.values.add().number_value = 4
    reply = await stub.Query(
        pb.QueryRequest(index=name, vector=queries[0].tolist(), k=k, filter=rare_and), metadata=METADATA
    )
    assert len(reply.hits) == k

    recall = await stub.MeasureRecall(pb.MeasureRecallRequest(index=name, k=10, sample_size=20), metadata=METADATA)
    assert recall.queries == 20 and 0.0 < recall.recall <= 1.0
    assert metrics.RECALL.labels(name, "10")._value.get() == recall.recall
    # The scheduled job measures every built index the same way.
    measured = await RecallJob(retrieval.core, interval_s=3600, sample_size=10).measure_all()
    assert 0.0 < measured[name] <= 1.0


async def test_hybrid_search_ranks_an_exact_keyword_match_first(retrieval):
    stub = retrieval.stub
    name = await create(
        stub,
        embedding=pb.EmbeddingSource(model="all-MiniLM-L6-v2", text_columns=["body"]),
        metadata_schema=[field("body", pb.STRING)],
    )
    # Neighbouring error codes read alike to the embedding model; only the exact code should win.
    bodies = {
        "checkout-1": "The checkout processor failed to charge the customer's card.",
        "checkout-2": "Card payments are declined when the processor times out.",
        "code-4470": "Error code ZX-4470 means the card number is invalid.",
        "code-4472": "Error code ZX-4472 means the card has expired.",
        "checkout-3": "Customers see a failure screen when their card is declined at checkout.",
        "keyword": "ZX-4471 means the merchant account is suspended.",
    }
    docs = []
    for doc_id, body in bodies.items():
        doc = pb.Document(id=doc_id)
        doc.metadata["body"] = body
        docs.append(doc)
    await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=docs), metadata=METADATA)

    text = "ZX-4471"
    ann = await stub.Query(pb.QueryRequest(index=name, text=text, k=6), metadata=METADATA)
    hybrid = await stub.Query(pb.QueryRequest(index=name, text=text, k=6, mode=pb.HYBRID), metadata=METADATA)
    full_text = await stub.Query(pb.QueryRequest(index=name, text="ZX-4471", k=6, mode=pb.FULL_TEXT), metadata=METADATA)
    assert ann.hits[0].id != "keyword", "the semantic ranking alone should prefer a neighbouring code"
    assert hybrid.hits[0].id == "keyword"
    assert [h.id for h in full_text.hits] == ["keyword"]


async def test_bad_input_gets_a_clear_error_and_the_service_keeps_serving(retrieval, pg_dsn):
    stub = retrieval.stub
    name = await create(stub, dimension=3, metadata_schema=[field("label", pb.STRING), field("n", pb.INT64)])
    doc = pb.Document(id="a", vector=[1, 2, 3])
    doc.metadata["label"] = "safe"
    doc.metadata["n"] = 1
    await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=[doc]), metadata=METADATA)
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    details = await expect_error(
        stub.UpsertDocuments(
            pb.UpsertDocumentsRequest(index=name, documents=[pb.Document(id="b", vector=[1, 2])]), metadata=METADATA
        ),
        invalid,
    )
    assert "dimension" in details
    details = await expect_error(
        stub.Query(pb.QueryRequest(index=name, vector=[1, 2, 3, 4]), metadata=METADATA), invalid
    )
    assert "dimension" in details
    details = await expect_error(
        stub.Query(pb.QueryRequest(index=name, vector=[1, 2, 3], filter=eq("colour", "red")), metadata=METADATA),
        invalid,
    )
    assert "unknown filter column 'colour'" in details
    # Injection through a column name is an unknown column; through an index name an invalid name.
    await expect_error(
        stub.Query(
            pb.QueryRequest(index=name, vector=[1, 2, 3], filter=eq('label" = label; DROP TABLE x; --', "y")),
            metadata=METADATA,
        ),
        invalid,
    )
    await expect_error(
        stub.Query(pb.QueryRequest(index=name + "; DROP SCHEMA public", vector=[1, 2, 3]), metadata=METADATA), invalid
    )
    # Through a value: a string is compared as a string, a number column rejects it.
    for attack in ("safe' OR '1'='1", "x'; DROP TABLE retrieval.indexes; --"):
        reply = await stub.Query(
            pb.QueryRequest(index=name, vector=[1, 2, 3], filter=eq("label", attack)), metadata=METADATA
        )
        assert list(reply.hits) == []
    await expect_error(
        stub.Query(pb.QueryRequest(index=name, vector=[1, 2, 3], filter=eq("n", "1 OR 1=1")), metadata=METADATA),
        invalid,
    )
    await expect_error(
        stub.CreateIndex(pb.CreateIndexRequest(name="bad name", dimension=3), metadata=METADATA), invalid
    )
    await expect_error(
        stub.CreateIndex(
            pb.CreateIndexRequest(name=index_name(), dimension=3, metadata_schema=[field("id", pb.STRING)]),
            metadata=METADATA,
        ),
        invalid,
    )
    await expect_error(
        stub.CreateIndex(pb.CreateIndexRequest(name=name, dimension=3), metadata=METADATA),
        grpc.StatusCode.ALREADY_EXISTS,
    )

    # Still serving, and the table is intact.
    reply = await stub.Query(
        pb.QueryRequest(index=name, vector=[1, 2, 3], filter=eq("label", "safe")), metadata=METADATA
    )
    assert [h.id for h in reply.hits] == ["a"]
    with psycopg.connect(pg_dsn) as conn:
        schema = retrieval.settings.retrieval_schema
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}.indexes").format(sql.Identifier(schema))).fetchone()[0]
        assert count >= 1


async def test_a_query_batch_answers_like_single_queries_in_request_order(retrieval):
    stub = retrieval.stub
    name = await create(stub, dimension=4)
    rng = np.random.default_rng(3)
    docs = [pb.Document(id=str(i), vector=rng.standard_normal(4).tolist()) for i in range(200)]
    await stub.UpsertDocuments(pb.UpsertDocumentsRequest(index=name, documents=docs), metadata=METADATA)
    queries = [pb.QueryRequest(index=name, vector=rng.standard_normal(4).tolist(), k=5) for _ in range(12)]
    batch = await stub.QueryBatch(pb.QueryBatchRequest(queries=queries), metadata=METADATA)
    singles = [await stub.Query(q, metadata=METADATA) for q in queries]
    assert [[h.id for h in r.hits] for r in batch.results] == [[h.id for h in r.hits] for r in singles]
    bad = pb.QueryBatchRequest(queries=[queries[0], pb.QueryRequest(index=name, vector=[1, 2], k=5)])
    await expect_error(stub.QueryBatch(bad, metadata=METADATA), grpc.StatusCode.INVALID_ARGUMENT)


async def test_names_ending_in_a_newline_are_invalid(retrieval):
    stub = retrieval.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(
        stub.CreateIndex(pb.CreateIndexRequest(name=index_name() + "\n", dimension=3), metadata=METADATA), invalid
    )
    await expect_error(
        stub.CreateIndex(
            pb.CreateIndexRequest(name=index_name(), dimension=3, metadata_schema=[field("label\n", pb.STRING)]),
            metadata=METADATA,
        ),
        invalid,
    )
    name = await create(stub, dimension=3)
    await expect_error(stub.Query(pb.QueryRequest(index=name + "\n", vector=[1, 2, 3]), metadata=METADATA), invalid)
