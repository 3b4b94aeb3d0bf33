"""Wiring: settings -> the clients of serving, monitoring and evaluation, the core, the web server."""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from services.common import telemetry
from services.common.grpc_server import TesseraServer
from services.playground.backends import OpenAIClient, ServiceStubs
from services.playground.core import PlaygroundCore
from services.playground.entities import Bounds
from services.playground.http_api import PlaygroundHttp
from services.playground.settings import PlaygroundSettings

_log = logging.getLogger(__name__)


class PlaygroundApp:
    """The whole service in one process; `start()` returns once the page is served."""

    def __init__(self, settings: PlaygroundSettings, *, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.serve_metrics = serve_metrics
        self.core: PlaygroundCore | None = None
        self._runner: web.AppRunner | None = None
        self.server: TesseraServer | None = None
        self.port = 0
        self.grpc_port = 0
        self.metrics_port = 0

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        s = self.settings
        s.check_listen_safety()
        telemetry.setup_tracing(s.service_name, s.otlp_endpoint)
        if self.serve_metrics:
            self.metrics_port = telemetry.start_metrics_server(s.metrics_port, s.host)
        if s.playground_secret:
            secret = s.playground_secret.encode()
        else:
            _log.warning("TESSERA_PLAYGROUND_SECRET is not set: sessions last only as long as this process")
            secret = secrets.token_bytes(32)
        openai = OpenAIClient(s.playground_openai_url, s.playground_generation_timeout_s)
        await openai.open()
        stubs = ServiceStubs(s.serving_address, s.monitoring_address, s.evaluation_address, s.playground_rpc_timeout_s)
        bounds = Bounds(s.playground_max_prompt_chars, s.playground_max_system_chars, s.playground_max_tokens)
        self.core = PlaygroundCore(openai, stubs, bounds, secret, s.playground_session_s)
        http = PlaygroundHttp(
            self.core, secret, session_s=s.playground_session_s, cookie_secure=s.playground_cookie_secure
        )
        self._runner = web.AppRunner(http.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.playground_http_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp exposes no bound port
        # Health and reflection over gRPC like every service, so probes and `make up` treat it alike.
        self.server = TesseraServer(s)
        self.grpc_port = await self.server.start()
        _log.info("playground on %s", self.url)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.core is not None:
            await self.core.close()
