"""The playground in a real headless chromium over the real mesh: sign in, stream the tiny Llama,
compare endpoints side by side, refuse what a user may not call, and show hostile model output as
text. Screenshots go to tests/.artifacts/playground/.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import urlencode

import grpc
import pytest
from google.protobuf import json_format
from tessera.evaluation.v1 import evaluation_pb2 as epb
from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.training.v1 import training_pb2 as tpb
from tessera.training.v1 import training_pb2_grpc

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
    await page.get_by_label("Tessera token", exact=True).fill(TOKENS[who])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.url}/chat")
    return context, page, dialogs


async def chat_once(page, endpoint: str, prompt: str, *, max_tokens: int = 16):
    await page.get_by_label("Endpoint", exact=True).select_option(endpoint)
    await page.get_by_label("Temperature", exact=True).fill("0")
    await page.get_by_label("Max tokens", exact=True).fill(str(max_tokens))
    await page.get_by_label("Prompt", exact=True).fill(prompt)
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
    await page.get_by_label("Tessera token", exact=True).fill("not-a-token")
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
    await page.get_by_label("Endpoint 1", exact=True).select_option(stack.llm_endpoint)
    await page.get_by_label("Endpoint 2", exact=True).select_option(stack.hostile_endpoint)
    await page.get_by_label("Temperature", exact=True).fill("0")
    await page.get_by_label("Max tokens", exact=True).fill("24")
    await page.get_by_label("Prompt", exact=True).fill("Name three sorting algorithms.")
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

    options = await page.get_by_label("Endpoint", exact=True).locator("option").all_text_contents()
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
    # Bob may not read logged requests (SELECT): not the hostile endpoint's, nor the Llama's he may call.
    refused = await page.goto(f"{stack.url}/review?endpoint={stack.hostile_endpoint}")
    assert refused.status == 403 and await page.locator("article.logged").count() == 0
    refused = await page.goto(f"{stack.url}/review?endpoint={stack.llm_endpoint}")
    assert refused.status == 403 and await page.locator("article.logged").count() == 0
    # So the cost of his own call, which lives in the payload log, is not shown to him either.
    cost = await page.evaluate(
        "endpoint => fetch('/api/cost?endpoint=' + endpoint + '&request_id=x').then(r => r.json())", stack.llm_endpoint
    )
    assert cost["state"] == "hidden" and cost["cost_usd"] is None
    await context.close()


async def test_blind_votes_are_stored_with_sides_randomised_on_the_server(browser, evaluated: Stack, artifacts) -> None:
    stack = evaluated
    context, page, _ = await signed_in(browser, stack, "alice")
    await page.goto(f"{stack.url}/compare")
    # Chosen order: the Llama first, the external model second.
    await page.get_by_label("Endpoint 1", exact=True).select_option(stack.llm_endpoint)
    await page.get_by_label("Endpoint 2", exact=True).select_option(stack.hostile_endpoint)
    await page.locator("#blind").check()
    await page.get_by_label("Temperature", exact=True).fill("0")
    await page.get_by_label("Max tokens", exact=True).fill("4")
    votes: list[tuple[str, str, str]] = []
    for round_ in range(24):
        await page.get_by_label("Prompt", exact=True).fill(f"Pick a number, round {round_}.")
        await page.get_by_role("button", name="Send to all").click()
        await page.wait_for_function(
            "() => document.querySelectorAll('#sides article.answer[data-state=done]').length === 2",
            timeout=GENERATION_TIMEOUT_MS,
        )
        sides = page.locator("#sides section.side")
        # Names are hidden until the vote; which side is which shows only in the answers themselves.
        assert [await sides.nth(i).locator("h3").text_content() for i in range(2)] == ["Answer A", "Answer B"]
        assert stack.llm_endpoint not in await page.locator("#sides").text_content()
        hostile_on_a = await sides.nth(0).locator("pre.output").text_content() == HOSTILE_ANSWER
        if round_ == 0:
            await page.screenshot(path=str(artifacts / "blind.png"))
        await page.get_by_role("button", name="A is better").click()
        result = page.locator("#vote-result")
        await page.wait_for_function("() => document.querySelector('#vote-result').dataset.assessment")
        shown_a = stack.hostile_endpoint if hostile_on_a else stack.llm_endpoint
        shown_b = stack.llm_endpoint if hostile_on_a else stack.hostile_endpoint
        assert await result.text_content() == f"Vote recorded. A was {shown_a}, B was {shown_b}."
        votes.append((await result.get_attribute("data-assessment"), shown_a, shown_b))
        if len(votes) >= 4 and len({a for _, a, _ in votes}) == 2:
            break
    # Over several votes both orders occurred (a fair coin shows one order 24 times with p = 2^-23).
    assert {a for _, a, _ in votes} == {stack.llm_endpoint, stack.hostile_endpoint}

    # The stored assessments say which side was which, and that A won each time.
    async with grpc.aio.insecure_channel(stack.evaluation_address) as channel:
        reply = await evaluation_pb2_grpc.EvaluationServiceStub(channel).ListAssessments(
            epb.ListAssessmentsRequest(
                kind=epb.ASSESSMENT_KIND_PREFERENCE, endpoint=stack.llm_endpoint, page={"page_size": 100}
            ),
            metadata=bearer(TOKENS["alice"]),
        )
    stored = {a.assessment_id: a for a in reply.assessments}
    for assessment_id, shown_a, shown_b in votes:
        a = stored[assessment_id]
        assert (a.endpoint_a, a.endpoint_b, a.preference) == (shown_a, shown_b, epb.PREFERENCE_A)
        assert a.sides_swapped == (shown_a != stack.llm_endpoint)
        assert a.created_by == "alice" and a.prompt.startswith("Pick a number")
    # And each side's request id is the answer that was shown there.
    last = stored[votes[-1][0]]
    assert (await logged(stack, last.endpoint_a, last.request_id_a)).endpoint == last.endpoint_a
    assert (await logged(stack, last.endpoint_b, last.request_id_b)).endpoint == last.endpoint_b
    await context.close()


async def _reload_until(page, check: str, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await page.evaluate(check):
        assert time.monotonic() < deadline, f"the page never showed {check}"
        await asyncio.sleep(2)
        await page.reload()


async def test_a_label_becomes_a_dataset_row_and_an_eval_run_without_leaving_the_page(
    browser, evaluated: Stack, artifacts
) -> None:
    stack = evaluated
    context, page, _ = await signed_in(browser, stack, "alice")
    asked = {}
    for prompt in ("What is the capital of France?", "What is the capital of Germany?"):
        answer = await chat_once(page, stack.llm_endpoint, prompt, max_tokens=8)
        asked[prompt] = await answer.get_attribute("data-request-id")
        await logged(stack, stack.llm_endpoint, asked[prompt])
    france, germany = asked.values()

    # Review: the logged requests, one labelled good with an expected answer and a guideline, one bad.
    await page.get_by_role("link", name="Review").click()
    await page.get_by_label("Endpoint", exact=True).select_option(stack.llm_endpoint)
    await page.get_by_role("button", name="Show requests").click()
    for request_id, verdict, expected, guideline in (
        (france, "Good", "Paris", "Answer in one word."),
        (germany, "Bad", "Berlin", ""),
    ):
        article = page.locator(f"article#r-{request_id}")
        await article.get_by_label(verdict, exact=True).check()
        await article.get_by_label("Expected answer", exact=True).fill(expected)
        await article.get_by_label("Guideline note", exact=True).fill(guideline)
        await article.get_by_role("button", name="Save label").click()
        await page.wait_for_url(f"**labelled=1**#r-{request_id}")
        labelled = await page.locator(f"article#r-{request_id} .labelled").text_content()
        assert labelled == f"Labelled {verdict.lower()} by alice"
    await page.screenshot(path=str(artifacts / "review.png"), full_page=True)

    dataset = f"{stack.schema}.labels_{uuid.uuid4().hex[:6]}"
    await page.get_by_label("Dataset (catalog.schema.dataset)", exact=True).fill(dataset)
    await page.get_by_role("button", name="Save labels as a dataset version").click()
    saved = page.locator("p.notice", has_text="Saved")
    await saved.wait_for()
    version = await saved.locator("strong").nth(1).text_content()

    # The dataset version's row, read back from training's dataset API.
    async with grpc.aio.insecure_channel(stack.training_address) as channel:
        chunks = training_pb2_grpc.TrainingServiceStub(channel).ReadDatasetVersion(
            tpb.ReadDatasetVersionRequest(dataset=dataset, version=version), metadata=bearer(TOKENS["alice"])
        )
        data = b"".join([chunk.data async for chunk in chunks])
    rows = [json.loads(line) for line in data.splitlines() if line.strip()]
    by_request = {r["request_id"]: r for r in rows}
    assert set(by_request) == {france, germany}
    row = by_request[france]
    assert (row["expected_response"], row["guidelines"], row["human_label"]) == ("Paris", ["Answer in one word."], True)
    assert "capital of France" in json.dumps(row["request"])
    assert (by_request[germany]["expected_response"], by_request[germany]["human_label"]) == ("Berlin", False)

    # Two eval runs on that version, started from the page, then compared.
    run_ids = []
    for temperature in ("0", "1"):
        start = "/evaluations?" + urlencode(
            {"dataset": dataset, "dataset_version": version, "target_endpoint": stack.llm_endpoint}
        )
        if run_ids:
            await page.goto(stack.url + start)
        else:  # the first straight from the saved dataset's link
            await saved.get_by_role("link").click()
        assert await page.get_by_label("Dataset", exact=True).input_value() == dataset
        await page.get_by_label("Metrics", exact=True).fill("exact_match token_f1")
        await page.get_by_label("Temperature", exact=True).fill(temperature)
        await page.get_by_role("button", name="Start run").click()
        await page.wait_for_url("**/evaluations/run/**")
        run_ids.append(page.url.rsplit("/", 1)[-1])
        await _reload_until(
            page, "() => /succeeded|partial|failed/.test(document.querySelector('.facts dd').textContent)"
        )
        assert await page.locator(".facts dd").first.text_content() == "succeeded"
        assert await page.get_by_role("rowheader", name="exact_match").count() == 1
    await page.goto(f"{stack.url}/evaluations")
    await page.get_by_label("Baseline", exact=True).select_option(run_ids[0])
    await page.get_by_label("Candidate", exact=True).select_option(run_ids[1])
    await page.get_by_role("button", name="Compare runs").click()
    chart = page.get_by_role("img", name="Paired differences for token_f1")
    await chart.wait_for()
    await page.screenshot(path=str(artifacts / "compare-runs.png"), full_page=True)
    await context.close()
