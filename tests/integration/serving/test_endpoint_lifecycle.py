"""The endpoint core on the real PostgreSQL: ownership, paging past hidden rows, replicas in step, races.

The registry is an in-memory stand-in here (registry_standin.py), so these run
without a registry process; test_endpoint_access.py and test_replicas.py check
the same behaviour end to end against the real registry and Kafka.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from services.common.auth import Principal
from services.common.db import Database, migrate
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.serving.endpoints import EndpointControl
from services.serving.entities import EndpointSpec, ServedModelSpec, TensorCall
from services.serving.inference import InferenceCore, Limits
from services.serving.model_pool import ModelPool
from services.serving.payload_log import PayloadRecord
from services.serving.store import MIGRATIONS, EndpointStore
from tests.integration.serving.registry_standin import Catalog, Privileges, Runtime

pytestmark = pytest.mark.integration

ALICE, BOB = Principal("alice"), Principal("bob")
MODEL = "c.s.tab"


class RecordedLogs:
    """The core's payload-log writer, keeping records in memory (these tests are about the core)."""

    def __init__(self) -> None:
        self.records: list[PayloadRecord] = []

    def submit(self, record: PayloadRecord) -> None:
        self.records.append(record)

    def check_capacity(self) -> None:
        return None


class Replica:
    def __init__(self, db: Database, catalog: Catalog, privileges: Privileges) -> None:
        self.pool = ModelPool(catalog, Runtime, drain_timeout_s=5)
        self.endpoints = EndpointControl(EndpointStore(db), catalog, self.pool, privileges, default_concurrency=8)
        self.log = RecordedLogs()
        self.inference = InferenceCore(self.endpoints, Limits(max_request_bytes=1 << 20, max_tokens=16), self.log)


@pytest_asyncio.fixture
async def world(pg_dsn: str, tmp_path: Path):
    db = await Database(pg_dsn, f"serving_lc{uuid.uuid4().hex[:8]}").open()
    await migrate(db, MIGRATIONS)
    catalog, privileges = Catalog(tmp_path), Privileges()
    for version in (1, 2, 3):
        catalog.add(MODEL, version)
    privileges.grant("alice", "REGISTERED_MODEL", MODEL, "EXECUTE")
    replicas = [Replica(db, catalog, privileges), Replica(db, catalog, privileges)]
    yield replicas, catalog, privileges
    for replica in replicas:
        await replica.endpoints.stop()
    async with db.connection() as conn:
        await conn.execute(f"DROP SCHEMA {db.schema} CASCADE")
    await db.close()


def _spec(name: str, version: int = 1, alias: str | None = None) -> EndpointSpec:
    served = ServedModelSpec(MODEL, version=None if alias else version, alias=alias)
    return EndpointSpec(name, (served,))


async def _settled(endpoints: EndpointControl, name: str) -> None:
    """Until the replacement loading for `name` (if any) serves and the old one is unloaded."""
    pending = endpoints._pending.get(name)
    if pending is not None:
        await pending.loaded.wait()
    while endpoints._retiring:
        await asyncio.gather(*list(endpoints._retiring))


def _call(name: str) -> TensorCall:
    return TensorCall(name, f"r-{uuid.uuid4().hex[:8]}", "grpc", {"x": np.array([1.0])})


async def test_only_the_owner_or_a_manager_updates_or_deletes_an_endpoint(world) -> None:
    (a, _), _catalog, privileges = world
    await a.endpoints.create(_spec("prod"), ALICE, wait=True)
    privileges.grant("bob", "REGISTERED_MODEL", MODEL, "EXECUTE")

    with pytest.raises(PermissionDenied, match="MANAGE"):
        await a.endpoints.update(_spec("prod", 2), BOB)
    with pytest.raises(PermissionDenied, match="MANAGE"):
        await a.endpoints.delete("prod", BOB)
    privileges.grant("bob", "ENDPOINT", "prod", "MANAGE")
    await a.endpoints.delete("prod", BOB)

    with pytest.raises(NotFound):
        await a.endpoints.get("prod", ALICE)
    assert ("UNREGISTERED", "prod") in privileges.events


