"""Kafka front end: `tessera.retrieval.sync` records -> versioned upserts and deletes.

Records are applied in partition order (the producer keys them by index name,
so one index's changes stay in order). Idempotency comes from the versions: a
redelivered record carries a version the index already holds and is skipped.
A record that cannot be applied (unknown index, wrong dimension, no id...) is
dead-lettered with the reason by the shared consumer loop.

Kafka is a trust boundary: anyone who reaches the broker can write this topic.
So a record says who sends it, with `authorization: Bearer <token>` in its
headers, and is applied only if that principal holds MODIFY on the index's
schema, exactly as an UpsertDocuments call would be. A record without a token,
with an unknown one, or from a principal without MODIFY goes to the DLQ with
the reason.
"""

from __future__ import annotations

import itertools
import logging
import time

from tessera.events.v1.registry_pb2 import RegistryEvent
from tessera.events.v1.retrieval_pb2 import RetrievalSyncRecord

from services.common.auth import Principal, TokenAuthenticator
from services.common.errors import InvalidArgument
from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.retrieval import converters, metrics
from services.retrieval.core import RetrievalCore
from services.retrieval.entities import Document, DocumentRef, validate_index_name

_log = logging.getLogger(__name__)

# The record header naming the sender, as gRPC metadata does: `Bearer <token>`.
AUTHORIZATION_HEADER = "authorization"


def _validated(record: Record[RetrievalSyncRecord]) -> RetrievalSyncRecord:
    value = record.value
    validate_index_name(value.index)
    if value.op not in (RetrievalSyncRecord.UPSERT, RetrievalSyncRecord.DELETE):
        raise InvalidArgument("sync record op must be UPSERT or DELETE", field="op")
    if not value.document_id:
        raise InvalidArgument("sync record has no document_id", field="document_id")
    return value


def _document(value: RetrievalSyncRecord) -> Document:
    return Document(
        id=value.document_id,
        version=value.version,
        vector=list(value.vector) if len(value.vector) else None,
        text=value.text,
        metadata=converters.struct_to_dict(value.metadata, "metadata"),
    )


class SyncApplier:
    """The batch handler: consecutive records of one op, index and sender are written together."""

    def __init__(self, core: RetrievalCore, authenticator: TokenAuthenticator) -> None:
        self.core = core
        self.authenticator = authenticator

    def _sender(self, record: Record[RetrievalSyncRecord]) -> Principal:
        header = record.headers.get(AUTHORIZATION_HEADER, "")
        return self.authenticator.authenticate([(AUTHORIZATION_HEADER, header)] if header else [])

    async def __call__(self, records: list[Record[RetrievalSyncRecord]]) -> None:
        senders = [(self._sender(r), _validated(r)) for r in records]
        # Runs of the same (index, op, sender), in order: a delete between two upserts stays between them.
        for (index, op, principal), run in itertools.groupby(
            senders, key=lambda pair: (pair[1].index, pair[1].op, pair[0])
        ):
            batch = [value for _, value in run]
            if op == RetrievalSyncRecord.UPSERT:
                result = await self.core.upsert(principal, index, [_document(v) for v in batch])
            else:
                refs = [DocumentRef(v.document_id, v.version) for v in batch]
                result = await self.core.delete_documents(principal, index, refs)
            metrics.SYNC_APPLIED.labels(index, "applied").inc(result.applied)
            metrics.SYNC_APPLIED.labels(index, "skipped").inc(result.skipped)
            stamped = [v.source_timestamp.ToNanoseconds() for v in batch if v.HasField("source_timestamp")]
            if stamped:
                metrics.SYNC_LAG.labels(index).set(max(0.0, time.time() - max(stamped) / 1e9))


def sync_consumer(
    core: RetrievalCore,
    authenticator: TokenAuthenticator,
    *,
    bootstrap: str,
    topic: str,
    group_id: str,
    dlq_producer: EventProducer,
) -> ConsumerLoop[RetrievalSyncRecord]:
    return ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[topic],
        message_type=RetrievalSyncRecord,
        handler=SyncApplier(core, authenticator),
        dlq_producer=dlq_producer,
    )


class RegistryEventFollower:
    """Drops cached grant answers on the registry's events (`tessera.registry.events`).

    Each replica follows in a group of its own, from the newest event: what
    happened before it started cannot be in its cache.
    """

    def __init__(
        self, core: RetrievalCore, *, bootstrap: str, topic: str, group_id: str, dlq_producer: EventProducer
    ) -> None:
        self.core = core
        self.loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=group_id,
            topics=[topic],
            message_type=RegistryEvent,
            handler=self._handle,
            dlq_producer=dlq_producer,
            **{"auto.offset.reset": "latest"},
        )

    async def _handle(self, records: list[Record[RegistryEvent]]) -> None:
        for record in records:
            self.core.on_registry_event(record.value)
