"""Inference over Kafka: a consumer group on `tessera.serving.requests`, replies on an allowed reply topic.

Every request gets a response with its id (status OK or the error's code name).
A bad request (undecodable, unknown endpoint, bad input, no EXECUTE, a reply
topic not on the allow-list) also goes to `<topic>.dlq` with the reason in
headers and its auth token redacted: never a silent drop.

- Reply topics: only those of `serving_reply_topics` (exact names or `prefix*`),
  and only for authenticated requests; anything else is answered on the default
  responses topic (the broker auto-creates topics: a free choice would let
  anyone create them).
- Each record is settled on its own: served, answered, dead-lettered where it
  must be. A record already settled is skipped when the consumer retries its
  batch, so one failure never runs a neighbour twice.
- Time-bounded: a request not answered within `request_timeout_s` is answered
  DEADLINE_EXCEEDED, so a batch of slow LLM requests ends well within the
  consumer's `max.poll.interval.ms` (never evicted, redelivered and run again);
  a request older than `request_ttl_s` is not run at all.
- A full payload-log backlog holds requests in Kafka (the batch is retried
  later) rather than answering them; offsets are committed only after the
  batch's payload logs are in the spool (see payload_log.py).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time

from confluent_kafka import Message
from tessera.events.v1 import serving_pb2 as events_pb

from services.common import serialization, telemetry
from services.common.auth import ANONYMOUS, Principal, TokenAuthenticator
from services.common.dead_letters import dead_letter
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TesseraError,
    Unauthenticated,
)
from services.common.kafka_consumer import ConsumerLoop, Record, RetriableError
from services.common.kafka_producer import DeliveryError, EventProducer
from services.serving.converters import citations_to_proto, kafka_call, tensors_to_struct
from services.serving.entities import GenerateCall
from services.serving.inference import InferenceCore
from services.serving.payload_log import PayloadLogWriter

_log = logging.getLogger(__name__)

# The requester's fault: dead-lettered for someone to look at, besides the error response.
# RESOURCE_EXHAUSTED here is an oversize request: Kafka requests wait for a slot instead of being refused.
_BAD_REQUEST = (InvalidArgument, NotFound, PermissionDenied, Unauthenticated, FailedPrecondition, ResourceExhausted)
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MAX_REQUEST_ID = 256
_REDACTED = "[redacted]"
# Records remembered as settled, so a retried batch skips them (a few batches' worth).
_SETTLED_MEMORY = 10_000


class ReplyTopics:
    """The reply topics a requester may name: exact names and `prefix*` patterns."""

    def __init__(self, allowed: str, default: str) -> None:
        self.default = default
        entries = [e.strip() for e in allowed.split(",") if e.strip()]
        self._exact = {default, *(e for e in entries if not e.endswith("*"))}
        self._prefixes = tuple(e[:-1] for e in entries if e.endswith("*"))

    def allows(self, topic: str) -> bool:
        if not _TOPIC_NAME.fullmatch(topic):
            return False
        return topic in self._exact or any(topic.startswith(p) and len(topic) > len(p) for p in self._prefixes)

    def check(self, topic: str) -> None:
        if topic and not self.allows(topic):
            raise PermissionDenied(
                f"reply topic {topic[:100]!r} is not allowed; use {self.default!r} or one of "
                f"{sorted(self._exact | {p + '*' for p in self._prefixes})}"
            )


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
        reply_topics: ReplyTopics,
        batch_size: int,
        payload_log: PayloadLogWriter | None = None,
        request_timeout_s: float = 240.0,
        request_ttl_s: float = 0.0,
        **consumer_config: object,
    ) -> None:
        self._inference = inference
        self._auth = authenticator
        self._producer = producer
        self._replies = reply_topics
        self._payload_log = payload_log
        self._timeout_s = request_timeout_s
        self._ttl_s = request_ttl_s
        self._settled: collections.OrderedDict[tuple[str, int, int], None] = collections.OrderedDict()
        consumer_config.setdefault("max.poll.interval.ms", int((request_timeout_s + 60) * 1000))
        self.loop = ConsumerLoop(
            bootstrap=bootstrap,
            group_id=group_id,
            topics=[topic],
            message_type=events_pb.InferenceRequest,
            handler=self._handle,
            dlq_producer=producer,
            batch_size=batch_size,
            on_dead_letter=self._answer_undecodable,
            redact=redacted_request,
            **consumer_config,
        )
        self._stopping = False

    async def run(self) -> None:
        await self.loop.run()

    def stop(self) -> None:
        self._stopping = True
        self.loop.stop()

    # -- one batch -------------------------------------------------------------

    async def _handle(self, records: list[Record[events_pb.InferenceRequest]]) -> None:
        outcomes = await asyncio.gather(
            *(telemetry.run_in(r.trace, self._settle(r)) for r in records), return_exceptions=True
        )
        if self._payload_log is not None:
            # The offsets are committed after this returns: the batch's logs must be durable first.
            await self._payload_log.wait_durable()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # only transient failures get here; the retry skips settled records

    async def _settle(self, record: Record[events_pb.InferenceRequest]) -> None:
        where = (record.topic, record.partition, record.offset)
        if where in self._settled:
            return
        await self._serve(record)
        self._settled[where] = None
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.popitem(last=False)

    async def _serve(self, record: Record[events_pb.InferenceRequest]) -> None:
        """Serve and answer one record; raises only what should leave it for a later retry."""
        request = record.value
        given_id = request.request_id or record.key or record.record_id or ""
        # Truncated for the response and the log; a longer one is refused in `_admit`.
        request.request_id = request_id = given_id[:_MAX_REQUEST_ID]
        if self._payload_log is not None:
            self._payload_log.check_capacity()  # UNAVAILABLE: the record waits in Kafka for room
        started = time.perf_counter()
        response = events_pb.InferenceResponse(request_id=request_id, endpoint=request.endpoint, status="OK")
        reply_to = self._replies.default
        try:
            principal = self._principal(request)
            self._check_reply_topic(request, principal)
            reply_to = request.reply_to or reply_to
            self._admit(request, record, principal, len(given_id))
            async with asyncio.timeout(self._timeout_s):
                await self._run(request, principal, len(record.raw.value() or b""), response)
        except TimeoutError:
            response.status = DeadlineExceeded.code.name
            response.error_message = f"not answered within {self._timeout_s:g} s"
        except TesseraError as exc:
            response.status, response.error_message = exc.code_name, exc.message
            if isinstance(exc, _BAD_REQUEST):
                await self._deliver(self._dead_letter, record, exc)
        except Exception:  # noqa: BLE001 - answered and dead-lettered, never a crash of the loop
            _log.exception("kafka request %s failed", request_id)
            response.status, response.error_message = "INTERNAL", "internal error; see the service log"
            await self._deliver(self._dead_letter, record, TesseraError("internal error; see the service log"))
        response.latency_ms = (time.perf_counter() - started) * 1000
        await self._deliver(self._producer.send, reply_to, response, key=request_id or None)

    def _principal(self, request: events_pb.InferenceRequest) -> Principal:
        try:
            if not self._auth.enabled:
                return Principal(ANONYMOUS)
            if not request.auth_token:
                raise Unauthenticated("the request carries no auth_token")
            return self._auth.principal_for_token(request.auth_token)
        except Unauthenticated as exc:
            self._inference.log_rejected(request.request_id, request.endpoint, "kafka", Principal(ANONYMOUS), exc)
            raise

    def _check_reply_topic(self, request: events_pb.InferenceRequest, principal: Principal) -> None:
        try:
            self._replies.check(request.reply_to)
        except PermissionDenied as exc:
            self._inference.log_rejected(request.request_id, request.endpoint, "kafka", principal, exc)
            raise

    def _admit(self, request: events_pb.InferenceRequest, record: Record, principal: Principal, id_length: int) -> None:
        """Refuse what must not run: a too-long id, a stale or oversized request."""
        try:
            if id_length > _MAX_REQUEST_ID:
                raise InvalidArgument(f"request_id is over {_MAX_REQUEST_ID} characters")
            if self._ttl_s > 0:
                created = request.created_at.ToMilliseconds() if request.HasField("created_at") else record.timestamp_ms
                age_s = time.time() - created / 1000
                if age_s > self._ttl_s:
                    raise DeadlineExceeded(f"the request is {age_s:.0f} s old, over the limit of {self._ttl_s:g} s")
            # Before any decoding of the inputs (a tensor Struct costs more than its bytes).
            self._inference.limits.check_size(len(record.raw.value() or b""))
        except TesseraError as exc:
            self._inference.log_rejected(request.request_id, request.endpoint, "kafka", principal, exc)
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
            self._inference.log_rejected(request.request_id, request.endpoint, "kafka", principal, exc)
            raise
        if isinstance(call, GenerateCall):
            text = await self._inference.generate_all(call, principal, wait=True)
            response.text = text.text
            response.served_model, response.model_version = text.served_model, str(text.model_version)
            response.prompt_tokens, response.completion_tokens = text.prompt_tokens, text.completion_tokens
            response.finish_reason = text.finish_reason
            response.citations.extend(citations_to_proto(text.passages, text.citations))
        else:
            result = await self._inference.infer(call, principal, wait=True)
            response.tensors.CopyFrom(tensors_to_struct(result.outputs))
            response.served_model, response.model_version = result.served_model, str(result.model_version)

    async def _deliver(self, send, *args, **kwargs) -> None:
        """Send until Kafka acknowledges: the request was served, so a retry must not run it again."""
        backoff = 0.5
        while True:
            try:
                await send(*args, **kwargs)
                return
            except DeliveryError as exc:
                if self._stopping:
                    # Left uncommitted: the next consumer of the partition serves it again.
                    raise RetriableError(f"reply not delivered before stop: {exc}") from exc
                _log.warning("kafka reply not delivered, retrying in %.1f s: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _dead_letter(self, record: Record, exc: TesseraError | Exception) -> None:
        """One attempt at the record's DLQ copy (token redacted); `_deliver` retries it."""
        await dead_letter(self._producer, record.raw, exc, group_id=self.loop.group_id, redact=redacted_request)

    async def _answer_undecodable(self, message: Message, exc: BaseException) -> None:
        """A record that is not an InferenceRequest: answer it when its request id can be read."""
        request_id, endpoint = _readable_ids(message)
        if not request_id:
            return
        error = exc if isinstance(exc, TesseraError) else InvalidArgument(str(exc))
        self._inference.log_rejected(request_id, endpoint, "kafka", Principal(ANONYMOUS), error)
        response = events_pb.InferenceResponse(
            request_id=request_id, endpoint=endpoint, status=error.code_name, error_message=error.message
        )
        # Unauthenticated by construction: only the default topic.
        await self._producer.send(self._replies.default, response, key=request_id)


