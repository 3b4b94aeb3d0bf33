"""The playground's logic: bounds on what a browser asks, streamed generations, blind comparisons,
labels and evaluation runs, each done with the signed-in user's own token.

Who may do what is decided by the services called, with that token:
- chat and compare stream through serving's OpenAI API: EXECUTE on the endpoint (the page offers
  only `/v1/models`, the endpoints the user may EXECUTE, and refuses any other before calling);
- a blind vote is a PREFERENCE assessment: EXECUTE on both endpoints (evaluation checks);
- review reads monitoring's inference table (SELECT on the endpoint); a label is a LABEL
  assessment (SELECT on the endpoint); saving labels as a dataset needs MODIFY on it;
- eval runs: SELECT on the dataset and EXECUTE on the target to start one; runs are readable by
  their creator and by principals with SELECT on their dataset.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from tessera.common.v1 import common_pb2
from tessera.evaluation.v1 import evaluation_pb2 as epb
from tessera.events.v1 import evaluation_pb2 as eepb
from tessera.events.v1 import serving_pb2 as sepb
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.serving.v1 import serving_pb2 as spb

from services.common.errors import InvalidArgument, PermissionDenied, TesseraError
from services.playground import entities as e
from services.playground.backends import OpenAIClient, ServiceStubs

_log = logging.getLogger(__name__)

# Keys under which an agent's answer may carry its sources (serving's agents are still growing).
CONTEXT_KEYS = ("citations", "retrieved", "retrieved_context", "context", "sources")
MAX_CONTEXT_ITEMS = 20
MAX_CONTEXT_CHARS = 4_000
# How far back a request's payload log is looked for (its cost), in pages of records.
COST_LOOKBACK_S = 900
COST_PAGES, COST_PAGE_SIZE = 5, 200
ENDPOINT_PAGE_SIZE = 200


def owner_of(token: str) -> str:
    """A stable handle on a token that does not reveal it."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def _text(value: object, limit: int, what: str, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be text", field=what)
    if len(value) > limit:
        raise InvalidArgument(f"{what} is over {limit} characters", field=what)
    if required and not value.strip():
        raise InvalidArgument(f"{what} is empty", field=what)
    return value


