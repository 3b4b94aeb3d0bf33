"""Inference over Kafka: a consumer group on `tessera.serving.requests`, replies on each request's reply topic.

Every request gets a response with its id (status OK or the error's code name).
A bad request (undecodable, unknown endpoint, bad input, no EXECUTE) also goes to
`<topic>.dlq` with the reason in headers: never a silent drop. Requests of a
batch run concurrently; they wait for a concurrency slot rather than fail
(Kafka is the queue), and offsets are committed once every response is acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import time

from confluent_kafka import Message
from tessera.events.v1 import serving_pb2 as events_pb

from services.common import telemetry, topics
from services.common.auth import ANONYMOUS, Principal, TokenAuthenticator
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TesseraError,
    Unauthenticated,
)
from services.common.kafka_consumer import ERROR_CODE_HEADER, ERROR_HEADER, ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.serving.conversions import kafka_call, tensors_to_struct
from services.serving.entities import GenerateCall
from services.serving.inference import InferenceCore

# The requester's fault: dead-lettered for someone to look at, besides the error response.
_BAD_REQUEST = (InvalidArgument, NotFound, PermissionDenied, Unauthenticated, FailedPrecondition)


class KafkaRequestServer:
    def __init__(
        self,
        inference: InferenceCore,
        authenticator: TokenAuthenticator,
        producer: EventProducer,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        default_reply_topic: str,
        batch_size: int,
    ) -> None:
        self._inference = inference
        self._auth = authenticator
        self._producer = producer
        self._default_reply = default_reply_topic
        self.loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=group_id,
            topics=[topic],
            message_type=events_pb.InferenceRequest,
            handler=self._handle,
            dlq_producer=producer,
            batch_size=batch_size,
            on_dead_letter=self._answer_undecodable,
        )

    async def run(self) -> None:
        await self.loop.run()

    def stop(self) -> None:
        self.loop.stop()

    async def _handle(self, records: list[Record[events_pb.InferenceRequest]]) -> None:
        await asyncio.gather(*(telemetry.run_in(record.trace, self._serve(record)) for record in records))

    async def _serve(self, record: Record[events_pb.InferenceRequest]) -> None:
        request = record.value
        request_id = request.request_id or record.key or record.record_id
        request.request_id = request_id
        reply_to = request.reply_to or self._default_reply
        started = time.perf_counter()
        response = events_pb.InferenceResponse(request_id=request_id, endpoint=request.endpoint, status="OK")
        try:
            principal = self._principal(request, record)
            await self._run(request, principal, len(record.raw.value() or b""), response)
        except TesseraError as exc:
            response.status, response.error_message = exc.code_name, exc.message
            if isinstance(exc, _BAD_REQUEST):
                await self._dead_letter(record.raw, exc)
        except Exception:  # noqa: BLE001 - answered and dead-lettered, never a crash of the loop
            response.status, response.error_message = "INTERNAL", "internal error; see the service log"
            await self._dead_letter(record.raw, RuntimeError("internal error"))
        response.latency_ms = (time.perf_counter() - started) * 1000
        await self._producer.send(reply_to, response, key=request_id)

    def _principal(self, request: events_pb.InferenceRequest, record: Record) -> Principal:
        try:
            if not self._auth.enabled:
                return Principal(ANONYMOUS)
            if not request.auth_token:
                raise Unauthenticated("the request carries no auth_token")
            return self._auth.principal_for_token(request.auth_token)
        except Unauthenticated as exc:
            self._inference.log_rejected(request.request_id, request.endpoint, "kafka", Principal(ANONYMOUS), exc, {})
            raise

    async def _run(
        self,
        request: events_pb.InferenceRequest,
        principal: Principal,
        size: int,
        response: events_pb.InferenceResponse,
    ) -> None:
        try:
            call = kafka_call(request, size)
        except TesseraError as exc:
            self._inference.log_rejected(request.request_id, request.endpoint, "kafka", principal, exc, {})
            raise
        if isinstance(call, GenerateCall):
            parts, last = [], None
            async for chunk in self._inference.generate(call, principal, wait=True):
                parts.append(chunk.text)
                last = chunk
            response.text = "".join(parts)
            response.served_model, response.model_version = last.served_model, str(last.model_version)
            response.prompt_tokens, response.completion_tokens = last.prompt_tokens, last.completion_tokens
            response.finish_reason = last.finish_reason or ""
        else:
            result = await self._inference.infer(call, principal, wait=True)
            response.tensors.CopyFrom(tensors_to_struct(result.outputs))
            response.served_model, response.model_version = result.served_model, str(result.model_version)

    async def _dead_letter(self, message: Message, exc: TesseraError | Exception) -> None:
        code = exc.code_name if isinstance(exc, TesseraError) else "INTERNAL"
        reason = exc.message if isinstance(exc, TesseraError) else str(exc)
        headers = list(message.headers() or [])
        headers += [
            (ERROR_HEADER, reason[:4000].encode()),
            (ERROR_CODE_HEADER, code.encode()),
            ("tessera-original-topic", message.topic().encode()),
            ("tessera-original-partition", str(message.partition()).encode()),
            ("tessera-original-offset", str(message.offset()).encode()),
            ("tessera-consumer-group", self.loop.group_id.encode()),
        ]
        await self._producer.send_bytes(
            topics.dlq(message.topic()), message.value(), key=message.key(), headers=headers
        )

    async def _answer_undecodable(self, message: Message, exc: BaseException) -> None:
        """A record that is not an InferenceRequest: answer it when its request id can be read."""
        request_id, reply_to, endpoint = _readable_ids(message)
        if not request_id:
            return
        error = exc if isinstance(exc, TesseraError) else InvalidArgument(str(exc))
        self._inference.log_rejected(request_id, endpoint, "kafka", Principal(ANONYMOUS), error, {})
        response = events_pb.InferenceResponse(
            request_id=request_id, endpoint=endpoint, status=error.code_name, error_message=error.message
        )
        await self._producer.send(reply_to or self._default_reply, response, key=request_id)


def _readable_ids(message: Message) -> tuple[str, str, str]:
    """(request id, reply topic, endpoint) from a JSON body, falling back to the record key for the id."""
    request_id = reply_to = endpoint = ""
    try:
        body = json.loads(message.value() or b"")
        if isinstance(body, dict):
            request_id = str(body.get("request_id") or body.get("requestId") or "")
            reply_to = str(body.get("reply_to") or body.get("replyTo") or "")
            endpoint = str(body.get("endpoint") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    if not request_id and message.key():
        request_id = message.key().decode("utf-8", "replace")
    return request_id, reply_to, endpoint
