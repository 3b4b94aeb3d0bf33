"""The web front end: pages, the streaming routes the page's script calls, sessions and CSRF.

Session: the user's bearer token, sealed (encrypted and authenticated) into an HttpOnly,
SameSite=Strict cookie; nothing is kept server-side, so any replica with the same secret serves it.
CSRF: every POST carries a token derived from the session cookie (a form field or the
X-CSRF-Token header) and, when the browser sends one, an Origin of this site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from services.common.errors import InvalidArgument, PermissionDenied, TesseraError, Unauthenticated
from services.playground import entities as e
from services.playground import metrics, pages
from services.playground.core import PlaygroundCore, chat_params, endpoint_name, page_size

_log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "tessera_playground"
PRESESSION_COOKIE = "tessera_playground_pre"
MAX_TOKEN_CHARS = 4096
# Bodies the page sends: a prompt, parameters and at most a comparison ticket.
MAX_BODY_BYTES = 512 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
}
_TOKEN = web.RequestKey("token", str)


def status_of(exc: TesseraError) -> int:
    return _HTTP_STATUS.get(exc.code.name, 500)


class PlaygroundHttp:
    def __init__(self, core: PlaygroundCore, secret: bytes, *, session_s: int, cookie_secure: bool) -> None:
        self.core = core
        self._secret = secret
        self._sessions = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"session:" + secret).digest()))
        self._session_s = session_s
        self._secure = cookie_secure

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._headers, self._session])
        r = app.router
        r.add_get("/", self.home)
        r.add_get("/healthz", self.health)
        r.add_get("/signin", self.signin_page)
        r.add_post("/signin", self.signin)
        r.add_post("/signout", self.signout)
        r.add_get("/chat", self.chat_page)
        r.add_get("/compare", self.compare_page)
        r.add_get("/review", self.review_page)
        r.add_post("/review/label", self.review_label)
        r.add_post("/review/dataset", self.review_dataset)
        r.add_get("/evaluations", self.evaluations_page)
        r.add_post("/evaluations/start", self.evaluations_start)
        r.add_get("/evaluations/run/{run_id}", self.run_page)
        r.add_get("/evaluations/compare", self.compare_runs_page)
        r.add_post("/api/chat", self.api_chat)
        r.add_post("/api/compare", self.api_compare)
        r.add_post("/api/compare/stream", self.api_compare_stream)
        r.add_post("/api/compare/vote", self.api_vote)
        r.add_get("/api/cost", self.api_cost)
        r.add_static("/static", STATIC, append_version=False)
        return app

    # -- middleware ----------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        metrics.REQUESTS.labels(route=route, status=str(response.status)).inc()
        if not response.prepared:
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            response.headers["X-Frame-Options"] = "DENY"
            if not request.path.startswith("/static/"):
                response.headers["Cache-Control"] = "no-store"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    @web.middleware
    async def _session(self, request: web.Request, handler) -> web.StreamResponse:
        public = request.path in ("/signin", "/healthz") or request.path.startswith("/static/")
        token = self._token_of(request)
        if token is None and not public:
            if request.path.startswith("/api/"):
                return web.json_response({"error": "sign in first"}, status=401)
            raise web.HTTPSeeOther("/signin")
        if request.method == "POST":
            self._check_origin(request)
            sent = request.headers.get("X-CSRF-Token", "")
            if not sent and request.content_type == "application/x-www-form-urlencoded":
                sent = str((await request.post()).get("csrf", ""))
            if not hmac.compare_digest(sent.encode(), self.csrf_for(request).encode()):
                return _refuse(request, 403, "the form is stale or came from another site: reload the page")
        request[_TOKEN] = token or ""
        return await handler(request)

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="cross-site request refused")

    def _token_of(self, request: web.Request) -> str | None:
        sealed = request.cookies.get(SESSION_COOKIE)
        if not sealed or len(sealed) > 8192:
            return None
        try:
            return self._sessions.decrypt(sealed.encode(), ttl=self._session_s).decode()
        except (InvalidToken, UnicodeDecodeError):
            return None

    def csrf_for(self, request: web.Request) -> str:
        """The CSRF token of the request's session; the sign-in form's comes from its pre-session cookie
        (a stale session cookie must not lock a user out of signing in again)."""
        if request.path == "/signin":
            pre = request.cookies.get(PRESESSION_COOKIE, "")
            return self._presession_csrf(pre) if pre else secrets.token_hex(32)  # no cookie: nothing matches
        basis = request.cookies.get(SESSION_COOKIE, "")
        return hmac.new(self._secret, b"csrf:" + basis.encode(), hashlib.sha256).hexdigest()

    def _presession_csrf(self, pre: str) -> str:
        return hmac.new(self._secret, b"csrf:pre:" + pre.encode(), hashlib.sha256).hexdigest()

    def _cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        response.set_cookie(
            name, value, max_age=self._session_s, httponly=True, samesite="Strict", secure=self._secure, path="/"
        )

    # -- sign in -------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/chat")

    async def signin_page(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        pre = request.cookies.get(PRESESSION_COOKIE) or secrets.token_urlsafe(24)
        response = _html(pages.signin(self._presession_csrf(pre), error), status)
        self._cookie(response, PRESESSION_COOKIE, pre)
        return response

    async def signin(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isprintable():
            return await self.signin_page(request, "Enter your Tessera token.", 400)
        try:
            await self.core.check_token(token)
        except Unauthenticated:
            return await self.signin_page(request, "Serving does not know this token.", 401)
        except TesseraError as exc:
            return await self.signin_page(request, str(exc), status_of(exc))
        response = web.HTTPSeeOther("/chat")
        self._cookie(response, SESSION_COOKIE, self._sessions.encrypt(token.encode()).decode())
        response.del_cookie(PRESESSION_COOKIE, path="/")
        raise response

    async def signout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/signin")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # -- pages ---------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> list[str]:
        try:
            return await self.core.openai.models(request[_TOKEN])
        except Unauthenticated:
            raise _signed_out() from None

    async def chat_page(self, request: web.Request) -> web.Response:
        endpoints = await self._page_call(request, "chat", self._models(request))
        if isinstance(endpoints, web.Response):
            return endpoints
        return _html(pages.chat(endpoints, self.core.bounds, self.csrf_for(request)))

    async def compare_page(self, request: web.Request) -> web.Response:
        endpoints = await self._page_call(request, "compare", self._models(request))
        if isinstance(endpoints, web.Response):
            return endpoints
        return _html(pages.compare(endpoints, self.core.bounds, self.csrf_for(request)))

    async def _page_call(self, request: web.Request, active: str, awaitable):
        try:
            return await awaitable
        except Unauthenticated:
            raise _signed_out() from None
        except TesseraError as exc:
            return _html(pages.problem(active.title(), str(exc), self.csrf_for(request), active=active), status_of(exc))

    async def review_page(self, request: web.Request) -> web.Response:
        token, q, csrf = request[_TOKEN], request.query, self.csrf_for(request)
        try:
            size = page_size(q.get("page_size"))
        except InvalidArgument:
            size = e.DEFAULT_PAGE_SIZE
        endpoints = await self._page_call(request, "review", self.core.visible_endpoints(token))
        if isinstance(endpoints, web.Response):
            return endpoints
        endpoint = q.get("endpoint", "")
        page, labels, error, status = None, {}, q.get("error", "")[:500], 200
        if endpoint:
            try:
                page = await self.core.recent_requests(token, endpoint, size, q.get("page_token", ""))
            except Unauthenticated:
                raise _signed_out() from None
            except TesseraError as exc:
                error, status = (
                    _explain(exc, "reading an endpoint's logged requests needs SELECT on it"),
                    status_of(exc),
                )
            if page is not None:
                try:
                    labels = await self.core.labels(token, endpoint)
                except TesseraError as exc:
                    error = f"Labels could not be read: {exc}"
        saved = None
        if q.get("saved_dataset"):
            saved = {"dataset": q["saved_dataset"][:300], "version": q.get("saved_version", "")[:64],
                     "rows": q.get("saved_rows", "")[:12]}  # fmt: skip
        notice = "Label saved." if q.get("labelled") else ""
        html = pages.review(endpoints, endpoint, page, labels, csrf, size=size, error=error, notice=notice, saved=saved)
        return _html(html, status)

    async def review_label(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        try:
            await self.core.label(request[_TOKEN], form)
            metrics.ASSESSMENTS.labels(kind="label").inc()
        except TesseraError as exc:
            return _back("/review", form, error=_explain(exc, "labelling needs SELECT on the endpoint"))
        return _back("/review", form, labelled="1", anchor=f"r-{form.get('request_id', '')}")

    async def review_dataset(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        try:
            saved = await self.core.save_dataset(request[_TOKEN], form)
        except TesseraError as exc:
            return _back("/review", form, error=_explain(exc, "saving a dataset version needs MODIFY on it"))
        return _back(
            "/review", form, saved_dataset=saved.dataset, saved_version=saved.version, saved_rows=str(saved.row_count)
        )

    async def evaluations_page(self, request: web.Request) -> web.Response:
        token, q, csrf = request[_TOKEN], request.query, self.csrf_for(request)
        try:
            size = page_size(q.get("page_size"))
        except InvalidArgument:
            size = e.DEFAULT_PAGE_SIZE
        endpoints = await self._page_call(request, "evaluations", self._models(request))
        if isinstance(endpoints, web.Response):
            return endpoints
        prefill = {k: q.get(k, "")[:300] for k in ("dataset", "dataset_version", "target_endpoint")}
        runs, error, status = None, q.get("error", "")[:500], 200
        try:
            runs = await self.core.runs(token, size, q.get("page_token", ""))
        except TesseraError as exc:
            error, status = str(exc), status_of(exc)
        return _html(pages.evaluations(runs, endpoints, csrf, prefill=prefill, error=error, size=size), status)

    async def evaluations_start(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        try:
            run = await self.core.start_run(request[_TOKEN], form)
        except TesseraError as exc:
            keep = {k: form.get(k, "") for k in ("dataset", "dataset_version", "target_endpoint")}
            return _back(
                "/evaluations", keep, error=_explain(exc, "a run needs SELECT on the dataset, EXECUTE on the target")
            )
        raise web.HTTPSeeOther(f"/evaluations/run/{run.eval_run_id}")

    async def run_page(self, request: web.Request) -> web.Response:
        csrf = self.csrf_for(request)
        try:
            run = await self.core.run(request[_TOKEN], request.match_info["run_id"])
        except TesseraError as exc:
            return _html(pages.problem("Eval run", str(exc), csrf, active="evaluations"), status_of(exc))
        return _html(pages.run_detail(run, csrf))

    async def compare_runs_page(self, request: web.Request) -> web.Response:
        q, csrf = request.query, self.csrf_for(request)
        try:
            result = await self.core.compare_runs(request[_TOKEN], q.get("baseline", ""), q.get("candidate", ""))
        except TesseraError as exc:
            return _html(pages.problem("Compare runs", str(exc), csrf, active="evaluations"), status_of(exc))
        return _html(pages.comparison(result, csrf))

    # -- the page's script ---------------------------------------------------------------------

    async def _json(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("the body is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidArgument("expected a JSON object")
        return body

    async def api_chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._json(request)
            endpoint = endpoint_name(body.get("endpoint"))
            events = await self.core.open_chat(request[_TOKEN], endpoint, chat_params(body, self.core.bounds))
        except TesseraError as exc:
            metrics.GENERATIONS.labels(mode="chat", outcome=exc.code.name).inc()
            return _json_error(exc)
        return await _stream(request, events, "chat")

    async def api_compare(self, request: web.Request) -> web.Response:
        try:
            comparison, ticket = await self.core.start_comparison(request[_TOKEN], await self._json(request))
        except TesseraError as exc:
            return _json_error(exc)
        sides = [
            {"side": i, "label": chr(ord("A") + i), "endpoint": None if comparison.blind else name}
            for i, name in enumerate(comparison.endpoints)
        ]
        return web.json_response({"ticket": ticket, "blind": comparison.blind, "sides": sides})

    async def api_compare_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._json(request)
            events = await self.core.open_side(request[_TOKEN], body.get("ticket"), body.get("side"))
        except TesseraError as exc:
            metrics.GENERATIONS.labels(mode="compare", outcome=exc.code.name).inc()
            return _json_error(exc)
        return await _stream(request, events, "compare")

    async def api_vote(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            stored = await self.core.vote(
                request[_TOKEN], body.get("ticket"), body.get("preference"), body.get("comment", "")
            )
        except TesseraError as exc:
            return _json_error(exc)
        metrics.ASSESSMENTS.labels(kind="preference").inc()
        # Once voted, the names may be shown.
        return web.json_response(
            {
                "assessment_id": stored.assessment_id,
                "endpoint_a": stored.endpoint_a,
                "endpoint_b": stored.endpoint_b,
            }
        )

    async def api_cost(self, request: web.Request) -> web.Response:
        try:
            cost = await self.core.cost(request[_TOKEN], request.query.get("endpoint"), request.query.get("request_id"))
        except TesseraError as exc:
            return _json_error(exc)
        return web.json_response({"state": cost.state, "cost_usd": cost.cost_usd, "note": cost.note})


async def _stream(request: web.Request, events, mode: str) -> web.StreamResponse:
    """The generation as server-sent events the page's script reads with fetch + ReadableStream."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CSP,
        }
    )
    await response.prepare(request)
    outcome = "aborted"
    started = time.perf_counter()
    first = True
    try:
        async for event in events:
            if event.kind == "token" and first:
                metrics.FIRST_TOKEN.observe(time.perf_counter() - started)
                first = False
            if event.kind in ("done", "error"):
                outcome = "ok" if event.kind == "done" else event.data.get("status", "error")
            payload = json.dumps({"type": event.kind, **event.data}, separators=(",", ":"))
            await response.write(f"data: {payload}\n\n".encode())
        await response.write_eof()
    except (ConnectionResetError, TimeoutError) as exc:
        # The browser went away: closing the events closes serving's stream, which stops the generation.
        _log.info("a %s stream ended early: %s", mode, type(exc).__name__)
    finally:
        await events.aclose()
        metrics.GENERATIONS.labels(mode=mode, outcome=outcome).inc()
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _json_error(exc: TesseraError) -> web.Response:
    return web.json_response({"error": str(exc), "status": exc.code.name}, status=status_of(exc))


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=status)
    return web.Response(text=message, status=status)


def _signed_out() -> web.HTTPSeeOther:
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _explain(exc: TesseraError, needs: str) -> str:
    return f"{exc} ({needs})" if isinstance(exc, PermissionDenied) else str(exc)


def _back(path: str, form: dict, anchor: str = "", **extra: str) -> web.Response:
    """Post/redirect/get: back to the page the form was on, with what happened in the query."""
    query = {k: str(form.get(k, ""))[:300] for k in ("endpoint", "dataset", "dataset_version", "target_endpoint")}
    query = {k: v for k, v in query.items() if v} | {k: v[:500] for k, v in extra.items()}
    raise web.HTTPSeeOther(f"{path}?{urlencode(query)}" + (f"#{anchor}" if anchor else ""))