def _number(value: object, low: float, high: float, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be a number", field=what) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidArgument(f"{what} must be between {low:g} and {high:g}", field=what)
    return number


def endpoint_name(value: object) -> str:
    name = _text(value, e.MAX_NAME_CHARS, "endpoint", required=True)
    if not name.isprintable() or name != name.strip():
        raise InvalidArgument("endpoint: not an endpoint name", field="endpoint")
    return name


def chat_params(raw: dict, bounds: e.Bounds) -> e.ChatParams:
    """The generation a browser asked for, bounded before anything is sent anywhere."""
    if not isinstance(raw, dict):
        raise InvalidArgument("expected a JSON object")
    max_tokens = _number(raw.get("max_tokens"), 1, bounds.max_tokens, "max_tokens")
    if max_tokens is not None and max_tokens != int(max_tokens):
        raise InvalidArgument("max_tokens must be a whole number", field="max_tokens")
    stop_raw = raw.get("stop") or []
    if isinstance(stop_raw, str):
        stop_raw = [s for s in stop_raw.split("\n") if s]
    if not isinstance(stop_raw, list) or len(stop_raw) > e.MAX_STOP_STRINGS:
        raise InvalidArgument(f"at most {e.MAX_STOP_STRINGS} stop strings", field="stop")
    stop = tuple(_text(s, e.MAX_STOP_CHARS, "stop", required=True) for s in stop_raw)
    return e.ChatParams(
        prompt=_text(raw.get("prompt"), bounds.max_prompt_chars, "prompt", required=True),
        system=_text(raw.get("system"), bounds.max_system_chars, "system"),
        temperature=_number(raw.get("temperature"), 0.0, 2.0, "temperature"),
        top_p=_number(raw.get("top_p"), 0.0, 1.0, "top_p"),
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        stop=stop,
    )


def page_size(value: object) -> int:
    try:
        size = int(value) if value not in (None, "") else e.DEFAULT_PAGE_SIZE
    except (TypeError, ValueError):
        raise InvalidArgument("page size must be a number", field="page_size") from None
    if size not in e.PAGE_SIZES:
        raise InvalidArgument(f"page size is one of {e.PAGE_SIZES}", field="page_size")
    return size


def page_token(value: object) -> str:
    return _text(value, e.MAX_PAGE_TOKEN_CHARS, "page_token")


def context_of(container: object) -> list[dict]:
    """An agent's citations or retrieved passages, wherever a chunk or a log carries them.

    Tolerant by design: lists of strings or of objects with text/title/id/source/score; anything
    else is ignored. Items and their text are capped."""
    found: list[dict] = []
    if not isinstance(container, dict):
        return found
    for key in CONTEXT_KEYS:
        items = container.get(key)
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            continue
        for item in items[:MAX_CONTEXT_ITEMS]:
            if isinstance(item, str):
                found.append({"kind": key, "text": item[:MAX_CONTEXT_CHARS]})
            elif isinstance(item, dict):
                text = next(
                    (item[k] for k in ("text", "content", "passage", "chunk") if isinstance(item.get(k), str)), ""
                )
                label = next(
                    (str(item[k]) for k in ("title", "id", "doc_id", "document_id", "source", "url") if item.get(k)), ""
                )
                entry = {"kind": key, "text": text[:MAX_CONTEXT_CHARS], "source": label[:MAX_CONTEXT_CHARS]}
                if isinstance(item.get("score"), (int, float)):
                    entry["score"] = float(item["score"])
                found.append(entry)
    return found[:MAX_CONTEXT_ITEMS]


# ---------------------------------------------------------------------------------------------
# Sealed comparison tickets


class TicketSealer:
    """Seals a comparison for the page: encrypted (blind mode hides the endpoints' names from the
    browser) and authenticated (the page cannot change which side was which)."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"ticket:" + secret).digest()))
        self._ttl_s = ttl_s

    def seal(self, comparison: e.Comparison) -> str:
        body = asdict(comparison)
        return self._fernet.encrypt(json.dumps(body, separators=(",", ":")).encode()).decode()

    def open(self, ticket: object, owner: str) -> e.Comparison:
        if not isinstance(ticket, str) or len(ticket) > 200_000:
            raise InvalidArgument("not a comparison ticket", field="ticket")
        try:
            body = json.loads(self._fernet.decrypt(ticket.encode(), ttl=self._ttl_s))
        except (InvalidToken, ValueError):
            raise InvalidArgument("the comparison ticket is not valid or has expired", field="ticket") from None
        params = e.ChatParams(**{**body["params"], "stop": tuple(body["params"]["stop"])})
        comparison = e.Comparison(
            **{
                **body,
                "endpoints": tuple(body["endpoints"]),
                "request_ids": tuple(body["request_ids"]),
                "params": params,
            }
        )
        if not hmac.compare_digest(comparison.owner, owner):
            raise PermissionDenied("this comparison belongs to another session")
        return comparison


# ---------------------------------------------------------------------------------------------
# Views returned to the pages


@dataclass(frozen=True)
class Cost:
    state: str  # "priced" | "unpriced" | "pending" | "hidden"
    cost_usd: float | None = None
    note: str = ""


@dataclass(frozen=True)
class LoggedRequest:
    request_id: str
    timestamp: str
    status: str
    principal: str
    served_model: str
    prompt: str
    answer: str
    context: list[dict]
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


@dataclass
class Page:
    items: list
    next_token: str = ""
    notes: list[str] = field(default_factory=list)


def logged_request(record) -> LoggedRequest:
    inputs = json_format.MessageToDict(record.inputs)
    outputs = json_format.MessageToDict(record.outputs)
    prompt = inputs.get("prompt", "")
    messages = inputs.get("messages")
    if isinstance(messages, list):
        parts = [f"[{m.get('role', '?')}] {m.get('content', '')}" for m in messages if isinstance(m, dict)]
        prompt = "\n".join(str(p) for p in parts)
    answer = outputs.get("text", "")
    if not isinstance(answer, str):
        answer = json.dumps(answer)[:MAX_CONTEXT_CHARS]
    return LoggedRequest(
        request_id=record.request_id,
        timestamp=record.timestamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
        if record.HasField("timestamp")
        else "",
        status=record.status,
        principal=record.principal,
        served_model=f"{record.served_model} v{record.model_version}" if record.served_model else "",
        prompt=str(prompt),
        answer=answer,
        context=context_of(outputs) + context_of(inputs),
        latency_ms=record.latency_ms,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cost_usd=record.cost_usd if record.HasField("cost_usd") else None,
    )


# ---------------------------------------------------------------------------------------------


class PlaygroundCore:
    def __init__(
        self, openai: OpenAIClient, stubs: ServiceStubs, bounds: e.Bounds, secret: bytes, session_s: int
    ) -> None:
        self.openai = openai
        self.stubs = stubs
        self.bounds = bounds
        self.tickets = TicketSealer(secret, session_s)
        self._random = secrets.SystemRandom()

    # -- sign-in -----------------------------------------------------------------------------

    async def check_token(self, token: str) -> list[str]:
        """The endpoints a token may call; raises Unauthenticated for a token serving does not know."""
        return await self.openai.models(token)

    # -- chat --------------------------------------------------------------------------------

    async def _callable(self, token: str, endpoint: str) -> None:
        if endpoint not in await self.openai.models(token):
            raise PermissionDenied(f"you may not call the endpoint {endpoint!r} (EXECUTE is needed)")

    async def open_chat(self, token: str, endpoint: str, params: e.ChatParams) -> AsyncIterator[e.StreamEvent]:
        """Checks the call may be made, then returns its event stream (errors before the first
        byte are raised here, so the page gets the right HTTP status)."""
        await self._callable(token, endpoint)
        return await self._open_stream(token, endpoint, params, f"pg-{uuid.uuid4().hex}")

    async def _open_stream(
        self, token: str, endpoint: str, params: e.ChatParams, request_id: str
    ) -> AsyncIterator[e.StreamEvent]:
        started = time.perf_counter()
        chunks = self.openai.stream_chat(token, params.body(endpoint), request_id)
        # The first chunk (or the refusal) arrives before the page's response starts.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        return self._events(chunks, first, started, request_id)

    async def _events(self, chunks, first, started: float, request_id: str) -> AsyncIterator[e.StreamEvent]:
        first_token_at: float | None = None
        usage: dict = {}
        finish = ""
        context: list[dict] = []
        served_id = request_id
        try:
            pending = [first] if first is not None else []
            while True:
                if pending:
                    chunk = pending.pop()
                else:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                served_id = str(chunk.get("id") or served_id)[:128]
                if isinstance(chunk.get("usage"), dict):
                    usage = {k: int(v) for k, v in chunk["usage"].items() if isinstance(v, int)}
                found = context_of(chunk)
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta") or choice.get("message") or {}
                    found += context_of(delta) + context_of(choice)
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str) and text:
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                        yield e.StreamEvent("token", {"text": text})
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])[:32]
                if found:
                    context += found
                    yield e.StreamEvent("context", {"items": found})
        except TesseraError as exc:
            yield e.StreamEvent("error", {"status": exc.code.name, "message": str(exc)})
            return
        ended = time.perf_counter()
        yield e.StreamEvent(
            "done",
            {
                "request_id": served_id,
                "latency_ms": round((ended - started) * 1000, 1),
                "ttft_ms": round((first_token_at - started) * 1000, 1) if first_token_at else None,
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
                "finish_reason": finish,
                "context_items": len(context),
            },
        )

    # -- compare -----------------------------------------------------------------------------

    async def start_comparison(self, token: str, raw: dict) -> tuple[e.Comparison, str]:
        """Seals the comparison: endpoints in the order shown (blind: shuffled here, server-side)."""
        endpoints_raw = raw.get("endpoints") if isinstance(raw, dict) else None
        if not isinstance(endpoints_raw, list) or not e.MIN_COMPARE <= len(endpoints_raw) <= e.MAX_COMPARE:
            raise InvalidArgument(f"compare {e.MIN_COMPARE} to {e.MAX_COMPARE} endpoints", field="endpoints")
        endpoints = tuple(endpoint_name(x) for x in endpoints_raw)
        if len(set(endpoints)) != len(endpoints):
            raise InvalidArgument("pick each endpoint once", field="endpoints")
        blind = bool(raw.get("blind"))
        if blind and len(endpoints) != 2:
            raise InvalidArgument("a blind comparison is between exactly two endpoints", field="endpoints")
        params = chat_params(raw, self.bounds)
        allowed = set(await self.openai.models(token))
        refused = [x for x in endpoints if x not in allowed]
        if refused:
            raise PermissionDenied(f"you may not call {', '.join(map(repr, refused))} (EXECUTE is needed)")
        swapped = blind and self._random.random() < 0.5
        shown = tuple(reversed(endpoints)) if swapped else endpoints
        comparison = e.Comparison(
            endpoints=shown,
            request_ids=tuple(f"pg-cmp-{uuid.uuid4().hex}" for _ in shown),
            params=params,
            blind=blind,
            sides_swapped=swapped,
            owner=owner_of(token),
            issued_at=time.time(),
        )
        return comparison, self.tickets.seal(comparison)

    async def open_side(self, token: str, ticket: object, side: object) -> AsyncIterator[e.StreamEvent]:
        comparison = self.tickets.open(ticket, owner_of(token))
        if not isinstance(side, int) or isinstance(side, bool) or not 0 <= side < len(comparison.endpoints):
            raise InvalidArgument("no such side", field="side")
        endpoint = comparison.endpoints[side]
        await self._callable(token, endpoint)
        return await self._open_stream(token, endpoint, comparison.params, comparison.request_ids[side])

    async def vote(self, token: str, ticket: object, preference: object, comment: object = "") -> epb.Assessment:
        comparison = self.tickets.open(ticket, owner_of(token))
        if len(comparison.endpoints) != 2:
            raise InvalidArgument("votes are between two answers", field="ticket")
        if preference not in e.PREFERENCES:
            raise InvalidArgument(f"preference is one of {', '.join(e.PREFERENCES)}", field="preference")
        assessment = epb.Assessment(
            kind=epb.ASSESSMENT_KIND_PREFERENCE,
            prompt=comparison.params.prompt,
            endpoint_a=comparison.endpoints[0],
            endpoint_b=comparison.endpoints[1],
            request_id_a=comparison.request_ids[0],
            request_id_b=comparison.request_ids[1],
            sides_swapped=comparison.sides_swapped,
            preference=epb.Preference.Value(f"PREFERENCE_{preference}"),
            comment=_text(comment, e.MAX_NOTE_CHARS, "comment"),
        )
        return await self.stubs.call(
            "evaluation",
            self.stubs.evaluation.CreateAssessment,
            epb.CreateAssessmentRequest(assessment=assessment),
            token,
        )

    # -- cost --------------------------------------------------------------------------------

    async def cost(self, token: str, endpoint: object, request_id: object) -> Cost:
        """A request's cost from its payload log (monitoring's inference table, SELECT needed)."""
        endpoint = endpoint_name(endpoint)
        request_id = _text(request_id, 128, "request_id", required=True)
        since = Timestamp()
        since.FromSeconds(int(time.time()) - COST_LOOKBACK_S)
        page = ""
        for _ in range(COST_PAGES):
            request = mpb.ListInferenceRecordsRequest(
                endpoint=endpoint,
                start_time=since,
                page=common_pb2.PageRequest(page_size=COST_PAGE_SIZE, page_token=page),
            )
            try:
                reply = await self.stubs.call("monitoring", self.stubs.monitoring.ListInferenceRecords, request, token)
            except PermissionDenied:
                return Cost("hidden", note="cost is in the payload log, which needs SELECT on the endpoint")
            for record in reply.records:
                if record.request_id == request_id:
                    if record.HasField("cost_usd"):
                        return Cost("priced", record.cost_usd)
                    return Cost("unpriced", note="the served model has no price")
            page = reply.page.next_page_token
            if not page:
                break
        return Cost("pending", note="the payload log has not reached the inference table yet")

    # -- review ------------------------------------------------------------------------------

    async def visible_endpoints(self, token: str) -> list[str]:
        """Endpoints the user may see (EXECUTE, MANAGE or SELECT), for the review picker."""
        names: list[str] = []
        page = ""
        for _ in range(5):
            reply = await self.stubs.call(
                "serving",
                self.stubs.serving.ListEndpoints,
                spb.ListEndpointsRequest(page=common_pb2.PageRequest(page_size=ENDPOINT_PAGE_SIZE, page_token=page)),
                token,
            )
            names += [x.name for x in reply.endpoints]
            page = reply.page.next_page_token
            if not page:
                break
        return sorted(names)

    async def recent_requests(self, token: str, endpoint: object, size: object, token_in: object) -> Page:
        endpoint = endpoint_name(endpoint)
        request = mpb.ListInferenceRecordsRequest(
            endpoint=endpoint, page=common_pb2.PageRequest(page_size=page_size(size), page_token=page_token(token_in))
        )
        reply = await self.stubs.call("monitoring", self.stubs.monitoring.ListInferenceRecords, request, token)
        return Page([logged_request(r) for r in reply.records], reply.page.next_page_token)

    async def labels(self, token: str, endpoint: str) -> dict[str, epb.Assessment]:
        """The endpoint's labels by request id (newest wins), to show beside its requests."""
        reply = await self.stubs.call(
            "evaluation",
            self.stubs.evaluation.ListAssessments,
            epb.ListAssessmentsRequest(
                kind=epb.ASSESSMENT_KIND_LABEL, endpoint=endpoint, page=common_pb2.PageRequest(page_size=200)
            ),
            token,
        )
        by_request: dict[str, epb.Assessment] = {}
        for assessment in reply.assessments:
            by_request.setdefault(assessment.request_id, assessment)
        return by_request

    async def label(self, token: str, form: dict) -> epb.Assessment:
        verdict = form.get("verdict") or ""
        if verdict and verdict not in e.VERDICTS:
            raise InvalidArgument("verdict is GOOD or BAD", field="verdict")
        expected = _text(form.get("expected_response"), self.bounds.max_prompt_chars, "expected_response")
        guideline = _text(form.get("guideline"), e.MAX_NOTE_CHARS, "guideline")
        if not verdict and not expected.strip() and not guideline.strip():
            raise InvalidArgument("give a verdict, an expected answer or a guideline")
        assessment = epb.Assessment(
            kind=epb.ASSESSMENT_KIND_LABEL,
            endpoint=endpoint_name(form.get("endpoint")),
            request_id=_text(form.get("request_id"), 128, "request_id", required=True),
            verdict=epb.Verdict.Value(f"VERDICT_{verdict}") if verdict else epb.VERDICT_UNSPECIFIED,
            expected_response=expected,
            guideline=guideline,
        )
        return await self.stubs.call(
            "evaluation",
            self.stubs.evaluation.CreateAssessment,
            epb.CreateAssessmentRequest(assessment=assessment),
            token,
        )

    async def save_dataset(self, token: str, form: dict) -> epb.SaveAssessmentsAsDatasetResponse:
        dataset = _text(form.get("dataset"), e.MAX_NAME_CHARS, "dataset", required=True).strip()
        if dataset.count(".") != 2:
            raise InvalidArgument("the dataset is named catalog.schema.dataset", field="dataset")
        return await self.stubs.call(
            "evaluation",
            self.stubs.evaluation.SaveAssessmentsAsDataset,
            epb.SaveAssessmentsAsDatasetRequest(endpoint=endpoint_name(form.get("endpoint")), dataset=dataset),
            token,
        )

    # -- evaluations -------------------------------------------------------------------------

    async def runs(self, token: str, size: object, token_in: object) -> Page:
        reply = await self.stubs.call(
            "evaluation",
            self.stubs.evaluation.ListEvalRuns,
            epb.ListEvalRunsRequest(
                page=common_pb2.PageRequest(page_size=page_size(size), page_token=page_token(token_in))
            ),
            token,
        )
        return Page(list(reply.runs), reply.page.next_page_token)

    async def run(self, token: str, run_id: object) -> epb.EvalRun:
        run_id = _text(run_id, 128, "run", required=True)
        return await self.stubs.call(
            "evaluation", self.stubs.evaluation.GetEvalRun, epb.GetEvalRunRequest(eval_run_id=run_id), token
        )

    async def start_run(self, token: str, form: dict) -> epb.EvalRun:
        metrics_raw = _text(form.get("metrics"), 1_000, "metrics")
        metrics = [m.strip() for m in metrics_raw.replace(",", " ").split() if m.strip()]
        if not metrics or len(metrics) > 16:
            raise InvalidArgument("name 1 to 16 metrics", field="metrics")
        repeats = _number(form.get("repeats") or 1, 1, 10, "repeats")
        temperature = _number(form.get("temperature"), 0.0, 2.0, "temperature")
        max_tokens = _number(form.get("max_tokens"), 1, self.bounds.max_tokens, "max_tokens")
        sampling = sepb.SamplingParams()
        if temperature is not None:
            sampling.temperature = temperature
        if max_tokens is not None:
            sampling.max_tokens = int(max_tokens)
        judge = _text(form.get("judge_endpoint"), e.MAX_NAME_CHARS, "judge_endpoint").strip()
        spec = eepb.EvalRunSpec(
            dataset=_text(form.get("dataset"), e.MAX_NAME_CHARS, "dataset", required=True).strip(),
            dataset_version=_text(form.get("dataset_version"), 64, "dataset_version").strip(),
            target_endpoint=endpoint_name(form.get("target_endpoint")),
            metrics=metrics,
            judge_endpoint=judge,
            repeats=int(repeats or 1),
            sampling=sampling,
        )
        return await self.stubs.call(
            "evaluation", self.stubs.evaluation.StartEvalRun, epb.StartEvalRunRequest(spec=spec), token
        )

    async def compare_runs(self, token: str, baseline: object, candidate: object) -> epb.RunComparison:
        request = epb.CompareRunsRequest(
            baseline_run_id=_text(baseline, 128, "baseline", required=True),
            candidate_run_id=_text(candidate, 128, "candidate", required=True),
        )
        return await self.stubs.call("evaluation", self.stubs.evaluation.CompareRuns, request, token)

    async def close(self) -> None:
        await asyncio.gather(self.openai.close(), self.stubs.close())
