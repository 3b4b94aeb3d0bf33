"""The playground's bounds, sealed comparison tickets, tolerant citations and the paired-differences chart."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest

from services.common.errors import InvalidArgument, PermissionDenied
from services.playground import entities as e
from services.playground.charts import paired_differences_svg
from services.playground.core import TicketSealer, chat_params, context_of, owner_of, page_size

pytestmark = pytest.mark.unit

BOUNDS = e.Bounds(max_prompt_chars=100, max_system_chars=50, max_tokens=256)


def test_parameters_within_bounds_become_a_streamed_request_with_usage():
    params = chat_params(
        {"prompt": "hi", "system": "be brief", "temperature": "0.5", "top_p": 1, "max_tokens": "32", "stop": "END\n\n"},
        BOUNDS,
    )
    body = params.body("ep")
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"]) == (0.5, 1.0, 32, ["END"])
    assert body["stream"] and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt": ""},
        {"prompt": "x" * 101},
        {"prompt": "hi", "system": "s" * 51},
        {"prompt": "hi", "temperature": 2.5},
        {"prompt": "hi", "temperature": "nan"},
        {"prompt": "hi", "top_p": -0.1},
        {"prompt": "hi", "max_tokens": 257},
        {"prompt": "hi", "max_tokens": 1.5},
        {"prompt": "hi", "stop": ["a"] * 5},
        {"prompt": "hi", "stop": ["x" * 65]},
        {"prompt": 7},
        [],
    ],
)
def test_out_of_bounds_parameters_are_refused_before_any_call(raw):
    with pytest.raises(InvalidArgument):
        chat_params(raw, BOUNDS)


def test_page_sizes_are_one_of_the_offered_ones():
    assert page_size("") == e.DEFAULT_PAGE_SIZE and page_size("50") == 50
    for bad in ("7", "10000", "x"):
        with pytest.raises(InvalidArgument):
            page_size(bad)


def _comparison(owner: str) -> e.Comparison:
    return e.Comparison(
        endpoints=("endpoint-bravo", "endpoint-alpha"), request_ids=("r1", "r2"), params=chat_params({"prompt": "hi", "stop": ["x"]}, BOUNDS),
        blind=True, sides_swapped=True, owner=owner, issued_at=1.0,
    )  # fmt: skip


def test_a_ticket_hides_the_endpoints_and_opens_only_for_its_session():
    sealer = TicketSealer(b"secret", ttl_s=60)
    comparison = _comparison(owner_of("alice-token"))
    ticket = sealer.seal(comparison)
    opened = base64.urlsafe_b64decode(ticket + "==")
    assert b"endpoint-" not in opened and "endpoint-" not in ticket  # encrypted, not only signed
    assert sealer.open(ticket, owner_of("alice-token")) == comparison
    with pytest.raises(PermissionDenied):
        sealer.open(ticket, owner_of("bob-token"))
    with pytest.raises(InvalidArgument):
        TicketSealer(b"another", ttl_s=60).open(ticket, owner_of("alice-token"))
    with pytest.raises(InvalidArgument):
        sealer.open(ticket[:-4] + "AAAA", owner_of("alice-token"))


def test_citations_are_read_tolerantly_and_capped():
    found = context_of(
        {
            "citations": [{"title": "Doc 1", "text": "Paris is the capital.", "score": 0.9}, "plain passage", 42],
            "retrieved": {"id": "d2", "content": "more"},
            "unrelated": ["x"],
        }
    )
    assert found == [
        {"kind": "citations", "text": "Paris is the capital.", "source": "Doc 1", "score": 0.9},
        {"kind": "citations", "text": "plain passage"},
        {"kind": "retrieved", "text": "more", "source": "d2"},
    ]
    assert context_of({"citations": ["c"] * 100}) == [{"kind": "citations", "text": "c"}] * 20
    assert context_of("not a dict") == [] and context_of({"citations": "text"}) == []


def test_the_paired_differences_chart_is_valid_accessible_svg_with_escaped_names():
    svg = paired_differences_svg('<b>"m"', [0.5, -0.25, 0.0, float("nan")], -0.1, 0.3, 0.08)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("role") == "img"
    assert root.find(f"{ns}title").text == 'Paired differences for <b>"m"'
    bars = [r for r in root.findall(f"{ns}rect") if r.get("fill") in ("#1a7f37", "#b42318")]
    assert len(bars) == 3  # the NaN row is not drawn
    assert [b.get("fill") for b in bars] == ["#1a7f37", "#b42318", "#b42318"]
