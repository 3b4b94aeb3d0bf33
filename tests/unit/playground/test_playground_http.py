"""The playground's front door without the other services: sessions, CSRF, security headers, bounds.

Serving's address is a port nothing listens on, so a call that gets past the checks answers 503."""

from __future__ import annotations

import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.playground.backends import OpenAIClient, ServiceStubs
from services.playground.core import PlaygroundCore
from services.playground.entities import Bounds
from services.playground.http_api import CSP, PRESESSION_COOKIE, SESSION_COOKIE, PlaygroundHttp

pytestmark = pytest.mark.unit


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def client():
    port = _dead_port()
    openai = OpenAIClient(f"http://127.0.0.1:{port}/v1", 5)
    await openai.open()
    stubs = ServiceStubs(f"127.0.0.1:{port}", f"127.0.0.1:{port}", f"127.0.0.1:{port}", 2)
    core = PlaygroundCore(openai, stubs, Bounds(100, 50, 64), b"secret", 60)
    http = PlaygroundHttp(core, b"secret", session_s=60, cookie_secure=False)
    async with TestClient(TestServer(http.app())) as test_client:
        test_client.http = http
        yield test_client
    await core.close()


async def test_pages_need_a_session_and_carry_a_strict_policy(client):
    reply = await client.get("/chat", allow_redirects=False)
    assert reply.status == 303 and reply.headers["Location"] == "/signin"
    assert reply.headers["Content-Security-Policy"] == CSP and "script-src 'self'" in CSP
    assert "'unsafe-inline'" not in CSP
    assert (await client.post("/api/chat", json={})).status == 401
    forged = {SESSION_COOKIE: "not-a-sealed-token"}
    assert (await client.get("/chat", cookies=forged, allow_redirects=False)).status == 303


async def test_the_sign_in_form_sets_an_httponly_strict_cookie_and_needs_its_csrf_token(client):
    page = await client.get("/signin")
    cookie = page.headers["Set-Cookie"]
    assert PRESESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    html = await page.text()
    token = html.split('name="csrf" value="')[1].split('"')[0]
    assert (await client.post("/signin", data={"token": "t", "csrf": "wrong"})).status == 403
    # Past the CSRF check, the token is checked against serving, which is down here: 503, not a session.
    reply = await client.post("/signin", data={"token": "t", "csrf": token}, allow_redirects=False)
    assert reply.status == 503 and SESSION_COOKIE not in reply.cookies


async def test_posts_need_the_sessions_csrf_token_and_a_same_site_origin(client):
    sealed = client.http._sessions.encrypt(b"some-token").decode()  # noqa: SLF001 - a session as sign-in makes one
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: sealed})
    page = await client.get("/signin")
    assert page.status == 200
    chat_page = await client.get("/chat")  # serving is down: the page says so
    assert chat_page.status == 503
    csrf = (await chat_page.text()).split('name="csrf-token" content="')[1].split('"')[0]
    body = {"endpoint": "e", "prompt": "hi"}
    assert (await client.post("/api/chat", json=body)).status == 403
    assert (await client.post("/api/chat", json=body, headers={"X-CSRF-Token": "x" * 64})).status == 403
    other_site = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert (await client.post("/api/chat", json=body, headers=other_site)).status == 403
    # Bounds are checked before serving is asked anything.
    too_long = {"endpoint": "e", "prompt": "x" * 101}
    assert (await client.post("/api/chat", json=too_long, headers={"X-CSRF-Token": csrf})).status == 400
    blind_three = {"endpoints": ["a", "b", "c"], "prompt": "hi", "blind": True}
    assert (await client.post("/api/compare", json=blind_three, headers={"X-CSRF-Token": csrf})).status == 400
    # A good request reaches for serving, which does not answer.
    assert (await client.post("/api/chat", json=body, headers={"X-CSRF-Token": csrf})).status == 503
