// The playground's only script (served as a file: the page's CSP allows no inline script).
// Model output is only ever set with textContent / text nodes, never parsed as HTML.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

async function post(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body),
  });
}

function params(form) {
  const data = new FormData(form);
  const value = (name) => {
    const v = data.get(name);
    return v === null || v === "" ? null : v;
  };
  return {
    system: data.get("system") || "",
    prompt: data.get("prompt") || "",
    temperature: value("temperature"),
    top_p: value("top_p"),
    max_tokens: value("max_tokens"),
    stop: (data.get("stop") || "").split("\n").filter((s) => s.length > 0),
  };
}

// Reads the playground's server-sent events from a fetch response and calls onEvent for each.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}

// One answer panel: output text, the figures under it, citations when the endpoint sends them.
function answerPanel(container, heading) {
  const panel = el("article", { class: "answer", "aria-busy": "true" });
  if (heading) panel.append(el("h3", {}, heading));
  const output = el("pre", { class: "output", "data-testid": "output" });
  const stats = el("dl", { class: "stats" });
  const context = el("ol", { class: "context-list" });
  const contextBox = el("details", { class: "context", hidden: "" });
  contextBox.append(el("summary", {}, "Citations and retrieved passages"), context);
  panel.append(output, stats, contextBox);
  container.append(panel);
  return { panel, output, stats, context, contextBox };
}

function stat(stats, name, value, testid) {
  const dt = el("dt", {}, name);
  const dd = el("dd", { "data-testid": testid }, value);
  stats.append(dt, dd);
  return dd;
}

function fmtMs(ms) {
  return ms === null || ms === undefined ? "–" : `${Math.round(ms)} ms`;
}

async function showCost(dd, endpoint, requestId) {
  if (!endpoint) {
    dd.textContent = "shown after the vote";
    return;
  }
  for (let attempt = 0; attempt < 6; attempt++) {
    const reply = await fetch(`/api/cost?${new URLSearchParams({ endpoint, request_id: requestId })}`, {
      credentials: "same-origin",
    });
    if (!reply.ok) {
      dd.textContent = "unknown";
      return;
    }
    const cost = await reply.json();
    if (cost.state === "priced") {
      dd.textContent = `$${cost.cost_usd.toFixed(6)}`;
      return;
    }
    if (cost.state === "unpriced") {
      dd.textContent = "unpriced";
      return;
    }
    if (cost.state === "hidden") {
      dd.textContent = "not visible (needs SELECT)";
      dd.title = cost.note;
      return;
    }
    dd.textContent = "waiting for the payload log…";
    await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
  }
  dd.textContent = "not logged yet";
}

// Streams one generation into a panel; resolves with the final "done" event (or null).
async function streamInto(ui, response, endpoint) {
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error || message;
    } catch (_) {}
    ui.output.classList.add("failed");
    ui.output.textContent = `Refused (${response.status}): ${message}`;
    ui.panel.setAttribute("aria-busy", "false");
    ui.panel.dataset.state = "error";
    return null;
  }
  let finished = null;
  await readEvents(response, (event) => {
    if (event.type === "token") {
      ui.output.append(document.createTextNode(event.text));
    } else if (event.type === "context") {
      for (const item of event.items) {
        const li = el("li");
        if (item.source) li.append(el("span", { class: "source" }, item.source), document.createTextNode(" "));
        li.append(document.createTextNode(item.text || ""));
        ui.context.append(li);
      }
      ui.contextBox.hidden = false;
    } else if (event.type === "error") {
      ui.output.append(el("span", { class: "failed" }, ` [stopped: ${event.message}]`));
    } else if (event.type === "done") {
      finished = event;
    }
  });
  ui.panel.setAttribute("aria-busy", "false");
  ui.panel.dataset.state = finished ? "done" : "error";
  if (finished) {
    stat(ui.stats, "Latency", fmtMs(finished.latency_ms), "latency");
    stat(ui.stats, "First token", fmtMs(finished.ttft_ms), "ttft");
    const tokens = finished.completion_tokens === null ? "–" : `${finished.prompt_tokens} in, ${finished.completion_tokens} out`;
    stat(ui.stats, "Tokens", tokens, "tokens");
    const cost = stat(ui.stats, "Cost", "…", "cost");
    ui.panel.dataset.requestId = finished.request_id;
    showCost(cost, endpoint, finished.request_id);
  }
  return finished;
}

function setupChat(form) {
  const answers = document.getElementById("answers");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    const body = { ...params(form), endpoint: form.elements.endpoint.value };
    const item = el("li");
    answers.prepend(item);
    item.append(el("p", { class: "asked" }, `${body.endpoint}: ${body.prompt}`));
    const ui = answerPanel(item, "");
    button.disabled = true;
    try {
      await streamInto(ui, await post("/api/chat", body), body.endpoint);
    } finally {
      button.disabled = false;
    }
  });
}

function setupCompare(form) {
  const sides = document.getElementById("sides");
  const vote = document.getElementById("vote");
  const result = document.getElementById("vote-result");
  let current = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    const endpoints = [...form.querySelectorAll('select[name="endpoint"]')].map((s) => s.value).filter((v) => v);
    const body = { ...params(form), endpoints, blind: form.elements.blind.checked };
    sides.replaceChildren();
    vote.hidden = true;
    vote.querySelectorAll("button").forEach((b) => (b.disabled = false));
    result.textContent = "";
    delete result.dataset.assessment;
    button.disabled = true;
    try {
      const started = await post("/api/compare", body);
      if (!started.ok) {
        const message = (await started.json()).error || `HTTP ${started.status}`;
        sides.append(el("p", { class: "error", role: "alert" }, `Refused (${started.status}): ${message}`));
        return;
      }
      current = await started.json();
      sides.setAttribute("data-count", String(current.sides.length));
      const runs = current.sides.map((side) => {
        const column = el("section", { class: "side", "data-side": side.label, "aria-label": `Answer ${side.label}` });
        sides.append(column);
        const title = side.endpoint ? `${side.label}: ${side.endpoint}` : `Answer ${side.label}`;
        const ui = answerPanel(column, title);
        return post("/api/compare/stream", { ticket: current.ticket, side: side.side }).then((r) =>
          streamInto(ui, r, side.endpoint)
        );
      });
      const finished = await Promise.all(runs);
      if (current.blind && finished.every((f) => f)) {
        vote.hidden = false;
        vote.querySelector("button").focus();
      }
    } finally {
      button.disabled = false;
    }
  });
  for (const choice of vote.querySelectorAll("button[data-vote]")) {
    choice.addEventListener("click", async () => {
      if (!current) return;
      const reply = await post("/api/compare/vote", { ticket: current.ticket, preference: choice.dataset.vote });
      const answer = await reply.json();
      if (!reply.ok) {
        result.textContent = `Vote not recorded (${reply.status}): ${answer.error}`;
        return;
      }
      result.textContent = `Vote recorded. A was ${answer.endpoint_a}, B was ${answer.endpoint_b}.`;
      result.dataset.assessment = answer.assessment_id;
      for (const [label, name] of [["A", answer.endpoint_a], ["B", answer.endpoint_b]]) {
        const heading = sides.querySelector(`[data-side="${label}"] h3`);
        if (heading) heading.textContent = `${label}: ${name}`;
      }
      vote.querySelectorAll("button").forEach((b) => (b.disabled = true));
      current = null;
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const chat = document.getElementById("chat-form");
  if (chat) setupChat(chat);
  const compare = document.getElementById("compare-form");
  if (compare) setupCompare(compare);
});
