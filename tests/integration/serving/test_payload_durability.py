"""Payload logs survive what Kafka and serving go through: outages past the delivery timeout, stops, crashes.

The outage tests run a private broker (see private_kafka.py) and take it down;
TESSERA_TEST_OUTAGE_S sets how long (20 s by default, against a 5 s delivery
timeout; run it once with 360 for an outage past librdkafka's default 5 min).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from tessera.events.v1 import payload_log_pb2

from services.common import kafka_admin
from services.common.errors import Unavailable
from services.serving.payload_log import PayloadLogWriter, PayloadRecord
from tests.integration.serving.private_kafka import PrivateKafka, free_port
from tests.integration.serving.topic_reader import TopicReader

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("TESSERA_TEST_OUTAGE_S", "20"))
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def private_kafka():
    broker = PrivateKafka()
    broker.start()
    yield broker
    broker.remove()


def _record(request_id: str) -> PayloadRecord:
    return PayloadRecord(
        request_id, "ep", "grpc", "OK", datetime.now(UTC), {"features": np.arange(4.0)}, {"text": "ok"}
    )


def _reader(bootstrap: str, topic: str) -> TopicReader:
    return TopicReader(bootstrap, topic, payload_log_pb2.PayloadLog.FromString, lambda m: m.request_id)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_broker_outage_longer_than_the_delivery_timeout_loses_no_payload_log(
    private_kafka: PrivateKafka, tmp_path: Path
) -> None:
    topic = f"test.payloads.outage.{uuid.uuid4().hex[:8]}"
    private_kafka.ensure_topics(topic)
    writer = PayloadLogWriter(private_kafka.bootstrap, topic, tmp_path / "spool", message_timeout_ms=5_000)
    await writer.start()
    redelivered = _metric("tessera_serving_payload_logs_redeliveries_total")
    ids: list[str] = []
    try:
        for i in range(100):
            ids.append(f"before-{i}")
            writer.submit(_record(ids[-1]))
        await asyncio.to_thread(private_kafka.stop)
        # Requests keep coming all through the outage.
        loop = asyncio.get_running_loop()
        ends = loop.time() + OUTAGE_S
        while loop.time() < ends:
            for _ in range(10):
                ids.append(f"during-{len(ids)}")
                writer.submit(_record(ids[-1]))
            await asyncio.sleep(0.5)
        await writer.wait_durable()
        assert writer.pending > 0
        await asyncio.to_thread(private_kafka.start)
        for i in range(100):
            ids.append(f"after-{i}")
            writer.submit(_record(ids[-1]))

        reader = _reader(private_kafka.bootstrap, topic)
        try:
            await reader.wait_for(ids, timeout=120)
        finally:
            reader.close()
        # The outage outlasted the delivery timeout: deliveries failed and were produced again.
        assert _metric("tessera_serving_payload_logs_redeliveries_total") > redelivered
    finally:
        await writer.stop()
    assert not list((tmp_path / "spool").rglob("*.seg"))


async def test_a_stop_during_an_outage_keeps_the_queue_in_the_spool_for_the_next_process(
    private_kafka: PrivateKafka, tmp_path: Path
) -> None:
    topic = f"test.payloads.stop.{uuid.uuid4().hex[:8]}"
    private_kafka.ensure_topics(topic)
    spool = tmp_path / "spool"
    ids = [f"queued-{i}" for i in range(3000)]
    await asyncio.to_thread(private_kafka.stop)
    try:
        first = PayloadLogWriter(private_kafka.bootstrap, topic, spool, message_timeout_ms=5_000, stop_grace_s=1.0)
        await first.start()
        for rid in ids:
            first.submit(_record(rid))
        await first.stop()
        assert list(spool.rglob("*.seg"))
    finally:
        await asyncio.to_thread(private_kafka.start)

    second = PayloadLogWriter(private_kafka.bootstrap, topic, spool)
    await second.start()
    reader = _reader(private_kafka.bootstrap, topic)
    try:
        await reader.wait_for(ids, timeout=120)
    finally:
        reader.close()
        await second.stop()
    assert not list(spool.rglob("*.seg"))


async def test_stop_delivers_every_queued_record_not_just_one_batch(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"test.payloads.drain.{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    writer = PayloadLogWriter(kafka_bootstrap, topic, tmp_path / "spool", batch_size=500)
    await writer.start()
    ids = [f"drain-{i}" for i in range(5000)]
    for rid in ids:
        writer.submit(_record(rid))
    await writer.stop()

    reader = _reader(kafka_bootstrap, topic)
    try:
        await reader.wait_for(ids, timeout=60)
    finally:
        reader.close()
    assert not list((tmp_path / "spool").rglob("*.seg"))


_CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from services.serving.payload_log import PayloadLogWriter, PayloadRecord

    async def main():
        bootstrap, topic, spool, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        writer = PayloadLogWriter(bootstrap, topic, spool)
        await writer.start()
        for i in range(count):
            writer.submit(PayloadRecord(f"crash-{i}", "ep", "kafka", "OK", datetime.now(UTC), {"prompt": "hi"}))
        await writer.wait_durable()
        print("durable", flush=True)
        await asyncio.sleep(3600)  # killed here

    asyncio.run(main())
    """
)


