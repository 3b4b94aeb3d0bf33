"""The outbox table: events written with the change they announce, read back by the publisher."""

from __future__ import annotations

from psycopg import AsyncConnection

from services.registry.events import PendingEvent


async def add(conn: AsyncConnection, topic: str, events: list[PendingEvent]) -> None:
    """Call inside the change's own transaction: the events commit or roll back with it."""
    if not events:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO outbox (topic, key, payload) VALUES (%s, %s, %s)",
            [(topic, e.key, e.payload()) for e in events],
        )


async def claim_unsent(conn: AsyncConnection, lock_key: int, limit: int) -> list[tuple[int, str, str, bytes]] | None:
    """The oldest unsent events, or None when another publisher holds the lock (one at a time keeps order)."""
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_key,))
    if not (await cur.fetchone())[0]:
        return None
    cur = await conn.execute(
        "SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s", (limit,)
    )
    return [(row[0], row[1], row[2], bytes(row[3])) for row in await cur.fetchall()]


async def mark_sent(conn: AsyncConnection, ids: list[int]) -> None:
    await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", (ids,))


async def prune_sent(conn: AsyncConnection, retention_h: float) -> None:
    await conn.execute(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => %s)",
        (retention_h * 3600,),
    )
