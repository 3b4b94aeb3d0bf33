"""Kafka front end: `tessera.retrieval.sync` records -> versioned upserts and deletes.

Records are applied in partition order (the producer keys them by index name,
so one index's changes stay in order). Idempotency comes from the versions: a
redelivered record carries a version the index already holds and is skipped.
A record that cannot be applied (unknown index, wrong dimension, no id...) is
dead-lettered with the reason by the shared consumer loop.
"""

from __future__ import annotations

import itertools
import logging
import time

from tessera.events.v1.retrieval_pb2 import RetrievalSyncRecord

from services.common.errors import InvalidArgument
from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.retrieval import converters, metrics
from services.retrieval.core import RetrievalCore
from services.retrieval.models import Document, DocumentRef, validate_index_name

_log = logging.getLogger(__name__)


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
    """The batch handler: consecutive records of one op and index are written together."""

    def __init__(self, core: RetrievalCore) -> None:
        self.core = core

    async def __call__(self, records: list[Record[RetrievalSyncRecord]]) -> None:
        values = [_validated(r) for r in records]
        # Runs of the same (index, op), in order: a delete between two upserts stays between them.
        for (index, op), run in itertools.groupby(values, key=lambda v: (v.index, v.op)):
            batch = list(run)
            if op == RetrievalSyncRecord.UPSERT:
                result = await self.core.apply_upserts(index, [_document(v) for v in batch])
            else:
                result = await self.core.apply_deletes(index, [DocumentRef(v.document_id, v.version) for v in batch])
            metrics.SYNC_APPLIED.labels(index, "applied").inc(result.applied)
            metrics.SYNC_APPLIED.labels(index, "skipped").inc(result.skipped)
            stamped = [v.source_timestamp.ToNanoseconds() for v in batch if v.HasField("source_timestamp")]
            if stamped:
                metrics.SYNC_LAG.labels(index).set(max(0.0, time.time() - max(stamped) / 1e9))


def sync_consumer(
    core: RetrievalCore, *, bootstrap: str, topic: str, group_id: str, dlq_producer: EventProducer
) -> ConsumerLoop[RetrievalSyncRecord]:
    return ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[topic],
        message_type=RetrievalSyncRecord,
        handler=SyncApplier(core),
        dlq_producer=dlq_producer,
    )
