"""The OpenAI-compatible HTTP server: routes, the bearer token, bounded bodies, errors as OpenAI objects.

Routes only turn HTTP into the core's calls and the core's results and errors
into OpenAI's wire format; bounds, EXECUTE, admission and payload logs are the
core's, the same as for gRPC, OIP and Kafka.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.common.auth import Principal, TokenAuthenticator
from services.common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TesseraError,
    Unauthenticated,
    Unavailable,
)
from services.serving.conversations import ConversationStore
from services.serving.endpoints import EndpointControl
from services.serving.entities import is_valid_request_id
from services.serving.inference import InferenceCore
from services.serving.openai_api.chat import chat_completions
from services.serving.openai_api.completions import completions
from services.serving.openai_api.embeddings import embeddings
from services.serving.openai_api.errors import http_error, json_error
from services.serving.openai_api.generation import HttpCall
from services.serving.openai_api.protocol import GenerationRequest, parse_chat, parse_completions
from services.serving.openai_api.responses import responses

# /v1/models lists at most this many endpoints (pages of the endpoint table, EXECUTE checked on each).
MAX_LISTED_MODELS = 10_000
_PRINCIPAL = web.RequestKey("principal", Principal)

Handler = Callable[[InferenceCore, GenerationRequest, HttpCall], Awaitable[web.StreamResponse]]


class OpenAIRouter:
    def __init__(
        self,
        endpoints: EndpointControl,
        inference: InferenceCore,
        authenticator: TokenAuthenticator,
        conversations: ConversationStore | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._conversations = conversations
        self._inference = inference
        self._auth = authenticator

    def app(self) -> web.Application:
        # The body limit is the core's: a larger body is refused before it is read whole.
        app = web.Application(
            client_max_size=self._inference.limits.max_request_bytes, middlewares=[self._authenticate]
        )
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.get_model)
        app.router.add_post(
            "/v1/chat/completions", self._route("chatcmpl", self._generation(parse_chat, chat_completions))
        )
        app.router.add_post("/v1/completions", self._route("cmpl", self._generation(parse_completions, completions)))
        app.router.add_post("/v1/responses", self._route("resp", self._responses))
        app.router.add_post("/v1/embeddings", self._route("embd", self._embeddings))
        app.router.add_get("/health", self.health)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        try:
            if self._auth.enabled and not header:
                raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
            principal = self._auth.authenticate([("authorization", header)])
        except Unauthenticated as exc:
            return http_error(exc)
        request[_PRINCIPAL] = principal
        try:
            return await handler(request)
        except web.HTTPException as exc:  # aiohttp's own (no such route, wrong method) in OpenAI's shape
            return json_error(exc.status, exc.reason, "invalid_request_error")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list_models(self, request: web.Request) -> web.Response:
        principal = request[_PRINCIPAL]
        data, token = [], ""
        while len(data) < MAX_LISTED_MODELS:
            page = await self._endpoints.list(principal, 1000, token)
            for view in page.items:
                if await self._endpoints.may_call(view.stored.spec.name, principal):
                    data.append(_model(view))
            if not page.next_token:
                break
            token = page.next_token
        return web.json_response({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        principal, name = request[_PRINCIPAL], request.match_info["model"]
        try:
            if not await self._endpoints.may_call(name, principal):
                raise NotFound(f"the model {name!r} does not exist or you do not have access to it")
            view = await self._endpoints.get(name, principal)
        except TesseraError as exc:
            return http_error(exc, model_not_found=True)
        return web.json_response(_model(view))

    def _route(
        self, prefix: str, run: Callable[[object, HttpCall], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A POST route: the body parsed, the call run, core errors as OpenAI errors."""

        async def route(request: web.Request) -> web.StreamResponse:
            principal = request[_PRINCIPAL]
            asked = request.headers.get("x-request-id", "")
            request_id = asked if is_valid_request_id(asked) else f"{prefix}-{uuid.uuid4().hex}"
            model = ""
            try:
                body = await _json_body(request)
                model = body.get("model", "") if isinstance(body, dict) else ""
                http = HttpCall(request, principal, request_id, request.content_length or 0, int(time.time()))
                return await run(body, http)
            except web.HTTPRequestEntityTooLarge:
                limit = self._inference.limits.max_request_bytes
                return json_error(
                    413,
                    f"the request body is over the limit of {limit} bytes",
                    "invalid_request_error",
                    request_id=request_id,
                )
            except (PermissionDenied, NotFound) as exc:
                return await self._refused(exc, model, principal, request_id)
            except TesseraError as exc:
                return http_error(exc, request_id=request_id)

        return route

    def _generation(self, parse: Callable[[object, int], GenerationRequest], handler: Handler):
        async def run(body: object, http: HttpCall) -> web.StreamResponse:
            return await handler(self._inference, parse(body, self._inference.limits.max_tokens), http)

        return run

    async def _embeddings(self, body: object, http: HttpCall) -> web.StreamResponse:
        return await embeddings(self._inference, body, http)

    async def _responses(self, body: object, http: HttpCall) -> web.StreamResponse:
        if self._conversations is None:
            raise Unavailable("the Responses API needs the conversation store, which this process does not have")
        return await responses(self._inference, self._conversations, body, http)

    async def _refused(self, exc: TesseraError, model: str, principal: Principal, request_id: str) -> web.Response:
        """403 for an endpoint the caller may see but not call, 404 model_not_found when it may not see it."""
        if isinstance(exc, PermissionDenied) and isinstance(model, str) and model:
            try:
                await self._endpoints.get(model, principal)
                return http_error(exc, request_id=request_id)
            except TesseraError:
                pass
        return http_error(
            NotFound(f"the model {model!r} does not exist or you do not have access to it"),
            model_not_found=True,
            request_id=request_id,
        )


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("the request body is not valid JSON") from None


def _model(view) -> dict:
    stored = view.stored
    return {
        "id": stored.spec.name,
        "object": "model",
        "created": int(stored.created_at.timestamp()),
        "owned_by": stored.created_by,
    }


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: any free port); returns the runner and the port it got."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp exposes no bound port
