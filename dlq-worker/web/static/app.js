// The ops page of dlq-worker. Every value from the API is put in the page with textContent, never as HTML,
// because dead-letter metadata comes from records nobody vetted.
"use strict";

const TOKEN_KEY = "dlq-worker.token";
const $ = (id) => document.getElementById(id);

const state = { token: "", cursor: "", selected: null, filterQuery: "" };

function loadToken() {
  state.token = sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
  $("token").value = state.token;
  $("remember").checked = !!localStorage.getItem(TOKEN_KEY);
  showWho();
}

function saveToken(ev) {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  if ($("remember").checked) {
    localStorage.setItem(TOKEN_KEY, state.token);
  } else {
    localStorage.removeItem(TOKEN_KEY);
  }
  showWho();
  refresh();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
  state.token = "";
  $("token").value = "";
  showWho();
}

// claims reads the token's payload for display only; the server is what checks it.
function claims() {
  try {
    const part = state.token.split(".")[1];
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch (e) {
    return null;
  }
}

function showWho() {
  const c = claims();
  $("whoami").textContent = c ? `${c.sub} (${c.role})` : "no token";
  const operator = c && c.role === "operator";
  $("actions").hidden = !operator;
  $("btn-reveal").hidden = !operator;
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const err = new Error((data && data.message) || resp.statusText);
    err.status = resp.status;
    err.code = data && data.code;
    throw err;
  }
  return data;
}

function fail(err) {
  say(`${err.code || "ERROR"}: ${err.message}`, "error");
}

// toUTC turns a datetime-local value, read as UTC, into RFC 3339.
function toUTC(v) {
  if (!v) return "";
  return (v.length === 16 ? v + ":00" : v) + "Z";
}

function filterQuery() {
  const q = new URLSearchParams();
  const add = (k, v) => { if (v) q.set(k, v); };
  add("status", $("f-status").value);
  add("errorClass", $("f-class").value);
  add("trialId", $("f-trial").value.trim());
  add("patientId", $("f-patient").value.trim());
  add("from", toUTC($("f-from").value));
  add("to", toUTC($("f-to").value));
  return q;
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  tr.appendChild(td);
  return td;
}

async function loadList(reset) {
  if (reset) {
    state.cursor = "";
    state.filterQuery = filterQuery().toString();
    $("list").querySelector("tbody").replaceChildren();
  }
  const q = new URLSearchParams(state.filterQuery);
  if (state.cursor) q.set("cursor", state.cursor);
  q.set("limit", "50");
  const data = await api("GET", "/v1/dead-letters?" + q.toString());
  const tbody = $("list").querySelector("tbody");
  for (const it of data.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = it.id;
    cell(tr, it.id);
    const st = cell(tr, it.status);
    st.className = "status-" + it.status;
    cell(tr, it.degraded ? `${it.errorClass} (degraded)` : it.errorClass);
    cell(tr, it.trialId);
    cell(tr, it.patientId);
    cell(tr, it.deadLetteredAt);
    cell(tr, it.errorMessage);
    tr.addEventListener("click", () => openDetail(it.id).catch(fail));
    tbody.appendChild(tr);
  }
  state.cursor = data.nextCursor || "";
  $("more").hidden = !state.cursor;
  $("list-empty").hidden = tbody.children.length > 0;
  $("list").dataset.loaded = String(Date.now());
}

async function loadStats() {
  const s = await api("GET", "/v1/stats");
  const age = s.oldestUnresolvedAgeSeconds;
  const ageText = s.oldestUnresolvedAt ? `, oldest unresolved ${formatAge(age)} old` : "";
  $("stats").textContent =
    `new ${s.byStatus.new || 0} · replayed ${s.byStatus.replayed || 0} · discarded ${s.byStatus.discarded || 0}` +
    ageText + " · " + s.byClass.map((c) => `${c.errorClass}: ${Object.values(c.byStatus).reduce((a, b) => a + b, 0)}`).join(", ");
}

function formatAge(sec) {
  if (sec < 120) return `${Math.round(sec)} s`;
  if (sec < 7200) return `${Math.round(sec / 60)} min`;
  if (sec < 172800) return `${Math.round(sec / 3600)} h`;
  return `${Math.round(sec / 86400)} days`;
}

