"""A real registry per test module: in-process gRPC + MLflow REST servers, real PostgreSQL and Kafka."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings

# admin is a superuser; serving-svc is a service principal (not a superuser); alice and bob are plain users.
TOKENS = {"admin": "tok-admin", "alice": "tok-alice", "bob": "tok-bob", "serving-svc": "tok-serving"}


def as_(principal: str):
    return bearer(TOKENS[principal])


@pytest.fixture(scope="module")
async def registry(pg_dsn, kafka_bootstrap, tmp_path_factory):
    suffix = uuid.uuid4().hex[:10]
    topic = f"test.registry.events.{suffix}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    schema = f"registry_t_{suffix}"
    settings = load(
        RegistrySettings,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        grpc_port=0,
        registry_http_port=0,
        registry_schema=schema,
        registry_events_topic=topic,
        registry_artifact_root=tmp_path_factory.mktemp("artifacts"),
        registry_service_principals=("serving-svc",),
        # The local-source tests exercise who may copy host paths; production defaults to off.
        registry_allow_local_sources=True,
        auth_tokens=",".join(f"{t}={p}" for p, t in TOKENS.items()),
    )
    app = RegistryApp(settings, serve_metrics=False)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    app.stub = registry_pb2_grpc.RegistryServiceStub(channel)
    app.topic = topic
    app.http_url = f"http://127.0.0.1:{app.http_port}"
    yield app
    await channel.close()
    await app.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def schema_of(registry):
    """A fresh catalog.schema owned by admin; returns its full name."""
    name = f"c{uuid.uuid4().hex[:8]}"
    await registry.stub.CreateCatalog(pb.CreateCatalogRequest(name=name), metadata=as_("admin"))
    await registry.stub.CreateSchema(pb.CreateSchemaRequest(catalog_name=name, name="s"), metadata=as_("admin"))
    return f"{name}.s"
