"""The pages, rendered on the server. Every value that came from a user, a model or another
service goes through `escape`; model output reaches the browser as text only."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from tessera.evaluation.v1 import evaluation_pb2 as epb

from services.playground import entities as e
from services.playground.charts import paired_differences_svg
from services.playground.core import LoggedRequest, Page

NAV = (("chat", "/chat", "Chat"), ("compare", "/compare", "Compare"), ("review", "/review", "Review"),
       ("evaluations", "/evaluations", "Evaluations"))  # fmt: skip


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def layout(title: str, body: str, *, active: str = "", csrf: str = "", signed_in: bool = True) -> str:
    links = "".join(
        f'<li><a href="{href}"{" aria-current=page" if key == active else ""}>{label}</a></li>'
        for key, href, label in NAV
    )
    nav = (
        f'<nav aria-label="Main"><ul>{links}</ul></nav>'
        f'<form method="post" action="/signout" class="signout"><input type="hidden" name="csrf" value="{_attr(csrf)}">'
        '<button type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{_attr(csrf)}">'
        f"<title>{escape(title)} · Tessera playground</title>"
        '<link rel="stylesheet" href="/static/playground.css">'
        '<script src="/static/playground.js" defer></script>'
        "</head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand">Tessera playground</p>{nav}</header>'
        f'<main id="main" tabindex="-1"><h1>{escape(title)}</h1>{body}</main>'
        "</body></html>"
    )


def error_box(message: str) -> str:
    return f'<p class="error" role="alert">{escape(message)}</p>' if message else ""


def notice_box(message: str) -> str:
    return f'<p class="notice" role="status">{escape(message)}</p>' if message else ""


def signin(csrf: str, error: str = "") -> str:
    body = (
        error_box(error) + '<form method="post" action="/signin" class="signin">'
        f'<input type="hidden" name="csrf" value="{_attr(csrf)}">'
        '<label for="token">Tessera token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required maxlength="4096">'
        '<p class="hint" id="token-hint">Your bearer token: every call this page makes is made with it, '
        "so you see only the endpoints you may use.</p>"
        '<button type="submit">Sign in</button></form>'
    )
    return layout("Sign in", body, csrf=csrf, signed_in=False)


def _endpoint_options(endpoints: list[str], selected: str = "", *, blank: str = "") -> str:
    options = f'<option value="">{escape(blank)}</option>' if blank else ""
    for name in endpoints:
        mark = " selected" if name == selected else ""
        options += f'<option value="{_attr(name)}"{mark}>{escape(name)}</option>'
    return options


def _parameters(bounds: e.Bounds) -> str:
    return (
        '<fieldset class="params"><legend>Parameters</legend>'
        '<label for="system">System prompt</label>'
        f'<textarea id="system" name="system" rows="2" maxlength="{bounds.max_system_chars}"></textarea>'
        '<div class="row">'
        '<span><label for="temperature">Temperature</label>'
        '<input id="temperature" name="temperature" type="number" min="0" max="2" step="0.05" value="0.7"></span>'
        '<span><label for="top_p">Top p</label>'
        '<input id="top_p" name="top_p" type="number" min="0" max="1" step="0.05" value="1"></span>'
        '<span><label for="max_tokens">Max tokens</label>'
        f'<input id="max_tokens" name="max_tokens" type="number" min="1" max="{bounds.max_tokens}" step="1" value="64">'
        "</span>"
        '<span><label for="stop">Stop (one per line)</label>'
        f'<textarea id="stop" name="stop" rows="1" maxlength="{e.MAX_STOP_STRINGS * (e.MAX_STOP_CHARS + 1)}">'
        "</textarea></span>"
        "</div></fieldset>"
    )


def _prompt(bounds: e.Bounds) -> str:
    return (
        '<label for="prompt">Prompt</label>'
        f'<textarea id="prompt" name="prompt" rows="4" required maxlength="{bounds.max_prompt_chars}"></textarea>'
    )


def chat(endpoints: list[str], bounds: e.Bounds, csrf: str) -> str:
    if not endpoints:
        return layout("Chat", _no_endpoints(), active="chat", csrf=csrf)
    body = (
        '<form id="chat-form" class="generation">'
        '<label for="endpoint">Endpoint</label>'
        f'<select id="endpoint" name="endpoint" required>{_endpoint_options(endpoints)}</select>'
        + _parameters(bounds)
        + _prompt(bounds)
        + '<button type="submit">Send</button></form>'
        '<section aria-labelledby="answers-title"><h2 id="answers-title">Answers</h2>'
        '<ol id="answers" class="answers" aria-live="polite"></ol></section>'
    )
    return layout("Chat", body, active="chat", csrf=csrf)


def _no_endpoints() -> str:
    return '<p class="notice" role="status">You may not call any endpoint yet: ask its owner for EXECUTE.</p>'


def compare(endpoints: list[str], bounds: e.Bounds, csrf: str) -> str:
    if len(endpoints) < e.MIN_COMPARE:
        return layout("Compare", _no_endpoints() if not endpoints else notice_box(
            "Comparing needs at least two endpoints you may call."), active="compare", csrf=csrf)  # fmt: skip
    pickers = ""
    for i in range(e.MAX_COMPARE):
        chosen = endpoints[i] if i < 2 else ""
        blank = "" if i < 2 else "(none)"
        required = " required" if i < 2 else ""
        pickers += (
            f'<span><label for="endpoint-{i}">Endpoint {i + 1}</label>'
            f'<select id="endpoint-{i}" name="endpoint"{required}>{_endpoint_options(endpoints, chosen, blank=blank)}'
            "</select></span>"
        )
    body = (
        '<form id="compare-form" class="generation">'
        f'<fieldset><legend>Endpoints (2 to 4)</legend><div class="row">{pickers}</div>'
        '<label class="check"><input type="checkbox" id="blind" name="blind"> Blind: hide names, shuffle the sides '
        "(two endpoints) and vote</label></fieldset>"
        + _parameters(bounds)
        + _prompt(bounds)
        + '<button type="submit">Send to all</button></form>'
        '<section aria-labelledby="sides-title"><h2 id="sides-title">Answers side by side</h2>'
        '<div id="sides" class="sides" aria-live="polite"></div>'
        '<div id="vote" class="vote" hidden><h3 id="vote-title">Which answer is better?</h3>'
        '<div role="group" aria-labelledby="vote-title">'
        '<button type="button" data-vote="A">A is better</button>'
        '<button type="button" data-vote="B">B is better</button>'
        '<button type="button" data-vote="TIE">Tie</button>'
        '<button type="button" data-vote="BOTH_BAD">Both are bad</button></div>'
        '<p id="vote-result" role="status"></p></div></section>'
    )
    return layout("Compare", body, active="compare", csrf=csrf)


def _context(items: list[dict]) -> str:
    if not items:
        return ""
    rows = ""
    for item in items:
        source = f'<span class="source">{escape(item.get("source", ""))}</span> ' if item.get("source") else ""
        rows += f"<li>{source}{escape(item.get('text', ''))}</li>"
    return f'<details class="context"><summary>Citations and retrieved passages ({len(items)})</summary><ol>{rows}</ol></details>'


def _label_form(record: LoggedRequest, endpoint: str, csrf: str, existing: epb.Assessment | None) -> str:
    rid = _attr(record.request_id)
    verdict = epb.Verdict.Name(existing.verdict).removeprefix("VERDICT_") if existing is not None else ""
    shown = ""
    if existing is not None:
        shown = f'<p class="labelled" role="status">Labelled {escape(verdict.lower() or "(no verdict)")}'
        shown += f" by {escape(existing.created_by)}</p>" if existing.created_by else "</p>"

    def radio(value: str, text: str) -> str:
        mark = " checked" if verdict == value else ""
        return f'<label class="check"><input type="radio" name="verdict" value="{value}"{mark}> {text}</label>'

    expected = escape(existing.expected_response) if existing is not None else ""
    guideline = escape(existing.guideline) if existing is not None else ""
    return (
        shown + f'<form method="post" action="/review/label" class="label-form" aria-label="Label {rid}">'
        f'<input type="hidden" name="csrf" value="{_attr(csrf)}">'
        f'<input type="hidden" name="endpoint" value="{_attr(endpoint)}">'
        f'<input type="hidden" name="request_id" value="{rid}">'
        f"<fieldset><legend>Verdict</legend>{radio('GOOD', 'Good')}{radio('BAD', 'Bad')}</fieldset>"
        f'<label for="expected-{rid}">Expected answer</label>'
        f'<textarea id="expected-{rid}" name="expected_response" rows="2">{expected}</textarea>'
        f'<label for="guideline-{rid}">Guideline note</label>'
        f'<textarea id="guideline-{rid}" name="guideline" rows="1" maxlength="{e.MAX_NOTE_CHARS}">{guideline}</textarea>'
        '<button type="submit">Save label</button></form>'
    )


def review(
    endpoints: list[str],
    endpoint: str,
    page: Page | None,
    labels: dict[str, epb.Assessment],
    csrf: str,
    *,
    size: int,
    error: str = "",
    notice: str = "",
    saved: dict | None = None,
) -> str:
    picker = (
        '<form method="get" action="/review" class="row picker">'
        '<span><label for="review-endpoint">Endpoint</label>'
        f'<select id="review-endpoint" name="endpoint" required>{_endpoint_options(endpoints, endpoint, blank="(pick one)")}'
        "</select></span>"
        '<span><label for="page-size">Requests per page</label><select id="page-size" name="page_size">'
        + "".join(f"<option{' selected' if s == size else ''}>{s}</option>" for s in e.PAGE_SIZES)
        + '</select></span><button type="submit">Show requests</button></form>'
    )
    body = picker + error_box(error) + notice_box(notice)
    if saved:
        start = "/evaluations?" + urlencode(
            {"dataset": saved["dataset"], "dataset_version": saved["version"], "target_endpoint": endpoint}
        )
        body += (
            f'<p class="notice" role="status">Saved {escape(str(saved["rows"]))} labelled rows as '
            f"<strong>{escape(saved['dataset'])}</strong> version <strong>{escape(saved['version'])}</strong>. "
            f'<a href="{_attr(start)}">Start an eval run on it</a></p>'
        )
    if endpoint and page is not None:
        body += (
            '<form method="post" action="/review/dataset" class="row dataset-form">'
            f'<input type="hidden" name="csrf" value="{_attr(csrf)}">'
            f'<input type="hidden" name="endpoint" value="{_attr(endpoint)}">'
            '<span><label for="dataset">Dataset (catalog.schema.dataset)</label>'
            f'<input id="dataset" name="dataset" required maxlength="{e.MAX_NAME_CHARS}"></span>'
            '<button type="submit">Save labels as a dataset version</button></form>'
        )
        body += f'<section aria-labelledby="requests-title"><h2 id="requests-title">Recent requests to {escape(endpoint)}</h2>'
        if not page.items:
            body += '<p role="status">No logged requests yet.</p>'
        for record in page.items:
            cost = "unpriced" if record.cost_usd is None else f"${record.cost_usd:.6f}"
            body += (
                f'<article class="logged" id="r-{_attr(record.request_id)}" aria-label="Request {_attr(record.request_id)}">'
                f"<h3>{escape(record.request_id)}</h3>"
                f'<p class="meta">{escape(record.timestamp)} · {escape(record.principal)} · {escape(record.status)} · '
                f"{escape(record.served_model)} · {record.latency_ms:.0f} ms · "
                f"{record.prompt_tokens}+{record.completion_tokens} tokens · {escape(cost)}</p>"
                f'<h4>Request</h4><pre class="prompt">{escape(record.prompt)}</pre>'
                f'<h4>Answer</h4><pre class="output">{escape(record.answer)}</pre>'
                + _context(record.context)
                + _label_form(record, endpoint, csrf, labels.get(record.request_id))
                + "</article>"
            )
        if page.next_token:
            more = "/review?" + urlencode({"endpoint": endpoint, "page_size": size, "page_token": page.next_token})
            body += f'<p><a href="{_attr(more)}">Older requests</a></p>'
        body += "</section>"
    return layout("Review", body, active="review", csrf=csrf)


def _interval(interval: epb.Interval) -> str:
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}] (n={interval.n})"


def _state(run: epb.EvalRun) -> str:
    return epb.RunState.Name(run.state).removeprefix("RUN_STATE_").lower()


def evaluations(
    runs: Page | None, endpoints: list[str], csrf: str, *, prefill: dict, error: str = "", size: int = 20
) -> str:
    def field(name: str, label: str, *, required: bool = False, hint: str = "") -> str:
        value = _attr(prefill.get(name, ""))
        req = " required" if required else ""
        return (
            f'<span><label for="run-{name}">{label}</label>'
            f'<input id="run-{name}" name="{name}" value="{value}"{req} maxlength="{e.MAX_NAME_CHARS}"'
            f' placeholder="{_attr(hint)}"></span>'
        )

    start = (
        '<section aria-labelledby="start-title"><h2 id="start-title">Start a run</h2>'
        '<form method="post" action="/evaluations/start" class="row start-form">'
        f'<input type="hidden" name="csrf" value="{_attr(csrf)}">'
        + field("dataset", "Dataset", required=True, hint="catalog.schema.dataset")
        + field("dataset_version", "Version", hint="newest")
        + '<span><label for="run-target">Target endpoint</label>'
        f'<select id="run-target" name="target_endpoint" required>'
        f"{_endpoint_options(endpoints, prefill.get('target_endpoint', ''))}</select></span>"
        + field("metrics", "Metrics", required=True, hint="exact_match token_f1")
        + field("judge_endpoint", "Judge endpoint", hint="for judge metrics")
        + '<span><label for="run-repeats">Repeats</label>'
        '<input id="run-repeats" name="repeats" type="number" min="1" max="10" value="1"></span>'
        + '<span><label for="run-temperature">Temperature</label>'
        '<input id="run-temperature" name="temperature" type="number" min="0" max="2" step="0.05" value="0"></span>'
        + '<span><label for="run-max-tokens">Max tokens</label>'
        '<input id="run-max-tokens" name="max_tokens" type="number" min="1" max="2048" step="1" value="32"></span>'
        '<button type="submit">Start run</button></form></section>'
    )
    body = error_box(error) + start
    if runs is not None:
        rows = ""
        options = ""
        for run in runs.items:
            metrics = "; ".join(f"{escape(m.metric)} {_interval(m.interval)}" for m in run.metrics)
            rid = run.eval_run_id
            rows += (
                f'<tr><td><a href="/evaluations/run/{_attr(rid)}">{escape(rid)}</a></td>'
                f"<td>{escape(run.spec.dataset)}@{escape(run.manifest.dataset_version or run.spec.dataset_version)}</td>"
                f"<td>{escape(run.spec.target_endpoint)}</td><td>{escape(_state(run))}</td>"
                f"<td>{run.completed}/{run.total}</td><td>{metrics}</td></tr>"
            )
            options += f'<option value="{_attr(rid)}">{escape(rid)} ({escape(run.spec.target_endpoint)})</option>'
        body += (
            '<section aria-labelledby="runs-title"><h2 id="runs-title">Runs</h2>'
            '<table><thead><tr><th scope="col">Run</th><th scope="col">Dataset</th><th scope="col">Target</th>'
            '<th scope="col">State</th><th scope="col">Progress</th><th scope="col">Metrics (estimate [interval])</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
        if runs.next_token:
            more = "/evaluations?" + urlencode({"page_size": size, "page_token": runs.next_token})
            body += f'<p><a href="{_attr(more)}">Older runs</a></p>'
        body += (
            '<form method="get" action="/evaluations/compare" class="row">'
            f'<span><label for="baseline">Baseline</label><select id="baseline" name="baseline">{options}</select></span>'
            f'<span><label for="candidate">Candidate</label><select id="candidate" name="candidate">{options}</select>'
            '</span><button type="submit">Compare runs</button></form></section>'
        )
    return layout("Evaluations", body, active="evaluations", csrf=csrf)


def run_detail(run: epb.EvalRun, csrf: str) -> str:
    metrics = "".join(
        f"<tr><th scope=row>{escape(m.metric)}</th><td>{_interval(m.interval)}</td>"
        f"<td>{escape(m.interval.method)}</td><td>{m.measured}/{m.measured + m.unmeasured}</td></tr>"
        for m in run.metrics
    )
    cost = f"${run.cost_usd:.6f}" if run.HasField("cost_usd") else "unpriced"
    body = (
        f'<dl class="facts"><dt>State</dt><dd>{escape(_state(run))}</dd>'
        f"<dt>Dataset</dt><dd>{escape(run.spec.dataset)}@{escape(run.manifest.dataset_version or run.spec.dataset_version)}</dd>"
        f"<dt>Target</dt><dd>{escape(run.spec.target_endpoint)}</dd>"
        f"<dt>Progress</dt><dd>{run.completed}/{run.total} ({run.failed} failed)</dd>"
        f"<dt>Latency</dt><dd>p50 {run.latency.p50_ms:.0f} ms, p95 {run.latency.p95_ms:.0f} ms</dd>"
        f"<dt>Tokens</dt><dd>{run.prompt_tokens} + {run.completion_tokens}</dd><dt>Cost</dt><dd>{escape(cost)}</dd>"
        f"<dt>Created by</dt><dd>{escape(run.created_by)}</dd></dl>"
        + error_box(run.error_message)
        + '<table><thead><tr><th scope="col">Metric</th><th scope="col">Estimate [interval]</th>'
        f'<th scope="col">Method</th><th scope="col">Measured</th></tr></thead><tbody>{metrics}</tbody></table>'
        + _calibrations(run)
        + '<p><a href="/evaluations">All runs</a></p>'
    )
    return layout(f"Eval run {run.eval_run_id}", body, active="evaluations", csrf=csrf)


def _calibrations(run: epb.EvalRun) -> str:
    """How far each judge agrees with the human labels (the review page's, or the dataset's column)."""
    if not run.calibrations:
        return ""
    rows = "".join(
        f"<tr><th scope=row>{escape(c.metric)}</th><td>{escape(c.judge_model)}</td><td>{c.n}</td>"
        f"<td>{c.agreement:.3f}</td><td>{'–' if c.cohen_kappa != c.cohen_kappa else f'{c.cohen_kappa:.3f}'}</td>"
        f"<td>{escape(c.note)}</td></tr>"
        for c in run.calibrations
    )
    return (
        '<h2 id="calibration-title">Judge calibration against human labels</h2>'
        '<table aria-labelledby="calibration-title"><thead><tr><th scope="col">Metric</th>'
        '<th scope="col">Judge</th><th scope="col">Labels</th><th scope="col">Agreement</th>'
        f'<th scope="col">Cohen\'s kappa</th><th scope="col">Note</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def comparison(result: epb.RunComparison, csrf: str) -> str:
    body = (
        f"<p>Candidate <strong>{escape(result.candidate_run_id)}</strong> minus baseline "
        f"<strong>{escape(result.baseline_run_id)}</strong>, paired by row.</p>"
    )
    for d in result.differences:
        verdict = "significant" if d.significant else "not significant"
        body += (
            f'<section class="difference" aria-labelledby="d-{_attr(d.metric)}">'
            f'<h2 id="d-{_attr(d.metric)}">{escape(d.metric)}</h2>'
            f"<p>{_interval(d.difference)} · {escape(d.test)} p={d.p_value:.4f} ({verdict}) · "
            f"{d.paired} paired, {d.unpaired} unpaired · minimum detectable difference "
            f"{d.minimum_detectable_difference:.3f}{'' if d.detectable else ' (not reached)'}</p>"
            + paired_differences_svg(
                d.metric, list(d.row_differences), d.difference.low, d.difference.high, d.difference.estimate
            )
            + "</section>"
        )
    body += '<p><a href="/evaluations">All runs</a></p>'
    return layout("Compare runs", body, active="evaluations", csrf=csrf)


def problem(title: str, message: str, csrf: str, *, active: str = "") -> str:
    return layout(title, error_box(message), active=active, csrf=csrf)
