"""Kafka through Tessera's producer and consumer wrappers vs raw confluent-kafka.

    python -m loadtests.kafka_bench [--bootstrap 127.0.0.1:9092] [--quick]

Same broker, same librdkafka settings (`producer_config` / `consumer_config`),
same payloads (a PayloadLog padded to 1 KiB or 64 KiB), same commit pattern
(an asynchronous commit of each batch's offsets once it is handled). The raw client does what any raw user
must do to exchange these messages: serialize each PayloadLog when producing
and parse it when consuming. What differs is only the wrapper: headers
(content-type, schema, record id, trace context), delivery tracking, Record
objects, the batch handler, DLQ-ready bookkeeping.

Consume throughput is timed from the moment the second batch is in hand and
counts the records from there, so the group join does not count.

Measured per size: produce throughput (msgs/s until every record is
acknowledged), consume throughput (msgs/s reading them back in a new group),
and produce-to-consume latency p50/p99 at a steady rate with producer and
consumer running at once. Loopback only; bounded counts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from tessera.events.v1.payload_log_pb2 import PayloadLog

from loadtests.report import percentile_ms, save, table
from services.common import kafka_admin
from services.common.kafka_consumer import ConsumerLoop, Record, consumer_config
from services.common.kafka_producer import EventProducer, producer_config

SIZES = {"1 KiB": 1024, "64 KiB": 64 * 1024}
COUNTS = {"1 KiB": 60_000, "64 KiB": 10_000}
LATENCY_COUNT, LATENCY_RATE = 2_000, 1_000  # records, records/s


def payload(size: int, i: int = 0) -> PayloadLog:
    base = PayloadLog(request_id=f"r-{i:09d}", endpoint="bench", status="OK")
    pad = size - base.ByteSize() - 3
    base.error_message = "x" * max(pad, 0)
    return base


def ratio(tessera: float, raw: float) -> float:
    return tessera / raw if raw else float("nan")


def log(message: str) -> None:
    print(f"[kafka_bench] {message}", flush=True)


def new_topic(bootstrap: str, label: str) -> str:
    name = f"bench.{label}.{uuid.uuid4().hex[:8]}"
    kafka_admin.ensure_topics(bootstrap, [name, name + ".dlq"], partitions=3)
    return name


# -- produce -----------------------------------------------------------------


def produce_raw(bootstrap: str, topic: str, size: int, count: int) -> float:
    producer = Producer(producer_config(bootstrap, "bench-raw"))
    message = payload(size)
    started = time.perf_counter()
    for i in range(count):
        value = message.SerializeToString()
        while True:
            try:
                producer.produce(topic, value=value, key=str(i % 64))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    return count / (time.perf_counter() - started)


def produce_tessera(bootstrap: str, topic: str, size: int, count: int) -> float:
    producer = EventProducer(bootstrap, client_id="bench-tessera")
    message = payload(size)
    started = time.perf_counter()
    for i in range(count):
        producer.produce(topic, message, key=str(i % 64))
    producer.flush_sync(60)
    rate = count / (time.perf_counter() - started)
    producer.close()
    return rate


# -- consume -----------------------------------------------------------------


def consume_raw(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer(consumer_config(bootstrap, f"raw-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([topic])
    seen, timed, batches, started = 0, 0, 0, 0.0
    while seen < count:
        batch = consumer.consume(500, 0.25)
        if batch:
            batches += 1
            if batches == 2:
                started = time.perf_counter()
            if batches >= 2:
                timed += len(batch)
        offsets = {}
        for m in batch:
            if not m.error():
                PayloadLog.FromString(m.value())
                seen += 1
                offsets[(m.topic(), m.partition())] = m.offset() + 1
        if offsets:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)
    rate = timed / (time.perf_counter() - started)
    consumer.close()
    return rate


def consume_tessera(bootstrap: str, topic: str, count: int) -> float:
    async def run() -> float:
        producer = EventProducer(bootstrap, client_id="bench-dlq")
        seen, timed, batches, started, done = 0, 0, 0, [0.0], asyncio.Event()

        async def handle(batch: list[Record[PayloadLog]]) -> None:
            nonlocal seen, timed, batches
            batches += 1
            if batches == 2:
                started[0] = time.perf_counter()
            if batches >= 2:
                timed += len(batch)
            seen += len(batch)
            if seen >= count:
                done.set()

        loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=f"tessera-{uuid.uuid4().hex[:6]}",
            topics=[topic],
            message_type=PayloadLog,
            handler=handle,
            dlq_producer=producer,
        )
        task = asyncio.create_task(loop.run())
        await done.wait()
        rate = timed / (time.perf_counter() - started[0])
        loop.stop()
        await task
        producer.close()
        return rate

    return asyncio.run(run())


# -- latency -----------------------------------------------------------------


def paced(count: int, rate: int):
    start = time.perf_counter()
    for i in range(count):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield i


def latency_raw(bootstrap: str, size: int) -> list[float]:
    topic = new_topic(bootstrap, "lat-raw")
    value = payload(size).SerializeToString()
    consumer = Consumer(consumer_config(bootstrap, f"lat-raw-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([topic])
    consumer.consume(1, 3.0)  # join the group before the clock starts
    samples: list[float] = []

    def drain() -> None:
        while len(samples) < LATENCY_COUNT:
            batch = consumer.consume(500, 0.1)
            now = time.perf_counter()
            offsets = {}
            for m in batch:
                if not m.error():
                    samples.append(now - float(dict(m.headers())["sent"]))
                    offsets[(m.topic(), m.partition())] = m.offset() + 1
            if offsets:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)

    reader = threading.Thread(target=drain)
    reader.start()
    producer = Producer(producer_config(bootstrap, "lat-raw"))
    for i in paced(LATENCY_COUNT, LATENCY_RATE):
        producer.produce(topic, value=value, key=str(i % 64), headers=[("sent", str(time.perf_counter()).encode())])
        producer.poll(0)
    producer.flush(30)
    reader.join(60)
    consumer.close()
    return samples


def latency_tessera(bootstrap: str, size: int) -> list[float]:
    topic = new_topic(bootstrap, "lat-tessera")
    message = payload(size)

    async def run() -> list[float]:
        producer = EventProducer(bootstrap, client_id="lat-tessera")
        samples: list[float] = []
        done = asyncio.Event()

        async def handle(batch: list[Record[PayloadLog]]) -> None:
            now = time.perf_counter()
            samples.extend(now - float(r.headers["sent"]) for r in batch)
            if len(samples) >= LATENCY_COUNT:
                done.set()

        loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=f"lat-tessera-{uuid.uuid4().hex[:6]}",
            topics=[topic],
            message_type=PayloadLog,
            handler=handle,
            dlq_producer=producer,
            poll_timeout_s=0.1,
        )
        task = asyncio.create_task(loop.run())
        await loop.wait_assigned()

        def send_all() -> None:
            for i in paced(LATENCY_COUNT, LATENCY_RATE):
                producer.produce(topic, message, key=str(i % 64), headers={"sent": str(time.perf_counter())})

        await asyncio.to_thread(send_all)
        await asyncio.wait_for(done.wait(), 60)
        loop.stop()
        await task
        producer.close()
        return samples

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--quick", action="store_true", help="a tenth of the records, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="alternate raw/Tessera this many times; report medians")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of: " + ", ".join(SIZES))
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    rows, results = [], {}
    for label in [s.strip() for s in args.sizes.split(",")]:
        size = SIZES[label]
        count = max(int(COUNTS[label] * scale), 1_500)
        p_raws, p_tess, c_raws, c_tess = [], [], [], []
        for attempt in range(1, args.repeat + 1):
            log(f"{label} [{attempt}/{args.repeat}]: producing {count:,} records raw, then through EventProducer")
            raw_topic, tessera_topic = new_topic(args.bootstrap, "raw"), new_topic(args.bootstrap, "tessera")
            p_raws.append(produce_raw(args.bootstrap, raw_topic, size, count))
            p_tess.append(produce_tessera(args.bootstrap, tessera_topic, size, count))
            log(f"{label} [{attempt}/{args.repeat}]: consuming them back raw, then through ConsumerLoop")
            c_raws.append(consume_raw(args.bootstrap, raw_topic, count))
            c_tess.append(consume_tessera(args.bootstrap, tessera_topic, count))
        p_raw, p_tes, c_raw, c_tes = (statistics.median(v) for v in (p_raws, p_tess, c_raws, c_tess))
        log(f"{label}: latency at {LATENCY_RATE}/s for {LATENCY_COUNT} records, raw then Tessera")
        l_raw, l_tes = latency_raw(args.bootstrap, size), latency_tessera(args.bootstrap, size)
        r = {
            "records": count,
            "produce_per_s": {"raw": p_raw, "tessera": p_tes},
            "consume_per_s": {"raw": c_raw, "tessera": c_tes},
            "p50_ms": {"raw": percentile_ms(l_raw, 50), "tessera": percentile_ms(l_tes, 50)},
            "p99_ms": {"raw": percentile_ms(l_raw, 99), "tessera": percentile_ms(l_tes, 99)},
        }
        results[label] = r
        rows += [
            [label, "produce msgs/s", p_raw, p_tes, ratio(p_tes, p_raw)],
            [label, "consume msgs/s", c_raw, c_tes, ratio(c_tes, c_raw)],
            [
                label,
                "p50 latency ms",
                r["p50_ms"]["raw"],
                r["p50_ms"]["tessera"],
                r["p50_ms"]["tessera"] / r["p50_ms"]["raw"],
            ],
            [
                label,
                "p99 latency ms",
                r["p99_ms"]["raw"],
                r["p99_ms"]["tessera"],
                r["p99_ms"]["tessera"] / r["p99_ms"]["raw"],
            ],
        ]
    print()
    print(table(["size", "metric", "raw confluent-kafka", "Tessera wrappers", "Tessera / raw"], rows))
    print(f"\nresults: {save('kafka_bench', {'results': results})}")


if __name__ == "__main__":
    main()
