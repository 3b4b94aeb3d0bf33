"""A consumer that applies one batch to an idempotent sink and dies before committing.

Run by test_kafka_runtime as a separate process so the crash is real: the
process exits with code 17 between the database commit and the offset commit.
"""

from __future__ import annotations

import asyncio
import os
import sys

from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common.db import Database
from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer


def idempotent_sink(db: Database):
    """Rows keyed by request id: a redelivered record changes nothing."""

    async def write(batch: list[Record[PayloadLog]]) -> None:
        async with db.transaction() as conn:
            for record in batch:
                await conn.execute(
                    "INSERT INTO rows VALUES (%s, %s) ON CONFLICT (request_id) DO NOTHING",
                    (record.value.request_id, record.value.endpoint),
                )

    return write


async def main(bootstrap: str, dsn: str, schema: str, group: str, topic: str) -> None:
    db = await Database(dsn, schema).open()
    sink = idempotent_sink(db)
    producer = EventProducer(bootstrap)

    async def handle_then_crash(batch: list[Record[PayloadLog]]) -> None:
        await sink(batch)
        print("wrote", ",".join(r.value.request_id for r in batch), flush=True)
        os._exit(17)  # killed between processing and commit

    loop = ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group,
        topics=[topic],
        message_type=PayloadLog,
        handler=handle_then_crash,
        dlq_producer=producer,
    )
    await asyncio.wait_for(loop.run(), 90)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
