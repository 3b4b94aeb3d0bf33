"""Monitoring follows the registry's grants: SELECT on an endpoint reads its inference table and
creates monitors on it; a monitor belongs to its creator; SELECT reads it, MANAGE deletes it."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.registry.v1 import registry_pb2 as reg
from tessera.registry.v1 import registry_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.common.kafka_producer import EventProducer
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from tests.integration.monitoring.conftest import WINDOW, past_window_base, produce_windows

pytestmark = pytest.mark.integration

TOKENS = "admin-token=admin,services-token=tessera-services,alice-token=alice,bob-token=bob"
ADMIN, SERVICES, ALICE, BOB = (bearer(f"{who}-token") for who in ("admin", "services", "alice", "bob"))


@pytest.fixture(scope="module")
async def mesh(pg_dsn, kafka_bootstrap):
    """The real registry and a monitoring service that asks it, each with its own schema and topics."""
    suffix = uuid.uuid4().hex[:8]
    events_topic = f"test.registry.{suffix}"
    payload_topic = f"test.monitoring.logs.{suffix}"
    kafka_admin.ensure_topics(
        kafka_bootstrap, [events_topic, payload_topic, payload_topic + ".dlq", f"test.drift.{suffix}"], partitions=1
    )
    registry = RegistryApp(
        load(
            RegistrySettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            registry_http_port=-1,
            registry_schema=f"registry_t_{suffix}",
            registry_events_topic=events_topic,
            registry_service_principals=("tessera-services",),
            auth_tokens=TOKENS,
        ),
        serve_metrics=False,
    )
    await registry.start()
    monitoring = MonitoringApp(
        load(
            MonitoringSettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            monitoring_schema=f"monitoring_t_{suffix}",
            monitoring_payload_topic=payload_topic,
            monitoring_drift_topic=f"test.drift.{suffix}",
            monitoring_consumer_group=f"test-monitoring-{suffix}",
            monitoring_window_grace_s=1.0,
            monitoring_idle_watermark_s=1.0,
            monitoring_evaluate_every_s=0.2,
            monitoring_authz="registry",
            registry_address=f"127.0.0.1:{registry.grpc_port}",
            registry_events_topic=events_topic,
            service_token="services-token",
            auth_tokens=TOKENS,
        ),
        serve_metrics=False,
    )
    await monitoring.start()
    await monitoring.consumer.wait_assigned()
    reg_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.grpc_port}")
    mon_channel = grpc.aio.insecure_channel(f"127.0.0.1:{monitoring.port}")
    producer = EventProducer(kafka_bootstrap, client_id="monitoring-permissions-test")
    yield (
        registry_pb2_grpc.RegistryServiceStub(reg_channel),
        monitoring_pb2_grpc.MonitoringServiceStub(mon_channel),
        producer,
        payload_topic,
    )
    producer.close()
    await reg_channel.close()
    await mon_channel.close()
    await monitoring.stop()
    await registry.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for schema in (f"registry_t_{suffix}", f"monitoring_t_{suffix}"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def register_endpoint(registry, name: str, owner: str) -> None:
    """What serving does when `owner` creates the endpoint."""
    await registry.RegisterSecurable(
        reg.RegisterSecurableRequest(securable_type=reg.SECURABLE_TYPE_ENDPOINT, securable_full_name=name, owner=owner),
        metadata=SERVICES,
    )


async def grant(registry, kind, name: str, principal: str, *privileges) -> None:
    await registry.Grant(
        reg.GrantRequest(securable_type=kind, securable_full_name=name, principal=principal, privileges=privileges),
        metadata=ADMIN,
    )


async def until_allowed(check, timeout: float = 60.0):
    """Poll `check` until it is truthy, reading PERMISSION_DENIED as 'not yet' (grants reach caches by events)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            result = False
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.3)


def records_request(endpoint: str) -> pb.ListInferenceRecordsRequest:
    request = pb.ListInferenceRecordsRequest(endpoint=endpoint)
    request.page.page_size = 500
    return request


def monitor_for(endpoint: str, base: int, monitor_id: str = "") -> pb.Monitor:
    monitor = pb.Monitor(
        monitor_id=monitor_id, endpoint=endpoint, features=[pb.FeatureSpec(path="latency_ms")], window_seconds=WINDOW
    )
    monitor.baseline.time_range.start.FromSeconds(base)
    monitor.baseline.time_range.end.FromSeconds(base + 2 * WINDOW)
    return monitor


async def denied(call) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()


