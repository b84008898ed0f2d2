// The ops page of dlq-worker. Every value from the API is put in the page with textContent, never as HTML,
// because dead-letter metadata comes from records nobody vetted.
"use strict";

const TOKEN_KEY = "dlq-worker.token";
const $ = (id) => document.getElementById(id);

const state = {
  token: "", cursor: "", selected: null, filterQuery: "",
  // dry is the last dry run and the filter it was for: a bulk replay starts only after a dry run of the same
  // filter and rate.
  dry: null,
  jobId: 0, jobTimer: 0,
  runId: 0, runTimer: 0,
  // run is the reconciliation run shown, as last read: whether it may be re-driven depends on it and on the
  // role.
  run: null,
};
const JOB_POLL_MS = 500;
const RUN_POLL_MS = 700;
const JOB_FINAL = ["done", "cancelled", "interrupted"];
const CLASS_ORDER = ["stored", "duplicate", "stored_from_replay", "stored_from_redrive", "dead_lettered", "conflict", "missing"];

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
  stopJob();
  stopRun();
  state.run = null;
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
  const operator = !!c && c.role === "operator";
  $("actions").hidden = !operator;
  $("btn-reveal").hidden = !operator;
  // Bulk replays (dry run included) and job control are for operators; anyone may follow a job.
  $("bulk-form").hidden = !operator;
  for (const id of ["job-pause", "job-resume", "job-cancel"]) $(id).hidden = !operator;
  offerRedrive();
}

function isOperator() {
  const c = claims();
  return !!c && c.role === "operator";
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
    err.field = data && data.field;
    throw err;
  }
  return data;
}

// fail shows an error with its stable code (and the field a validation error names); no error is dropped.
function fail(err) {
  say(`${err.code || "ERROR"}: ${err.message}` + (err.field ? ` (field ${err.field})` : ""), "error");
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
  add("degraded", $("f-degraded").value);
  return q;
}

// cell appends a cell holding text; data-label names its column for the narrow layout, where each row is
// shown as a card (style.css).
function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  tr.appendChild(td);
  return td;
}

// labelRows copies each column's heading onto the cells of tbody as data-label.
function labelRows(table) {
  const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of table.querySelectorAll("tbody tr")) {
    [...tr.children].forEach((td, i) => { td.dataset.label = heads[i] || ""; });
  }
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
    // A real button, so the row can be opened from the keyboard; its click bubbles to the row.
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = String(it.id);
    open.setAttribute("aria-label", `Open dead letter ${it.id}`);
    cell(tr, "").appendChild(open);
    const st = cell(tr, it.status);
    st.className = "status-" + it.status;
    const cls = cell(tr, it.errorClass);
    if (it.degraded) {
      const b = document.createElement("span");
      b.className = "badge degraded";
      b.textContent = "degraded";
      b.title = it.degradedReason || "";
      cls.append(" ", b);
    }
    cell(tr, it.trialId);
    cell(tr, it.patientId);
    cell(tr, it.deadLetteredAt);
    cell(tr, it.errorMessage);
    tr.addEventListener("click", () => openDetail(it.id, false, true).catch(fail));
    tbody.appendChild(tr);
  }
  labelRows($("list"));
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

// openDetail shows dead letter id; focus moves to its heading when the user opened it.
async function openDetail(id, reveal, focus) {
  const d = await api("GET", `/v1/dead-letters/${id}` + (reveal ? "?reveal=true" : ""));
  state.selected = d;
  for (const tr of $("list").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.id === String(id));
  }
  $("detail").hidden = false;
  $("d-id").textContent = d.id;
  $("d-status").textContent = d.status;
  $("d-status").className = "badge status-" + d.status;
  $("d-degraded").hidden = !d.degraded;
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
  labelRows($("d-headers"));
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
  // The detail carries the dead letter's audit rows (the same rows as GET /v1/audit/export).
  for (const e of d.history) {
    const tr = document.createElement("tr");
    cell(tr, e.at);
    cell(tr, `${e.actor} (${e.role})` + (e.actorIssuer ? ` · ${e.actorIssuer}` : ""));
    cell(tr, e.clientAddr);
    cell(tr, e.action + (e.jobId ? ` (job ${e.jobId})` : ""));
    cell(tr, e.outcome);
    cell(tr, e.stateBefore || e.stateAfter ? `${e.stateBefore || "?"} → ${e.stateAfter || "?"}` : "");
    cell(tr, [e.reasonCode, e.reason].filter(Boolean).join(": "));
    hist.appendChild(tr);
  }
  labelRows($("d-history"));
  $("replay-preview").textContent = "";
  $("btn-replay-confirm").hidden = true;
  const resolved = d.status !== "new";
  $("btn-replay").disabled = resolved;
  $("btn-discard").disabled = resolved;
  $("detail").dataset.loaded = String(Date.now());
  if (focus) $("d-title").focus();
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

