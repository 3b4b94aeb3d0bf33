"""Inference, the same for every front end: bounds, limits, EXECUTE on the endpoint, routing, payload log.

Every call, whatever its outcome, ends in exactly one payload-log record,
written from the `finally` of the call (so errors, cancellations and successes
are all logged the same way). A call refused before it ran (out of bounds, no
EXECUTE, unknown endpoint) logs only its status and principal: a caller who may
not use an endpoint must not put data into its inference table or drift profiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.common import telemetry
from services.common.auth import Principal
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    TesseraError,
    Unavailable,
    status_of,
)
from services.serving.deployment import Deployment
from services.serving.endpoints import EndpointControl
from services.serving.entities import (
    AGENT,
    EMBEDDING,
    LLM,
    TENSOR,
    EmbedCall,
    EmbeddingResult,
    GenerateCall,
    SamplingSpec,
    TensorCall,
    TensorResult,
    TextChunk,
    TextResult,
    TokenLogprob,
    is_valid_endpoint_name,
    is_valid_request_id,
)
from services.serving.model_pool import LoadedModel
from services.serving.payload_log import PayloadLogWriter, PayloadRecord
from services.serving.usage import Reservation, UsageMeter, prompt_bound

CANCELLED = "CANCELLED"


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
        self,
        endpoints: EndpointControl,
        limits: Limits,
        payload_log: PayloadLogWriter,
        usage: UsageMeter | None = None,
    ) -> None:
        self._endpoints = endpoints
        self.limits = limits
        self._log = payload_log
        self.usage = usage

    def kind_of(self, endpoint: str) -> str:
        """LLM when every model the endpoint runs here is an LLM, else TENSOR (unknown endpoints fail later)."""
        try:
            return LLM if self._endpoints.deployment(endpoint).kind() in (LLM, AGENT) else TENSOR
        except TesseraError:
            return TENSOR

    async def generate(
        self, call: GenerateCall, principal: Principal, *, wait: bool = False
    ) -> AsyncIterator[TextChunk]:
        """Stream the generation; `wait` queues for a concurrency slot instead of failing at once (Kafka)."""
        self._log.check_capacity()  # refused, not accepted: no log is owed
        outcome = _Outcome(call.request_id, call.endpoint, call.source, principal, call.labels)
        parts: list[str] = []
        reservation: Reservation | None = None
        try:
            call.check()
            self.limits.check_size(call.size_bytes)
            self.limits.check_sampling(call.sampling)
            deployment = await self._endpoints.callable(call.endpoint, principal)
            reservation = await self._reserve(
                deployment, principal, prompt_bound(call.prompt, call.messages), call.sampling.max_tokens
            )
            outcome.accepted(call.inputs_for_log())
            prompt = call.messages if call.messages is not None else call.prompt
            async with self._model(deployment, wait=wait) as first:
                # An unavailable model (a provider failing after its retries) hands the call to the
                # endpoint's fallback routes, in order, as long as nothing was sent yet.
                candidates = [first, *deployment.fallbacks(first)]
                for index, model in enumerate(candidates):
                    try:
                        with model.lease() if index else contextlib.nullcontext():
                            outcome.served(model.model_name, model.version)
                            if model.runtime.kind == AGENT:  # retrieves and generates as the caller
                                chunks = model.runtime.answer(
                                    call.request_id, prompt, call.sampling, principal, wait=wait
                                )
                            else:
                                chunks = model.runtime.generate(call.request_id, prompt, call.sampling)
                            async with contextlib.aclosing(chunks) as stream:
                                async for chunk in stream:
                                    outcome.token(chunk)
                                    parts.append(chunk.text)
                                    if chunk.served_model != model.model_name or chunk.model_version != model.version:
                                        chunk = dataclasses.replace(
                                            chunk, served_model=model.model_name, model_version=model.version
                                        )
                                    yield chunk
                        break
                    except Unavailable:
                        if parts or index == len(candidates) - 1:
                            raise
        except BaseException as exc:
            outcome.failed(exc)
            raise
        finally:
            outcome.outputs = {"text": "".join(parts), **outcome.cited()}
            outcome.settle(self.usage, reservation)
            self._log.submit(outcome.record())

    async def generate_all(self, call: GenerateCall, principal: Principal, *, wait: bool = False) -> TextResult:
        """The whole generation as one answer (unary front ends)."""
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        prompt_logprobs: tuple[TokenLogprob, ...] | None = None
        last: TextChunk | None = None
        sources: TextChunk | None = None  # an agent's passages and citations come on one chunk
        async with contextlib.aclosing(self.generate(call, principal, wait=wait)) as chunks:
            async for chunk in chunks:
                if chunk.passages or chunk.citations:
                    sources = chunk
                parts.append(chunk.text)
                logprobs.extend(chunk.logprobs)
                prompt_logprobs = chunk.prompt_logprobs if prompt_logprobs is None else prompt_logprobs
                last = chunk
        if last is None:  # a runtime that ends without a chunk still answers
            return TextResult(call.request_id, "", 0, 0, "", "", 0)
        return TextResult(
            request_id=call.request_id,
            text="".join(parts),
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            finish_reason=last.finish_reason or "",
            served_model=last.served_model,
            model_version=last.model_version,
            logprobs=tuple(logprobs),
            prompt_logprobs=prompt_logprobs,
            passages=sources.passages if sources else (),
            citations=sources.citations if sources else (),
        )

    async def infer(self, call: TensorCall, principal: Principal, *, wait: bool = False) -> TensorResult:
        self._log.check_capacity()  # refused, not accepted: no log is owed
        outcome = _Outcome(call.request_id, call.endpoint, call.source, principal, call.labels)
        reservation: Reservation | None = None
        try:
            call.check()
            self.limits.check_size(call.size_bytes)
            deployment = await self._endpoints.callable(call.endpoint, principal)
            reservation = await self._reserve(deployment, principal, 0, 0)
            outcome.accepted(_tensors_for_log(call.tensors))
            async with self._model(deployment, wait=wait) as model:
                outcome.served(model.model_name, model.version)
                outputs = await model.runtime.infer(call.tensors)
            outcome.outputs = _tensors_for_log(outputs)
            return TensorResult(outputs, model.model_name, model.version)
        except BaseException as exc:
            outcome.failed(exc)
            raise
        finally:
            outcome.settle(self.usage, reservation)
            self._log.submit(outcome.record())

    async def embed(self, call: EmbedCall, principal: Principal) -> EmbeddingResult:
        """Embed texts on an endpoint serving an embedding model; usage counts the tokens the model read."""
        self._log.check_capacity()  # refused, not accepted: no log is owed
        outcome = _Outcome(call.request_id, call.endpoint, call.source, principal, call.labels)
        reservation: Reservation | None = None
        try:
            call.check()
            self.limits.check_size(call.size_bytes)
            deployment = await self._endpoints.callable(call.endpoint, principal)
            # Upper bound: a token per UTF-8 byte plus the special tokens around each text; nothing is generated.
            bound = sum(len(t.encode()) for t in call.texts) + 2 * len(call.texts)
            reservation = await self._reserve(deployment, principal, bound, 0)
            outcome.accepted({"input": list(call.texts)})
            async with self._model(deployment, wait=False) as model:
                outcome.served(model.model_name, model.version)
                runtime = model.runtime
                if runtime.kind != EMBEDDING:
                    raise FailedPrecondition(f"endpoint {call.endpoint!r} does not serve an embedding model")
                if call.dimensions is not None and call.dimensions != runtime.dimension:
                    raise InvalidArgument(
                        f"dimensions: this model's vectors have {runtime.dimension} dimensions and cannot be shortened",
                        field="dimensions",
                    )
                vectors, tokens = await runtime.embed(call.texts)
            outcome.record_.prompt_tokens = tokens
            outcome.outputs = {"embedding": vectors}
            return EmbeddingResult(vectors, tokens, model.model_name, model.version)
        except BaseException as exc:
            outcome.failed(exc)
            raise
        finally:
            outcome.settle(self.usage, reservation)
            self._log.submit(outcome.record())

    async def _reserve(
        self, deployment: Deployment, principal: Principal, prompt_tokens_bound: int, max_tokens: int | None
    ) -> Reservation | None:
        """Reserve against the endpoint's usage limits (RESOURCE_EXHAUSTED when one would be passed)."""
        if self.usage is None:
            return None
        models = [m.model_name for m in deployment.stored.spec.served_models]
        return await self.usage.reserve(deployment.name, models, principal, prompt_tokens_bound, max_tokens)

    @contextlib.asynccontextmanager
    async def _model(self, deployment: Deployment, *, wait: bool) -> AsyncIterator[LoadedModel]:
        """A concurrency slot and a leased model; a deployment replaced while the call queued hands over."""
        while True:
            async with deployment.admit(wait=wait):
                if not deployment.retired:
                    with deployment.lease() as model:
                        yield model
                    return
            deployment = self._endpoints.deployment(deployment.name)

    def log_rejected(
        self,
        request_id: str,
        endpoint: str,
        source: str,
        principal: Principal,
        error: TesseraError,
    ) -> None:
        """Log a request a front end refused before it reached the core (undecodable, unauthenticated):
        its status and principal only, never its inputs."""
        outcome = _Outcome(request_id, endpoint, source, principal, {})
        outcome.failed(error)
        self._log.submit(outcome.record())


