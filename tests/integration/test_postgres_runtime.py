"""The shared PostgreSQL runtime against a real server with pgvector."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.db import Database, migrate
from services.common.errors import DeadlineExceeded

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(pg_dsn, unique):
    database = await Database(pg_dsn, f"t_{unique}").open()
    yield database
    async with database.connection() as conn:
        await conn.execute(f"DROP SCHEMA t_{unique} CASCADE")
    await database.close()


async def test_a_pgvector_nearest_neighbour_query_returns_the_right_row(db):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    async with db.connection() as conn:
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(16))")
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO items VALUES (%s, %s)", [(i, v) for i, v in enumerate(vectors)])
        await conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_l2_ops)")
        query = vectors[123] + rng.normal(scale=1e-3, size=16).astype(np.float32)
        cur = await conn.execute("SELECT id, embedding FROM items ORDER BY embedding <-> %s LIMIT 1", (query,))
        row_id, embedding = await cur.fetchone()
    assert row_id == 123
    np.testing.assert_allclose(embedding.to_numpy(), vectors[123], rtol=1e-6)


async def test_migrations_apply_in_order_once(db, tmp_path):
    (tmp_path / "0001_create.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "0002_add_column.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    (tmp_path / "notes.txt").write_text("not a migration")
    assert await migrate(db, tmp_path) == ["0001_create.sql", "0002_add_column.sql"]
    assert await migrate(db, tmp_path) == []
    async with db.connection() as conn:
        await conn.execute("INSERT INTO things (id, name) VALUES (1, 'one')")
        cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == [1, 2]


async def test_a_failing_migration_leaves_nothing_behind(db, tmp_path):
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE b (id int); SELECT no_such_function();")
    with pytest.raises(Exception, match="no_such_function"):
        await migrate(db, tmp_path)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT to_regclass('b') IS NULL, to_regclass('a') IS NOT NULL")
        assert await cur.fetchone() == (True, True)


async def test_a_statement_past_the_timeout_is_cancelled_with_a_clear_core_error(pg_dsn, unique):
    database = await Database(pg_dsn, f"t_{unique}", statement_timeout_ms=100).open()
    try:
        with pytest.raises(DeadlineExceeded, match="100 ms statement timeout"):
            async with database.connection() as conn:
                await conn.execute("SELECT pg_sleep(60)")
        # The pool's connection is still good for the next query.
        async with database.connection() as conn:
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    finally:
        async with database.connection() as conn:
            await conn.execute(f"DROP SCHEMA t_{unique} CASCADE")
        await database.close()


async def test_migrations_run_without_the_statement_timeout_and_leave_it_in_place(pg_dsn, unique, tmp_path):
    database = await Database(pg_dsn, f"t_{unique}", statement_timeout_ms=100).open()
    (tmp_path / "0001_slow.sql").write_text("CREATE TABLE slow (id int); SELECT pg_sleep(0.5);")
    try:
        assert await migrate(database, tmp_path) == ["0001_slow.sql"]
        async with database.connection() as conn:
            assert await (await conn.execute("SHOW statement_timeout")).fetchone() == ("100ms",)
            # Nothing beyond the service's own migrations lives in its schema.
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
                (f"t_{unique}",),
            )
            assert [r[0] for r in await cur.fetchall()] == ["schema_migrations", "slow"]
    finally:
        async with database.connection() as conn:
            await conn.execute(f"DROP SCHEMA t_{unique} CASCADE")
        await database.close()
