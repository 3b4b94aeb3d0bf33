"""PostgreSQL for a service: an async pool on its own schema, with pgvector registered.

Each service owns one schema (`registry`, `serving`, `monitoring`...) and never
reads another's; `Database.open()` creates the schema, and `migrate()` applies
the service's numbered SQL files (`services/<name>/migrations/0001_*.sql`) in
order, once, under an advisory lock so replicas starting together do not race.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

_log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[\w-]+\.sql$")


class Database:
    """A connection pool whose connections search the service's schema first."""

    def __init__(
        self, dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, autocommit: bool = False
    ) -> None:
        """`autocommit=True` suits read-only hot paths: one round trip per query, no BEGIN/COMMIT."""
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min(min_size, max_size),
            max_size=max_size,
            open=False,
            configure=self._configure,
            kwargs={"autocommit": autocommit},
        )

    async def open(self) -> Database:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.InsufficientPrivilege:
                _log.info("no privilege to create the vector extension; assuming it exists")
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        await self._pool.open(wait=True, timeout=30)
        return self

    async def close(self) -> None:
        await self._pool.close()

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        await register_vector_async(conn)
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))
        if not conn.autocommit:
            await conn.commit()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; commits when the block succeeds, rolls back when it raises."""
        async with self._pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool


async def migrate(db: Database, migrations_dir: Path) -> list[str]:
    """Apply the not-yet-applied `NNNN_name.sql` files in `migrations_dir`; returns their names."""
    files = sorted(p for p in migrations_dir.glob("*.sql") if _MIGRATION_FILE.match(p.name))
    versions = [int(_MIGRATION_FILE.match(p.name).group(1)) for p in files]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{migrations_dir}: two migrations share a number")
    applied: list[str] = []
    schema = sql.Identifier(db.schema)
    lock_key = zlib.crc32(f"tessera-migrations:{db.schema}".encode())
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
        try:
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(schema)
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.processed_records ("
                    " consumer text NOT NULL, record_id text NOT NULL,"
                    " processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, record_id))"
                ).format(schema)
            )
            await conn.commit()
            cur = await conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(schema))
            done = {row[0] for row in await cur.fetchall()}
            for version, path in zip(versions, files, strict=True):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(schema),
                        (version, path.name),
                    )
                _log.info("%s: applied migration %s", db.schema, path.name)
                applied.append(path.name)
            await conn.commit()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
            await conn.commit()
    return applied
