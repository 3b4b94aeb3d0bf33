"""Two registry processes on one PostgreSQL schema and one events topic (as `make up REPLICAS=2` runs them).

Both serve gRPC and the MLflow REST API on the same data, a grant made through
one is enforced by the other, and the shared outbox goes out once: both
publishers run, an advisory lock lets one at a time claim rows, and a replica
SIGKILLed in the middle of a burst of changes leaves its committed events to
the survivor. Each change here is a grant to a principal of its own, so the
events topic can be counted per change.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
import pytest_asyncio
from confluent_kafka import Consumer
from psycopg import sql
from tessera.events.v1 import registry_pb2 as ev
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from services.common.auth import bearer
from services.common.outbox import OutboxPublisher
from services.fixtures.mesh_processes import ADMIN_TOKEN, USER_TOKENS, Mesh, ServiceProcess, start_mesh
from services.fixtures.registry_client import RegistryClient
from tests.polling import eventually

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

pytestmark = pytest.mark.integration

ADMIN, ALICE = bearer(ADMIN_TOKEN), bearer(USER_TOKENS["alice"])


@pytest_asyncio.fixture(scope="module")
async def mesh(kafka_bootstrap: str, pg_dsn: str, request: pytest.FixtureRequest):
    mesh = await start_mesh(
        kafka_bootstrap,
        pg_dsn,
        Path(tempfile.mkdtemp(prefix="tessera-registry-replicas-")),
        serving=0,
        monitoring=0,
        registries=2,
    )
    try:
        yield mesh
    finally:
        mesh.stop()
    if not request.session.testsfailed:  # after a failure the service logs stay for reading
        shutil.rmtree(mesh.work, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def no_mlflow_retries():
    # A refused call must surface at once, not after the client's back-off.
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    yield
    if saved is None:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    else:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved


def _stub(process: ServiceProcess) -> tuple[grpc.aio.Channel, registry_pb2_grpc.RegistryServiceStub]:
    channel = grpc.aio.insecure_channel(process.address)
    return channel, registry_pb2_grpc.RegistryServiceStub(channel)


def _mlflow(process: ServiceProcess, token: str, call):
    """Run `call(client)` with the stock mlflow client against one replica's REST API, as `token`.

    The client reads its token from the environment: set it around the call (the calls run one at a time)."""
    saved = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        return call(MlflowClient(tracking_uri=f"http://127.0.0.1:{process.http_port}"))
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = saved


async def _new_schema(process: ServiceProcess) -> tuple[str, str]:
    catalog = f"r{uuid.uuid4().hex[:8]}"
    client = RegistryClient(process.address, ADMIN_TOKEN)
    try:
        await client.ensure_schema(catalog, "models")
    finally:
        await client.channel.close()
    return catalog, f"{catalog}.models"


async def test_both_replicas_serve_grpc_and_mlflow_rest_on_the_same_data(mesh: Mesh, tmp_path: Path):
    a, b = mesh.registries
    catalog, schema = await _new_schema(a)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(4096))
    # Made through A's gRPC API...
    client = RegistryClient(a.address, ADMIN_TOKEN)
    try:
        version = await client.register(f"{schema}.via_grpc", folder)
        await client.set_alias(f"{schema}.via_grpc", "champion", version)
    finally:
        await client.channel.close()

    # ...read through B's MLflow REST API with the stock client.
    def read_on_b(mc: MlflowClient):
        model = mc.get_registered_model(f"{schema}.via_grpc")
        by_alias = mc.get_model_version_by_alias(f"{schema}.via_grpc", "champion")
        return model.name, by_alias.version, sorted(model.aliases)

    name, read_version, aliases = await asyncio.to_thread(_mlflow, b, ADMIN_TOKEN, read_on_b)
    assert (name, int(read_version), aliases) == (f"{schema}.via_grpc", version, ["champion"])

    # And the other way round: made with the mlflow client on B, read through A's gRPC API.
    def create_on_b(mc: MlflowClient):
        mc.create_registered_model(f"{schema}.via_rest", description="made on B")
        run = mc.create_run(mc.create_experiment(f"replicas-{uuid.uuid4().hex[:8]}"))
        mc.log_metric(run.info.run_id, "loss", 0.25)
        return run.info.run_id

    run_id = await asyncio.to_thread(_mlflow, b, ADMIN_TOKEN, create_on_b)
    channel, stub = _stub(a)
    try:
        model = await stub.GetRegisteredModel(
            pb.GetRegisteredModelRequest(full_name=f"{schema}.via_rest"), metadata=ADMIN
        )
        assert model.description == "made on B"
        run = await stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=ADMIN)
        assert [(m.key, m.value) for m in run.data.metrics] == [("loss", 0.25)]
    finally:
        await channel.close()


async def test_a_grant_made_on_one_replica_is_enforced_by_the_other(mesh: Mesh):
    a, b = mesh.registries
    catalog, schema = await _new_schema(a)
    model = f"{schema}.guarded"
    (a_channel, a_stub), (b_channel, b_stub) = _stub(a), _stub(b)
    try:
        await a_stub.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=ADMIN)
        read = pb.GetRegisteredModelRequest(full_name=model)

        async def code_on_b() -> grpc.StatusCode:
            try:
                await b_stub.GetRegisteredModel(read, metadata=ALICE)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        def rest_on_b():
            try:
                _mlflow(b, USER_TOKENS["alice"], lambda mc: mc.get_registered_model(model))
            except MlflowException as exc:
                return exc.error_code
            return "OK"

        assert await code_on_b() == grpc.StatusCode.PERMISSION_DENIED
        assert await asyncio.to_thread(rest_on_b) == "PERMISSION_DENIED"
        grant = dict(
            securable_type=pb.SECURABLE_TYPE_CATALOG,
            securable_full_name=catalog,
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA, pb.PRIVILEGE_EXECUTE],
        )
        await a_stub.Grant(pb.GrantRequest(**grant), metadata=ADMIN)
        # The registry keeps no answers in memory: B reads the grant A committed, at once.
        assert await code_on_b() == grpc.StatusCode.OK
        assert await asyncio.to_thread(rest_on_b) == "OK"
        await a_stub.Revoke(pb.RevokeRequest(**grant), metadata=ADMIN)
        assert await code_on_b() == grpc.StatusCode.PERMISSION_DENIED
        assert await asyncio.to_thread(rest_on_b) == "PERMISSION_DENIED"
    finally:
        await a_channel.close()
        await b_channel.close()


async def test_every_event_goes_out_once_with_both_publishers_running(mesh: Mesh):
    a, b = mesh.registries
    catalog, _ = await _new_schema(a)
    tag = uuid.uuid4().hex[:6]
    principals = [f"p{i}-{tag}" for i in range(120)]
    (a_channel, a_stub), (b_channel, b_stub) = _stub(a), _stub(b)
    try:
        # Both replicas commit changes at once, so both publishers wake and race for the same rows.
        async def grant_through(stub, names: list[str]) -> None:
            for name in names:
                await stub.Grant(_grant(catalog, name), metadata=ADMIN)

        await asyncio.gather(grant_through(a_stub, principals[0::2]), grant_through(b_stub, principals[1::2]))
    finally:
        await a_channel.close()
        await b_channel.close()
    published = await _published(mesh, set(principals))
    # Both publishers ran the whole time and neither died: one record per change, no copies.
    assert published.per_change() == dict.fromkeys(principals, 1), _not_once(published.per_change(), principals)
    assert set(published.copies().values()) == {1}
    assert _unsent_rows(mesh) == 0


async def test_a_replica_killed_mid_burst_loses_no_event_announces_none_twice_and_the_survivor_serves(mesh: Mesh):
    victim = mesh.registries[1]
    survivor = mesh.registries[0]
    catalog, _ = await _new_schema(survivor)
    tag = uuid.uuid4().hex[:6]
    acknowledged: list[str] = []
    attempted: list[str] = []
    (v_channel, v_stub), (s_channel, s_stub) = _stub(victim), _stub(survivor)
    try:

        async def burst(stub, prefix: str, count: int) -> None:
            for i in range(count):
                name = f"{prefix}{i}-{tag}"
                attempted.append(name)
                try:
                    await stub.Grant(_grant(catalog, name), metadata=ADMIN, timeout=10)
                except grpc.aio.AioRpcError:
                    return  # the victim is gone: its in-flight change may or may not have committed
                acknowledged.append(name)

        async def kill_midway() -> None:
            # Once the victim has committed some changes (and is publishing), with more on the way.
            while sum(1 for n in acknowledged if n.startswith("v")) < 60:  # noqa: ASYNC110 - watching the burst
                await asyncio.sleep(0.005)
            victim.kill()

        await asyncio.gather(burst(v_stub, "v", 400), burst(s_stub, "s", 150), kill_midway())
        assert not victim.alive()
        # The survivor keeps serving, and its changes after the kill go out too.
        after = [f"after{i}-{tag}" for i in range(10)]
        for name in after:
            await s_stub.Grant(_grant(catalog, name), metadata=ADMIN, timeout=10)
        acknowledged.extend(after)
        attempted.extend(after)
        listed = await s_stub.ListGrants(
            pb.ListGrantsRequest(securable_type=pb.SECURABLE_TYPE_CATALOG, securable_full_name=catalog),
            metadata=ADMIN,
        )
    finally:
        await v_channel.close()
        await s_channel.close()
    committed = {g.principal for g in listed.assignments} & set(attempted)
    assert set(acknowledged) <= committed
    assert sum(1 for n in acknowledged if n.startswith("v")) >= 60 > 0
    # The victim's committed but unpublished rows are the survivor's to publish.
    assert await eventually(lambda: _unsent_rows(mesh) == 0, timeout=60), f"{_unsent_rows(mesh)} events never sent"
    published = await _published(mesh, committed)
    per_change = published.per_change()
    assert set(per_change) == committed, f"lost: {sorted(committed - set(per_change))[:10]}"
    # Every committed change announced by one event (a change in flight at the kill that rolled back: none).
    assert set(per_change.values()) == {1}, _not_once(per_change, sorted(committed))
    # The outbox is at-least-once across a crash (DESIGN: consumers dedupe on the event id): a batch the
    # victim had produced but not yet marked sent goes out again from the survivor. Only that: copies
    # are the same event (id and bytes) and at most one claimed batch of them.
    again = {event_id for event_id, n in published.copies().items() if n > 1}
    assert len(again) <= OutboxPublisher.BATCH
    values = {}
    for _, event_id, value in published.records:
        assert values.setdefault(event_id, value) == value, f"{event_id} went out twice with different bytes"
    if again:
        print(f"{len(again)} of {len(values)} events re-sent after the kill (ids {sorted(again)[:3]}...)")


# -- helpers -----------------------------------------------------------------------------------------


def _grant(catalog: str, principal: str) -> pb.GrantRequest:
    return pb.GrantRequest(
        securable_type=pb.SECURABLE_TYPE_CATALOG,
        securable_full_name=catalog,
        principal=principal,
        privileges=[pb.PRIVILEGE_USE_CATALOG],
    )


def _not_once(counts: dict[str, int], principals: list[str]) -> str:
    missing = [p for p in principals if p not in counts]
    twice = {p: n for p, n in counts.items() if n != 1}
    return f"{len(missing)} missing (e.g. {missing[:5]}), {len(twice)} not once: {dict(list(twice.items())[:5])}"


def _unsent_rows(mesh: Mesh) -> int:
    with psycopg.connect(mesh.pg_dsn) as conn:
        return conn.execute(
            sql.SQL("SELECT count(*) FROM {}.outbox WHERE sent_at IS NULL").format(
                sql.Identifier(mesh.schemas["registry"])
            )
        ).fetchone()[0]


@dataclass(frozen=True)
class Published:
    """GRANT_CHANGED records on the events topic for a set of grantees."""

    # (grantee, event id, record value) in topic order.
    records: list[tuple[str, str, bytes]]

    def per_change(self) -> Counter[str]:
        """Distinct events per change (grantee): more than one would be a change announced twice."""
        return Counter(principal for principal, _ in {(p, e) for p, e, _ in self.records})

    def copies(self) -> Counter[str]:
        """Records per event id: more than one is the same event sent again."""
        return Counter(event_id for _, event_id, _ in self.records)


async def _published(mesh: Mesh, principals: set[str]) -> Published:
    """Read the events topic from the start until every one of `principals` was seen (and a few
    seconds more, for a late copy)."""
    return await asyncio.to_thread(_read_events, mesh, principals, 90.0)


def _read_events(mesh: Mesh, principals: set[str], timeout_s: float) -> Published:
    consumer = Consumer(
        {
            "bootstrap.servers": mesh.kafka_bootstrap,
            "group.id": f"registry-replicas-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([mesh.topics["registry"]])
    records: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()
    deadline, settle_until = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error():
                    continue
                event = ev.RegistryEvent.FromString(message.value())
                if event.type == ev.RegistryEvent.GRANT_CHANGED and event.grant.principal in principals:
                    records.append((event.grant.principal, event.event_id, message.value()))
                    seen.add(event.grant.principal)
            if settle_until is None and principals <= seen:
                settle_until = time.monotonic() + 3.0
            if settle_until is not None and time.monotonic() > settle_until:
                break
    finally:
        consumer.close()
    return Published(records)
