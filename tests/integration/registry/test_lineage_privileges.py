"""Lineage walks show only what the caller may read, survive cycles and stay within their caps."""

from __future__ import annotations

import grpc
import pytest
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration

DOWN, UP = pb.LINEAGE_DIRECTION_DOWNSTREAM, pb.LINEAGE_DIRECTION_UPSTREAM


def node(kind: str, name: str) -> pb.LineageNode:
    return pb.LineageNode(type=kind, name=name)


def names(reply) -> set[tuple[str, str]]:
    return {(n.type, n.name) for n in reply.nodes}


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _edge(s, source, target, who="admin"):
    await s.CreateLineageEdge(pb.CreateLineageEdgeRequest(source=source, target=target), metadata=as_(who))


async def test_a_cycle_is_walked_once_and_a_dense_graph_stays_within_the_caps(registry, unique):
    s, md = registry.stub, as_("alice")
    a, b = node("TABLE", f"a{unique}"), node("TABLE", f"b{unique}")
    await _edge(s, a, b)
    await _edge(s, b, a)
    reply = await s.GetLineage(pb.GetLineageRequest(node=a), metadata=md)
    assert names(reply) == {("TABLE", a.name), ("TABLE", b.name)}
    assert sorted((e.source.name, e.target.name) for e in reply.edges) == sorted([(a.name, b.name), (b.name, a.name)])

    clique = [node("TABLE", f"k{i}-{unique}") for i in range(12)]
    for x in clique:
        for y in clique:
            if x != y:
                await _edge(s, x, y)
    reply = await s.GetLineage(pb.GetLineageRequest(node=clique[0], direction=DOWN), metadata=md)
    assert len(reply.nodes) == 12 and len(reply.edges) == 12 * 11

    too_deep = pb.GetLineageRequest(node=a, max_depth=registry.settings.registry_lineage_max_depth + 1)
    assert await _code(s.GetLineage(too_deep, metadata=md)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_nodes_of_other_tenants_are_left_out_and_never_walked_through(registry, schema_of, unique):
    s, admin = registry.stub, as_("admin")
    # Alice's tenant: schema_of, readable by her. Another tenant: a catalog she has no grant on.
    other_catalog = f"o{unique}"
    await s.CreateCatalog(pb.CreateCatalogRequest(name=other_catalog), metadata=admin)
    await s.CreateSchema(pb.CreateSchemaRequest(catalog_name=other_catalog, name="s"), metadata=admin)
    mine, theirs = f"{schema_of}.mine", f"{other_catalog}.s.theirs"
    for model in (mine, theirs):
        await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=admin)
        await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=admin)
    await s.Grant(
        pb.GrantRequest(
            securable_type=pb.SECURABLE_TYPE_CATALOG,
            securable_full_name=schema_of.split(".")[0],
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA, pb.PRIVILEGE_EXECUTE],
        ),
        metadata=admin,
    )
    table = node("TABLE", f"t{unique}")
    my_version, their_version = node("MODEL_VERSION", f"{mine}/1"), node("MODEL_VERSION", f"{theirs}/1")
    behind_theirs = node("TABLE", f"secret{unique}")
    await _edge(s, table, my_version)
    await _edge(s, table, their_version)
    await _edge(s, their_version, behind_theirs)

    as_alice = await s.GetLineage(pb.GetLineageRequest(node=table, direction=DOWN), metadata=as_("alice"))
    assert names(as_alice) == {("TABLE", table.name), ("MODEL_VERSION", my_version.name)}
    assert [(e.source.name, e.target.name) for e in as_alice.edges] == [(table.name, my_version.name)]
    as_admin = await s.GetLineage(pb.GetLineageRequest(node=table, direction=DOWN), metadata=admin)
    assert ("MODEL_VERSION", their_version.name) in names(as_admin) and ("TABLE", behind_theirs.name) in names(as_admin)
    # Starting from what she cannot read is refused outright.
    start_theirs = pb.GetLineageRequest(node=their_version, direction=UP)
    assert await _code(s.GetLineage(start_theirs, metadata=as_("alice"))) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_registered_endpoint_is_shown_only_to_those_who_may_see_it(registry, schema_of, unique):
    s, admin = registry.stub, as_("admin")
    endpoint = f"prod-{unique}"
    await s.RegisterSecurable(
        pb.RegisterSecurableRequest(
            securable_type=pb.SECURABLE_TYPE_ENDPOINT, securable_full_name=endpoint, owner="admin"
        ),
        metadata=as_("serving-svc"),
    )
    model = f"{schema_of}.served"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=admin)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=admin)
    # Serving records which version an endpoint serves as its service principal, with no grants of its own.
    await _edge(s, node("MODEL_VERSION", f"{model}/1"), node("SERVING_ENDPOINT", endpoint), who="serving-svc")
    # An ordinary user may not link objects she cannot read.
    denied = pb.CreateLineageEdgeRequest(source=node("MODEL_VERSION", f"{model}/1"), target=node("TABLE", "x"))
    assert await _code(s.CreateLineageEdge(denied, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED

    walk = pb.GetLineageRequest(node=node("SERVING_ENDPOINT", endpoint), direction=UP)
    assert await _code(s.GetLineage(walk, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED
    await s.Grant(
        pb.GrantRequest(
            securable_type=pb.SECURABLE_TYPE_ENDPOINT,
            securable_full_name=endpoint,
            principal="bob",
            privileges=[pb.PRIVILEGE_SELECT],
        ),
        metadata=admin,
    )
    # Bob sees the endpoint now, but not the model version behind it (no grant on the model).
    assert names(await s.GetLineage(walk, metadata=as_("bob"))) == {("SERVING_ENDPOINT", endpoint)}
    assert ("MODEL_VERSION", f"{model}/1") in names(await s.GetLineage(walk, metadata=admin))