async def test_a_create_whose_registration_fails_stores_nothing(world) -> None:
    (a, _), _catalog, privileges = world
    privileges.fail_register = True

    with pytest.raises(PermissionDenied):
        await a.endpoints.create(_spec("orphan"), ALICE)

    assert await a.endpoints._store.list() == []
    with pytest.raises(NotFound):
        a.endpoints.deployment("orphan")


async def test_a_second_create_of_a_name_is_already_exists_and_leaves_the_first(world) -> None:
    (a, _), _catalog, _privileges = world
    await a.endpoints.create(_spec("dup"), ALICE, wait=True)

    with pytest.raises(AlreadyExists):
        await a.endpoints.create(_spec("dup", 2), ALICE)

    assert (await a.endpoints.get("dup", ALICE)).stored.spec.served_models[0].version == 1


async def test_get_and_list_show_only_endpoints_the_caller_holds_a_privilege_on(world) -> None:
    (a, _), _catalog, privileges = world
    for name in ("e1", "e2", "e3", "e4", "e5"):
        await a.endpoints.create(_spec(name), ALICE)
    privileges.grant("bob", "ENDPOINT", "e5", "SELECT")

    with pytest.raises(NotFound):
        await a.endpoints.get("e1", BOB)
    assert not await a.endpoints.may_call("e5", BOB)  # SELECT shows it, only EXECUTE calls it
    assert await a.endpoints.may_call("e5", ALICE) and not await a.endpoints.may_call("nowhere", ALICE)
    first = await a.endpoints.list(BOB, 1, "")

    # Four hidden rows come first: the page still holds the visible one, and says nothing follows.
    assert [v.stored.spec.name for v in first.items] == ["e5"]
    assert first.next_token == ""
    assert [v.stored.spec.name for v in (await a.endpoints.list(ALICE, 2, "")).items] == ["e1", "e2"]


async def test_list_keeps_its_token_over_a_thousand(world) -> None:
    (a, _), _catalog, privileges = world
    store = a.endpoints._store
    for index in range(1001):
        await store.create(_spec(f"bulk-{index:04d}"), "alice")
        privileges.owners[("ENDPOINT", f"bulk-{index:04d}")] = "alice"

    page = await a.endpoints.list(ALICE, 5000, "")
    rest = await a.endpoints.list(ALICE, 5000, page.next_token)

    assert len(page.items) == 1000 and page.next_token
    assert [v.stored.spec.name for v in rest.items] == ["bulk-1000"] and rest.next_token == ""


async def test_a_change_on_one_replica_is_applied_by_the_other(world) -> None:
    (a, b), _catalog, _privileges = world
    await a.endpoints.create(_spec("shared"), ALICE, wait=True)

    await b.endpoints.apply("shared")  # what the SECURABLE_REGISTERED event makes every replica do
    await b.endpoints.deployment("shared").loaded.wait()
    assert (await b.inference.infer(_call("shared"), ALICE)).model_version == 1

    await a.endpoints.update(_spec("shared", 2), ALICE, wait=True)
    await b.endpoints.apply("shared")
    await b.endpoints.apply("shared")  # applying twice changes nothing
    await _settled(b.endpoints, "shared")
    assert (await b.inference.infer(_call("shared"), ALICE)).model_version == 2

    await a.endpoints.delete("shared", ALICE)
    await b.endpoints.apply("shared")
    with pytest.raises(NotFound):
        await b.inference.infer(_call("shared"), ALICE)


async def test_concurrent_updates_leave_one_engine_and_run_what_is_stored(world) -> None:
    (a, _), _catalog, _privileges = world
    await a.endpoints.create(_spec("racy"), ALICE, wait=True)
    Runtime.load_s = 0.05  # loads overlap the next update
    try:
        updates = (a.endpoints.update(_spec("racy", v), ALICE, wait=True) for v in (2, 3, 2, 3, 1, 2))
        await asyncio.gather(*updates)
        await _settled(a.endpoints, "racy")
    finally:
        Runtime.load_s = 0.0

    stored = await a.endpoints._store.get("racy")
    running = a.endpoints.deployment("racy")
    assert running.stored == stored
    assert [r.model.version for r in running.routes] == [stored.spec.served_models[0].version]
    assert a.pool.loaded() == 1