// downloadAudit fetches the selected dead letter's audit export and saves it as a file.
async function downloadAudit(format) {
  const id = state.selected.id;
  await saveExport(new URLSearchParams({ deadLetterId: String(id), format }), `dead-letter-${id}-audit.${format}`);
  say(`Audit history of dead letter ${id} downloaded as ${format.toUpperCase()}.`, "ok");
}

// downloadPatientAudit saves the audit history of the patient typed in the form. The id is the operator's
// own input: it goes to the server and into the message, never to the console.
async function downloadPatientAudit(format) {
  const patient = $("pa-patient").value.trim();
  if (!patient) {
    say("Type a patient id first.", "error");
    $("pa-patient").focus();
    return;
  }
  const file = `patient-${patient.replace(/[^A-Za-z0-9._-]/g, "_")}-audit.${format}`;
  await saveExport(new URLSearchParams({ patientId: patient, format }), file);
  say(`Audit history of patient ${patient} downloaded as ${format.toUpperCase()}.`, "ok");
}

// saveExport fetches GET /v1/audit/export?query with the token (a plain link could not send it) and saves
// the answer as filename.
async function saveExport(query, filename) {
  const resp = await fetch("/v1/audit/export?" + query.toString(), { headers: { Authorization: "Bearer " + state.token } });
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    const err = new Error((data && data.message) || resp.statusText);
    err.status = resp.status;
    err.code = data && data.code;
    err.field = data && data.field;
    throw err;
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// confirmDialog asks before a destructive or large action; it resolves true only on the confirm button.
// Escape or Cancel resolve false. Focus starts on Cancel and returns to where it was.
// pendingConfirm is the opening of the confirmation dialog still waiting for its close event, if any.
let pendingConfirm = null;

function confirmDialog(title, text, okLabel) {
  const dlg = $("confirm");
  // The close event is dispatched after the dialog closed, as a task: an Escape's can arrive after the next
  // opening, and is not that opening's answer. An earlier opening still waiting is answered "no" here, so its
  // listener can never take a later opening's "ok" as its own (that started a bulk replay twice).
  if (pendingConfirm) pendingConfirm.settle(false);
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dlg.returnValue = "";
  const back = document.activeElement;
  return new Promise((resolve) => {
    const opening = {
      settle(answer) {
        dlg.removeEventListener("close", onClose);
        if (pendingConfirm === opening) pendingConfirm = null;
        resolve(answer);
      },
    };
    const onClose = () => {
      if (dlg.open) return;
      if (back && back.focus) back.focus();
      opening.settle(dlg.returnValue === "ok");
    };
    pendingConfirm = opening;
    dlg.addEventListener("close", onClose);
    dlg.showModal();
    $("confirm-cancel").focus();
  });
}

// bulkBody is the bulk replay request for the filter on the page and the rate asked for.
function bulkBody(dryRun) {
  const q = filterQuery();
  const body = { dryRun };
  for (const [k, v] of [["errorClass", "errorClass"], ["trialId", "trialId"], ["patientId", "patientId"], ["from", "from"], ["to", "to"]]) {
    if (q.get(k)) body[v] = q.get(k);
  }
  const rate = parseFloat($("bulk-rate").value);
  if (!dryRun && rate > 0) body.ratePerSecond = rate;
  return body;
}

function describeFilter(b) {
  const parts = ["status new"];
  if (b.errorClass) parts.push(`class ${b.errorClass}`);
  if (b.trialId) parts.push(`trial ${b.trialId}`);
  if (b.patientId) parts.push(`patient ${b.patientId}`);
  if (b.from) parts.push(`from ${b.from}`);
  if (b.to) parts.push(`before ${b.to}`);
  return parts.join(", ");
}

function bulkKey() {
  return JSON.stringify(bulkBody(false));
}

// dryRun counts what a bulk replay of the filter would take, and what it would skip: dead letters of class
// conflict (counted by a second dry run restricted to that class) are skipped by the job, never replayed.
async function dryRun() {
  state.dry = null;
  $("bulk-start").disabled = true;
  const body = bulkBody(true);
  const r = await api("POST", "/v1/replay-jobs", body);
  let conflicts = 0;
  if (body.errorClass === "conflict") {
    conflicts = r.count;
  } else if (!body.errorClass && r.count > 0) {
    conflicts = (await api("POST", "/v1/replay-jobs", { ...body, errorClass: "conflict" })).count;
  }
  const rate = parseFloat($("bulk-rate").value);
  const lines = [`Dry run for ${describeFilter(body)}: ${r.count} dead letter${r.count === 1 ? "" : "s"} would be taken, oldest first.`];
  if (conflicts > 0) {
    lines.push(`${conflicts} would be skipped: class conflict (a request id stored with other content is never replayed).`);
  }
  if (!r.storedKnown) {
    lines.push("Whether any is already stored is unknown: the reports table is not readable.");
  } else if (r.alreadyStored > 0) {
    lines.push(`${r.alreadyStored} already stored in reports: sent again, epro-mq deduplicates them by request id.`);
  }
  lines.push("Degraded dead letters whose bytes were not archived are never taken.");
  lines.push(rate > 0 ? `Rate asked: ${rate} per second (the server caps it at its maximum).` : "Rate: the server's default.");
  const out = $("bulk-dry");
  out.replaceChildren(...lines.map((l) => { const p = document.createElement("p"); p.textContent = l; return p; }));
  out.dataset.count = String(r.count);
  if (r.count > 0) {
    state.dry = { key: bulkKey(), count: r.count, conflicts };
    $("bulk-start").disabled = false;
  }
}

async function startBulk() {
  if (!state.dry || state.dry.key !== bulkKey()) {
    $("bulk-start").disabled = true;
    say("The filter or the rate changed since the dry run: run the dry run again.", "error");
    return;
  }
  const body = bulkBody(false);
  const n = state.dry.count;
  const ok = await confirmDialog("Start a bulk replay?",
    `Replays up to ${n} dead letter${n === 1 ? "" : "s"} (${describeFilter(body)}) to their original topics` +
    (body.ratePerSecond ? ` at ${body.ratePerSecond} per second` : " at the default rate") +
    ". Each is sent once; you can pause or cancel the job.", `Replay ${n}`);
  if (!ok) {
    say("Bulk replay not started.", "");
    return;
  }
  const r = await api("POST", "/v1/replay-jobs", body);
  state.dry = null;
  $("bulk-start").disabled = true;
  say(`Bulk replay job ${r.job.id} started: ${r.job.total} dead letters.`, "ok");
  showJob(r.job);
}

function stopJob() {
  clearTimeout(state.jobTimer);
  state.jobTimer = 0;
}

function stopRun() {
  clearTimeout(state.runTimer);
  state.runTimer = 0;
}

// showJob renders a job and keeps polling it until it ends.
function showJob(j) {
  stopJob();
  state.jobId = j.id;
  $("job").hidden = false;
  $("job-title").textContent = `${j.id} by ${j.actor}`;
  $("job-state").textContent = j.state;
  $("job-state").className = "badge job-" + j.state;
  const p = $("job-progress");
  p.max = Math.max(j.total, 1);
  p.value = j.done;
  $("job-text").textContent =
    `${j.done} of ${j.total} handled (replayed or skipped) · skipped ${j.skipped} · failed ${j.failed}` +
    ` · came back as dead letters ${j.redeadLettered} · ${j.ratePerSecond} per second` +
    (j.stateReason ? ` · ${j.stateReason}` : "") + ` · updated ${j.updatedAt}`;
  $("job-error").textContent = j.lastError ? `Last error: ${j.lastError}` : "";
  $("job-pause").disabled = j.state !== "running";
  $("job-resume").disabled = j.state !== "paused";
  $("job-cancel").disabled = !(j.state === "running" || j.state === "paused");
  $("job").dataset.state = j.state;
  if (!JOB_FINAL.includes(j.state)) {
    state.jobTimer = setTimeout(() => pollJob(j.id), JOB_POLL_MS);
  } else {
    loadList(true).then(loadStats).catch(fail);
  }
}

async function pollJob(id) {
  try {
    showJob(await api("GET", `/v1/replay-jobs/${id}`));
  } catch (err) {
    fail(err);
  }
}

async function jobAction(action) {
  const id = state.jobId;
  if (action === "cancel") {
    const ok = await confirmDialog(`Cancel job ${id}?`,
      "The job ends for good; the dead letters it has not replayed stay new (a new job can take them).", "Cancel the job");
    if (!ok) return;
  }
  stopJob();
  try {
    const j = await api("POST", `/v1/replay-jobs/${id}/${action}`);
    say(`Job ${id}: ${j.state}.`, "ok");
    showJob(j);
  } catch (err) {
    fail(err);
    pollJob(id);
  }
}

// reconcileBody reads the reconciliation form.
function reconcileBody() {
  const body = {};
  const off = $("rc-from-offset").value.trim();
  if (off !== "") body.fromOffset = Number(off);
  const t = toUTC($("rc-from-time").value);
  if (t) body.fromTime = t;
  if ($("rc-to-end").checked) body.toEnd = true;
  return body;
}

async function startReconcile(ev) {
  ev.preventDefault();
  const r = await api("POST", "/v1/reconciliations", reconcileBody());
  say(`Reconciliation ${r.id} started.`, "ok");
  showRun(r);
}

async function loadLatestRun() {
  try {
    showRun(await api("GET", "/v1/reconciliations"));
  } catch (err) {
    if (err.status === 404) {
      $("rc-run").hidden = true;
      state.run = null;
      offerRedrive();
      return;
    }
    throw err;
  }
}

// showRun renders a reconciliation run and polls it while it runs.
function showRun(r) {
  stopRun();
  state.runId = r.id;
  state.run = r;
  $("rc-run").hidden = false;
  $("rc-id").textContent = `${r.id} by ${r.actor}`;
  $("rc-state").textContent = r.state;
  $("rc-state").className = "badge run-" + r.state;
  $("rc-run").dataset.state = r.state;
  const missing = r.missing || 0;
  const verdict = $("rc-verdict");
  verdict.className = "";
  if (r.state === "running") {
    verdict.textContent = "Running: the counts are partial until it is done.";
  } else if (r.state === "failed") {
    verdict.textContent = `The run failed (${r.error || "no reason given"}); the counts are partial, as the command's exit status 3.`;
    verdict.className = "alarm";
  } else if (missing > 0) {
    verdict.textContent = `${missing} record${missing === 1 ? " is" : "s are"} MISSING: on the topic, but neither stored nor dead-lettered (the command would exit 1).`;
    verdict.className = "alarm";
  } else {
    verdict.textContent = "Nothing missing: every record read is accounted for (the command would exit 0).";
    verdict.className = "ok-text";
  }
  const parts = (r.partitions || []).map((p) => `partition ${p.partition}: ${p.position - p.from} of ${p.end - p.from}`);
  $("rc-progress").textContent = `${r.records} records read` + (r.ratePerSecond ? ` at ${Math.round(r.ratePerSecond)} per second` : "") +
    (parts.length ? ` · ${parts.join(" · ")}` : "");
  const meta = $("rc-meta");
  meta.replaceChildren();
  metaRow(meta, "Range", r.range);
  metaRow(meta, "Started", r.startedAt);
  metaRow(meta, "Finished", r.finishedAt);

  const counts = r.counts || {};
  const classes = [...CLASS_ORDER, ...Object.keys(counts).filter((c) => !CLASS_ORDER.includes(c))];
  const cb = $("rc-counts").querySelector("tbody");
  cb.replaceChildren();
  for (const c of classes) {
    const tr = document.createElement("tr");
    tr.dataset.class = c;
    cell(tr, c.replace(/_/g, " "));
    cell(tr, counts[c] || 0);
    if (c === "missing" && (counts[c] || 0) > 0) tr.className = "alarm";
    cb.appendChild(tr);
  }
  labelRows($("rc-counts"));

  const eb = $("rc-exceptions").querySelector("tbody");
  eb.replaceChildren();
  for (const e of r.exceptions || []) {
    const tr = document.createElement("tr");
    tr.dataset.class = e.class;
    if (e.class === "missing") tr.className = "alarm";
    cell(tr, e.requestId);
    cell(tr, e.partition);
    cell(tr, e.offset);
    cell(tr, e.class.replace(/_/g, " "));
    cell(tr, e.detail);
    eb.appendChild(tr);
  }
  labelRows($("rc-exceptions"));
  const shown = (r.exceptions || []).length;
  $("rc-exceptions-note").textContent = r.state === "running" ? "Listed once the run is done." :
    r.exceptionsTruncated ? `The first ${shown} of ${r.exceptionCount}: run \`dlq-worker reconcile\` for the full list.` :
    `${r.exceptionCount} exception${r.exceptionCount === 1 ? "" : "s"}.`;
  showRedrive(r.redrive);
  offerRedrive();
  $("rc-run").dataset.loaded = String(Date.now());
  if (r.state === "running" || (r.redrive && r.redrive.state === "running")) {
    state.runTimer = setTimeout(() => pollRun(r.id), RUN_POLL_MS);
  }
}

// offerRedrive shows "Re-drive N missing" to operators when the run shown is done, has missing records and
// was not re-driven yet (the server checks all of it again).
function offerRedrive() {
  const r = state.run;
  const offer = isOperator() && !!r && r.state === "done" && (r.missing || 0) > 0 && !r.redrive;
  $("rc-redrive-offer").hidden = !offer;
  if (offer) $("rc-redrive").textContent = `Re-drive ${r.missing} missing…`;
}

// showRedrive renders the re-drive of the run shown: its counts and what they mean, as the command's exit
// status with -redrive.
function showRedrive(rd) {
  $("rc-redrive-run").hidden = !rd;
  $("rc-run").dataset.redrive = rd ? rd.state : "";
  if (!rd) return;
  $("rc-redrive-by").textContent = `by ${rd.actor}`;
  $("rc-redrive-state").textContent = rd.state;
  $("rc-redrive-state").className = "badge run-" + rd.state;
  const handled = rd.redriven + rd.resolved + rd.refused + rd.failed;
  const p = $("rc-redrive-progress");
  p.max = Math.max(rd.missing, 1);
  p.value = handled;
  $("rc-redrive-text").textContent = `${handled} of ${rd.missing} missing handled · redriven ${rd.redriven} · ` +
    `resolved ${rd.resolved} · refused ${rd.refused} · failed ${rd.failed} · not tried ${rd.notTried}` +
    (rd.finishedAt ? ` · finished ${rd.finishedAt}` : "");
  const hint = $("rc-redrive-hint");
  const left = rd.refused + rd.failed + rd.notTried;
  hint.className = "";
  if (rd.state === "running") {
    hint.textContent = "Running: each record is checked again, produced to the report topic and audited.";
  } else if (rd.state === "failed") {
    hint.textContent = `The re-drive stopped (${rd.error || "no reason given"}); the counts are partial, as the command's exit status 3.`;
    hint.className = "alarm";
  } else if (left > 0) {
    hint.textContent = `${left} stay${left === 1 ? "s" : ""} missing (refused, failed or not tried; the command would exit 1): ` +
      "the audit trail (action redrive) names them; run the reconciliation again to list them.";
    hint.className = "alarm";
  } else if (rd.redriven === 0) {
    hint.textContent = "Every missing record came back meanwhile; nothing was sent (the command would exit 0).";
    hint.className = "ok-text";
  } else {
    hint.textContent = "Every missing record was re-driven (the command would exit 4): run the reconciliation again " +
      "once epro-mq has read them, to confirm the repair.";
    hint.className = "ok-text";
  }
}

// startRedrive asks, then re-drives the missing records of the run shown; the run is polled for the counts.
async function startRedrive() {
  const r = state.run;
  if (!r) return;
  const n = r.missing;
  const ok = await confirmDialog(`Re-drive ${n} missing record${n === 1 ? "" : "s"}?`,
    `Produces the ${n} record${n === 1 ? "" : "s"} that run ${r.id} found missing again to the report topic, ` +
    "byte for byte with x-redrive-of, so that epro-mq stores them. Each is checked again first (nothing is sent " +
    "for one stored or dead-lettered meanwhile) and audited. A run is re-driven once.", `Re-drive ${n}`);
  if (!ok) {
    say("Re-drive not started.", "");
    return;
  }
  stopRun();
  try {
    const run = await api("POST", `/v1/reconciliations/${r.id}/redrive`);
    say(`Re-drive of run ${r.id} started: ${n} missing.`, "ok");
    showRun(run);
    $("rc-redrive-title").focus();
  } catch (err) {
    fail(err);
    pollRun(r.id);
  }
}

async function pollRun(id) {
  try {
    showRun(await api("GET", `/v1/reconciliations/${id}`));
  } catch (err) {
    fail(err);
  }
}

async function refresh() {
  if (!state.token) {
    say("Paste a token to start.", "");
    return;
  }
  try {
    await Promise.all([loadList(true), loadStats(), loadReasons(), loadLatestRun()]);
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
  $("btn-reveal").addEventListener("click", () => openDetail(state.selected.id, true, false).then(() => say("Payload revealed; this was recorded in the audit trail.", "ok")).catch(fail));
  $("btn-replay").addEventListener("click", () => previewReplay().catch(fail));
  $("btn-replay-confirm").addEventListener("click", () => replay().catch(fail));
  $("discard-form").addEventListener("submit", (ev) => discard(ev).catch(fail));
  $("audit-csv").addEventListener("click", () => downloadAudit("csv").catch(fail));
  $("audit-json").addEventListener("click", () => downloadAudit("json").catch(fail));
  $("bulk-dry-run").addEventListener("click", () => dryRun().catch(fail));
  $("bulk-start").addEventListener("click", () => startBulk().catch(fail));
  $("bulk-form").addEventListener("submit", (ev) => { ev.preventDefault(); dryRun().catch(fail); });
  $("job-open").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("job-id").value.trim();
    if (!/^[0-9]+$/.test(id)) {
      say("A job id is a number.", "error");
      return;
    }
    pollJob(id);
  });
  $("job-pause").addEventListener("click", () => jobAction("pause").catch(fail));
  $("job-resume").addEventListener("click", () => jobAction("resume").catch(fail));
  $("job-cancel").addEventListener("click", () => jobAction("cancel").catch(fail));
  $("rc-form").addEventListener("submit", (ev) => startReconcile(ev).catch(fail));
  $("rc-redrive").addEventListener("click", () => startRedrive().catch(fail));
  $("pa-form").addEventListener("submit", (ev) => { ev.preventDefault(); downloadPatientAudit("csv").catch(fail); });
  $("pa-json").addEventListener("click", () => downloadPatientAudit("json").catch(fail));
  // A dry run is for one filter and rate: changing either asks for a new one.
  for (const id of ["f-class", "f-trial", "f-patient", "f-from", "f-to", "bulk-rate"]) {
    $(id).addEventListener("input", () => { if (state.dry && state.dry.key !== bulkKey()) $("bulk-start").disabled = true; });
  }
  loadToken();
  refresh();
});
