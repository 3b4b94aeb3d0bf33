"""The monitoring service end to end on real Kafka and PostgreSQL: inference table, drift
events with hysteresis, quiet unshifted streams, idempotent redelivery, late records, DLQ."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import grpc
import numpy as np
import psycopg
import pytest
from confluent_kafka import Consumer
from psycopg import sql
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.monitoring.v1 import monitoring_pb2 as pb

from services.common.kafka_consumer import ERROR_HEADER
from services.monitoring import plot
from tests.integration.monitoring.conftest import (
    METADATA,
    TOKEN,
    WINDOW,
    past_window_base,
    payload_log,
    produce_windows,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration


def endpoint_name() -> str:
    return f"ep-{uuid.uuid4().hex[:8]}"


async def create_monitor(stub, endpoint: str, base: int, baseline_windows: int, **extra) -> pb.Monitor:
    monitor = pb.Monitor(
        endpoint=endpoint,
        features=[pb.FeatureSpec(path="latency_ms"), pb.FeatureSpec(path="finish_reason")],
        window_seconds=WINDOW,
        **extra,
    )
    monitor.baseline.time_range.start.FromSeconds(base)
    monitor.baseline.time_range.end.FromSeconds(base + baseline_windows * WINDOW)
    return await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=METADATA)


async def windows_evaluated(stub, monitor_id: str, last_window_start: int) -> bool:
    reply = await stub.ListDriftMetrics(
        pb.ListDriftMetricsRequest(monitor_id=monitor_id, feature="latency_ms", statistic="wasserstein"),
        metadata=METADATA,
    )
    return any(
        m.window_start.seconds == last_window_start for m in reply.metrics if m.comparison == DriftEvent.BASELINE
    )


def drift_topic_events(bootstrap: str, topic: str, monitor_id: str) -> list[DriftEvent]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    events, idle_polls = [], 0
    while idle_polls < 6:
        message = consumer.poll(0.5)
        if message is None or message.error():
            idle_polls += 1
            continue
        event = DriftEvent.FromString(message.value())
        if event.monitor_id == monitor_id:
            events.append(event)
    consumer.close()
    return events


async def test_shifted_feature_raises_one_detected_and_one_resolved_event(
    monitoring, producer, kafka_bootstrap, tmp_path
):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(400)
    monitor = await create_monitor(stub, endpoint, base, baseline_windows=4)
    # Four baseline windows, two normal, two shifted by one standard deviation, three normal again.
    means = [100] * 4 + [100] * 2 + [110] * 2 + [100] * 3
    produce_windows(producer, monitoring.payload_topic, endpoint, base, means, per_window=1500)
    last = base + (len(means) - 1) * WINDOW
    assert await eventually(lambda: windows_evaluated(stub, monitor.monitor_id, last))

    reply = await stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=monitor.monitor_id), metadata=METADATA)
    latency_events = [e for e in reply.events if e.feature == "latency_ms" and e.statistic == "wasserstein"]
    assert [e.kind for e in latency_events] == [DriftEvent.DRIFT_DETECTED, DriftEvent.DRIFT_RESOLVED]
    detected, resolved = latency_events
    shift_start = base + 6 * WINDOW
    assert detected.window_start.seconds == shift_start  # within the first shifted window
    assert detected.value > detected.threshold and detected.comparison == DriftEvent.BASELINE
    assert resolved.window_start.seconds == shift_start + 2 * WINDOW
    assert detected.baseline.startswith("inference table")
    # The finish reason never changed: no event on it.
    assert not [e for e in reply.events if e.feature == "finish_reason"]
    # The same events went to Kafka.
    published = drift_topic_events(kafka_bootstrap, monitoring.drift_topic, monitor.monitor_id)
    assert sorted(e.event_id for e in published) == sorted(e.event_id for e in reply.events)

    # The picture of it, drawn from monitoring's gRPC API: one panel per feature and the window sizes.
    out = await plot.draw(f"127.0.0.1:{monitoring.port}", TOKEN, monitor.monitor_id, tmp_path / "drift.png")
    spec, metrics, events = await plot.load_monitor(stub, METADATA, monitor.monitor_id)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    # An alarm still open at the end of the data is shaded to the right edge.
    still_open = tmp_path / "drift-open.png"
    plot.render(spec, metrics, [e for e in events if e.kind == DriftEvent.DRIFT_DETECTED], still_open)
    assert still_open.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TESSERA_KEEP_DRIFT_PNG"):
        shutil.copy(out, os.environ["TESSERA_KEEP_DRIFT_PNG"])


async def test_unshifted_stream_of_many_windows_raises_no_event(monitoring, producer):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(300)
    monitor = await create_monitor(stub, endpoint, base, baseline_windows=4)
    means = [100] * 20  # 100,000 records over 20 windows, all from the same distribution
    produce_windows(producer, monitoring.payload_topic, endpoint, base, means, per_window=5000, seed=11)
    assert await eventually(lambda: windows_evaluated(stub, monitor.monitor_id, base + 19 * WINDOW), timeout=180)
    reply = await stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=monitor.monitor_id), metadata=METADATA)
    assert list(reply.events) == []
    metrics = await stub.ListDriftMetrics(
        pb.ListDriftMetricsRequest(monitor_id=monitor.monitor_id, feature="latency_ms"), metadata=METADATA
    )
    assert metrics.metrics and not any(m.drifted for m in metrics.metrics if m.threshold > 0)
    profiles = await stub.GetProfiles(
        pb.GetProfilesRequest(monitor_id=monitor.monitor_id, feature="latency_ms", merge=True), metadata=METADATA
    )
    (whole,) = profiles.profiles
    assert whole.count == 100_000
    assert 99 < whole.mean < 101 and 9 < whole.std < 11
    assert 98 < whole.quantiles[3] < 102  # the median, from the sketch


async def test_redelivered_payload_logs_leave_exactly_one_row_each(monitoring, producer):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(200)
    monitor = await create_monitor(stub, endpoint, base, baseline_windows=1)
    logs = produce_windows(producer, monitoring.payload_topic, endpoint, base, [100, 100], per_window=300)
    for log in logs[:450]:  # redeliver three quarters of them
        producer.produce(monitoring.payload_topic, log, key=endpoint, record_id=log.request_id)
    producer.flush_sync()
    await eventually(lambda: windows_evaluated(stub, monitor.monitor_id, base + WINDOW))

    async def all_rows():
        ids, token = [], ""
        while True:
            reply = await stub.ListInferenceRecords(_records_request(endpoint, token), metadata=METADATA)
            ids += [r.request_id for r in reply.records]
            token = reply.page.next_page_token
            if not token:
                return ids

    ids = await all_rows()
    assert len(ids) == 600 and len(set(ids)) == 600
    profiles = await stub.GetProfiles(
        pb.GetProfilesRequest(monitor_id=monitor.monitor_id, feature="latency_ms", merge=True), metadata=METADATA
    )
    assert profiles.profiles[0].count == 600  # profiles did not count the redeliveries either
    newest = await stub.ListInferenceRecords(_records_request(endpoint, "", size=1), metadata=METADATA)
    assert newest.records[0].request_id == logs[-1].request_id
    assert newest.records[0].inputs["prompt"] == "x" * 40
    # Filters: a time range (the second window only) and a status.
    second_window = _records_request(endpoint, "", size=1000)
    second_window.start_time.FromSeconds(base + WINDOW)
    second_window.end_time.FromSeconds(base + 2 * WINDOW)
    in_range = await stub.ListInferenceRecords(second_window, metadata=METADATA)
    assert len(in_range.records) == 300 and all(r.request_id.startswith(f"{endpoint}-1-") for r in in_range.records)
    failed = _records_request(endpoint, "")
    failed.status = "INTERNAL"
    assert list((await stub.ListInferenceRecords(failed, metadata=METADATA)).records) == []
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await stub.ListInferenceRecords(_records_request(endpoint, "garbage"), metadata=METADATA)
    assert bad_token.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _records_request(endpoint: str, token: str, size: int = 250) -> pb.ListInferenceRecordsRequest:
    request = pb.ListInferenceRecordsRequest(endpoint=endpoint)
    request.page.page_size = size
    request.page.page_token = token
    return request


async def test_late_record_updates_its_closed_window(monitoring, producer):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(100)
    monitor = await create_monitor(stub, endpoint, base, baseline_windows=2)
    produce_windows(producer, monitoring.payload_topic, endpoint, base, [100, 100, 100, 100], per_window=300)
    late_window = base + 2 * WINDOW

    async def window_count():
        reply = await stub.ListDriftMetrics(
            pb.ListDriftMetricsRequest(monitor_id=monitor.monitor_id, feature="latency_ms", statistic="psi"),
            metadata=METADATA,
        )
        counts = [
            m.count
            for m in reply.metrics
            if m.window_start.seconds == late_window and m.comparison == DriftEvent.BASELINE
        ]
        return counts[0] if counts else 0

    assert await eventually(lambda: windows_evaluated(stub, monitor.monitor_id, base + 3 * WINDOW))
    assert await window_count() == 300
    late = payload_log(endpoint, f"{endpoint}-late", late_window + 30, 5000.0)
    producer.produce(monitoring.payload_topic, late, key=endpoint, record_id=late.request_id)
    producer.flush_sync()
    assert await eventually(lambda: _equals(window_count, 301))
    profiles = await stub.GetProfiles(
        pb.GetProfilesRequest(monitor_id=monitor.monitor_id, feature="latency_ms"), metadata=METADATA
    )
    (late_profile,) = [p for p in profiles.profiles if p.window_start.seconds == late_window]
    assert late_profile.count == 301 and late_profile.max == pytest.approx(5000.0)


async def _equals(read, expected):
    return await read() == expected


async def test_malformed_records_go_to_the_dlq_and_the_consumer_carries_on(monitoring, producer, kafka_bootstrap):
    stub, endpoint = monitoring.stub, endpoint_name()
    topic = monitoring.payload_topic
    producer.produce_bytes(topic, b"\xff\x00 not protobuf", headers=[("content-type", b"application/x-protobuf")])
    no_id = payload_log(endpoint, "", time.time(), 10.0)
    producer.produce(topic, no_id, key=endpoint)
    good = payload_log(endpoint, f"{endpoint}-good", time.time(), 10.0)
    producer.produce(topic, good, key=endpoint, record_id=good.request_id)
    producer.flush_sync()

    async def stored():
        reply = await stub.ListInferenceRecords(_records_request(endpoint, ""), metadata=METADATA)
        return [r.request_id for r in reply.records]

    assert await eventually(stored) == [good.request_id]
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic + ".dlq"])
    # A new group on a busy broker can take tens of seconds to be given its partitions.
    reasons, deadline = [], time.monotonic() + 90
    while len(reasons) < 2 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            reasons.append(dict(message.headers())[ERROR_HEADER].decode())
    consumer.close()
    assert any("invalid protobuf" in r for r in reasons)
    assert any("request_id" in r for r in reasons)


async def test_bad_monitor_requests_get_clear_errors(monitoring):
    stub = monitoring.stub
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetMonitor(pb.GetMonitorRequest(monitor_id="nope"), metadata=METADATA)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    no_baseline = pb.Monitor(endpoint="x", window_seconds=60)
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=no_baseline), metadata=METADATA)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "baseline" in invalid.value.details()
    bad_feature = pb.Monitor(endpoint="x", window_seconds=60, features=[pb.FeatureSpec(path="nonsense")])
    bad_feature.baseline.reference.values.add(feature="latency_ms", numbers=[1, 2, 3])
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=bad_feature), metadata=METADATA)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nonsense" in unknown.value.details()


async def test_reference_baseline_from_training_values(monitoring, producer):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(50)
    monitor = pb.Monitor(endpoint=endpoint, window_seconds=WINDOW, features=[pb.FeatureSpec(path="latency_ms")])

    monitor.baseline.reference.values.add(feature="latency_ms", numbers=np.random.default_rng(1).normal(100, 10, 5000))
    created = await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=METADATA)
    produce_windows(producer, monitoring.payload_topic, endpoint, base, [100, 120], per_window=1000, seed=3)
    assert await eventually(lambda: windows_evaluated(stub, created.monitor_id, base + WINDOW))
    reply = await stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=created.monitor_id), metadata=METADATA)
    detected = [e for e in reply.events if e.statistic == "wasserstein"]
    assert [e.window_start.seconds for e in detected] == [base + WINDOW]
    assert detected[0].baseline == "reference profiles"
    # A profile read back from one monitor is a valid reference baseline for another.
    profiles = await stub.GetProfiles(
        pb.GetProfilesRequest(monitor_id=created.monitor_id, feature="latency_ms", merge=True), metadata=METADATA
    )
    second = pb.Monitor(endpoint=endpoint, window_seconds=WINDOW, features=[pb.FeatureSpec(path="latency_ms")])
    second.baseline.reference.profiles.extend(profiles.profiles)
    copied = await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=second), metadata=METADATA)
    assert copied.baseline.HasField("reference")
    broken = pb.Monitor()
    broken.CopyFrom(second)
    broken.baseline.reference.profiles[0].count += 1
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=broken), metadata=METADATA)
    assert mismatch.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_monitors_list_get_and_delete(monitoring, producer):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(20)
    created = await create_monitor(stub, endpoint, base, baseline_windows=1)
    fetched = await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=created.monitor_id), metadata=METADATA)
    assert fetched == created and created.thresholds.values["wasserstein"] == pytest.approx(0.1)
    assert [f.path for f in fetched.features] == ["latency_ms", "finish_reason"]
    listed = await stub.ListMonitors(pb.ListMonitorsRequest(endpoint=endpoint), metadata=METADATA)
    assert [m.monitor_id for m in listed.monitors] == [created.monitor_id]
    await stub.DeleteMonitor(pb.DeleteMonitorRequest(monitor_id=created.monitor_id), metadata=METADATA)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=created.monitor_id), metadata=METADATA)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    # Records of an endpoint without monitors still land in the inference table.
    produce_windows(producer, monitoring.payload_topic, endpoint, base, [100], per_window=50)

    async def rows():
        reply = await stub.ListInferenceRecords(_records_request(endpoint, ""), metadata=METADATA)
        return len(reply.records) == 50

    assert await eventually(rows)


async def test_category_share_doubling_raises_and_resolves_and_refused_calls_are_not_profiled(monitoring, producer):
    stub, endpoint, base = monitoring.stub, endpoint_name(), past_window_base(600)
    monitor = await create_monitor(stub, endpoint, base, baseline_windows=4)
    rng = np.random.default_rng(5)
    length_share = [0.2] * 4 + [0.2] + [0.4] * 2 + [0.2] * 3  # "length" doubles for two windows
    for w, share in enumerate(length_share):
        for i in range(1000):
            log = payload_log(endpoint, f"{endpoint}-{w}-{i}", base + w * WINDOW + i * 0.05, 100.0)
            log.finish_reason = "length" if rng.random() < share else "stop"
            producer.produce(monitoring.payload_topic, log, key=endpoint, record_id=log.request_id)
        if w >= 8:  # a flood of refused calls, slow and aborted: it must not move any profile
            for i in range(1000):
                log = payload_log(endpoint, f"{endpoint}-{w}-denied-{i}", base + w * WINDOW + i * 0.05, 9000.0)
                log.status, log.finish_reason = "PERMISSION_DENIED", "abort"
                producer.produce(monitoring.payload_topic, log, key=endpoint, record_id=log.request_id)
    producer.flush_sync()
    assert await eventually(lambda: windows_evaluated(stub, monitor.monitor_id, base + 9 * WINDOW))
    reply = await stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=monitor.monitor_id), metadata=METADATA)
    events = [(e.statistic, e.kind, e.window_start.seconds) for e in reply.events if e.feature == "finish_reason"]
    shift, back = base + 5 * WINDOW, base + 7 * WINDOW
    assert ("js_distance", DriftEvent.DRIFT_DETECTED, shift) in events
    assert ("js_distance", DriftEvent.DRIFT_RESOLVED, back) in events
    assert len([e for e in events if e[0] == "js_distance"]) == 2
    assert not [e for e in reply.events if e.feature == "latency_ms"]
    profiles = await stub.GetProfiles(
        pb.GetProfilesRequest(monitor_id=monitor.monitor_id, feature="latency_ms", slice=""), metadata=METADATA
    )
    last = [p for p in profiles.profiles if p.window_start.seconds == base + 9 * WINDOW]
    assert last and last[0].count == 1000 and last[0].max < 1000


async def test_status_is_not_a_drift_feature(monitoring):
    monitor = pb.Monitor(endpoint=endpoint_name(), features=[pb.FeatureSpec(path="status")], window_seconds=WINDOW)
    monitor.baseline.time_range.start.FromSeconds(1000)
    monitor.baseline.time_range.end.FromSeconds(2000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await monitoring.stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=METADATA)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_event_the_old_publisher_left_unsent_goes_out_once_through_the_outbox(
    monitoring, pg_dsn, kafka_bootstrap
):
    # A row as the publisher before the shared outbox wrote it: `published` left false.
    monitor_id, event_id = f"legacy-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    event = {
        "event_id": event_id,
        "kind": "detected",
        "monitor_id": monitor_id,
        "endpoint": endpoint_name(),
        "feature": "latency_ms",
        "slice": "",
        "statistic": "psi",
        "value": 0.5,
        "threshold": 0.2,
        "window_start": 1000.0,
        "window_end": 1060.0,
        "comparison": "baseline",
        "baseline": "reference profiles",
        "detected_at": 1100.0,
    }
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.drift_events (event_id, monitor_id, event) VALUES (%s, %s, %s)").format(
                sql.Identifier(monitoring.schema)
            ),
            (event_id, monitor_id, json.dumps(event)),
        )
    assert await eventually(lambda: drift_topic_events(kafka_bootstrap, monitoring.drift_topic, monitor_id))
    (published,) = drift_topic_events(kafka_bootstrap, monitoring.drift_topic, monitor_id)
    assert published.event_id == event_id and published.kind == DriftEvent.DRIFT_DETECTED