def redacted_request(message: Message) -> bytes | None:
    """The record's value with its auth token replaced, for the DLQ (protobuf or JSON, as it came)."""
    value = message.value()
    if not value:
        return value
    content_type = next((v for k, v in message.headers() or [] if k == "content-type"), None)
    if content_type and content_type.decode("latin-1").startswith(serialization.JSON):
        try:
            body = json.loads(value)
        except ValueError:
            return value
        if isinstance(body, dict):
            for key in ("auth_token", "authToken"):
                if key in body:
                    body[key] = _REDACTED
            return json.dumps(body).encode()
        return value
    try:
        request = events_pb.InferenceRequest.FromString(value)
    except Exception:  # noqa: BLE001 - not a request: nothing of ours to redact in it
        return value
    if request.auth_token:
        request.auth_token = _REDACTED
    return request.SerializeToString()


def _readable_ids(message: Message) -> tuple[str, str]:
    """(request id, endpoint) from a JSON body, falling back to the record key for the id."""
    request_id = endpoint = ""
    try:
        body = json.loads(message.value() or b"")
        if isinstance(body, dict):
            request_id = str(body.get("request_id") or body.get("requestId") or "")
            endpoint = str(body.get("endpoint") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    if not request_id and message.key():
        request_id = message.key().decode("utf-8", "replace")
    return request_id[:_MAX_REQUEST_ID], endpoint[:256]