class _Outcome:
    """What one call did, gathered as it runs, written as one payload-log record."""

    def __init__(
        self, request_id: str, endpoint: str, source: str, principal: Principal, labels: Mapping[str, str]
    ) -> None:
        self.started = time.perf_counter()
        # Out-of-bounds ids and names never reach the log: they would poison its consumers.
        self.record_ = PayloadRecord(
            request_id=request_id if is_valid_request_id(request_id) else f"invalid-{uuid.uuid4()}",
            endpoint=endpoint if is_valid_endpoint_name(endpoint) else "",
            source=source,
            status="OK",
            timestamp=datetime.now(UTC),
            inputs={},
            principal=principal.name,
            trace_id=telemetry.current_trace_id(),
        )
        self._labels = labels
        self.outputs: Mapping[str, Any] = {}
        self._accepted = False
        self._citations: tuple[str, ...] = ()

    def accepted(self, inputs: Mapping[str, Any]) -> None:
        """The caller may use the endpoint: from here on its data is logged."""
        self._accepted = True
        self.record_.inputs = inputs
        self.record_.labels = dict(self._labels)

    def served(self, model_name: str, version: int) -> None:
        self.record_.served_model, self.record_.model_version = model_name, version

    def token(self, chunk: TextChunk) -> None:
        r = self.record_
        if chunk.passages or chunk.citations:
            # An agent's retrieved context is part of what the model was given: monitoring reads it there.
            r.inputs = {**r.inputs, "retrieved_context": [p.to_json() for p in chunk.passages]}
            self._citations = chunk.citations
        if not r.time_to_first_token_ms and chunk.completion_tokens:
            r.time_to_first_token_ms = (time.perf_counter() - self.started) * 1000
        r.prompt_tokens, r.completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
        if chunk.finish_reason:
            r.finish_reason = chunk.finish_reason

    def cited(self) -> dict[str, Any]:
        return {"citations": list(self._citations)} if self._citations else {}

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, GeneratorExit | asyncio.CancelledError):
            self.record_.status, self.record_.error_message = CANCELLED, "the caller went away"
            return
        self.record_.status = status_of(exc).name
        self.record_.error_message = exc.message if isinstance(exc, TesseraError) else "internal error"

    def settle(self, usage: UsageMeter | None, reservation: Reservation | None) -> None:
        """Replace the reservation by what the call used; the cost (None: unpriced) goes in the record."""
        if usage is not None and reservation is not None:
            r = self.record_
            r.cost_usd = usage.settle(reservation, r.served_model, r.prompt_tokens, r.completion_tokens)

    def record(self) -> PayloadRecord:
        self.record_.latency_ms = (time.perf_counter() - self.started) * 1000
        if self._accepted:
            self.record_.outputs = self.outputs
        return self.record_


def _tensors_for_log(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    # Arrays as they are: the payload-log writer converts (and caps) them off the event loop.
    return {name: np.asarray(value) for name, value in tensors.items()}
