"""Kafka: eval requests from `tessera.eval.requests`, results to `tessera.eval.results`.

A request record carries the spec and the caller's bearer token (Kafka has no per-call
metadata). It is authenticated and checked exactly like StartEvalRun; a record that cannot
start a run (undecodable, bad token, invalid spec, no privilege) goes to
`tessera.eval.requests.dlq` with the reason in headers and its token blanked. An accepted run
executes in this process like one started over gRPC; a redelivered record with the same
`eval_run_id` finds the run already there and starts nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from confluent_kafka import Message
from tessera.events.v1 import evaluation_pb2 as events_pb

from services.common.auth import TokenAuthenticator
from services.common.errors import InvalidArgument
from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.evaluation import converters as cv
from services.evaluation.core import EvaluationCore
from services.evaluation.entities import RowResult

_REDACTED = "[redacted]"


class ResultPublisher:
    """Every per-row and summary record, keyed by the evaluated endpoint (one partition per endpoint keeps order)."""

    def __init__(self, producer: EventProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def __call__(self, result: RowResult) -> None:
        await self.producer.send(self.topic, cv.result(result), key=result.target_endpoint or None)


def _redacted(message: Message) -> bytes | None:
    """The DLQ copy of a request without its bearer token."""
    try:
        request = events_pb.EvalRequest.FromString(message.value() or b"")
    except Exception:  # noqa: BLE001 - undecodable: nothing to keep that might hold a token
        return b""
    if request.auth_token:
        request.auth_token = _REDACTED
    return request.SerializeToString()


class EvalRequestConsumer:
    def __init__(
        self,
        core: EvaluationCore,
        authenticator: TokenAuthenticator,
        producer: EventProducer,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        **config: object,
    ) -> None:
        self.core = core
        self.authenticator = authenticator
        self.loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=group_id,
            topics=[topic],
            message_type=events_pb.EvalRequest,
            handler=self._handle,
            dlq_producer=producer,
            batch_size=50,
            redact=_redacted,
            **config,
        )

    async def _handle(self, records: list[Record[events_pb.EvalRequest]]) -> None:
        for record in records:
            request = record.value
            if not request.HasField("spec"):
                raise InvalidArgument("the request has no spec", field="spec")
            # A bad token or a refused/invalid spec raises: the loop dead-letters the record with the reason.
            principal = self.authenticator.principal_for_token(request.auth_token)
            spec = cv.run_spec(request.spec)
            if not spec.eval_run_id:
                # The record's place names the run, so a redelivered record finds it instead of starting another.
                where = hashlib.sha256(record.topic.encode()).hexdigest()[:8]
                spec = replace(spec, eval_run_id=f"kafka-{where}-{record.partition}-{record.offset}")
            await self.core.start_run(principal, spec)

    async def run(self) -> None:
        await self.loop.run()

    def stop(self) -> None:
        self.loop.stop()
