"""Idempotent sinks: remember which record ids a consumer has applied.

Call `claim_new` inside the same transaction as the sink's own write. Ids seen
before are left out, so a record redelivered after a crash between the write
and the offset commit changes nothing; if the transaction rolls back, the claim
rolls back with it and the record is processed again.

Sinks with a natural key (an inference table keyed by request id) can use
`INSERT ... ON CONFLICT DO NOTHING` instead; this table is for the others.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql


async def claim_new(conn: psycopg.AsyncConnection, schema: str, consumer: str, record_ids: Iterable[str]) -> set[str]:
    """Mark `record_ids` processed for `consumer`; return the ones that were not processed before."""
    ids = list(dict.fromkeys(record_ids))
    if not ids:
        return set()
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {}.processed_records (consumer, record_id) SELECT %s, unnest(%s::text[])"
            " ON CONFLICT DO NOTHING RETURNING record_id"
        ).format(sql.Identifier(schema)),
        (consumer, ids),
    )
    return {row[0] for row in await cur.fetchall()}
