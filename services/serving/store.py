"""Endpoint configuration in PostgreSQL (this service's own schema)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from services.common.db import Database
from services.common.errors import AlreadyExists, NotFound
from services.serving.entities import EndpointSpec, ServedModelSpec, StoredEndpoint

# This service's schema, applied at start (numbered SQL files).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_COLUMNS = "name, served_models, max_concurrency, created_by, created_at, updated_at"


class EndpointStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, spec: EndpointSpec, created_by: str) -> StoredEndpoint:
        try:
            async with self._db.transaction() as conn:
                cur = await conn.execute(
                    f"INSERT INTO endpoints (name, served_models, max_concurrency, created_by)"
                    f" VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
                    (spec.name, _models_json(spec), spec.max_concurrency, created_by),
                )
                return _row(await cur.fetchone())
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(f"endpoint {spec.name!r} already exists") from exc

    async def update(self, spec: EndpointSpec) -> StoredEndpoint:
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                f"UPDATE endpoints SET served_models = %s, max_concurrency = %s, updated_at = now()"
                f" WHERE name = %s RETURNING {_COLUMNS}",
                (_models_json(spec), spec.max_concurrency, spec.name),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"endpoint {spec.name!r} does not exist")
        return _row(row)

    async def delete(self, name: str) -> bool:
        """Whether a row was deleted."""
        async with self._db.transaction() as conn:
            cur = await conn.execute("DELETE FROM endpoints WHERE name = %s", (name,))
            return cur.rowcount > 0

    async def get(self, name: str) -> StoredEndpoint:
        async with self._db.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM endpoints WHERE name = %s", (name,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"endpoint {name!r} does not exist")
        return _row(row)

    async def list(self, after: str = "", limit: int = 100) -> list[StoredEndpoint]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM endpoints WHERE name > %s ORDER BY name LIMIT %s", (after, limit)
            )
            return [_row(r) for r in await cur.fetchall()]


def _models_json(spec: EndpointSpec) -> Jsonb:
    return Jsonb([m.to_json() for m in spec.served_models])


def _row(row: tuple) -> StoredEndpoint:
    name, models, max_concurrency, created_by, created_at, updated_at = row
    if isinstance(models, str):
        models = json.loads(models)
    spec = EndpointSpec(name, tuple(ServedModelSpec.from_json(m) for m in models), max_concurrency)
    return StoredEndpoint(spec, created_by, created_at, updated_at)
