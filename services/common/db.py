"""PostgreSQL for a service: an async pool on its own schema, with pgvector registered.

Each service owns one schema (`registry`, `serving`, `monitoring`...) and never
reads another's; `Database.open()` creates the schema, and `migrate()` applies
the service's numbered SQL files (`services/<name>/migrations/0001_*.sql`) in
order, once, under an advisory lock so replicas starting together do not race.

Every statement runs under `statement_timeout` (TESSERA_PG_STATEMENT_TIMEOUT_MS):
a runaway query is cancelled and surfaces as `DeadlineExceeded`, and a lost
database as `Unavailable`. `is_transient` tells a consumer whether a database
error is worth retrying or says something about the record itself.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import config
from services.common.errors import DeadlineExceeded, Unavailable

_log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SETUP_LOCK = zlib.crc32(b"tessera-database-setup")
_MIGRATION_FILE = re.compile(r"(\d{4})_[\w-]+\.sql")

# Server verdicts after which the same statement may well succeed later: the server is going away
# or coming back, or it picked this transaction as the loser of a conflict. Class 08 (connection
# exceptions) counts too. Anything else (data too long, constraint violated, statement timeout...)
# would fail the same way on every retry.
_OUTAGE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)
_CONFLICT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
    }
)


def is_outage(exc: BaseException) -> bool:
    """The database could not be reached or is restarting: nothing to do with the statement."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        # No verdict from a server: connecting failed, the connection broke, or the pool timed out.
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _OUTAGE_SQLSTATES


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later may succeed; False when the error is about the work itself.

    Only connection loss (class 08, or no SQLSTATE at all), serialization failures, deadlocks,
    lock timeouts and server shutdown/start-up are transient. A statement timeout (57014) is not:
    the same record would run as long again."""
    if not isinstance(exc, psycopg.Error):
        return False
    return is_outage(exc) or exc.sqlstate in _CONFLICT_SQLSTATES


class Database:
    """A connection pool whose connections search the service's schema first."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        autocommit: bool = False,
        statement_timeout_ms: int | None = None,
    ) -> None:
        """`autocommit=True` suits read-only hot paths: one round trip per query, no BEGIN/COMMIT.

        `statement_timeout_ms` defaults to TESSERA_PG_STATEMENT_TIMEOUT_MS; 0 disables it."""
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        if statement_timeout_ms is None:
            statement_timeout_ms = config.load(config.CommonSettings).pg_statement_timeout_ms
        if statement_timeout_ms < 0:
            raise ValueError(f"statement timeout must be >= 0 ms, got {statement_timeout_ms}")
        self.dsn = dsn
        self.schema = schema
        self.statement_timeout_ms = statement_timeout_ms
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
            # Replicas starting together would race "IF NOT EXISTS" into a unique violation on the
            # catalog: one at a time (the lock goes with the session).
            await conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
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
        await conn.execute(
            sql.SQL("SET search_path TO {}, public; SET statement_timeout = {}").format(
                sql.Identifier(self.schema), sql.Literal(self.statement_timeout_ms)
            )
        )
        if not conn.autocommit:
            await conn.commit()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; commits when the block succeeds, rolls back when it raises."""
        with self._core_errors():
            async with self._pool.connection() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        with self._core_errors():
            async with self._pool.connection() as conn, conn.transaction():
                yield conn

    async def fetch_one(
        self, query: str, params: tuple | dict | None = None, *, translate: Translator | None = None
    ) -> dict | None:
        """Run one statement in its own transaction: its first row as a dict, None without one.

        `translate` turns a driver error the store expects into the core's own error."""
        with _translated(translate):
            async with self.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)
                return await cur.fetchone() if cur.description else None

    async def fetch_all(
        self, query: str, params: tuple | dict | None = None, *, translate: Translator | None = None
    ) -> list[dict]:
        """Run one statement in its own transaction: every row, as dicts."""
        with _translated(translate):
            async with self.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)
                return await cur.fetchall()

    @contextmanager
    def _core_errors(self) -> Iterator[None]:
        """A cancelled statement or a lost database becomes a core error a caller can act on;
        every other driver error is left to the store, which knows what it means."""
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded(
                f"a database statement ran longer than the {self.statement_timeout_ms} ms statement timeout"
            ) from exc
        except psycopg.Error as exc:
            if is_outage(exc):
                raise Unavailable("the database is unavailable; retry later") from exc
            raise


Translator = Callable[[psycopg.Error], Exception]


@contextmanager
def _translated(translate: Translator | None) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        if translate is None:
            raise
        raise translate(exc) from exc


async def migrate(db: Database, migrations_dir: Path) -> list[str]:
    """Apply the not-yet-applied `NNNN_name.sql` files in `migrations_dir`; returns their names."""
    files = sorted(p for p in migrations_dir.glob("*.sql") if _MIGRATION_FILE.fullmatch(p.name))
    versions = [int(_MIGRATION_FILE.fullmatch(p.name).group(1)) for p in files]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{migrations_dir}: two migrations share a number")
    applied: list[str] = []
    schema = sql.Identifier(db.schema)
    lock_key = zlib.crc32(f"tessera-migrations:{db.schema}".encode())
    async with db.connection() as conn:
        # Waiting for another replica's migrations, and the migrations themselves, may take longer
        # than a query should: no statement timeout until the connection goes back to the pool.
        await conn.execute("SET statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
        try:
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
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
            await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(db.statement_timeout_ms)))
            await conn.commit()
    return applied
