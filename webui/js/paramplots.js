// Parameter plots of a set of runs (the compare page): parallel coordinates (parameters ->
// a chosen metric) and a scatter of any parameter or metric against another, coloured by a
// third; hovering a point or line names its run, clicking it opens the run. Both are SVG
// (plotly's `scatter`, and parcoords.js), not WebGL: they draw in any browser, and 1,000 runs
// are 1,000 SVG elements.
//
// Columns: `params.<key>`, `hparams.<key>` (flattened, numbers; strings with few distinct
// values become categories) and `metrics.<key>.last|min|max`.

import { h, replace } from "./dom.js";
import { FloatValue, toNumber } from "./api.js";
import { plotlyText } from "./format.js";
import { drawParcoords } from "./parcoords.js";

const MAX_CATEGORIES = 30;

function flatten(prefix, obj, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = `${prefix}.${k}`;
    if (v && typeof v === "object" && !Array.isArray(v) && !(v instanceof FloatValue) && Object.keys(v).length) flatten(key, v, out);
    else out[key] = v instanceof FloatValue ? v.n : v;
  }
  return out;
}

/**
 * One row per run: {id, name, values: {column: number | string | null}}.
 * `metrics`: runId -> {key: number[] (the values of the series)}.
 */
export function paramRows(runs, metrics) {
  return runs.map((r) => {
    const values = { ...flatten("params", r.params, {}), ...flatten("hparams", r.hyperparameters, {}) };
    for (const [key, vals] of Object.entries(metrics.get(r.id) || {})) {
      const finite = vals.map(toNumber).filter(Number.isFinite);
      if (!finite.length) continue;
      values[`metrics.${key}.last`] = finite[finite.length - 1];
      values[`metrics.${key}.min`] = Math.min(...finite);
      values[`metrics.${key}.max`] = Math.max(...finite);
    }
    return { id: r.id, name: r.name || `run ${r.id}`, values };
  });
}

/** Columns worth plotting: numbers, or strings/booleans with at most MAX_CATEGORIES values. */
export function plotColumns(rows) {
  const cols = new Map();
  for (const r of rows) for (const [k, v] of Object.entries(r.values)) {
    if (v === null || v === undefined || typeof v === "object") continue;
    if (!cols.has(k)) cols.set(k, { key: k, numeric: true, cats: new Set() });
    const c = cols.get(k);
    if (typeof v !== "number") { c.numeric = false; c.cats.add(String(v)); }
  }
  return [...cols.values()].filter((c) => c.numeric || c.cats.size <= MAX_CATEGORIES)
    .map((c) => ({ key: c.key, numeric: c.numeric, cats: [...c.cats].sort() }))
    .sort((a, b) => a.key.localeCompare(b.key));
}

function columnValues(rows, col) {
  return rows.map((r) => {
    const v = r.values[col.key];
    if (v === null || v === undefined) return null;
    if (col.numeric) return Number.isFinite(v) ? v : null;
    return col.cats.indexOf(String(v));
  });
}

function axisFor(col) {
  return col && !col.numeric ? { tickmode: "array", tickvals: col.cats.map((_, i) => i), ticktext: col.cats.map(plotlyText) } : {};
}

const BASE = {
  font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#3b4252" },
  paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
};

export class ParamPlots {
  /** rows from paramRows; `open(id)` is called when a point is clicked. */
  constructor(rows, { open } = {}) {
    this.rows = rows;
    this.cols = plotColumns(rows);
    this.open = open || ((id) => { location.hash = `#/runs/${id}`; });
    const metricCols = this.cols.filter((c) => c.key.startsWith("metrics."));
    const paramCols = this.cols.filter((c) => !c.key.startsWith("metrics."));
    const pick = (cands, ...res) => { for (const re of res) { const c = cands.find((x) => re.test(x.key)); if (c) return c.key; } return (cands[0] || {}).key || ""; };
    const select = (testid, value, onChange) => h("select", { class: "input input-sm", dataset: { testid }, on: { change: onChange } },
      this.cols.map((c) => h("option", { value: c.key, selected: c.key === value }, c.key)));
    this.metric = pick(metricCols, /^metrics\.val_loss\.min$/, /^metrics\.val.*loss.*\.min$/, /loss.*\.min$/);
    this.x = paramCols[0] ? paramCols[0].key : this.metric;
    this.y = this.metric;
    this.color = paramCols[1] ? paramCols[1].key : this.metric;
    this.parBox = h("div", { class: "param-plot", dataset: { testid: "parcoords" } });
    this.scatterBox = h("div", { class: "param-plot", dataset: { testid: "scatter" } });
    this.metricSel = h("select", { class: "input input-sm", dataset: { testid: "parcoords-metric" }, on: { change: (e) => { this.metric = e.target.value; this.drawParcoords(); } } },
      metricCols.map((c) => h("option", { value: c.key, selected: c.key === this.metric }, c.key)));
    this.el = h("div", { class: "param-plots", dataset: { testid: "param-plots" } },
      this.cols.length ? [
        h("div", { class: "chart-controls" }, h("label", { class: "ctl" }, "Parallel coordinates: parameters → ", this.metricSel)),
        this.parBox,
        h("div", { class: "chart-controls" },
          h("label", { class: "ctl" }, "X ", select("scatter-x", this.x, (e) => { this.x = e.target.value; this.drawScatter(); })),
          h("label", { class: "ctl" }, "Y ", select("scatter-y", this.y, (e) => { this.y = e.target.value; this.drawScatter(); })),
          h("label", { class: "ctl" }, "Colour ", select("scatter-color", this.color, (e) => { this.color = e.target.value; this.drawScatter(); }))),
        this.scatterBox,
      ] : h("p", { class: "muted small" }, "No parameters or metrics to plot."));
  }

