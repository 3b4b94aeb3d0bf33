"""Agents: a registered model version whose folder holds `agent.json`, answered by retrieval -> prompt -> LLM.

The spec names an LLM endpoint, a retrieval index (k, query mode, filter), a
prompt template with `{context}` and `{question}`, how each passage is labelled
(`citation_format`) and a cap on the context. It is validated when the version
loads: a bad spec fails the route with INVALID_ARGUMENT's reason, nothing runs.

Whose rights: the caller's own. Retrieval is queried with the caller's bearer
token (so the caller needs USE_SCHEMA on the index's schema), and the LLM
endpoint is called through serving's own core as the caller (so the caller needs
EXECUTE on it, and its limits, budgets and payload log apply). The agent holds
no credentials of its own and cannot reach anything its caller could not; only
lineage is written with the service token (bookkeeping, never data).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Histogram
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc
from tessera.retrieval.v1 import retrieval_pb2 as qpb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common import channels
from services.common.auth import Principal, bearer
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TesseraError,
    Unavailable,
)
from services.serving.entities import AGENT, GenerateCall, Passage, SamplingSpec, TextChunk, check_endpoint_name
from services.serving.runtimes.base import AGENT_FILE

_log = logging.getLogger(__name__)
_tracer = trace.get_tracer("tessera.serving.agent")

# Where an agent call's time goes: retrieval, the LLM call, and the agent's own work around them
# (question, context, prompt, chunks): the overhead over calling retrieval and the LLM directly.
STEP_SECONDS = Histogram(
    "tessera_serving_agent_step_seconds",
    "Time of each step of agent calls",
    ["step"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

MAX_SPEC_BYTES = 64 * 1024
MAX_K = 50
MAX_TEMPLATE_CHARS = 16 * 1024
MAX_CITATION_FORMAT_CHARS = 64
DEFAULT_CONTEXT_CHARS = 8_000
MAX_CONTEXT_CHARS = 200_000
MAX_FILTER_DEPTH = 8
QUERY_MODES = {"ann": qpb.ANN, "hybrid": qpb.HYBRID, "full_text": qpb.FULL_TEXT}
LLM_INPUTS = ("prompt", "chat")
# As retrieval names indexes: `catalog.schema.index`, lower-case identifiers.
_PART = r"[a-z_][a-z0-9_]{0,62}"
_INDEX_NAME = re.compile(rf"{_PART}\.{_PART}\.{_PART}\Z")
_PLACEHOLDER = re.compile(r"\{(context|question)\}")
_FIELDS = {
    "llm_endpoint",
    "index",
    "k",
    "query_mode",
    "filter",
    "prompt_template",
    "citation_format",
    "max_context_chars",
    "llm_input",
}


@dataclass(frozen=True)
class AgentSpec:
    llm_endpoint: str
    index: str
    k: int
    query_mode: str
    prompt_template: str
    citation_format: str = "[{id}]"
    max_context_chars: int = DEFAULT_CONTEXT_CHARS
    llm_input: str = "prompt"  # "chat": the rendered prompt as one user message through the chat template
    filter: Mapping[str, Any] | None = None  # retrieval's Filter in protobuf JSON form

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.filter is None:
            del data["filter"]
        return data

    def query_filter(self) -> qpb.Filter | None:
        return None if self.filter is None else json_format.ParseDict(self.filter, qpb.Filter())


def is_agent_folder(folder: Path) -> bool:
    return (folder / AGENT_FILE).is_file()


def load_spec(folder: Path) -> AgentSpec:
    """The folder's agent spec, validated; INVALID_ARGUMENT says what is wrong."""
    path = folder / AGENT_FILE
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise InvalidArgument(f"{AGENT_FILE} is over {MAX_SPEC_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{AGENT_FILE} is not valid JSON: {exc}") from None
    return parse_spec(data)


