// Compare page: overlaid curves per metric with a legend by run (system/* series in a
// section of their own), and a table of params, trainer arguments, hyperparameters, code and
// environment records (versions, git commit, packages) where values that differ stand out.

import { h, replace } from "../dom.js";
import { runs as runsApi, FloatValue } from "../api.js";
import { LiveStream } from "../sse.js";
import { SystemCharts, TrainingCharts } from "../syscharts.js";
import { entryLabel, environmentFlat, shortSha } from "../code.js";
import { ACTIVE, fmtDuration, fmtValue, plural, runDuration } from "../format.js";
import { statusBadge } from "./runs.js";
import { PanelEditor } from "../panels.js";
import { ParamPlots, paramRows } from "../paramplots.js";

// Browsers allow 6 HTTP/1.1 connections per host; each SSE stream holds one.
const MAX_LIVE_STREAMS = 3;

function flatten(prefix, obj, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && !(v instanceof FloatValue) && Object.keys(v).length) flatten(key, v, out);
    else out[key] = v;
  }
  return out;
}

function setIds(ids) {
  location.hash = ids.length ? `#/compare?ids=${ids.join(",")}` : "#/compare";
}

export async function render(root, _params, query) {
  const ids = [...new Set((query.get("ids") || "").split(",").map((s) => parseInt(s, 10)).filter((n) => Number.isFinite(n) && n > 0))];
  const addInput = h("input", { class: "input input-sm", placeholder: "add run id", type: "number", min: "1", dataset: { testid: "add-run" },
    on: { keydown: (e) => { if (e.key === "Enter" && e.target.value) setIds([...ids, Number(e.target.value)]); } } });

  if (!ids.length) {
    replace(root, h("div", { class: "page" }, h("div", { class: "page-head" }, h("h1", null, "Compare runs")),
      h("div", { class: "empty-state" }, h("p", null, "Select runs on the ", h("a", { href: "#/runs" }, "Runs page"), " and press Compare, or add run ids here:"), addInput)));
    return;
  }

  // keepFloats: a trainer argument of 1.0 (a fraction) and one of 1 (a count) differ.
  // Reproducibility records (404 until a run's process records one) are compared below.
  const [found, foundEnvs] = await Promise.all([
    Promise.all(ids.map((id) => runsApi.get(id, { keepFloats: true }).catch(() => null))),
    Promise.all(ids.map((id) => runsApi.environment(id).then((e) => (e && e.record) || null).catch(() => null))),
  ]);
  const missing = ids.filter((id, i) => !found[i]);
  const runs = found.filter(Boolean);
  const envs = foundEnvs.filter((_, i) => found[i]);
  const chartRuns = runs.map((r) => ({ id: r.id, name: r.name }));
  const systemBox = h("div", { class: "charts-grid", dataset: { testid: "compare-system-charts" } });
  const systemPanel = h("section", { class: "panel", hidden: true, dataset: { testid: "compare-system" } });
  const systemCharts = new SystemCharts(systemBox, { runs: chartRuns, onKeys: (keys) => { systemPanel.hidden = !keys.length; } });
  const chartsBox = h("div", { class: "charts-grid", dataset: { testid: "compare-charts" } });
  const charts = new TrainingCharts(chartsBox, { runs: chartRuns }, systemCharts);
  const colorOf = new Map(charts.runs.map((r) => [r.id, r.color]));
  const panelEditor = new PanelEditor(charts, runs[0].project);
  const plotsBox = h("div", null, h("p", { class: "muted small" }, "Loading…"));

  const chips = h("div", { class: "run-chips", dataset: { testid: "compare-legend" } }, runs.map((r) => h("span", { class: "chip", dataset: { runId: r.id } },
    h("span", { class: "swatch", style: { background: colorOf.get(r.id) } }),
    h("a", { href: `#/runs/${r.id}` }, r.name || `run ${r.id}`), h("span", { class: "run-id" }, `#${r.id}`), statusBadge(r.status),
    h("button", { class: "chip-x", type: "button", title: "Remove from comparison", "aria-label": `Remove run ${r.id}`, on: { click: () => setIds(ids.filter((x) => x !== r.id)) } }, "×"))), addInput);

  // Params table: recipe params, trainer args, logged hyperparameters, the code snapshot and
  // the environment record, flattened. Installed packages get a row each only where their
  // versions differ (hundreds are the same), under one summary row.
  const anyCode = runs.some((r) => r.code);
  const packages = envs.map((e) => (e && e.packages && typeof e.packages === "object" ? e.packages : null));
  const packageNames = [...new Set(packages.flatMap((p) => Object.keys(p || {})))];
  const differingPackages = packageNames.filter((n) => new Set(packages.map((p) => (p ? JSON.stringify(p[n]) : "no record"))).size > 1);
  const flat = runs.map((r, i) => {
    const f = { ...flatten("params", r.params, {}), ...flatten("trainer", r.trainer, {}), ...flatten("hparams", r.hyperparameters, {}),
      recipe: r.recipe, project: r.project, status: r.status, duration: fmtDuration(runDuration(r)) };
    if (r.code) {
      f["code.snapshot"] = shortSha(r.code.sha256);
      f["code.entry"] = entryLabel(r.code.entry);
      if (r.code.git) {
        f["code.git.commit"] = r.code.git.commit ? shortSha(r.code.git.commit, 10) : null;
        f["code.git.dirty"] = r.code.git.dirty;
      }
    } else if (anyCode) f["code.snapshot"] = null;
    Object.assign(f, envs[i] ? environmentFlat(envs[i]) : {});
    if (packages[i]) {
      f["env.packages"] = plural(Object.keys(packages[i]).length, "package");
      for (const n of differingPackages) if (n in packages[i]) f[`env.packages.${n}`] = packages[i][n];
    }
    return f;
  });
  const GROUPS = [["run", "Run"], ["params", "Parameters"], ["trainer", "Trainer"], ["hparams", "Hyperparameters"], ["code", "Code"], ["env", "Environment"]];
  const groupOf = (k) => (["recipe", "project", "status", "duration"].includes(k) ? "run" : k.split(".")[0]);
  const ENV_ORDER = ["env.command", "env.python", "env.torch", "env.cuda", "env.cudnn", "env.platform", "env.hostname", "env.gpus", "env.seed", "env.git.commit", "env.git.branch", "env.git.dirty", "env.git", "env.packages"];
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort((a, b) => {
    const rank = (k) => GROUPS.findIndex(([g]) => g === groupOf(k));
    const envRank = (k) => { const i = ENV_ORDER.indexOf(k); return i >= 0 ? i : ENV_ORDER.length; };
    return rank(a) - rank(b) || (groupOf(a) === "env" ? envRank(a) - envRank(b) : 0) || a.localeCompare(b);
  });
  const onlyDiff = h("input", { type: "checkbox", dataset: { testid: "only-diff" }, on: { change: () => renderParams() } });
  const paramsBox = h("div", { class: "table-wrap" });
  function renderParams() {
    const rows = [];
    let group = null;
    let groupHead = null;
    for (const k of keys) {
      const vals = flat.map((f) => (!(k in f) ? undefined : f[k] instanceof FloatValue ? `float ${f[k].text}` : JSON.stringify(f[k])));
      // The packages summary row differs when any package version does.
      const differs = k === "env.packages" ? differingPackages.length > 0 || new Set(vals).size > 1 : new Set(vals).size > 1;
      if (onlyDiff.checked && !differs) continue;
      if (groupOf(k) !== group) {
        group = groupOf(k);
        const label = (GROUPS.find(([g]) => g === group) || [group, group])[1];
        groupHead = h("tr", { class: "group-row", dataset: { group } }, h("th", { colspan: runs.length + 1 }, label));
        rows.push(groupHead);
      }
      rows.push(h("tr", { class: differs && "diff", dataset: { param: k, differs: differs ? "1" : "0" } },
        h("th", { class: "mono" }, k),
        flat.map((f) => h("td", { class: "mono" }, k in f ? fmtValue(f[k]) : h("span", { class: "muted" }, "—")))));
    }
    // Only the group heads left (nothing differs): say so instead.
    if (rows.every((r) => r.classList.contains("group-row"))) rows.length = 0;
    replace(paramsBox, h("table", { class: "table compare-params", dataset: { testid: "compare-params" } },
      h("thead", null, h("tr", null, h("th", null, "Parameter"), runs.map((r) => h("th", null, h("span", { class: "swatch", style: { background: colorOf.get(r.id) } }), `#${r.id} ${r.name || ""}`)))),
      h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: runs.length + 1, class: "empty" }, "These runs have identical settings.")))));
  }
  renderParams();

  replace(root, h("div", { class: "page page-wide" },
    h("div", { class: "page-head" }, h("h1", null, "Compare runs"), h("span", { class: "muted" }, plural(runs.length, "run"))),
    missing.length ? h("div", { class: "error-box" }, `No run with id ${missing.join(", ")}.`) : null,
    chips,
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Metrics"), charts.controls(), panelEditor.button), panelEditor.box, chartsBox),
    h("section", { class: "panel", dataset: { testid: "param-plots-section" } }, h("div", { class: "panel-head" }, h("h2", null, "Parameter plots")), plotsBox),
    (systemPanel.append(h("div", { class: "panel-head" }, h("h2", null, "System"), systemCharts.controls()), systemBox), systemPanel),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Parameters"), h("label", { class: "ctl" }, onlyDiff, " Only differences"),
      h("span", { class: "legend-note" }, h("span", { class: "diff-swatch" }), " differs between runs")), paramsBox)));

  const streams = runs.filter((r) => ACTIVE.has(r.status)).slice(0, MAX_LIVE_STREAMS).map((r) =>
    new LiveStream(`/api/v1/runs/${r.id}/events`, { metrics: (d) => d && d.points && charts.addPoints(r.id, d.points) }, { onResync: () => charts.load() }));

  await Promise.all([panelEditor.load(), charts.load()]);
  // Parameter plots from the params and the metrics' history as loaded (min/max survive the
  // server's downsampling, which keeps each bucket's extremes and the last point).
  const metricValues = new Map(runs.map((r) => [r.id, {}]));
  for (const [key, byRun] of charts.data) for (const [runId, series] of byRun) if (metricValues.has(runId)) metricValues.get(runId)[key] = series.values;
  const plots = new ParamPlots(paramRows(runs, metricValues));
  replace(plotsBox, plots.el);
  if (charts.Plotly) await plots.draw(charts.Plotly);
  return () => { charts.destroy(); plots.destroy(); streams.forEach((s) => s.close()); };
}
