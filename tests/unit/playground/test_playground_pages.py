"""The server-rendered pages escape what users, models and services wrote."""

from __future__ import annotations

import pytest
from tessera.evaluation.v1 import evaluation_pb2 as epb

from services.playground import pages
from services.playground.core import LoggedRequest, Page

pytestmark = pytest.mark.unit

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def test_a_logged_answer_and_its_context_are_text_on_the_review_page():
    record = LoggedRequest(
        request_id="r1", timestamp="t", status="OK", principal="alice", served_model="m v1", prompt=HOSTILE,
        answer=HOSTILE, context=[{"kind": "citations", "text": HOSTILE, "source": HOSTILE}], latency_ms=1.0,
        prompt_tokens=1, completion_tokens=1, cost_usd=None,
    )  # fmt: skip
    label = epb.Assessment(verdict=epb.VERDICT_GOOD, expected_response=HOSTILE, created_by=HOSTILE)
    html = pages.review(["ep"], "ep", Page([record]), {"r1": label}, "csrf", size=20, error=HOSTILE)
    assert "<script>" not in html and "<img" not in html
    assert html.count("&lt;script&gt;") == 7  # prompt, answer, citation text and source, expected, author, error
    assert "unpriced" in html


def test_a_runs_calibration_is_shown_with_an_undefined_kappa_as_a_dash():
    run = epb.EvalRun(
        eval_run_id="run-1",
        calibrations=[
            epb.JudgeCalibration(
                metric="correctness",
                judge_model=HOSTILE,
                n=4,
                agreement=0.75,
                cohen_kappa=float("nan"),
                note="one class",
            )
        ],  # fmt: skip
    )
    html = pages.run_detail(run, "csrf")
    assert "Judge calibration against human labels" in html and "<td>0.750</td><td>–</td>" in html
    assert "<script>" not in html
