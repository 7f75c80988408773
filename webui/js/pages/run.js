// Run page: status and timing, live metric charts (training metrics, and the system/* series
// in a section of their own), params, model summary, checkpoints, the code snapshot of a code
// run (files, download), the environment record, log tail; cancel (confirmed), resume from a
// checkpoint, clone.

import { h, replace, toast, confirmDialog, promptDialog } from "../dom.js";
import { runs as runsApi, downloadUrl, removeCheckpoint } from "../api.js";
import { canChangeRun, canWrite, isOpenMode } from "../perm.js";
import { LiveStream } from "../sse.js";
import { SystemCharts, TrainingCharts } from "../syscharts.js";
import { EnvironmentView, renderCodeSection, shortSha } from "../code.js";
import { ACTIVE, fmtBytes, fmtDateTime, fmtDuration, fmtNumber, fmtValue, runDuration } from "../format.js";
import { statusBadge } from "./runs.js";
import { renderSummary } from "../summary.js";
import { PanelEditor } from "../panels.js";
import { RunTagsNote } from "../tagsnotes.js";

const MAX_LOG_LINES = 2000;

/** Nested objects as dotted keys (a LightningCLI config: model.lr, trainer.max_epochs). */
function flattenKeys(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype && Object.keys(v).length) flattenKeys(v, key, out);
    else out[key] = v;
  }
  return out;
}

export function kvTable(obj, { testid, empty = "None." } = {}) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted small" }, empty);
  return h("table", { class: "table kv", dataset: { testid } },
    h("tbody", null, entries.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) =>
      h("tr", null, h("th", null, k), h("td", { class: typeof v === "number" ? "num mono" : "mono" }, fmtValue(v))))));
}

const CHART_POINTS = 2000; // points per series the charts ask for (MetricCharts' default)
const ENDED = new Set(["succeeded", "failed", "cancelled"]);

