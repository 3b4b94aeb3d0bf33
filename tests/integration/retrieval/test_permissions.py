"""Index permissions follow the registry's grants on the schema, checked by the real registry service."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from tessera.registry.v1 import registry_pb2 as reg
from tessera.registry.v1 import registry_pb2_grpc
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common.auth import bearer
from services.common.config import load
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings

pytestmark = pytest.mark.integration

TOKENS = "admin-token=admin,retrieval-token=retrieval,alice-token=alice,bob-token=bob,carol-token=carol"
ADMIN, ALICE, BOB, CAROL = (bearer(f"{who}-token") for who in ("admin", "alice", "bob", "carol"))


@pytest.fixture(scope="module")
async def mesh(pg_dsn, kafka_bootstrap):
    """The real registry and a retrieval service that asks it, each with its own unique schema."""
    suffix = uuid.uuid4().hex[:8]
    registry = RegistryApp(
        load(
            RegistrySettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            registry_http_port=-1,
            registry_schema=f"registry_t_{suffix}",
            registry_events_topic=f"test.registry.{suffix}",
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
            retrieval_run_sync_consumer=False,
            retrieval_authz="registry",
            registry_address=f"127.0.0.1:{registry.grpc_port}",
            service_token="retrieval-token",
            auth_tokens=TOKENS,
        ),
        serve_metrics=False,
    )
    await retrieval.start()
    reg_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.grpc_port}")
    ret_channel = grpc.aio.insecure_channel(f"127.0.0.1:{retrieval.port}")
    yield registry_pb2_grpc.RegistryServiceStub(reg_channel), retrieval_pb2_grpc.RetrievalServiceStub(ret_channel)
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


async def test_use_schema_reads_modify_writes_and_no_grant_no_access(mesh):
    registry, retrieval = mesh
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

    # A new grant works at once: denials are never cached.
    await grant(registry, reg.SECURABLE_TYPE_SCHEMA, schema, "bob", reg.PRIVILEGE_MODIFY)
    written = await retrieval.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=[doc]), metadata=BOB)
    assert written.applied == 1
