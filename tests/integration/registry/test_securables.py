"""Endpoints and monitors as securables: registered by services for their creators, guarded like any other."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from confluent_kafka import Consumer
from tessera.events.v1 import registry_pb2 as ev
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration

ENDPOINT, MONITOR = pb.SECURABLE_TYPE_ENDPOINT, pb.SECURABLE_TYPE_MONITOR
T = ev.RegistryEvent.Type


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _check(s, who: str, principal: str, kind, name: str, privilege):
    return s.CheckPrivilege(
        pb.CheckPrivilegeRequest(
            principal=principal, securable_type=kind, securable_full_name=name, privilege=privilege
        ),
        metadata=as_(who),
    )


def _events_for(bootstrap: str, topic: str, name: str, count: int, timeout_s: float = 30.0) -> list[ev.RegistryEvent]:
    """The events about `name`, reading until `count` arrived and then a little longer (a duplicate would follow)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: list[ev.RegistryEvent] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = ev.RegistryEvent.FromString(msg.value())
            if event.grant.securable_name == name:
                seen.append(event)
            if len(seen) >= count:
                deadline = min(deadline, time.monotonic() + 1.5)
    finally:
        consumer.close()
    return seen


async def test_only_service_principals_and_superusers_register_securables(registry, unique):
    s = registry.stub

    def register(who: str, kind=ENDPOINT, name=f"ep-{unique}", owner="alice"):
        request = pb.RegisterSecurableRequest(securable_type=kind, securable_full_name=name, owner=owner)
        return s.RegisterSecurable(request, metadata=as_(who))

    assert await _code(register("alice")) == grpc.StatusCode.PERMISSION_DENIED
    created = await register("serving-svc")
    assert (created.securable_type, created.securable_full_name, created.owner) == (ENDPOINT, f"ep-{unique}", "alice")
    assert created.created_at.seconds > 0
    assert await _code(register("serving-svc")) == grpc.StatusCode.ALREADY_EXISTS
    assert await _code(register("admin", kind=MONITOR, name=f"mon-{unique}")) == grpc.StatusCode.OK
    assert await _code(register("admin", kind=pb.SECURABLE_TYPE_CATALOG)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(register("admin", name="bad name\n")) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(register("admin", name=f"x-{unique}", owner="")) == grpc.StatusCode.INVALID_ARGUMENT
    touch = pb.TouchSecurableRequest(securable_type=ENDPOINT, securable_full_name=f"ep-{unique}", actor="alice")
    assert await _code(s.TouchSecurable(touch, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED
    gone = pb.UnregisterSecurableRequest(securable_type=ENDPOINT, securable_full_name=f"ep-{unique}", actor="bob")
    assert await _code(s.UnregisterSecurable(gone, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED
    missing = pb.TouchSecurableRequest(securable_type=ENDPOINT, securable_full_name=f"nope-{unique}")
    assert await _code(s.TouchSecurable(missing, metadata=as_("serving-svc"))) == grpc.StatusCode.NOT_FOUND


async def test_owner_holds_everything_grants_work_and_unregister_drops_them(registry, unique, kafka_bootstrap):
    s, name = registry.stub, f"chat-{unique}"
    await s.RegisterSecurable(
        pb.RegisterSecurableRequest(securable_type=ENDPOINT, securable_full_name=name, owner="alice"),
        metadata=as_("serving-svc"),
    )
    for privilege in (pb.PRIVILEGE_EXECUTE, pb.PRIVILEGE_MANAGE, pb.PRIVILEGE_SELECT):
        assert (await _check(s, "serving-svc", "alice", ENDPOINT, name, privilege)).allowed
        assert not (await _check(s, "serving-svc", "bob", ENDPOINT, name, privilege)).allowed
    # The owner grants; bob may then call the endpoint but not read its logs.
    grant = pb.GrantRequest(
        securable_type=ENDPOINT, securable_full_name=name, principal="bob", privileges=[pb.PRIVILEGE_EXECUTE]
    )
    assert await _code(s.Grant(grant, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED
    await s.Grant(grant, metadata=as_("alice"))
    assert (await _check(s, "serving-svc", "bob", ENDPOINT, name, pb.PRIVILEGE_EXECUTE)).allowed
    assert (await _check(s, "bob", "bob", ENDPOINT, name, pb.PRIVILEGE_EXECUTE)).allowed
    assert not (await _check(s, "serving-svc", "bob", ENDPOINT, name, pb.PRIVILEGE_SELECT)).allowed
    listed = await s.ListGrants(
        pb.ListGrantsRequest(securable_type=ENDPOINT, securable_full_name=name), metadata=as_("bob")
    )
    assert listed.owner == "alice" and [(a.principal, list(a.privileges)) for a in listed.assignments] == [
        ("bob", [pb.PRIVILEGE_EXECUTE])
    ]
    # Privileges that mean nothing on an endpoint, and SELECT where nothing holds data, are refused.
    modify = pb.GrantRequest(
        securable_type=ENDPOINT, securable_full_name=name, principal="bob", privileges=[pb.PRIVILEGE_MODIFY]
    )
    assert await _code(s.Grant(modify, metadata=as_("alice"))) == grpc.StatusCode.INVALID_ARGUMENT
    select_catalog = pb.GrantRequest(
        securable_type=pb.SECURABLE_TYPE_CATALOG,
        securable_full_name="main",
        principal="bob",
        privileges=[pb.PRIVILEGE_SELECT],
    )
    assert await _code(s.Grant(select_catalog, metadata=as_("admin"))) == grpc.StatusCode.INVALID_ARGUMENT
    # Ownership moves as for any securable.
    owner = pb.SetOwnerRequest(securable_type=ENDPOINT, securable_full_name=name, new_owner="carol")
    assert await _code(s.SetOwner(owner, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED
    assert (await s.SetOwner(owner, metadata=as_("alice"))).owner == "carol"
    assert not (await _check(s, "serving-svc", "alice", ENDPOINT, name, pb.PRIVILEGE_MANAGE)).allowed

    await s.TouchSecurable(
        pb.TouchSecurableRequest(securable_type=ENDPOINT, securable_full_name=name, actor="carol"),
        metadata=as_("serving-svc"),
    )
    await s.UnregisterSecurable(
        pb.UnregisterSecurableRequest(securable_type=ENDPOINT, securable_full_name=name, actor="carol"),
        metadata=as_("serving-svc"),
    )
    assert (
        await _code(_check(s, "serving-svc", "bob", ENDPOINT, name, pb.PRIVILEGE_EXECUTE)) == grpc.StatusCode.NOT_FOUND
    )
    # A new endpoint under the same name starts without the old one's grants.
    await s.RegisterSecurable(
        pb.RegisterSecurableRequest(securable_type=ENDPOINT, securable_full_name=name, owner="dave"),
        metadata=as_("serving-svc"),
    )
    assert not (await _check(s, "serving-svc", "bob", ENDPOINT, name, pb.PRIVILEGE_EXECUTE)).allowed

    # In a thread: the registry's publisher shares this event loop.
    seen = await asyncio.to_thread(_events_for, kafka_bootstrap, registry.topic, name, 6)
    assert [e.type for e in seen] == [
        T.SECURABLE_REGISTERED,
        T.GRANT_CHANGED,
        T.OWNER_CHANGED,
        T.SECURABLE_CHANGED,
        T.SECURABLE_UNREGISTERED,
        T.SECURABLE_REGISTERED,
    ]
    assert len({e.event_id for e in seen}) == 6
    registered, *_, unregistered, again = seen
    assert (registered.grant.securable_type, registered.grant.principal, registered.actor) == (
        "ENDPOINT",
        "alice",
        "alice",
    )
    assert (unregistered.actor, again.grant.principal) == ("carol", "dave")