async def test_requests_running_through_a_switch_all_succeed(world) -> None:
    (a, _), _catalog, _privileges = world
    await a.endpoints.create(_spec("busy"), ALICE, wait=True)
    Runtime.delay_s = 0.01
    try:
        calls = [asyncio.create_task(a.inference.infer(_call("busy"), ALICE, wait=True)) for _ in range(40)]
        for version in (2, 3, 1):
            await a.endpoints.update(_spec("busy", version), ALICE, wait=True)
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        Runtime.delay_s = 0.0
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {r.model_version for r in results} <= {1, 2, 3}


async def test_an_alias_on_a_version_that_is_not_ready_is_not_followed(world) -> None:
    (a, _), catalog, _privileges = world
    catalog.aliases[(MODEL, "champion")] = 1
    catalog.add(MODEL, 4, status="PENDING_UPLOAD")
    await a.endpoints.create(_spec("champ", alias="champion"), ALICE, wait=True)

    catalog.aliases[(MODEL, "champion")] = 4
    await a.endpoints.refresh_aliases(MODEL)
    view = await a.endpoints.get("champ", ALICE)

    assert (await a.inference.infer(_call("champ"), ALICE)).model_version == 1
    assert "not READY" in view.served[0].reason


async def test_a_recreated_model_with_the_same_name_loads_new_files(world) -> None:
    (a, _), catalog, _privileges = world
    await a.endpoints.create(_spec("old"), ALICE, wait=True)
    old_model = a.endpoints.deployment("old").routes[0].model

    catalog.generation[MODEL] += 1  # deleted and registered again: v1 is another version now
    await a.endpoints.create(_spec("new"), ALICE, wait=True)

    assert a.endpoints.deployment("new").routes[0].model is not old_model
    assert a.pool.loaded() == 2


async def test_out_of_bounds_names_are_invalid_argument_before_any_work(world) -> None:
    (a, _), _catalog, privileges = world
    events = len(privileges.events)

    for name in ("ok-name\n", "x" * 129, "", "white space"):
        with pytest.raises(InvalidArgument):
            await a.endpoints.create(_spec(name), ALICE)
    with pytest.raises(InvalidArgument, match="request ids"):
        await a.inference.infer(TensorCall("e", "r" * 12_000, "grpc", {}), ALICE)
    with pytest.raises(InvalidArgument, match="labels"):
        await a.inference.infer(TensorCall("e", "r", "grpc", {}, labels={f"k{i}": "v" for i in range(100)}), ALICE)

    assert len(privileges.events) == events
    refused = a.log.records
    assert all(len(r.request_id) <= 128 and r.inputs == {} for r in refused)


async def test_a_refused_call_logs_only_its_status_and_principal(world) -> None:
    (a, _), _catalog, _privileges = world
    await a.endpoints.create(_spec("private"), ALICE, wait=True)
    call = TensorCall("private", "refused-1", "grpc", {"x": np.array([1e6])}, labels={"tenant": "eve"})

    with pytest.raises(PermissionDenied):
        await a.inference.infer(call, BOB)

    (record,) = a.log.records
    assert (record.status, record.principal) == ("PERMISSION_DENIED", "bob")
    assert record.inputs == {} and record.outputs == {} and record.labels == {}


async def test_endpoints_stored_before_they_were_securables_are_registered_at_start(world) -> None:
    (a, _), _catalog, privileges = world
    await a.endpoints._store.create(_spec("legacy"), "carol")

    await a.endpoints.start()
    await a.endpoints._adopting
    await a.endpoints.deployment("legacy").loaded.wait()

    assert privileges.owners[("ENDPOINT", "legacy")] == "carol"
    assert (await a.inference.infer(_call("legacy"), Principal("carol"))).model_version == 1