async def test_without_grants_every_rpc_on_anothers_objects_is_denied_and_select_reads(mesh):
    registry, stub, producer, topic = mesh
    endpoint, base = f"ep-{uuid.uuid4().hex[:8]}", past_window_base(300)
    await register_endpoint(registry, endpoint, "alice")
    produce_windows(producer, topic, endpoint, base, [100, 100, 100, 140], per_window=250)

    async def all_logged():
        reply = await stub.ListInferenceRecords(records_request(endpoint), metadata=ALICE)
        return len(reply.records) == 500 and reply.page.next_page_token

    assert await until_allowed(all_logged)
    monitor = await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor_for(endpoint, base)), metadata=ALICE)
    mid = monitor.monitor_id

    # bob holds nothing: every call touching alice's endpoint or monitor is refused.
    await denied(stub.ListInferenceRecords(records_request(endpoint), metadata=BOB))
    await denied(stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor_for(endpoint, base)), metadata=BOB))
    await denied(stub.GetMonitor(pb.GetMonitorRequest(monitor_id=mid), metadata=BOB))
    await denied(stub.GetProfiles(pb.GetProfilesRequest(monitor_id=mid, feature="latency_ms"), metadata=BOB))
    await denied(stub.ListDriftMetrics(pb.ListDriftMetricsRequest(monitor_id=mid), metadata=BOB))
    await denied(stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=mid), metadata=BOB))
    await denied(stub.DeleteMonitor(pb.DeleteMonitorRequest(monitor_id=mid), metadata=BOB))
    listed = await stub.ListMonitors(pb.ListMonitorsRequest(endpoint=endpoint), metadata=BOB)
    assert [m.monitor_id for m in listed.monitors] == []
    # The owner reads everything.
    assert (await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=mid), metadata=ALICE)).endpoint == endpoint
    listed = await stub.ListMonitors(pb.ListMonitorsRequest(endpoint=endpoint), metadata=ALICE)
    assert [m.monitor_id for m in listed.monitors] == [mid]

    # SELECT grants reading, not deleting.
    await grant(registry, reg.SECURABLE_TYPE_ENDPOINT, endpoint, "bob", reg.PRIVILEGE_SELECT)
    await grant(registry, reg.SECURABLE_TYPE_MONITOR, mid, "bob", reg.PRIVILEGE_SELECT)

    async def bob_reads():
        records = await stub.ListInferenceRecords(records_request(endpoint), metadata=BOB)
        fetched = await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=mid), metadata=BOB)
        return len(records.records) == 500 and fetched.monitor_id == mid

    assert await until_allowed(bob_reads)
    await stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=mid), metadata=BOB)
    await stub.ListDriftMetrics(pb.ListDriftMetricsRequest(monitor_id=mid), metadata=BOB)
    listed = await stub.ListMonitors(pb.ListMonitorsRequest(endpoint=endpoint), metadata=BOB)
    assert [m.monitor_id for m in listed.monitors] == [mid]
    await denied(stub.DeleteMonitor(pb.DeleteMonitorRequest(monitor_id=mid), metadata=BOB))

    # The owner deletes it; the registry forgets it (and bob's grant with it).
    await stub.DeleteMonitor(pb.DeleteMonitorRequest(monitor_id=mid), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=mid), metadata=BOB)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    # Its registry name is free again (registering it would fail with ALREADY_EXISTS otherwise).
    await registry.RegisterSecurable(
        reg.RegisterSecurableRequest(securable_type=reg.SECURABLE_TYPE_MONITOR, securable_full_name=mid, owner="carol"),
        metadata=SERVICES,
    )
    # bob, with SELECT on the endpoint, may now create a monitor of his own.
    own = await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor_for(endpoint, base)), metadata=BOB)
    assert (await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=own.monitor_id), metadata=BOB)).endpoint == endpoint


async def test_a_monitor_whose_registration_fails_is_not_created(mesh):
    registry, stub, _producer, _topic = mesh
    endpoint, taken = f"ep-{uuid.uuid4().hex[:8]}", f"mon-{uuid.uuid4().hex[:8]}"
    await register_endpoint(registry, endpoint, "alice")
    await registry.RegisterSecurable(
        reg.RegisterSecurableRequest(securable_type=reg.SECURABLE_TYPE_MONITOR, securable_full_name=taken, owner="bob"),
        metadata=SERVICES,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateMonitor(
            pb.CreateMonitorRequest(monitor=monitor_for(endpoint, past_window_base(), taken)), metadata=ALICE
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, err.value.details()
    listed = await stub.ListMonitors(pb.ListMonitorsRequest(endpoint=endpoint), metadata=ADMIN)
    assert listed.monitors == []
