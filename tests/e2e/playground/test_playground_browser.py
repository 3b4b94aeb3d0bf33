"""The playground in a real headless chromium over the real mesh: sign in, stream the tiny Llama,
compare endpoints side by side, refuse what a user may not call, and show hostile model output as
text. Screenshots go to tests/.artifacts/playground/.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import json_format
from tessera.monitoring.v1 import monitoring_pb2 as mpb

from services.common.auth import bearer
from tests.e2e.conftest import TOKENS
from tests.e2e.playground.conftest import HOSTILE_ANSWER, Stack

pytestmark = pytest.mark.e2e

# vLLM on a loaded CPU: generous, never asserted on.
GENERATION_TIMEOUT_MS = 600_000


async def signed_in(browser, stack: Stack, who: str):
    """A fresh browser context signed in as `who`; returns (context, page, dialogs seen)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.dismiss())))
    await page.goto(f"{stack.url}/chat")
    assert page.url.endswith("/signin")
    await page.get_by_label("Tessera token").fill(TOKENS[who])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.url}/chat")
    return context, page, dialogs


async def chat_once(page, endpoint: str, prompt: str, *, max_tokens: int = 16):
    await page.get_by_label("Endpoint").select_option(endpoint)
    await page.get_by_label("Temperature").fill("0")
    await page.get_by_label("Max tokens").fill(str(max_tokens))
    await page.get_by_label("Prompt").fill(prompt)
    await page.get_by_role("button", name="Send").click()
    answer = page.locator("#answers article.answer").first
    await answer.locator("xpath=self::*[@data-state]").wait_for(timeout=GENERATION_TIMEOUT_MS)
    return answer


