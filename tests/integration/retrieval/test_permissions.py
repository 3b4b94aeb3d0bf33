"""Index permissions follow the registry's grants on the schema, checked by the real registry service.

Answers are cached and dropped on the registry's grant events, so a grant or a
revocation shows by polling until the event arrived, never by sleeping.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from tessera.common.v1 import common_pb2
from tessera.events.v1.retrieval_pb2 import RetrievalSyncRecord
from tessera.registry.v1 import registry_pb2 as reg
from tessera.registry.v1 import registry_pb2_grpc
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.common.kafka_consumer import CONSUMED
from services.common.kafka_producer import EventProducer
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.core import LIST_WINDOW
from services.retrieval.settings import RetrievalSettings
from tests.integration.retrieval.test_sync import dlq_reasons

pytestmark = pytest.mark.integration

TOKENS = "admin-token=admin,retrieval-token=retrieval,alice-token=alice,bob-token=bob,carol-token=carol"
ADMIN, ALICE, BOB, CAROL = (bearer(f"{who}-token") for who in ("admin", "alice", "bob", "carol"))


@pytest.fixture(scope="module")
async def mesh(pg_dsn, kafka_bootstrap):
    """The real registry and a retrieval service that asks it, each with its own unique schema."""
    suffix = uuid.uuid4().hex[:8]
    events_topic, sync_topic = f"test.registry.{suffix}", f"test.retrieval.sync.{suffix}"
    kafka_admin.ensure_topics(kafka_bootstrap, [events_topic, sync_topic, sync_topic + ".dlq"], partitions=1)
    registry = RegistryApp(
        load(
            RegistrySettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            registry_http_port=-1,
            registry_schema=f"registry_t_{suffix}",
            registry_events_topic=events_topic,
            registry_service_principals=("retrieval",),
            auth_tokens=TOKENS,
        ),
        serve_metrics=False,
    )
    await registry.start()
    retrieval = RetrievalApp(
        load(
            RetrievalSettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            retrieval_schema=f"retrieval_t_{suffix}",
            retrieval_sync_topic=sync_topic,
            retrieval_sync_group=f"test-retrieval-{suffix}",
            retrieval_registry_events_topic=events_topic,
            retrieval_authz="registry",
            retrieval_privilege_cache_s=3600.0,
            registry_address=f"127.0.0.1:{registry.grpc_port}",
            service_token="retrieval-token",
            auth_tokens=TOKENS,
        ),
        serve_metrics=False,
    )
    await retrieval.start()
    retrieval.sync_topic = sync_topic
    reg_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.grpc_port}")
    ret_channel = grpc.aio.insecure_channel(f"127.0.0.1:{retrieval.port}")
    yield (
        registry_pb2_grpc.RegistryServiceStub(reg_channel),
        retrieval_pb2_grpc.RetrievalServiceStub(ret_channel),
        retrieval,
    )
    await reg_channel.close()
    await ret_channel.close()
    await retrieval.stop()
    await registry.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for schema in (f"registry_t_{suffix}", f"retrieval_t_{suffix}"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def grant(registry, kind, name: str, principal: str, *privileges) -> None:
    await registry.Grant(
        reg.GrantRequest(securable_type=kind, securable_full_name=name, principal=principal, privileges=privileges),
        metadata=ADMIN,
    )


async def revoke(registry, kind, name: str, principal: str, *privileges) -> None:
    await registry.Revoke(
        reg.RevokeRequest(securable_type=kind, securable_full_name=name, principal=principal, privileges=privileges),
        metadata=ADMIN,
    )


async def eventually(check, timeout: float = 60.0):
    """Poll `check()` until it returns a truthy value: the grant event reaches retrieval asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def outcome(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def new_schema(registry, schema_name: str = "docs", catalog: str = "") -> str:
    catalog = catalog or f"c_{uuid.uuid4().hex[:8]}"
    try:
        await registry.CreateCatalog(reg.CreateCatalogRequest(name=catalog), metadata=ADMIN)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    await registry.CreateSchema(reg.CreateSchemaRequest(catalog_name=catalog, name=schema_name), metadata=ADMIN)
    return f"{catalog}.{schema_name}"


async def test_use_schema_reads_modify_writes_and_no_grant_no_access(mesh):
    registry, retrieval, _ = mesh
    catalog = f"c_{uuid.uuid4().hex[:8]}"
    await registry.CreateCatalog(reg.CreateCatalogRequest(name=catalog), metadata=ADMIN)
    await registry.CreateSchema(reg.CreateSchemaRequest(catalog_name=catalog, name="docs"), metadata=ADMIN)
    schema = f"{catalog}.docs"
    for who in ("alice", "bob"):
        await grant(registry, reg.SECURABLE_TYPE_CATALOG, catalog, who, reg.PRIVILEGE_USE_CATALOG)
        await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, who, reg.PRIVILEGE_USE_SCHEMA)
    await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "alice", reg.PRIVILEGE_MODIFY)
    index = f"{schema}.articles"

    await retrieval.CreateIndex(pb.CreateIndexRequest(name=index, dimension=2), metadata=ALICE)
    doc = pb.Document(id="a", vector=[1, 0])
    written = await retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=[doc]), metadata=ALICE)
    assert written.applied == 1

    # bob may read but not write; carol may do neither.
    reply = await retrieval.Query(pb.QueryRequest(index=index, vector=[1, 0], k=1), metadata=BOB)
    assert [h.id for h in reply.hits] == ["a"]
    for call in (
        retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=[doc]), metadata=BOB),
        retrieval.DeleteIndex(pb.DeleteIndexRequest(name=index), metadata=BOB),
        retrieval.Query(pb.QueryRequest(index=index, vector=[1, 0], k=1), metadata=CAROL),
        retrieval.DescribeIndex(pb.DescribeIndexRequest(name=index), metadata=CAROL),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    listed = await retrieval.ListIndexes(pb.ListIndexesRequest(), metadata=CAROL)
    assert index not in [i.name for i in listed.indexes]

    # An index in a schema the registry does not know.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await retrieval.CreateIndex(pb.CreateIndexRequest(name=f"{catalog}.nowhere.x", dimension=2), metadata=ALICE)
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)

    # A new grant works once its event arrived (a cached denial is dropped then).
    await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "bob", reg.PRIVILEGE_MODIFY)

    async def bob_writes():
        upsert = retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=[doc]), metadata=BOB)
        return await outcome(upsert) == grpc.StatusCode.OK

    assert await eventually(bob_writes)