async def test_records_made_durable_survive_a_crash_and_are_replayed_by_the_next_process(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"test.payloads.crash.{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    spool = tmp_path / "spool"
    ids = [f"crash-{i}" for i in range(2000)]
    # A process whose Kafka never answers (nothing listens on the port) is killed once its records are durable.
    unreachable = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'protos' / 'gen' / 'python'}"}
    crashing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_WRITER,
        unreachable,
        topic,
        str(spool),
        str(len(ids)),
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        async with asyncio.timeout(60):
            assert (await crashing.stdout.readline()).strip() == b"durable"
    finally:
        crashing.send_signal(signal.SIGKILL)
        await crashing.wait()

    replaying = PayloadLogWriter(kafka_bootstrap, topic, spool)
    await replaying.start()
    reader = _reader(kafka_bootstrap, topic)
    try:
        await reader.wait_for(ids, timeout=60)
    finally:
        reader.close()
        await replaying.stop()
    assert not list(spool.rglob("*.seg"))


async def test_a_full_producer_buffer_does_not_block_the_event_loop(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"test.payloads.full.{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    # Kafka never answers and librdkafka may hold 10 records: the 11th produce finds the buffer full.
    writer = PayloadLogWriter(
        f"127.0.0.1:{free_port()}",
        topic,
        tmp_path / "spool",
        message_timeout_ms=600_000,
        max_in_flight=1_000,
        stop_grace_s=0.5,
        **{"queue.buffering.max.messages": 10},
    )
    await writer.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        for i in range(500):
            writer.submit(_record(f"full-{i}"))
            await asyncio.sleep(0)
        # While the buffer stays full (for the 10 minutes of the delivery timeout), the loop keeps running.
        async with asyncio.timeout(30):
            while ticks < 50:  # noqa: ASYNC110 - the ticker is the thing under test
                await asyncio.sleep(0.01)
            await writer.wait_durable()
    finally:
        ticker.cancel()
        await writer.stop()

    # The spool kept them: a writer on a reachable broker delivers every one.
    replaying = PayloadLogWriter(kafka_bootstrap, topic, tmp_path / "spool")
    await replaying.start()
    reader = _reader(kafka_bootstrap, topic)
    try:
        await reader.wait_for([f"full-{i}" for i in range(500)], timeout=60)
    finally:
        reader.close()
        await replaying.stop()


async def test_a_full_spool_refuses_new_requests_and_loses_none_it_accepted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"test.payloads.bound.{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    writer = PayloadLogWriter(
        f"127.0.0.1:{free_port()}", topic, tmp_path / "spool", spool_max_bytes=64 * 1024, stop_grace_s=0.5
    )
    await writer.start()
    accepted: list[str] = []
    try:
        with pytest.raises(Unavailable, match="spool is full"):
            for i in range(10_000):
                writer.check_capacity()  # what a front end asks before it accepts a request
                accepted.append(f"bound-{i}")
                writer.submit(_record(accepted[-1]))
                await writer.wait_durable()
        assert sum(f.stat().st_size for f in (tmp_path / "spool").rglob("*.seg")) >= 64 * 1024
    finally:
        await writer.stop()

    replaying = PayloadLogWriter(kafka_bootstrap, topic, tmp_path / "spool")
    await replaying.start()
    reader = _reader(kafka_bootstrap, topic)
    try:
        await reader.wait_for(accepted, timeout=60)
    finally:
        reader.close()
        await replaying.stop()
