"""Inference, the same for every front end: limits, EXECUTE check, routing, payload log.

Every call, whatever its outcome, ends in exactly one payload-log record,
written from the `finally` of the call (so errors, cancellations and successes
are all logged the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np

from services.common import telemetry
from services.common.auth import Principal
from services.common.errors import InvalidArgument, ResourceExhausted, TesseraError, status_of
from services.serving.access import ExecuteChecker
from services.serving.endpoints import EndpointControl
from services.serving.entities import GenerateCall, SamplingSpec, TensorCall, TensorResult, TextChunk
from services.serving.payload_log import PayloadLogWriter, PayloadRecord


class Limits:
    def __init__(self, *, max_request_bytes: int, max_tokens: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_tokens = max_tokens

    def check_size(self, size_bytes: int) -> None:
        if size_bytes > self.max_request_bytes:
            raise ResourceExhausted(
                f"request of {size_bytes} bytes is over the limit of {self.max_request_bytes} bytes"
            )

    def check_sampling(self, sampling: SamplingSpec) -> None:
        if sampling.max_tokens is not None and sampling.max_tokens > self.max_tokens:
            raise InvalidArgument(f"max_tokens {sampling.max_tokens} is over the limit of {self.max_tokens}")


class InferenceCore:
    def __init__(
        self, endpoints: EndpointControl, access: ExecuteChecker, limits: Limits, payload_log: PayloadLogWriter
    ) -> None:
        self._endpoints = endpoints
        self._access = access
        self.limits = limits
        self._log = payload_log

    async def generate(
        self, call: GenerateCall, principal: Principal, *, wait: bool = False
    ) -> AsyncIterator[TextChunk]:
        """Stream the generation; `wait` queues for a concurrency slot instead of failing at once (Kafka)."""
        self._log.check_capacity()  # refused, not accepted: no log is owed
        outcome = _Outcome(call.request_id, call.endpoint, call.source, principal, call.inputs_for_log(), call.labels)
        parts: list[str] = []
        try:
            self.limits.check_size(call.size_bytes)
            self.limits.check_sampling(call.sampling)
            if call.prompt is None and not call.messages:
                raise InvalidArgument("give a prompt or chat messages")
            deployment = self._endpoints.deployment(call.endpoint)
            async with deployment.admit(wait=wait):
                route = deployment.pick()
                model = route.model
                outcome.served(model.model_name, model.version)
                await self._access.check(principal, model.model_name)
                prompt = call.messages if call.messages is not None else call.prompt
                with model.lease() as runtime:
                    async with contextlib.aclosing(runtime.generate(call.request_id, prompt, call.sampling)) as chunks:
                        async for chunk in chunks:
                            outcome.token(chunk)
                            parts.append(chunk.text)
                            yield TextChunk(
                                chunk.text,
                                chunk.prompt_tokens,
                                chunk.completion_tokens,
                                chunk.finished,
                                chunk.finish_reason,
                                model.model_name,
                                model.version,
                            )
        except BaseException as exc:
            outcome.failed(exc)
            raise
        finally:
            outcome.outputs = {"text": "".join(parts)}
            self._log.submit(outcome.record())

    async def infer(self, call: TensorCall, principal: Principal, *, wait: bool = False) -> TensorResult:
        self._log.check_capacity()  # refused, not accepted: no log is owed
        outcome = _Outcome(
            call.request_id, call.endpoint, call.source, principal, _tensors_for_log(call.tensors), call.labels
        )
        try:
            self.limits.check_size(call.size_bytes)
            deployment = self._endpoints.deployment(call.endpoint)
            async with deployment.admit(wait=wait):
                model = deployment.pick().model
                outcome.served(model.model_name, model.version)
                await self._access.check(principal, model.model_name)
                with model.lease() as runtime:
                    outputs = await runtime.infer(call.tensors)
            outcome.outputs = _tensors_for_log(outputs)
            return TensorResult(outputs, model.model_name, model.version)
        except BaseException as exc:
            outcome.failed(exc)
            raise
        finally:
            self._log.submit(outcome.record())

    def log_rejected(
        self,
        request_id: str,
        endpoint: str,
        source: str,
        principal: Principal,
        error: TesseraError,
        inputs: Mapping[str, Any],
    ) -> None:
        """Log a request a front end refused before it reached the core (undecodable, unauthenticated)."""
        outcome = _Outcome(request_id, endpoint, source, principal, inputs, {})
        outcome.failed(error)
        self._log.submit(outcome.record())


class _Outcome:
    """What one call did, gathered as it runs, written as one payload-log record."""

    def __init__(
        self, request_id: str, endpoint: str, source: str, principal: Principal, inputs: Mapping[str, Any], labels
    ) -> None:
        self.started = time.perf_counter()
        self.record_ = PayloadRecord(
            request_id=request_id,
            endpoint=endpoint,
            source=source,
            status="OK",
            timestamp=datetime.now(UTC),
            inputs=inputs,
            principal=principal.name,
            trace_id=telemetry.current_trace_id(),
            labels=dict(labels),
        )
        self.outputs: Mapping[str, Any] = {}

    def served(self, model_name: str, version: int) -> None:
        self.record_.served_model, self.record_.model_version = model_name, version

    def token(self, chunk: TextChunk) -> None:
        r = self.record_
        if not r.time_to_first_token_ms and chunk.completion_tokens:
            r.time_to_first_token_ms = (time.perf_counter() - self.started) * 1000
        r.prompt_tokens, r.completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
        if chunk.finish_reason:
            r.finish_reason = chunk.finish_reason

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, GeneratorExit | asyncio.CancelledError):
            self.record_.status, self.record_.error_message = grpc.StatusCode.CANCELLED.name, "the caller went away"
            return
        self.record_.status = status_of(exc).name
        self.record_.error_message = exc.message if isinstance(exc, TesseraError) else "internal error"

    def record(self) -> PayloadRecord:
        self.record_.latency_ms = (time.perf_counter() - self.started) * 1000
        self.record_.outputs = self.outputs
        return self.record_


def _tensors_for_log(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    # Arrays as they are: the payload-log writer converts (and caps) them off the event loop.
    return {name: np.asarray(value) for name, value in tensors.items()}
