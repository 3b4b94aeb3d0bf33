"""`make demo`: Tessera's scenario on the local infrastructure `make up` started.

Today it proves the ground every service stands on, and says so: a payload-log
event travels through Kafka with Tessera's producer and consumer, and a vector
query runs on PostgreSQL with pgvector. Each service adds its act as it lands.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common import config, topics
from services.common.db import Database
from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer


def say(step: str, message: str) -> None:
    print(f"[demo] {step:<10} {message}", flush=True)


async def event_through_kafka(settings: config.CommonSettings) -> None:
    producer = EventProducer(settings.kafka_bootstrap, client_id="demo")
    request_id = f"demo-{uuid.uuid4().hex[:8]}"
    sent = PayloadLog(request_id=request_id, endpoint="demo", status="OK", latency_ms=12.5, completion_tokens=42)
    delivered = await producer.send(topics.PAYLOAD_LOGS, sent, key="demo", record_id=request_id)
    say("kafka", f"produced payload log {request_id} to {delivered.topic}[{delivered.partition}]@{delivered.offset}")

    received = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        for record in batch:
            if record.value.request_id == request_id:
                say(
                    "kafka",
                    f"consumed it back: endpoint={record.value.endpoint} "
                    f"latency={record.value.latency_ms} ms tokens={record.value.completion_tokens}",
                )
                received.set()

    # A fresh group reads the topic from the start and stops at our record.
    loop = ConsumerLoop(
        bootstrap=settings.kafka_bootstrap,
        group_id=f"demo-{uuid.uuid4().hex[:6]}",
        topics=[topics.PAYLOAD_LOGS],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(received.wait(), 60)
    loop.stop()
    await task
    producer.close()


async def vector_query(settings: config.CommonSettings) -> None:
    db = await Database(settings.resolved_pg_dsn(), "demo").open()
    rng = np.random.default_rng(0)
    words = ["kafka", "postgres", "vllm", "registry", "drift", "lineage", "grpc", "embedding"]
    vectors = rng.normal(size=(len(words), 32)).astype(np.float32)
    async with db.transaction() as conn:
        await conn.execute("DROP TABLE IF EXISTS notes")
        await conn.execute("CREATE TABLE notes (word text PRIMARY KEY, embedding vector(32))")
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO notes VALUES (%s, %s)", list(zip(words, vectors, strict=True)))
    query = vectors[words.index("drift")] + rng.normal(scale=0.05, size=32).astype(np.float32)
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT word, embedding <=> %s AS distance FROM notes ORDER BY distance LIMIT 3", (query,)
        )
        rows = await cur.fetchall()
    say("pgvector", "nearest to a noisy 'drift' vector: " + ", ".join(f"{w} ({d:.3f})" for w, d in rows))
    await db.close()


async def main() -> None:
    settings = config.load(config.CommonSettings)
    started = time.perf_counter()
    say("start", f"Kafka at {settings.kafka_bootstrap}, PostgreSQL at {settings.resolved_pg_dsn()}")
    await event_through_kafka(settings)
    await vector_query(settings)
    say(
        "done",
        f"the foundation works end to end ({time.perf_counter() - started:.1f} s). "
        "This scenario covers Kafka and pgvector only; services join it as they land.",
    )


if __name__ == "__main__":
    asyncio.run(main())