async def test_a_revoked_use_schema_refuses_the_next_query_after_the_grant_event(mesh):
    registry, retrieval, app = mesh
    schema = await new_schema(registry)
    catalog = schema.split(".")[0]
    await grant(registry, reg.SECURABLE_TYPE_CATALOG, catalog, "bob", reg.PRIVILEGE_USE_CATALOG)
    await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "bob", reg.PRIVILEGE_USE_SCHEMA)
    index = f"{schema}.articles"
    await retrieval.CreateIndex(pb.CreateIndexRequest(name=index, dimension=2), metadata=ADMIN)
    await retrieval.UpsertDocuments(
        pb.UpsertDocumentsRequest(index=index, documents=[pb.Document(id="a", vector=[1, 0])]), metadata=ADMIN
    )

    def query():
        return retrieval.Query(pb.QueryRequest(index=index, vector=[1, 0], k=1), metadata=BOB)

    # bob's allowed answer is cached now (for far longer than this test runs).
    assert await eventually(lambda: _is(outcome(query()), grpc.StatusCode.OK))
    assert await outcome(query()) == grpc.StatusCode.OK

    follower = app.registry_events.loop
    consumed = CONSUMED.labels(follower.topics[0], follower.group_id)
    before = consumed._value.get()
    await revoke(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "bob", reg.PRIVILEGE_USE_SCHEMA)

    async def event_handled():
        return consumed._value.get() > before

    assert await eventually(event_handled)
    assert await outcome(query()) == grpc.StatusCode.PERMISSION_DENIED