function metaRow(dl, label, value) {
  if (value === undefined || value === null || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  dl.append(dt, dd);
}

async function openDetail(id, reveal) {
  const d = await api("GET", `/v1/dead-letters/${id}` + (reveal ? "?reveal=true" : ""));
  state.selected = d;
  for (const tr of $("list").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.id === String(id));
  }
  $("detail").hidden = false;
  $("d-id").textContent = d.id;
  $("d-status").textContent = d.status;
  $("d-status").className = "badge status-" + d.status;
  const meta = $("d-meta");
  meta.replaceChildren();
  metaRow(meta, "Request", d.requestId);
  metaRow(meta, "Patient", d.patientId);
  metaRow(meta, "Trial", d.trialId);
  metaRow(meta, "Report in MySQL", d.reportState);
  metaRow(meta, "Original", d.originalTopic ? `${d.originalTopic}/${d.originalPartition ?? "?"}@${d.originalOffset ?? "?"}` : "");
  metaRow(meta, "Original time", d.originalTimestamp);
  metaRow(meta, "Consumer group", d.originalConsumerGroup);
  metaRow(meta, "Attempts", d.attempts);
  metaRow(meta, "First failure", d.firstFailure);
  metaRow(meta, "Last failure", d.lastFailure);
  metaRow(meta, "Dead-lettered", d.deadLetteredAt);
  metaRow(meta, "Dead-letter record", `${d.dlqTopic}/${d.dlqPartition}@${d.dlqOffset}`);
  metaRow(meta, "Replay of", d.replayOf);
  metaRow(meta, "Resolved", d.resolvedAt ? `${d.resolvedAt} by ${d.resolvedBy}` : "");
  metaRow(meta, "Discard reason", d.discardReason);
  metaRow(meta, "Degraded", d.degraded ? d.degradedReason : "");
  $("d-class").textContent = d.errorClass;
  $("d-error").textContent = d.errorMessage;

  const hb = $("d-headers").querySelector("tbody");
  hb.replaceChildren();
  for (const h of d.headers) {
    const tr = document.createElement("tr");
    cell(tr, h.key);
    cell(tr, h.base64 ? `(base64) ${h.value}` : h.value);
    hb.appendChild(tr);
  }
  $("d-payload-bytes").textContent = `${d.payloadBytes} bytes`;
  const pre = $("payload");
  if (d.revealed) {
    pre.textContent = decodePayload(d.payload);
    pre.hidden = false;
  } else {
    pre.textContent = "";
    pre.hidden = true;
  }

  const hist = $("d-history").querySelector("tbody");
  hist.replaceChildren();
  for (const e of d.history) {
    const tr = document.createElement("tr");
    cell(tr, e.at);
    cell(tr, `${e.actor} (${e.role})` + (e.actorIssuer ? ` · ${e.actorIssuer}` : "") + (e.clientAddr ? ` from ${e.clientAddr}` : ""));
    cell(tr, e.action + (e.jobId ? ` (job ${e.jobId})` : ""));
    cell(tr, e.outcome + (e.stateBefore && e.stateBefore !== e.stateAfter ? ` (${e.stateBefore} → ${e.stateAfter})` : ""));
    cell(tr, [e.reasonCode, e.reason].filter(Boolean).join(": "));
    hist.appendChild(tr);
  }
  $("replay-preview").textContent = "";
  $("btn-replay-confirm").hidden = true;
  const resolved = d.status !== "new";
  $("btn-replay").disabled = resolved;
  $("btn-discard").disabled = resolved;
  $("detail").dataset.loaded = String(Date.now());
}

function decodePayload(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (e) {
    return text;
  }
}

async function previewReplay() {
  const id = state.selected.id;
  const p = await api("GET", `/v1/dead-letters/${id}/replay-preview`);
  const stored = { stored: "ALREADY STORED in reports (the replay will be deduplicated)", not_stored: "not stored yet", unknown: "unknown (reports table not readable)" }[p.reportState];
  $("replay-preview").textContent = p.replayable
    ? `Sends request ${p.requestId || "(no id)"} to ${p.topic}. Report: ${stored}.`
    : `Not replayable: ${p.reason}.`;
  $("btn-replay-confirm").hidden = !p.replayable;
}

async function replay() {
  const id = state.selected.id;
  $("btn-replay-confirm").hidden = true;
  try {
    const r = await api("POST", `/v1/dead-letters/${id}/replay`);
    say(`Dead letter ${id} replayed to ${r.topic}.`, "ok");
  } catch (err) {
    if (err.code === "ALREADY_REPLAYED") {
      say(`Dead letter ${id}: already replayed, nothing was sent.`, "error");
    } else {
      throw err;
    }
  }
  await Promise.all([openDetail(id), loadList(true), loadStats()]);
}

async function discard(ev) {
  ev.preventDefault();
  const id = state.selected.id;
  const note = $("discard-note").value.trim();
  if (!note) {
    say("A note is required to discard.", "error");
    return;
  }
  await api("POST", `/v1/dead-letters/${id}/discard`, { reasonCode: $("discard-reason").value, note });
  $("discard-note").value = "";
  say(`Dead letter ${id} discarded.`, "ok");
  await Promise.all([openDetail(id), loadList(true), loadStats()]);
}

async function loadReasons() {
  const r = await api("GET", "/v1/discard-reasons");
  const sel = $("discard-reason");
  sel.replaceChildren();
  for (const code of r.codes) {
    const o = document.createElement("option");
    o.value = code;
    o.textContent = code.replace(/_/g, " ");
    sel.appendChild(o);
  }
}

async function refresh() {
  if (!state.token) {
    say("Paste a token to start.", "");
    return;
  }
  try {
    await Promise.all([loadList(true), loadStats(), loadReasons()]);
    say("", "");
  } catch (err) {
    fail(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", saveToken);
  $("forget-token").addEventListener("click", forgetToken);
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadList(true).then(() => say("", "")).catch(fail); });
  $("more").addEventListener("click", () => loadList(false).catch(fail));
  $("btn-reveal").addEventListener("click", () => openDetail(state.selected.id, true).then(() => say("Payload revealed; this was recorded in the audit trail.", "ok")).catch(fail));
  $("btn-replay").addEventListener("click", () => previewReplay().catch(fail));
  $("btn-replay-confirm").addEventListener("click", () => replay().catch(fail));
  $("discard-form").addEventListener("submit", (ev) => discard(ev).catch(fail));
  loadToken();
  refresh();
});