def parse_spec(data: Any) -> AgentSpec:
    def bad(message: str) -> InvalidArgument:
        return InvalidArgument(f"{AGENT_FILE}: {message}")

    if not isinstance(data, dict):
        raise bad("must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise bad(f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; known: {', '.join(sorted(_FIELDS))}")
    for required in ("llm_endpoint", "index", "prompt_template"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise bad(f"{required!r} is required (a string)")
    try:
        check_endpoint_name(data["llm_endpoint"])
    except InvalidArgument as exc:
        raise bad(f"llm_endpoint: {exc.message}") from None
    if not _INDEX_NAME.match(data["index"]):
        raise bad("index must be `catalog.schema.index` (lower-case letters, digits, '_')")
    k = data.get("k", 4)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise bad(f"k must be an integer from 1 to {MAX_K}")
    mode = data.get("query_mode", "hybrid")
    if mode not in QUERY_MODES:
        raise bad(f"query_mode must be one of {', '.join(QUERY_MODES)}")
    template = data["prompt_template"]
    if len(template) > MAX_TEMPLATE_CHARS:
        raise bad(f"prompt_template is over {MAX_TEMPLATE_CHARS} characters")
    for placeholder in ("{context}", "{question}"):
        if placeholder not in template:
            raise bad(f"prompt_template must contain {placeholder}")
    citation = data.get("citation_format", "[{id}]")
    if not isinstance(citation, str) or "{id}" not in citation or len(citation) > MAX_CITATION_FORMAT_CHARS:
        raise bad(f"citation_format must be a string of at most {MAX_CITATION_FORMAT_CHARS} characters with {{id}}")
    cap = data.get("max_context_chars", DEFAULT_CONTEXT_CHARS)
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_CONTEXT_CHARS:
        raise bad(f"max_context_chars must be an integer from 1 to {MAX_CONTEXT_CHARS}")
    llm_input = data.get("llm_input", "prompt")
    if llm_input not in LLM_INPUTS:
        raise bad(f"llm_input must be one of {', '.join(LLM_INPUTS)}")
    flt = data.get("filter")
    if flt is not None:
        if not isinstance(flt, dict) or _depth(flt) > MAX_FILTER_DEPTH:
            raise bad(f"filter must be a JSON object nested at most {MAX_FILTER_DEPTH} deep")
        try:
            json_format.ParseDict(flt, qpb.Filter())
        except json_format.ParseError as exc:
            raise bad(f"filter is not a retrieval Filter: {exc}") from None
    return AgentSpec(
        llm_endpoint=data["llm_endpoint"],
        index=data["index"],
        k=k,
        query_mode=mode,
        prompt_template=template,
        citation_format=citation,
        max_context_chars=cap,
        llm_input=llm_input,
        filter=flt,
    )


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def question_of(prompt: str | Sequence[Mapping[str, str]]) -> str:
    """What the caller asks: the prompt, or the last user message of a chat."""
    if isinstance(prompt, str):
        question = prompt
    else:
        users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
        if not users:
            raise InvalidArgument("an agent answers the last user message; the chat has none", field="messages")
        question = users[-1]
    if not question.strip():
        raise InvalidArgument("the question is empty")
    return question


def build_context(spec: AgentSpec, hits: Sequence[qpb.Hit]) -> tuple[tuple[Passage, ...], str]:
    """The passages that fit in `max_context_chars` (best first), and the context text labelling each."""
    passages: list[Passage] = []
    parts: list[str] = []
    used = 0
    for hit in hits:
        label = spec.citation_format.replace("{id}", hit.id)
        room = spec.max_context_chars - used - len(label) - 1
        if room <= 0:
            break
        text = hit.text[:room] if not passages else hit.text
        if len(text) > room:
            break
        passages.append(Passage(hit.id, text, hit.score))
        parts.append(f"{label} {text}")
        used += len(label) + 1 + len(text) + 2
    return tuple(passages), "\n\n".join(parts)


def render_prompt(spec: AgentSpec, context: str, question: str) -> str:
    """One pass over the template: text in the context or question is never read as a placeholder."""
    values = {"context": context, "question": question}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], spec.prompt_template)