async def _is(coro, expected) -> bool:
    return await coro == expected


async def test_list_indexes_pages_past_indexes_the_caller_may_not_see(mesh):
    registry, retrieval, app = mesh
    catalog = f"c_{uuid.uuid4().hex[:8]}"
    # Schemas s0..s5: bob may use the even ones; by name, hidden and visible indexes alternate.
    names, visible = [], []
    for i in range(6):
        schema = await new_schema(registry, f"s{i}", catalog)
        if i % 2 == 0:
            await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "bob", reg.PRIVILEGE_USE_SCHEMA)
        for suffix in ("a", "b"):
            name = f"{schema}.{suffix}"
            await retrieval.CreateIndex(pb.CreateIndexRequest(name=name, dimension=2), metadata=ADMIN)
            names.append(name)
            if i % 2 == 0:
                visible.append(name)
    await grant(registry, reg.SECURABLE_TYPE_CATALOG, catalog, "bob", reg.PRIVILEGE_USE_CATALOG)

    async def bob_lists(size: int) -> list[str]:
        listed, token = [], ""
        for _ in range(1000):
            reply = await retrieval.ListIndexes(
                pb.ListIndexesRequest(page=common_pb2.PageRequest(page_size=size, page_token=token)), metadata=BOB
            )
            assert len(reply.indexes) <= size
            listed += [i.name for i in reply.indexes]
            token = reply.page.next_page_token
            if not token:
                return listed
        raise AssertionError("paging did not end")

    async def all_visible(size: int):
        listed = [n for n in await bob_lists(size) if n.startswith(catalog + ".")]
        return listed if listed == visible else None

    for size in (1, 2, 3):
        assert await eventually(lambda size=size: all_visible(size)) == visible
    # Small catalog windows too, so one page spans several of them.
    app.core.list_window = 1
    try:
        for size in (1, 2):
            assert await all_visible(size) == visible
    finally:
        app.core.list_window = LIST_WINDOW


async def test_a_sync_record_is_applied_only_for_a_sender_with_modify(mesh, kafka_bootstrap):
    registry, retrieval, app = mesh
    schema = await new_schema(registry)
    catalog = schema.split(".")[0]
    for who in ("alice", "bob"):
        await grant(registry, reg.SECURABLE_TYPE_CATALOG, catalog, who, reg.PRIVILEGE_USE_CATALOG)
        await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, who, reg.PRIVILEGE_USE_SCHEMA)
    await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "alice", reg.PRIVILEGE_MODIFY)
    index = f"{schema}.articles"
    await retrieval.CreateIndex(pb.CreateIndexRequest(name=index, dimension=2), metadata=ADMIN)

    producer = EventProducer(kafka_bootstrap, client_id="retrieval-permissions-test")
    try:
        up = RetrievalSyncRecord.UPSERT
        for who, doc_id in (("bob", "from-bob"), ("alice", "from-alice")):
            rec = RetrievalSyncRecord(index=index, op=up, document_id=doc_id, version=1, vector=[1, 0])
            headers = {"authorization": f"Bearer {who}-token", "tessera-test": who}
            producer.produce(app.sync_topic, rec, key=index, headers=headers)
        await producer.flush()
    finally:
        producer.close()

    async def applied():
        reply = await retrieval.Query(pb.QueryRequest(index=index, vector=[1, 0], k=10), metadata=ADMIN)
        return [h.id for h in reply.hits] or None

    assert await eventually(applied) == ["from-alice"]
    reasons = await dlq_reasons(kafka_bootstrap, app.sync_topic + ".dlq", {"bob"})
    assert "bob lacks MODIFY" in reasons["bob"]
