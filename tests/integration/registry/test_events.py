"""Registry events: exactly once per committed change, none for a change that rolled back."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from confluent_kafka import Consumer
from tessera.events.v1 import registry_pb2 as ev
from tessera.registry.v1 import registry_pb2 as pb

from services.common.outbox import OutboxPublisher
from services.registry import events
from services.registry.names import ModelName
from services.registry.store import models as model_store
from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration

T = ev.RegistryEvent.Type


def _read_all(bootstrap: str, topic: str, until_model: str, timeout_s: float = 30.0) -> list[ev.RegistryEvent]:
    """Every event on the topic up to the MODEL_DELETED of `until_model` (the scenario's last change)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: list[ev.RegistryEvent] = []
    try:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = ev.RegistryEvent.FromString(msg.value())
            seen.append(event)
            if event.type == T.MODEL_DELETED and event.model_name == until_model:
                # Linger briefly: a duplicate would arrive right behind.
                extra = consumer.poll(1.0)
                if extra is not None and not extra.error():
                    seen.append(ev.RegistryEvent.FromString(extra.value()))
                break
    finally:
        consumer.close()
    return seen


async def test_each_committed_change_is_published_exactly_once_and_rollbacks_never(
    registry, schema_of, kafka_bootstrap, tmp_path
):
    s, admin = registry.stub, as_("admin")
    model = f"{schema_of}.m"
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=admin)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model, source=str(source)), metadata=admin)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model, source=str(source)), metadata=admin)
    for _ in range(50):  # the copies run in the background
        versions = await s.SearchModelVersions(pb.SearchModelVersionsRequest(model_name=model), metadata=admin)
        if all(v.status == pb.MODEL_VERSION_STATUS_READY for v in versions.model_versions):
            break
        await asyncio.sleep(0.1)
    await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="champion", version=1), metadata=admin)
    await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="champion", version=2), metadata=admin)
    await s.DeleteModelAlias(pb.DeleteModelAliasRequest(model_name=model, alias="champion"), metadata=admin)
    grant = pb.GrantRequest(
        securable_type=pb.SECURABLE_TYPE_REGISTERED_MODEL,
        securable_full_name=model,
        principal="alice",
        privileges=[pb.PRIVILEGE_EXECUTE],
    )
    await s.Grant(grant, metadata=admin)
    await s.Grant(grant, metadata=admin)  # no change: no event
    # Refused calls change nothing and announce nothing.
    with pytest.raises(grpc.aio.AioRpcError):
        await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="ghost", version=1), metadata=as_("bob"))
    with pytest.raises(grpc.aio.AioRpcError):
        await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="ghost", version=99), metadata=admin)
    # A change that wrote its row and its event, then failed before commit: both roll back.
    ctx = registry.registry.ctx
    with pytest.raises(RuntimeError):
        async with ctx.unit() as unit:
            pk, _, _ = await model_store.model_with_chain(unit.conn, ModelName.parse(model), "admin")
            await model_store.set_alias(unit.conn, pk, "ghost", 1, "admin")
            unit.emit(events.model_event(T.ALIAS_SET, "admin", model, version=1, alias="ghost"))
            raise RuntimeError("crash before commit")
    found = await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=model), metadata=admin)
    assert found.aliases == []
    await s.DeleteRegisteredModel(pb.DeleteRegisteredModelRequest(full_name=model), metadata=admin)

    seen = await asyncio.to_thread(_read_all, kafka_bootstrap, registry.topic, model)
    mine = [e for e in seen if e.model_name == model]
    summary = [(T.Name(e.type), e.version, e.alias, e.previous_version) for e in mine]
    created = [x for x in summary if x[0] == "MODEL_VERSION_CREATED"]
    ready = [x for x in summary if x[0] == "MODEL_VERSION_READY"]
    assert sorted(created) == [("MODEL_VERSION_CREATED", 1, "", 0), ("MODEL_VERSION_CREATED", 2, "", 0)]
    assert sorted(ready) == [("MODEL_VERSION_READY", 1, "", 0), ("MODEL_VERSION_READY", 2, "", 0)]
    rest = [x for x in summary if x[0] not in ("MODEL_VERSION_CREATED", "MODEL_VERSION_READY")]
    assert rest == [
        ("ALIAS_SET", 1, "champion", 0),
        ("ALIAS_SET", 2, "champion", 1),
        ("ALIAS_DELETED", 0, "champion", 2),
        ("GRANT_CHANGED", 0, "", 0),
        ("MODEL_DELETED", 0, "", 0),
    ]
    grant_event = next(e for e in mine if e.type == T.GRANT_CHANGED)
    assert grant_event.grant.principal == "alice" and list(grant_event.grant.added) == ["EXECUTE"]
    assert len({e.event_id for e in mine}) == len(mine) and all(e.actor == "admin" for e in mine)
    ready_event = next(e for e in mine if e.type == T.MODEL_VERSION_READY)
    assert ready_event.storage_location.startswith("file://")
    # Every outbox row is marked sent.
    async with ctx.read() as conn:
        cur = await conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        assert (await cur.fetchone())[0] == 0


async def test_events_written_while_the_publisher_is_down_go_out_when_it_is_back(registry, schema_of, kafka_bootstrap):
    s, admin = registry.stub, as_("admin")
    model = f"{schema_of}.later"
    await registry.publisher.stop()
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=admin)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=admin)
    await s.DeleteRegisteredModel(pb.DeleteRegisteredModelRequest(full_name=model), metadata=admin)
    async with registry.registry.ctx.read() as conn:
        cur = await conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        assert (await cur.fetchone())[0] == 2  # committed, kept, not yet published
    registry.publisher = OutboxPublisher(registry.db, registry.producer, events.OUTBOX, 0.2)
    registry.registry.ctx._on_events = registry.publisher.notify
    registry.publisher.start()
    seen = await asyncio.to_thread(_read_all, kafka_bootstrap, registry.topic, model)
    assert [T.Name(e.type) for e in seen if e.model_name == model] == ["MODEL_VERSION_CREATED", "MODEL_DELETED"]