# -- the services an agent calls ------------------------------------------------------


class RetrievalClient:
    """Retrieval's Query, sent with the caller's own token."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self._channel = channels.channel(address)
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)
        self._timeout = timeout_s

    async def close(self) -> None:
        await self._channel.close()

    async def query(self, spec: AgentSpec, question: str, principal: Principal) -> list[qpb.Hit]:
        request = qpb.QueryRequest(
            index=spec.index, text=question, k=spec.k, mode=QUERY_MODES[spec.query_mode], include_text=True
        )
        flt = spec.query_filter()
        if flt is not None:
            request.filter.CopyFrom(flt)
        metadata = bearer(principal.token) if principal.token else ()
        try:
            reply = await self._stub.Query(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _retrieval_error(exc, spec.index) from None
        return list(reply.hits)


def _retrieval_error(exc: grpc.aio.AioRpcError, index: str) -> TesseraError:
    code, details = exc.code(), exc.details() or exc.code().name
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(f"retrieval refused the caller on index {index}: {details}")
    if code == grpc.StatusCode.NOT_FOUND:
        return FailedPrecondition(f"the agent's index {index} does not exist: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"retrieval refused the query: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"retrieval cannot query index {index}: {details}")
    return Unavailable(f"the retrieval service is unavailable ({code.name}); retry later")


class LineageWriter:
    """Edges into the registry with the service token; bookkeeping, so failures are logged, not raised."""

    def __init__(self, address: str, service_token: str, timeout_s: float = 10.0) -> None:
        self._channel = channels.channel(address)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._metadata = bearer(service_token)
        self._timeout = timeout_s
        self._recorded: set[tuple[str, str, str, str]] = set()
        self._tasks: set[asyncio.Task] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._channel.close()

    def record_later(self, source: tuple[str, str], target: tuple[str, str]) -> None:
        key = (*source, *target)
        if key in self._recorded:
            return
        self._recorded.add(key)
        task = asyncio.create_task(self._record(source, target), name="agent-lineage")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, source: tuple[str, str], target: tuple[str, str]) -> None:
        try:
            await self._stub.CreateLineageEdge(
                rpb.CreateLineageEdgeRequest(
                    source=rpb.LineageNode(type=source[0], name=source[1]),
                    target=rpb.LineageNode(type=target[0], name=target[1]),
                    properties={"service": "serving", "kind": "agent"},
                ),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            self._recorded.discard((*source, *target))  # tried again at the next sighting
            _log.warning("lineage %s -> %s not recorded: %s", source, target, exc.details() or exc.code().name)


class AgentServices:
    """What every agent of this process shares: the core it calls the LLM through, retrieval, lineage.

    Built before the core (the runtime factory needs it), bound to the core once that exists.
    """

    def __init__(self, retrieval: RetrievalClient, lineage: LineageWriter) -> None:
        self.retrieval = retrieval
        self.lineage = lineage
        self._core = None
        self._kind_of: Callable[[str], str | None] = lambda _name: None

    def bind(self, core, kind_of: Callable[[str], str | None]) -> None:
        """`core`: the InferenceCore; `kind_of(endpoint)`: the runtime kind it serves here (None: unknown)."""
        self._core = core
        self._kind_of = kind_of

    @property
    def core(self):
        if self._core is None:
            raise Unavailable("serving is still starting; retry")
        return self._core

    def kind_of(self, endpoint: str) -> str | None:
        return self._kind_of(endpoint)

    async def close(self) -> None:
        await self.retrieval.close()
        await self.lineage.close()


async def answer(
    services: AgentServices,
    spec: AgentSpec,
    agent: tuple[str, int],
    request_id: str,
    prompt: str | Sequence[Mapping[str, str]],
    sampling: SamplingSpec,
    principal: Principal,
    *,
    wait: bool,
) -> AsyncIterator[TextChunk]:
    """Retrieve as the caller, render the prompt, generate through the core as the caller.

    The first chunk carries the passages and the citations (their ids, best first)."""
    started = time.perf_counter()
    waited = 0.0  # inside retrieval and the LLM call: what a direct caller would wait too
    question = question_of(prompt)
    with _tracer.start_as_current_span(
        "agent.retrieve", attributes={"tessera.agent.index": spec.index, "tessera.agent.k": spec.k}
    ) as span:
        asked = time.perf_counter()
        hits = await services.retrieval.query(spec, question, principal)
        waited += time.perf_counter() - asked
        STEP_SECONDS.labels("retrieval").observe(waited)
        span.set_attribute("tessera.agent.hits", len(hits))
    with _tracer.start_as_current_span("agent.prompt") as span:
        passages, context = build_context(spec, hits)
        rendered = render_prompt(spec, context, question)
        span.set_attribute("tessera.agent.passages", len(passages))
        span.set_attribute("tessera.agent.prompt_chars", len(rendered))
    citations = tuple(p.id for p in passages)
    if services.kind_of(spec.llm_endpoint) == AGENT:
        raise FailedPrecondition(f"the agent's llm_endpoint {spec.llm_endpoint!r} serves an agent, not an LLM")
    agent_name = f"{agent[0]}/{agent[1]}"
    call = GenerateCall(
        endpoint=spec.llm_endpoint,
        request_id=_llm_request_id(request_id),
        source="agent",
        prompt=rendered if spec.llm_input == "prompt" else None,
        messages=[{"role": "user", "content": rendered}] if spec.llm_input == "chat" else None,
        sampling=sampling,
        size_bytes=len(rendered.encode()),
        labels={"agent": agent_name[:256], "agent_request_id": request_id},
    )
    span = _tracer.start_span("agent.generate", attributes={"tessera.agent.llm_endpoint": spec.llm_endpoint})
    generation = trace.set_span_in_context(span)
    sent = False
    generating = 0.0
    suspended = 0.0  # while the caller handles a chunk: its time, not the agent's
    try:
        stream = services.core.generate(call, principal, wait=wait)
        async with contextlib.aclosing(stream):
            while True:
                # The LLM call's own spans (privilege check, payload log) are children of agent.generate;
                # attached only around each step, so nothing stays attached across this generator's yields.
                token = otel_context.attach(generation)
                asked = time.perf_counter()
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                finally:
                    generating += time.perf_counter() - asked
                    otel_context.detach(token)
                if not sent:
                    services.lineage.record_later(
                        ("MODEL_VERSION", f"{chunk.served_model}/{chunk.model_version}"), ("MODEL_VERSION", agent_name)
                    )
                    chunk = dataclasses.replace(chunk, passages=passages, citations=citations)
                sent = True
                paused = time.perf_counter()
                yield chunk
                suspended += time.perf_counter() - paused
        if not sent:  # an LLM that answered nothing: the caller still gets the sources
            yield TextChunk("", 0, 0, True, "stop", "", 0, passages=passages, citations=citations)
        STEP_SECONDS.labels("generation").observe(generating)
        own = time.perf_counter() - started - waited - generating - suspended
        STEP_SECONDS.labels("own").observe(max(0.0, own))
    except NotFound as exc:
        span.record_exception(exc)
        raise FailedPrecondition(f"the agent's llm_endpoint {spec.llm_endpoint!r}: {exc.message}") from None
    except PermissionDenied as exc:
        span.record_exception(exc)
        raise PermissionDenied(
            f"the caller may not use the agent's llm_endpoint {spec.llm_endpoint!r}: {exc.message}"
        ) from None
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit | asyncio.CancelledError):
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
        raise
    finally:
        span.end()


def _llm_request_id(request_id: str) -> str:
    """The LLM call's payload-log id: the agent request's id with `.llm`, within the 128-character bound."""
    candidate = f"{request_id}.llm"
    if len(candidate) <= 128:
        return candidate
    return f"{request_id[:80]}-{hashlib.sha256(request_id.encode()).hexdigest()[:32]}.llm"