export async function render(root, { id }) {
  // Params and trainer arguments never change after submission: keep them as written, so a
  // fraction of 1.0 (`limit_train_batches`) is not shown as the int 1.
  // The metric history goes out with the run's own read (a cold page with a long curve waits mostly
  // for it); it is used only if the run has ended, so no live point can fall between it and the stream.
  const early = runsApi.metrics(id, { max_points: CHART_POINTS }).catch(() => null);
  const exact = await runsApi.get(id, { keepFloats: true });
  const settings = { params: exact.params, trainer: exact.trainer };
  let run = JSON.parse(JSON.stringify(exact));
  const cleanups = [];

  const head = h("div", { class: "page-head run-head" });
  const info = h("div", { class: "info-grid", dataset: { testid: "run-info" } });
  const errorBox = h("pre", { class: "error-box error-trace", hidden: true, dataset: { testid: "run-error" } });
  const chartsBox = h("div", { class: "charts-grid", dataset: { testid: "charts" } });
  const systemBox = h("div", { class: "charts-grid", dataset: { testid: "system-charts" } });
  const isCode = run.recipe === "code" || !!run.code;
  const codeBox = h("div", { dataset: { testid: "code-section" } }, h("p", { class: "muted small" }, "Loading…"));
  const environment = new EnvironmentView(id);
  const paramsBox = h("div");
  const hparamsBox = h("div");
  const summaryBox = h("div", { dataset: { testid: "model-summary" } });
  const ckptBody = h("div", { dataset: { testid: "checkpoints" } });
  const logPre = h("pre", { class: "log-tail", dataset: { testid: "log-tail" } });
  const follow = h("input", { type: "checkbox", checked: true });
  let checkpoints = [];
  let logCount = 0;

  const systemCharts = new SystemCharts(systemBox, { runs: [{ id: run.id, name: run.name }] });
  const charts = new TrainingCharts(chartsBox, { runs: [{ id: run.id, name: run.name }], maxPoints: CHART_POINTS }, systemCharts);
  if (ENDED.has(run.status)) charts.prefetched = new Map([[run.id, early]]);
  cleanups.push(() => charts.destroy());
  const panelEditor = new PanelEditor(charts, run.project);
  const tagsNote = new RunTagsNote(run, { mayEdit: canWrite(run.project) });

  let headKey = null;
  function renderHead() {
    // Rebuilt only when something it shows changes: a checkpoint arriving every few steps must
    // not replace the Cancel button under the user's pointer.
    // What the role allows (the server refuses the rest anyway): resume and clone need member in
    // the run's project; cancel, rename and delete need its owner as member, or a project admin.
    const mayWrite = canWrite(run.project);
    const mayChange = canChangeRun(run);
    const key = JSON.stringify([run.id, run.name, run.status, !!run.cancel_requested, run.recipe, checkpoints.length > 0, mayWrite, mayChange]);
    if (key === headKey) return;
    headKey = key;
    const actions = [];
    if (ACTIVE.has(run.status)) {
      if (mayChange) {
        actions.push(h("button", { class: "btn btn-danger", type: "button", dataset: { testid: "cancel-run" }, disabled: !!run.cancel_requested, on: { click: onCancel } },
          run.cancel_requested ? "Cancelling…" : "Cancel"));
      }
    } else if (checkpoints.length && run.recipe !== "external" && mayWrite) {
      actions.push(h("button", { class: "btn", type: "button", dataset: { testid: "resume-run" }, on: { click: () => onResume(null) }, title: "Continue training from the last checkpoint in a new run" }, "Resume"));
    }
    if (run.recipe !== "external" && mayWrite) actions.push(h("a", { class: "btn", href: `#/new?clone=${run.id}`, dataset: { testid: "clone-run" } }, "Clone"));
    actions.push(h("a", { class: "btn", href: `#/compare?ids=${run.id}` }, "Compare…"));
    if (mayChange) actions.push(h("button", { class: "btn", type: "button", dataset: { testid: "rename-run" }, on: { click: onRename } }, "Rename"));
    if (!ACTIVE.has(run.status) && mayChange) {
      actions.push(h("button", { class: "btn btn-danger", type: "button", dataset: { testid: "delete-run" }, on: { click: onDelete } }, "Delete"));
    }
    replace(head,
      h("div", { class: "run-title" },
        h("a", { href: "#/runs", class: "crumb" }, "Runs"), h("span", { class: "crumb-sep" }, "/"),
        h("h1", { dataset: { testid: "run-name" }, title: run.name }, run.name || `run ${run.id}`),
        h("span", { class: "run-id" }, `#${run.id}`),
        statusBadge(run.status)),
      h("span", { class: "spacer" }),
      actions);
  }

  function infoItem(label, value, testid) {
    return h("div", { class: "info-item", dataset: testid ? { testid } : null }, h("div", { class: "info-label" }, label), h("div", { class: "info-value" }, value ?? "—"));
  }

  function renderInfo() {
    replace(info,
      infoItem("Project", run.project),
      run.owner || !isOpenMode() ? infoItem("Owner", run.owner || "—", "owner") : null,
      infoItem("Recipe", h("code", null, run.recipe)),
      run.code ? infoItem("Snapshot", h("code", { title: run.code.sha256 }, shortSha(run.code.sha256)), "snapshot") : null,
      infoItem("Created", fmtDateTime(run.created_at), "created"),
      infoItem("Started", fmtDateTime(run.started_at), "started"),
      infoItem("Ended", fmtDateTime(run.ended_at), "ended"),
      infoItem("Duration", h("span", { class: "live-duration" }, fmtDuration(runDuration(run))), "duration"),
      infoItem("Worker", run.worker_host || "—", "worker"),
      infoItem("Device", run.device || "—", "device"),
      infoItem("Attempt", run.max_attempts ? `${run.attempt ?? 0} / ${run.max_attempts}` : String(run.attempt ?? 0)),
      run.resumed_from_id ? infoItem("Resumed from", h("a", { href: `#/runs/${run.resumed_from_id}` }, `#${run.resumed_from_id}`)) : null);
    errorBox.hidden = !run.error;
    errorBox.textContent = run.error || "";
  }

  function renderParams() {
    const kind = run.code && run.code.entry ? run.code.entry.kind : null;
    const label = !isCode ? "Recipe parameters" : kind === "cli" ? "Config (LightningCLI)" : kind === "command" ? "Command options" : "Parameters";
    replace(paramsBox,
      h("h3", { class: "sub" }, label), kvTable(kind === "cli" ? flattenKeys(settings.params) : settings.params, { testid: "params-table" }),
      !isCode || kind === "module" || Object.keys(settings.trainer || {}).length
        ? [h("h3", { class: "sub" }, "Trainer"), kvTable(settings.trainer, { testid: "trainer-table" })] : null);
    replace(hparamsBox, kvTable(run.hyperparameters, { testid: "hparams-table", empty: "No hyperparameters logged yet." }));
  }

  function renderCheckpoints() {
    if (!checkpoints.length) { replace(ckptBody, h("p", { class: "muted small" }, "No checkpoints yet.")); return; }
    const mayResume = !ACTIVE.has(run.status) && run.recipe !== "external" && canWrite(run.project);
    const mayDelete = !ACTIVE.has(run.status) && canChangeRun(run);
    const rows = [...checkpoints].sort((a, b) => (b.step ?? 0) - (a.step ?? 0) || b.id - a.id).map((c) => {
      const name = (c.path || "").split("/").pop();
      const flags = [c.is_best ? h("span", { class: "tag tag-best" }, "best") : null, c.is_last ? h("span", { class: "tag tag-last" }, "last") : null];
      return h("tr", { dataset: { ckptId: c.id } },
        h("td", { class: "mono", title: c.path }, name),
        h("td", { class: "num" }, c.epoch ?? "—"),
        h("td", { class: "num" }, c.step ?? "—"),
        h("td", { class: "num", title: c.monitor || "" }, c.score === null || c.score === undefined ? "—" : fmtNumber(c.score)),
        h("td", { class: "num" }, fmtBytes(c.size)),
        h("td", null, flags),
        h("td", { class: "actions" },
          h("a", { class: "btn btn-sm", href: downloadUrl(c.id), download: name || `checkpoint-${c.id}.ckpt`, dataset: { testid: "download-ckpt" } }, "Download"),
          mayResume
            ? h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "resume-from" }, on: { click: () => onResume(c.id) } }, "Resume") : null,
          mayDelete
            ? h("button", { class: "btn btn-sm btn-danger", type: "button", dataset: { testid: "delete-ckpt" }, title: "Delete this checkpoint and its file", on: { click: () => onDeleteCheckpoint(c, name) } }, "Delete") : null));
    });
    const monitor = checkpoints.find((c) => c.monitor)?.monitor;
    replace(ckptBody, h("table", { class: "table" },
      h("thead", null, h("tr", null, h("th", null, "File"), h("th", { class: "num" }, "Epoch"), h("th", { class: "num" }, "Step"),
        h("th", { class: "num" }, monitor ? `Score (${monitor})` : "Score"), h("th", { class: "num" }, "Size"), h("th", null, ""), h("th", null, ""))),
      h("tbody", null, rows)));
  }

  function appendLogs(lines) {
    if (!lines || !lines.length) return;
    const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 8;
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      const t = l.time ? fmtDateTime(l.time).slice(11) : "";
      frag.append(h("div", { class: ["log-line", l.stream === "stderr" && "log-err"] }, h("span", { class: "log-time" }, t), l.text));
    }
    const empty = logPre.querySelector(".muted");
    if (empty) empty.remove();
    logPre.append(frag);
    logCount += lines.length;
    while (logPre.childElementCount > MAX_LOG_LINES) logPre.firstElementChild.remove();
    if (follow.checked && (atBottom || logCount === lines.length)) logPre.scrollTop = logPre.scrollHeight;
  }

  async function loadCheckpoints() {
    checkpoints = await runsApi.checkpoints(id).catch(() => checkpoints);
    renderCheckpoints();
    renderHead();
  }

  async function loadSummary() {
    try {
      const s = await runsApi.summary(id);
      replace(summaryBox, s ? renderSummary(s) : h("p", { class: "muted small" }, "No model summary yet: it is stored when fit starts."));
    } catch (err) {
      replace(summaryBox, h("p", { class: "muted small" }, err.status === 404 ? "No model summary yet: it is stored when fit starts." : `Could not load the summary: ${err.message}`));
    }
  }

  async function loadLogs() {
    const res = await runsApi.logs(id, { tail: 500 }).catch(() => null);
    replace(logPre);
    logCount = 0;
    if (res && res.lines.length) appendLogs(res.lines);
    else logPre.append(h("span", { class: "muted" }, "No log lines yet."));
  }

  async function onCancel() {
    const ok = await confirmDialog({ title: `Cancel run #${run.id}?`, body: `“${run.name || "run " + run.id}” will stop at its next step and save a last checkpoint. This cannot be undone, but you can resume from a checkpoint later.`, confirmLabel: "Cancel run", dismissLabel: "Keep running", danger: true });
    if (!ok) return;
    try {
      const answer = await runsApi.cancel(id);
      // the live stream may have brought a newer state (the run already stopped) meanwhile
      if (!run.updated_at || answer.updated_at >= run.updated_at) run = answer;
      toast(`Cancel requested for run #${id}`, "info");
      renderHead(); renderInfo();
    } catch (err) { toast(err.message, "error"); }
  }

  async function onDelete() {
    const ok = await confirmDialog({ title: `Delete run #${run.id}?`, body: `“${run.name || "run " + run.id}”, its metrics, logs and checkpoint files will be removed for good.`, confirmLabel: "Delete run", danger: true });
    if (!ok) return;
    try {
      await runsApi.remove(id);
      toast(`Run #${id} deleted`, "info");
      location.hash = "#/runs";
    } catch (err) { toast(err.message, "error"); }
  }

  async function onRename() {
    const name = await promptDialog({ title: `Rename run #${run.id}`, label: "name", value: run.name || "", confirmLabel: "Rename",
      check: (v) => (v.trim() ? null : "A run needs a name.") });
    if (name === null || name.trim() === run.name) return;
    try {
      const answer = await runsApi.rename(id, name.trim());
      run = { ...run, name: answer.name, updated_at: answer.updated_at };
      toast(`Run #${id} renamed`, "ok");
      renderHead();
    } catch (err) { toast(err.message, "error"); }
  }

  async function onDeleteCheckpoint(c, name) {
    const ok = await confirmDialog({ title: "Delete this checkpoint?", body: `“${name || "checkpoint " + c.id}” (step ${c.step ?? "—"}) and its file will be removed for good.`, confirmLabel: "Delete checkpoint", danger: true });
    if (!ok) return;
    try {
      await removeCheckpoint(c.id);
      checkpoints = checkpoints.filter((x) => x.id !== c.id);
      toast("Checkpoint deleted", "info");
      renderCheckpoints(); renderHead();
    } catch (err) { toast(err.message, "error"); }
  }

  async function onResume(checkpointId) {
    try {
      const next = await runsApi.resume(id, checkpointId);
      toast(`Resumed as run #${next.id}`, "ok");
      location.hash = `#/runs/${next.id}`;
    } catch (err) { toast(err.message, "error"); }
  }

  renderHead(); renderInfo(); renderParams();
  replace(root, h("div", { class: "page page-wide run-page", dataset: { runId: run.id } },
    head, info, tagsNote.tagsEl, errorBox,
    h("section", { class: "panel", dataset: { testid: "note-section" } }, h("div", { class: "panel-head" }, h("h2", null, "Note")), tagsNote.noteEl),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Metrics"), charts.controls(), panelEditor.button), panelEditor.box, chartsBox),
    h("section", { class: "panel", dataset: { testid: "system-section" } }, h("div", { class: "panel-head" }, h("h2", null, "System"), systemCharts.controls()), systemBox),
    h("div", { class: "two-col" },
      h("div", { class: "col" },
        h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Model summary")), summaryBox),
        h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Checkpoints")), ckptBody)),
      h("div", { class: "col" },
        h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Parameters")), paramsBox),
        h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Hyperparameters")), hparamsBox))),
    isCode ? h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Code")), codeBox) : null,
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Environment")), environment.el),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Logs"), h("label", { class: "ctl" }, follow, " Follow")), logPre)));

  // Live stream first, then history, so nothing logged in between is missed (duplicates
  // are dropped by step in MetricCharts.addPoints).
  let summaryLoaded = false;
  const stream = new LiveStream(`/api/v1/runs/${id}/events`, {
    metrics: (d) => {
      if (!d || !d.points) return;
      charts.addPoints(id, d.points);
      if (!summaryLoaded && run.status === "running") { summaryLoaded = true; loadSummary(); }
    },
    status: (d) => {
      if (!d) return;
      const was = run.status;
      run = { ...run, ...d };
      renderHead(); renderInfo(); renderParams();
      if (was !== run.status) {
        if (run.status === "running" && was === "queued" && run.attempt > 1) charts.load();
        if (!ACTIVE.has(run.status)) { loadCheckpoints(); loadSummary(); }
        if (run.status === "running") loadSummary();
        environment.load();
      }
    },
    log: (d) => appendLogs(d && d.lines),
    deleted: () => {
      toast(`Run #${id} was deleted`, "info");
      location.hash = "#/runs";
    },
    checkpoint: (c) => {
      if (!c) return;
      checkpoints = checkpoints.filter((x) => x.id !== c.id);
      // A new best/last flag clears the flag on older checkpoints.
      if (c.is_best) checkpoints = checkpoints.map((x) => ({ ...x, is_best: false }));
      if (c.is_last) checkpoints = checkpoints.map((x) => ({ ...x, is_last: false }));
      checkpoints.push(c);
      renderCheckpoints(); renderHead();
      loadCheckpoints();
    },
  }, {
    onResync: async () => {
      run = await runsApi.get(id).catch(() => run);
      renderHead(); renderInfo(); renderParams();
      charts.load(); loadCheckpoints(); loadLogs(); environment.load();
    },
  });
  cleanups.push(() => stream.close());

  const tick = setInterval(() => {
    if (run.status !== "running") return;
    const el = info.querySelector(".live-duration");
    if (el) el.textContent = fmtDuration(runDuration(run));
  }, 1000);
  cleanups.push(() => clearInterval(tick));

  // Hyperparameters can be logged after start (PUT by the logger); refresh while running.
  const hpTimer = setInterval(async () => {
    if (!ACTIVE.has(run.status)) return;
    // Only the hyperparameters: a status that the live stream changed while this request was
    // on its way must not be put back by this (older) answer.
    try { const r = await runsApi.get(id); run = { ...run, hyperparameters: r.hyperparameters }; tagsNote.update(r); renderParams(); renderInfo(); } catch { /* server restarting */ }
    // The record arrives when training starts, and again when the seed is set.
    environment.load();
  }, 5000);
  cleanups.push(() => clearInterval(hpTimer));

  await Promise.all([panelEditor.load(), charts.load(), loadCheckpoints(), loadSummary(), loadLogs(), environment.load(),
    isCode ? renderCodeSection(codeBox, exact) : null]);
  return () => cleanups.forEach((f) => f());
}