async def logged(stack: Stack, endpoint: str, request_id: str, timeout_s: float = 120.0):
    """The request's payload log in monitoring's inference table (read as admin)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await stack.mesh.monitoring_stub().ListInferenceRecords(
            mpb.ListInferenceRecordsRequest(endpoint=endpoint), metadata=bearer(TOKENS["admin"])
        )
        for record in reply.records:
            if record.request_id == request_id:
                return record
        assert time.monotonic() < deadline, f"{request_id} never reached the inference table"
        await asyncio.sleep(0.5)


async def test_signing_in_with_an_unknown_token_is_refused(browser, stack: Stack) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{stack.url}/signin")
    await page.get_by_label("Tessera token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").wait_for()
    assert "does not know this token" in await page.get_by_role("alert").text_content()
    # Without a session, the API answers 401 and pages send to the sign-in form.
    status = await page.evaluate("fetch('/api/cost?endpoint=x&request_id=y').then(r => r.status)")
    assert status == 401
    await context.close()


async def test_a_prompt_streams_tokens_from_the_tiny_llama(browser, stack: Stack, artifacts) -> None:
    context, page, dialogs = await signed_in(browser, stack, "alice")

    answer = await chat_once(page, stack.llm_endpoint, "Sort a list of numbers.", max_tokens=24)

    assert await answer.get_attribute("data-state") == "done"
    output = answer.locator("pre.output")
    text = await output.text_content()
    assert text
    # Tokens arrived one event at a time: the script appended each as its own text node.
    assert await output.evaluate("node => node.childNodes.length") > 1
    assert "out" in await answer.get_by_test_id("tokens").text_content()
    # The cost comes from the payload log: the Llama is priced.
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=cost]').textContent.startsWith('$')", timeout=120_000
    )
    request_id = await answer.get_attribute("data-request-id")
    record = await logged(stack, stack.llm_endpoint, request_id)
    assert json_format.MessageToDict(record.outputs)["text"] == text
    assert record.principal == "alice" and record.HasField("cost_usd")
    await page.screenshot(path=str(artifacts / "chat.png"), full_page=True)
    assert dialogs == []
    await context.close()


async def test_compare_streams_two_endpoints_side_by_side(browser, stack: Stack, artifacts) -> None:
    context, page, _ = await signed_in(browser, stack, "alice")
    await page.get_by_role("link", name="Compare").click()
    await page.get_by_label("Endpoint 1").select_option(stack.llm_endpoint)
    await page.get_by_label("Endpoint 2").select_option(stack.hostile_endpoint)
    await page.get_by_label("Temperature").fill("0")
    await page.get_by_label("Max tokens").fill("24")
    await page.get_by_label("Prompt").fill("Name three sorting algorithms.")
    await page.get_by_role("button", name="Send to all").click()

    sides = page.locator("#sides section.side")
    await page.wait_for_function(
        "() => document.querySelectorAll('#sides article.answer[data-state=done]').length === 2",
        timeout=GENERATION_TIMEOUT_MS,
    )
    assert await sides.count() == 2
    headings = [await sides.nth(i).locator("h3").text_content() for i in range(2)]
    assert headings == [f"A: {stack.llm_endpoint}", f"B: {stack.hostile_endpoint}"]
    assert await sides.nth(0).locator("pre.output").text_content()
    assert await sides.nth(1).locator("pre.output").text_content() == HOSTILE_ANSWER
    # The unpriced external model says so rather than $0.
    await page.wait_for_function(
        "() => document.querySelector('[data-side=B] [data-testid=cost]').textContent === 'unpriced'",
        timeout=120_000,
    )
    await page.screenshot(path=str(artifacts / "compare.png"))
    await context.close()


async def test_a_hostile_completion_is_shown_as_text_and_runs_nothing(browser, stack: Stack, artifacts) -> None:
    context, page, dialogs = await signed_in(browser, stack, "alice")

    answer = await chat_once(page, stack.hostile_endpoint, "Show me some HTML.")

    assert await answer.get_attribute("data-state") == "done"
    assert await answer.locator("pre.output").text_content() == HOSTILE_ANSWER
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("() => window.__pwned === undefined")
    request_id = await answer.get_attribute("data-request-id")
    await page.screenshot(path=str(artifacts / "hostile-chat.png"), full_page=True)

    # The same answer, logged, on the review page: text again.
    await logged(stack, stack.hostile_endpoint, request_id)
    await page.goto(f"{stack.url}/review?endpoint={stack.hostile_endpoint}")
    article = page.locator(f"article#r-{request_id}")
    assert await article.locator("pre.output").text_content() == HOSTILE_ANSWER
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("() => window.__pwned === undefined")
    assert dialogs == []
    await page.screenshot(path=str(artifacts / "hostile-review.png"), full_page=True)
    await context.close()


async def test_a_user_sees_and_calls_only_the_endpoints_they_may_execute(browser, stack: Stack) -> None:
    context, page, _ = await signed_in(browser, stack, "bob")

    options = await page.get_by_label("Endpoint").locator("option").all_text_contents()
    assert options == [stack.llm_endpoint]

    async def call(path: str, body: dict, *, csrf: bool = True) -> int:
        return await page.evaluate(
            """async ([path, body, csrf]) => {
                const headers = {"Content-Type": "application/json"};
                if (csrf) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
                const reply = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
                return reply.status;
            }""",
            [path, body, csrf],
        )

    # Through the page's own routes, with a valid session and CSRF token: refused.
    assert await call("/api/chat", {"endpoint": stack.hostile_endpoint, "prompt": "hi"}) == 403
    assert (
        await call("/api/compare", {"endpoints": [stack.llm_endpoint, stack.hostile_endpoint], "prompt": "hi"}) == 403
    )
    # A POST without the CSRF token is refused before anything runs.
    assert await call("/api/chat", {"endpoint": stack.llm_endpoint, "prompt": "hi"}, csrf=False) == 403
    # Out-of-bounds values are refused too.
    assert await call("/api/chat", {"endpoint": stack.llm_endpoint, "prompt": "x" * 20_000}) == 400
    assert await call("/api/chat", {"endpoint": stack.llm_endpoint, "prompt": "hi", "temperature": 9}) == 400
    assert await call("/api/compare", {"endpoints": [stack.llm_endpoint] * 5, "prompt": "hi"}) == 400
    # Compare needs two endpoints bob may call: he has one.
    await page.goto(f"{stack.url}/compare")
    assert "at least two endpoints" in await page.get_by_role("status").text_content()
    # Bob may not read the hostile endpoint's logged requests either.
    await page.goto(f"{stack.url}/review?endpoint={stack.hostile_endpoint}")
    assert await page.locator("article.logged").count() == 0
    await context.close()
