"""Source-table connector: follow a PostgreSQL table into an index, through `tessera.retrieval.sync`.

Inserts and updates are found by a watermark column (e.g. `updated_at`, which
the source must bump on every update): rows past the stored watermark, in
(watermark, id) order. Deletes leave no row to find, so the connector installs
an AFTER DELETE trigger that writes each deleted id into a tombstone table next
to the source (`<table>_tessera_deletes`); the connector reads it by sequence.
(A soft-delete column would need every writer of the source to cooperate; the
trigger catches plain DELETEs from anyone.)

Versions are the change time in microseconds (watermark for upserts, deletion
time for deletes), so re-publishing is harmless, a delete beats the upserts
before it, and a re-insert after a delete wins again. Rows changed less than
`settle_s` ago are left for the next poll: a transaction that stamped its
watermark earlier but commits later would otherwise be skipped forever.

The stored state (watermark, last id, last delete sequence) advances only after
Kafka acknowledged the records: at-least-once, never lost.

Every record carries the connector's token in an `authorization` header: the
sync consumer applies it only if that principal may MODIFY the index's schema.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from google.protobuf import struct_pb2
from pgvector.psycopg import register_vector_async
from psycopg import sql
from tessera.events.v1.retrieval_pb2 import RetrievalSyncRecord

from services.common.kafka_producer import EventProducer
from services.retrieval import metrics
from services.retrieval.kafka_api import AUTHORIZATION_HEADER
from services.retrieval.store import ConnectorState, IndexStore

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ConnectorSpec:
    name: str
    index: str
    source_dsn: str
    # `schema.table` or `table`.
    table: str
    id_column: str = "id"
    watermark_column: str = "updated_at"
    # Source columns copied into the document's metadata (names must match the index's metadata schema).
    metadata_columns: tuple[str, ...] = ()
    # Source column with the document text (self-managed or managed without text columns); "" for none.
    text_column: str = ""
    # Source pgvector column for self-managed indexes; "" for managed embeddings.
    vector_column: str = ""
    batch_size: int = 500
    settle_s: float = 0.2

    @classmethod
    def from_json(cls, path: Path) -> ConnectorSpec:
        data = json.loads(path.read_text())
        data["metadata_columns"] = tuple(data.get("metadata_columns", ()))
        return cls(**data)

    def table_ident(self, suffix: str = "") -> sql.Identifier:
        parts = self.table.split(".")
        parts[-1] += suffix
        return sql.Identifier(*parts)

    def trigger_names(self) -> tuple[str, str]:
        base = self.table.split(".")[-1]
        return f"{base}_tessera_capture_delete", f"{base}_tessera_capture_delete_fn"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _micros(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


class SourceTableConnector:
    def __init__(self, spec: ConnectorSpec, store: IndexStore, producer: EventProducer, topic: str, token: str) -> None:
        """`token`: the bearer token the records carry (the service's own, or one the connector was given)."""
        self.spec = spec
        self.store = store
        self.producer = producer
        self.topic = topic
        self._headers = {AUTHORIZATION_HEADER: f"Bearer {token}"}
        self._stopping = asyncio.Event()

    async def install_delete_capture(self) -> None:
        """Create the tombstone table and the AFTER DELETE trigger on the source (idempotent)."""
        spec = self.spec
        trigger, function = spec.trigger_names()
        schema_parts = spec.table.split(".")[:-1]
        fn = sql.Identifier(*schema_parts, function)
        async with await psycopg.AsyncConnection.connect(spec.source_dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, id text NOT NULL,"
                    " deleted_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ).format(spec.table_ident("_tessera_deletes"))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$"
                    " BEGIN INSERT INTO {tomb} (id) VALUES (OLD.{id}::text); RETURN OLD; END $$"
                ).format(fn=fn, tomb=spec.table_ident("_tessera_deletes"), id=sql.Identifier(spec.id_column))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {trigger} AFTER DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {fn}()"
                ).format(trigger=sql.Identifier(trigger), table=spec.table_ident(), fn=fn)
            )

    async def sync_once(self) -> tuple[int, int]:
        """Publish every settled change since the stored state; returns (upserts, deletes) published."""
        spec = self.spec
        state = await self.store.connector_state(spec.name)
        watermark, last_id, deletes_seq = state.watermark, state.last_id, state.deletes_seq
        upserts = deletes = 0
        async with await psycopg.AsyncConnection.connect(spec.source_dsn, autocommit=True) as conn:
            if spec.vector_column:
                await register_vector_async(conn)
            while True:
                rows = await self._changed_rows(conn, watermark, last_id)
                if not rows:
                    break
                for row in rows:
                    self.producer.produce(self.topic, self._upsert_record(row), key=spec.index, headers=self._headers)
                await self.producer.flush()
                watermark, last_id = rows[-1][spec.watermark_column], str(rows[-1][spec.id_column])
                await self.store.save_connector_state(spec.name, ConnectorState(watermark, last_id, deletes_seq))
                upserts += len(rows)
                metrics.CONNECTOR_ROWS.labels(spec.name, "upsert").inc(len(rows))
            while True:
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT seq, id, deleted_at FROM {} WHERE seq > %s"
                        " AND deleted_at < clock_timestamp() - make_interval(secs => %s) ORDER BY seq LIMIT %s"
                    ).format(spec.table_ident("_tessera_deletes")),
                    (deletes_seq, spec.settle_s, spec.batch_size),
                )
                tombstones = await cur.fetchall()
                if not tombstones:
                    break
                for _seq, doc_id, deleted_at in tombstones:
                    record = RetrievalSyncRecord(
                        index=spec.index, op=RetrievalSyncRecord.DELETE, document_id=doc_id, version=_micros(deleted_at)
                    )
                    record.source_timestamp.FromDatetime(deleted_at)
                    self.producer.produce(self.topic, record, key=spec.index, headers=self._headers)
                await self.producer.flush()
                deletes_seq = tombstones[-1][0]
                await self.store.save_connector_state(spec.name, ConnectorState(watermark, last_id, deletes_seq))
                deletes += len(tombstones)
                metrics.CONNECTOR_ROWS.labels(spec.name, "delete").inc(len(tombstones))
        return upserts, deletes

    async def _changed_rows(
        self, conn: psycopg.AsyncConnection, watermark: datetime | None, last_id: str
    ) -> list[dict]:
        spec = self.spec
        wanted = [spec.id_column, spec.watermark_column, *spec.metadata_columns]
        wanted += [c for c in (spec.text_column, spec.vector_column) if c]
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in dict.fromkeys(wanted))
        wm, ident = sql.Identifier(spec.watermark_column), sql.Identifier(spec.id_column)
        after = (
            sql.SQL("TRUE")
            if watermark is None
            else sql.SQL("({wm}, {id}::text) > (%(wm)s, %(id)s)").format(wm=wm, id=ident)
        )
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(
            sql.SQL(
                "SELECT {cols} FROM {t} WHERE {after} AND {wm} < clock_timestamp() - make_interval(secs => %(settle)s)"
                " ORDER BY {wm}, {id}::text LIMIT %(limit)s"
            ).format(cols=columns, t=spec.table_ident(), after=after, wm=wm, id=ident),
            {"wm": watermark, "id": last_id, "settle": spec.settle_s, "limit": spec.batch_size},
        )
        return await cur.fetchall()

    def _upsert_record(self, row: dict) -> RetrievalSyncRecord:
        spec = self.spec
        changed: datetime = row[spec.watermark_column]
        metadata = struct_pb2.Struct()
        for column in spec.metadata_columns:
            metadata[column] = _json_value(row[column])
        record = RetrievalSyncRecord(
            index=spec.index,
            op=RetrievalSyncRecord.UPSERT,
            document_id=str(row[spec.id_column]),
            version=_micros(changed),
            text=(row[spec.text_column] or "") if spec.text_column else "",
            metadata=metadata,
        )
        if spec.vector_column and row[spec.vector_column] is not None:
            record.vector.extend(row[spec.vector_column].to_list())
        record.source_timestamp.FromDatetime(changed)
        return record

    async def run(self, poll_s: float) -> None:
        """Sync continuously until `stop()`; a failing poll is logged and retried."""
        while not self._stopping.is_set():
            try:
                await self.sync_once()
            except Exception as exc:  # noqa: BLE001 - a source outage must not end the connector
                _log.warning("connector %s: sync failed, retrying: %s", self.spec.name, exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), poll_s)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping.set()