  col(key) { return this.cols.find((c) => c.key === key) || null; }

  async draw(Plotly) {
    this.Plotly = Plotly;
    if (!this.cols.length) return;
    await Promise.all([this.drawParcoords(), this.drawScatter()]);
  }

  async drawParcoords() {
    const metric = this.col(this.metric);
    const dims = this.cols.filter((c) => !c.key.startsWith("metrics.") && c.key !== this.metric);
    if (metric) dims.push(metric);
    if (!dims.length) { replace(this.parBox, h("p", { class: "muted small" }, "No parameters to plot.")); return; }
    drawParcoords(this.parBox, dims.map((c) => ({ ...c, values: columnValues(this.rows, c) })), this.rows,
      { open: this.open, compare: (ids) => { location.hash = `#/compare?ids=${ids.join(",")}`; } });
  }

  async drawScatter() {
    const cx = this.col(this.x), cy = this.col(this.y), cc = this.col(this.color);
    if (!cx || !cy) return;
    const xs = columnValues(this.rows, cx), ys = columnValues(this.rows, cy), cs = cc ? columnValues(this.rows, cc) : [];
    const keep = this.rows.map((_, i) => xs[i] !== null && ys[i] !== null);
    const sel = (arr) => arr.filter((_, i) => keep[i]);
    const rows = sel(this.rows);
    const text = rows.map((r) => plotlyText(`#${r.id} ${r.name}`));
    const colorVals = cc ? sel(cs) : [];
    const trace = {
      type: "scatter", mode: "markers", x: sel(xs), y: sel(ys), text, customdata: rows.map((r) => r.id),
      hovertemplate: `%{text}<br>${plotlyText(this.x)}: %{x}<br>${plotlyText(this.y)}: %{y}${cc ? `<br>${plotlyText(this.color)}: %{marker.color}` : ""}<extra></extra>`,
      marker: { size: 9, opacity: 0.85, line: { width: 0.5, color: "#fff" },
        color: cc ? colorVals.map((v) => (v === null ? NaN : v)) : "#2563eb", colorscale: "Viridis", showscale: !!cc,
        colorbar: cc ? { title: { text: plotlyText(this.color) }, ...axisFor(cc) } : undefined },
    };
    await this.Plotly.react(this.scatterBox, [trace], {
      ...BASE, height: 360, margin: { l: 60, r: 20, t: 10, b: 48 }, hovermode: "closest",
      xaxis: { title: { text: plotlyText(this.x) }, gridcolor: "#eef0f3", zeroline: false, automargin: true, ...axisFor(cx) },
      yaxis: { title: { text: plotlyText(this.y) }, gridcolor: "#eef0f3", zeroline: false, automargin: true, ...axisFor(cy) },
    }, { displaylogo: false, responsive: true });
    if (!this.scatterBound) {
      // A click opens the run under the pointer: the hovered point (plotly's own plotly_click
      // is skipped now and then, when it takes the click for part of a double-click or drag).
      this.scatterBound = true;
      let hovered = null, down = null;
      this.scatterBox.on("plotly_hover", (ev) => { const p = ev && ev.points && ev.points[0]; hovered = p && p.customdata ? p.customdata : null; });
      this.scatterBox.on("plotly_unhover", () => { hovered = null; });
      this.scatterBox.addEventListener("mousedown", (e) => { down = [e.clientX, e.clientY]; });
      this.scatterBox.addEventListener("click", (e) => {
        const still = down && Math.abs(e.clientX - down[0]) < 5 && Math.abs(e.clientY - down[1]) < 5; // not the end of a zoom drag
        if (hovered && still) this.open(hovered);
      });
    }
    this.scatterBox.dataset.points = String(rows.length);
  }

  destroy() {
    if (!this.Plotly) return;
    this.Plotly.purge(this.parBox);
    this.Plotly.purge(this.scatterBox);
  }
}

/** The most columns one plot request asks for (the API takes at most 100). */
const MAX_PLOT_COLUMNS = 100;

/** Query fields to plot a query's results by: every param and hyperparameter, each metric's last and min. */
export function plotFields(keys) {
  const k = keys || {};
  return [...(k.params || []).map((p) => `params.${p}`), ...(k.hparams || []).map((p) => `hparams.${p}`),
    ...(k.metrics || []).filter((m) => !m.startsWith("system/")).flatMap((m) => [`metrics.${m}.last`, `metrics.${m}.min`])].slice(0, MAX_PLOT_COLUMNS);
}

/** Rows from GET /runs?columns=... items (their `values`), for up to 1,000 runs of a query. */
export function rowsFromValues(items) {
  return items.map((r) => {
    const values = {};
    for (const [k, v] of Object.entries(r.values || {})) values[k] = v === null || v === undefined ? null : typeof v === "number" ? v : /^-?(NaN|Infinity)$/.test(v) ? null : v;
    return { id: r.id, name: r.name || `run ${r.id}`, values };
  });
}
