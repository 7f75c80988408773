// Metric charts: one plotly chart per panel (by default one per metric key; a saved layout
// adds panels of several metrics, e.g. train_loss and val_loss on one step axis, and fixes the
// order and which charts show), one trace per run and metric. Metrics with at most one point
// per run (test_* results) are a table of values, not chart tiles.
//
// The order of the charts depends only on the keys and the layout, never on how many points a
// key has so far: it used to rank "one point so far" keys last, and re-sort only when a new key
// arrived, so a live page kept whatever order the first points gave while a reload sorted again.
//
// History is read once per run, downsampled by the server to `maxPoints` per key (it keeps
// each bucket's min and max, so spikes survive). Live points from SSE are appended.
// Zooming (plotly_relayout) refetches just that step range at full detail and splices it
// between the downsampled points outside the range; double-click (autorange) goes back.

import { h, replace } from "./dom.js";
import { runs as runsApi, toNumber } from "./api.js";
import { fmtCount, fmtNumber, plotlyText } from "./format.js";

export const PALETTE = ["#2563eb", "#e8590c", "#16a34a", "#c026d3", "#dc2626", "#0891b2", "#ca8a04", "#7c3aed", "#db2777", "#4b5563"];

export const DASHES = ["solid", "dash", "dot", "dashdot", "longdash"];

/** The panel id of a metric's own chart (a layout names it to place or hide it). */
export const defaultPanelId = (key) => `m:${key}`;

/**
 * A log axis' tick spacing (in decades) such that labels at least `gap` px apart fit in `px`:
 * plotly's automatic log ticks (1, 2, 5 per decade) collide when a range spans many decades.
 */
export function logDtick(lo, hi, px, gap = 24) {
  if (!(lo > 0) || !(hi > 0)) return 1;
  const decades = Math.max(1, Math.log10(hi) - Math.log10(lo));
  const fit = Math.max(1, Math.floor(px / gap));
  return Math.max(1, Math.ceil(decades / fit));
}

export const X_MODES = { step: "Step", epoch: "Epoch", relative: "Relative time", wall: "Wall time" };

function waitForPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const poll = () => {
      if (window.Plotly) resolve(window.Plotly);
      else if (Date.now() - t0 > 20000) reject(new Error("plotly.js did not load (/static/plotly-basic.<hash>.min.js)"));
      else setTimeout(poll, 20);
    };
    poll();
  });
}

const TZ_OFFSET_MS = new Date().getTimezoneOffset() * 60000;

function plotlyDateMs(v) {
  if (typeof v === "number") return v;
  return new Date(String(v).replace(" ", "T") + (/[zZ]$/.test(String(v)) ? "" : "Z")).getTime();
}

function emptySeries() {
  return { steps: [], values: [], epochs: [], wall: [], total: 0, downsampled: false, detail: null };
}

function fromApi(s) {
  const n = s.steps.length;
  const values = new Array(n), wall = new Array(n), epochs = new Array(n);
  for (let i = 0; i < n; i++) {
    values[i] = toNumber(s.values[i]);
    wall[i] = s.wall_times ? toNumber(s.wall_times[i]) : NaN;
    epochs[i] = s.epochs ? s.epochs[i] : null;
  }
  return { steps: s.steps.slice(), values, epochs, wall, total: s.total_points ?? n, downsampled: !!s.downsampled };
}

/** Exponential moving average with TensorBoard's debiasing; non-finite values pass through. */
export function smooth(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = 0, count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) { out[i] = v; continue; }
    last = last * weight + (1 - weight) * v;
    count++;
    out[i] = last / (1 - Math.pow(weight, count));
  }
  return out;
}

/**
 * Min/max decimation in place, like the server's: the first and last points and each
 * bucket's lowest and highest value, in step order. Keeps a series that grows live (SSE)
 * bounded, so redraws stay cheap however much a run logs.
 */
export function decimate(s, buckets) {
  const n = s.steps.length;
  if (n <= buckets * 2) return;
  const keep = [0];
  const size = (n - 2) / buckets;
  for (let b = 0; b < buckets; b++) {
    const lo = 1 + Math.floor(b * size), hi = Math.min(n - 1, 1 + Math.floor((b + 1) * size));
    let iMin = -1, iMax = -1;
    for (let i = lo; i < hi; i++) {
      const v = s.values[i];
      if (!Number.isFinite(v)) { if (iMin < 0) iMin = i; continue; }
      if (iMin < 0 || !Number.isFinite(s.values[iMin]) || v < s.values[iMin]) iMin = i;
      if (iMax < 0 || v > s.values[iMax]) iMax = i;
    }
    if (iMin >= 0 && iMax >= 0 && iMin !== iMax) keep.push(Math.min(iMin, iMax), Math.max(iMin, iMax));
    else if (iMin >= 0) keep.push(iMin);
  }
  keep.push(n - 1);
  for (const name of ["steps", "values", "epochs", "wall"]) s[name] = keep.map((i) => s[name][i]);
  s.downsampled = true;
}

function lowerBound(arr, x) {
  let lo = 0, hi = arr.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (arr[mid] < x) lo = mid + 1; else hi = mid; }
  return lo;
}

export class MetricCharts {
  /**
   * @param {HTMLElement} container  where chart cards go
   * @param {{runs: {id:number, name:string}[], maxPoints?: number, onDrawn?: Function, keyFilter?: string}} opts
   */
  constructor(container, opts) {
    this.container = container;
    this.runs = opts.runs.map((r, i) => ({ ...r, color: PALETTE[i % PALETTE.length] }));
    this.maxPoints = opts.maxPoints || 2000;
    this.onDrawn = opts.onDrawn;
    this.xMode = "step";
    this.logY = false;
    this.smoothing = 0;
    this.filter = "";
    this.keys = [];
    this.data = new Map(); // key -> Map(runId -> series)
    this.cards = new Map(); // panel id -> {card, plot, meta, panel}
    this.layoutPanels = []; // from the saved layout: [{id, title, metrics, log_y}] in order
    this.hidden = new Set(); // metric keys whose own chart is hidden
    this.panels = []; // the panels in effect (layout's, then one per remaining key)
    this.scalarKeys = new Set();
    this.scalarBox = null;
    this.dirty = new Set();
    this.drawTimer = null;
    this.destroyed = false;
    this.seq = 0;
    this.pending = []; // live points seen before/while history loads (see load)
    this.prefetched = null; // run id -> a history read already on its way (used by the next load())
  }

  series(key, runId) {
    if (!this.data.has(key)) this.data.set(key, new Map());
    const m = this.data.get(key);
    if (!m.has(runId)) m.set(runId, emptySeries());
    return m.get(runId);
  }

  /** Read every key's history for every run; resolves once everything is drawn. */
  async load() {
    const t0 = performance.now();
    const seq = ++this.seq;
    // Live points that arrive while history loads are kept and replayed on top of it, so a
    // point written between the history read and its arrival here is never lost.
    this.pending = this.pending || [];
    // The history request goes out while plotly.js may still be loading.
    // A history read the page started early (an ended run's, see run.js) is used once, if it succeeded.
    const early = this.prefetched;
    this.prefetched = null;
    const read = (r) => (early && early.get(r.id) ? early.get(r.id) : Promise.resolve(null))
      .then((res) => res || runsApi.metrics(r.id, { max_points: this.maxPoints }));
    const fetching = Promise.all(this.runs.map((r) => read(r).then((res) => [r, res])));
    this.Plotly = await waitForPlotly();
    const plotlyReady = performance.now();
    const results = await fetching;
    // The saved layout (order, panels of several metrics) before the first draw: no reshuffle.
    if (this.layoutReady) await this.layoutReady.catch(() => {});
    const fetched = performance.now();
    if (this.destroyed || seq !== this.seq) return;
    this.data.clear();
    for (const [run, res] of results) {
      for (const [key, s] of Object.entries(res.series || {})) {
        const series = fromApi(s);
        this.series(key, run.id);
        this.data.get(key).set(run.id, { ...series, detail: null });
      }
    }
    const pending = this.pending;
    this.pending = null;
    for (const [runId, points] of pending) this.addPoints(runId, points, true);
    this.dirty.clear();
    this.syncCards();
    await this.drawAll();
    const done = performance.now();
    const ms = done - t0;
    let total = 0, drawn = 0;
    for (const m of this.data.values()) for (const s of m.values()) { total += s.total; drawn += s.steps.length; }
    const timing = { ms: Math.round(ms), fetch_ms: Math.round(fetched - t0), plotly_wait_ms: Math.round(plotlyReady - t0),
      draw_ms: Math.round(done - Math.max(fetched, plotlyReady)), since_page_load_ms: Math.round(done), points_total: total, points_drawn: drawn, keys: this.keys.length };
    window.__runyard = window.__runyard || {};
    window.__runyard.lastDraw = timing;
    this.container.dataset.drawMs = String(timing.ms);
    this.container.dataset.loaded = "1";
    if (this.onDrawn) this.onDrawn(timing);
    return timing;
  }

  /** A key with at most one point per run (and one somewhere): a value, not a curve. */
  isScalarKey(key) {
    const m = this.data.get(key);
    if (!m) return false;
    let any = false;
    for (const s of m.values()) { if (s.steps.length > 1) return false; if (s.steps.length) any = true; }
    return any;
  }

  /** The saved layout: {panels: [{id, title, metrics, log_y}], hidden: [metric key]}. */
  setLayout(layout) {
    this.layoutPanels = ((layout && layout.panels) || []).filter((p) => p && p.id && Array.isArray(p.metrics))
      .map((p) => ({ id: String(p.id), title: String(p.title || ""), metrics: p.metrics.map(String), log_y: !!p.log_y }));
    this.hidden = new Set(((layout && layout.hidden) || []).map(String));
    if (this.Plotly) { this.syncCards(); this.scheduleDraw(); }
  }

  /** The layout as it stands (every chart in its order), to save. */
  layoutState() {
    return { panels: this.panels.map((p) => ({ id: p.id, title: p.title, metrics: p.metrics.slice(), log_y: !!p.log_y })), hidden: [...this.hidden] };
  }

  /** Layout panels first, in their order; then one chart per remaining key: losses first, then by name. */
  panelList(keys) {
    const out = [];
    const placed = new Set();
    for (const p of this.layoutPanels) {
      const own = p.id.startsWith("m:") && p.metrics.length === 1 && p.id === defaultPanelId(p.metrics[0]);
      if (own && !this.data.has(p.metrics[0])) continue;
      out.push({ ...p, own, title: p.title || p.metrics.join(", ") });
      placed.add(p.id);
    }
    for (const k of keys) {
      const id = defaultPanelId(k);
      if (!placed.has(id)) out.push({ id, title: k, metrics: [k], log_y: false, own: true });
    }
    return out;
  }

  /** Create/remove chart cards so there is one per shown panel (ordered, filtered). */
  syncCards() {
    const rank = (k) => (/loss/i.test(k) ? 0 : 1);
    const keys = [...this.data.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    this.keys = keys;
    this.scalarKeys = new Set(keys.filter((k) => this.isScalarKey(k)));
    this.panels = this.panelList(keys);
    const f = this.filter.toLowerCase();
    const match = (text) => !f || text.toLowerCase().includes(f);
    const shown = this.panels.filter((p) => (p.own ? !this.hidden.has(p.metrics[0]) && !this.scalarKeys.has(p.metrics[0]) : true)
      && (match(p.title) || p.metrics.some(match)));
    const scalars = keys.filter((k) => this.scalarKeys.has(k) && !this.hidden.has(k) && match(k));
    for (const p of shown) {
      const c = this.cards.get(p.id);
      if (!c) this.cards.set(p.id, this.makeCard(p));
      else if (JSON.stringify([c.panel.title, c.panel.metrics, c.panel.log_y]) !== JSON.stringify([p.title, p.metrics, p.log_y])) {
        c.panel = p; c.titleEl.textContent = p.title; c.titleEl.title = p.title;
      }
    }
    const ids = new Set(this.panels.map((p) => p.id));
    for (const [id, c] of this.cards) {
      if (!ids.has(id)) { if (c.resizer) c.resizer.disconnect(); if (this.Plotly) this.Plotly.purge(c.plot); c.card.remove(); this.cards.delete(id); }
    }
    const nodes = shown.map((p) => this.cards.get(p.id).card);
    if (scalars.length) nodes.unshift(this.scalarTable(scalars));
    else if (this.scalarBox) { this.scalarBox.remove(); this.scalarBox = null; }
    if (!nodes.length) {
      replace(this.container, h("div", { class: "empty" }, keys.length ? "No metric matches the filter." : "No metrics logged yet. Charts appear as soon as the first point arrives."));
    } else {
      // Keep existing chart nodes in place (re-appending moves them, which is cheap).
      const empty = this.container.querySelector(":scope > .empty");
      if (empty) empty.remove();
      for (const n of nodes) this.container.append(n);
      const keep = new Set(nodes);
      for (const c of this.cards.values()) if (!keep.has(c.card)) c.card.remove();
    }
  }

  /** Single-value metrics (one point per run: test results) as one table: a row per metric, a column per run. */
  scalarTable(keys) {
    const multi = this.runs.length > 1;
    const rows = keys.map((k) => h("tr", { dataset: { key: k } }, h("th", { class: "mono", title: k }, k),
      this.runs.map((r) => {
        const s = this.data.get(k)?.get(r.id);
        return h("td", { class: "num mono", title: s && s.steps.length ? `step ${s.steps[0]}` : null }, s && s.steps.length ? fmtNumber(s.values[0]) : "—");
      })));
    const table = h("table", { class: "table scalar-table" },
      h("thead", null, h("tr", null, h("th", null, "Metric"), this.runs.map((r) => h("th", { class: "num" },
        multi ? h("span", { class: "swatch", style: { background: r.color } }) : null, multi ? `#${r.id} ${r.name || ""}` : "Value")))),
      h("tbody", null, rows));
    const box = h("section", { class: "chart-card scalar-values", style: { gridColumn: "1 / -1" }, dataset: { testid: "single-values" } },
      h("header", { class: "chart-head" }, h("span", { class: "chart-title" }, "Single values"), h("span", { class: "chart-meta" }, `${keys.length} metric${keys.length === 1 ? "" : "s"} with one value per run`)),
      h("div", { class: "table-wrap" }, table));
    if (this.scalarBox) this.scalarBox.replaceWith(box);
    this.scalarBox = box;
    return box;
  }

  makeCard(panel) {
    const plot = h("div", { class: "chart-plot" });
    const meta = h("span", { class: "chart-meta" });
    const titleEl = h("span", { class: "chart-title", title: panel.title }, panel.title);
    const card = h("section", { class: "chart-card", dataset: { key: panel.own ? panel.metrics[0] : panel.id, panel: panel.id } },
      h("header", { class: "chart-head" }, titleEl, meta), plot);
    const c = { card, plot, meta, titleEl, panel, bound: false };
    // plotly's `responsive` follows window resizes only; cards also change size when the
    // grid reflows or a scrollbar appears, so watch the element itself.
    if (window.ResizeObserver) {
      let pendingResize = null;
      c.resizer = new ResizeObserver(() => {
        if (pendingResize || !plot.data || !this.Plotly) return;
        pendingResize = setTimeout(() => {
          pendingResize = null;
          // Hidden plots (filtered out) cannot be resized; they redraw when shown.
          if (plot.isConnected && plot.data && plot.offsetParent !== null) Promise.resolve(this.Plotly.Plots.resize(plot)).catch(() => {});
        }, 50);
      });
      c.resizer.observe(plot);
    }
    return c;
  }

  xOf(s, i, origin) {
    switch (this.xMode) {
      case "epoch": return s.epochs[i];
      // plotly draws date axes in UTC; shift so the axis reads in the browser's local time.
      case "wall": return Number.isFinite(s.wall[i]) ? s.wall[i] * 1000 - TZ_OFFSET_MS : null;
      case "relative": return Number.isFinite(s.wall[i]) ? s.wall[i] - origin : null;
      default: return s.steps[i];
    }
  }

  /** The points to draw for a series: base, with the zoomed detail spliced in. */
  view(s) {
    if (!s.detail) return s;
    const d = s.detail;
    const lo = lowerBound(s.steps, d.min);
    let hi = lowerBound(s.steps, d.max + 1);
    const pick = (name) => s[name].slice(0, lo).concat(d[name], s[name].slice(hi));
    return { steps: pick("steps"), values: pick("values"), epochs: pick("epochs"), wall: pick("wall"), total: s.total, downsampled: s.downsampled };
  }

  traces(panel) {
    const out = [];
    const multiRun = this.runs.length > 1;
    const multiKey = panel.metrics.length > 1;
    panel.metrics.forEach((key, ki) => {
      const byRun = this.data.get(key) || new Map();
      for (const run of this.runs) {
        const s0 = byRun.get(run.id);
        if (!s0 || !s0.steps.length) continue;
        const s = this.view(s0);
        const origin = s.wall.find((w) => Number.isFinite(w)) ?? 0;
        const n = s.steps.length;
        const x = new Array(n), y = new Array(n);
        for (let i = 0; i < n; i++) {
          x[i] = this.xOf(s, i, origin);
          const v = s.values[i];
          y[i] = Number.isFinite(v) ? v : null;
        }
        // One run: a colour per metric. Several: a colour per run, a dash per metric.
        const color = multiRun ? run.color : PALETTE[ki % PALETTE.length];
        const dash = multiRun ? DASHES[ki % DASHES.length] : "solid";
        // Long run names would run off the legend (plotly does not wrap it): cut them short, then
        // escape (plotly renders <a>, <b>, ... in trace names, and hover repeats the name).
        const runLabel = `#${run.id} ${run.name || ""}`.trim();
        const full = multiRun && multiKey ? `${runLabel} · ${key}` : multiRun ? runLabel : key;
        const name = plotlyText(full.length > 48 ? full.slice(0, 47) + "…" : full);
        const hover = `step %{customdata}<br>${multiRun || multiKey ? "%{fullData.name}: " : ""}%{y:.5g}<extra></extra>`;
        const group = `${run.id}:${key}`;
        if (this.smoothing > 0) {
          out.push({ x, y, customdata: s.steps, type: "scatter", mode: "lines", name, legendgroup: group, showlegend: false,
            line: { color, width: 1, dash }, opacity: 0.25, hoverinfo: "skip" });
          out.push({ x, y: smooth(s.values, this.smoothing).map((v) => (Number.isFinite(v) ? v : null)), customdata: s.steps,
            type: "scatter", mode: "lines", name, legendgroup: group, line: { color, width: 1.6, dash }, hovertemplate: hover });
        } else {
          out.push({ x, y, customdata: s.steps, type: "scatter", mode: n < 60 ? "lines+markers" : "lines", marker: { size: 4 }, name,
            legendgroup: group, line: { color, width: 1.5, dash }, hovertemplate: hover });
        }
      }
    });
    return out;
  }

  layout(panel, traces) {
    const xTitle = { step: "step", epoch: "epoch", relative: "seconds since first point", wall: "" }[this.xMode];
    const logY = this.logY || !!(panel && panel.log_y);
    const height = 240;
    const margin = { l: 52, r: 12, t: 6, b: 34 };
    const yaxis = { type: logY ? "log" : "linear", uirevision: `${this.xMode}-${logY}`, gridcolor: "#eef0f3", zeroline: false, linecolor: "#d0d5dd", exponentformat: "power", automargin: true };
    if (logY) {
      // One label per n decades, n chosen so that labels cannot collide (plotly's own log
      // ticks put 2 and 5 between powers of ten and overlap over many decades).
      let lo = Infinity, hi = -Infinity;
      for (const t of traces || []) for (const v of t.y) if (v > 0) { if (v < lo) lo = v; if (v > hi) hi = v; }
      Object.assign(yaxis, { tickmode: "linear", tick0: 0, dtick: logDtick(lo, hi, height - margin.t - margin.b - 40), minor: { showgrid: false } });
    }
    const legend = this.runs.length > 1 || (panel && panel.metrics.length > 1);
    return {
      uirevision: `${this.xMode}`,
      height,
      margin,
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#3b4252" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      hovermode: "x unified",
      hoverlabel: { bgcolor: "#fff", bordercolor: "#d0d5dd", font: { size: 11 } },
      showlegend: legend,
      legend: { orientation: "h", y: -0.22, x: 0, font: { size: 10 } },
      xaxis: { type: this.xMode === "wall" ? "date" : "linear", title: { text: xTitle, standoff: 4, font: { size: 10 } }, gridcolor: "#eef0f3", zeroline: false, linecolor: "#d0d5dd", automargin: true },
      yaxis,
    };
  }

  /** Redraw the panels showing `key` (every panel without one), batched. */
  scheduleDraw(key) {
    if (key) this.dirty.add(key); else for (const k of this.keys) this.dirty.add(k);
    if (this.drawTimer) return;
    // Live points are batched into one redraw per 100 ms: well inside the 1 s budget.
    this.drawTimer = setTimeout(() => { this.drawTimer = null; this.flush(); }, 100);
  }

  async flush() {
    const keys = new Set(this.dirty);
    this.dirty.clear();
    if (this.scalarBox && [...keys].some((k) => this.scalarKeys.has(k))) this.syncCards();
    const ids = this.panels.filter((p) => p.metrics.some((k) => keys.has(k))).map((p) => p.id);
    await Promise.all(ids.map((id) => this.drawPanel(id)));
  }

  async drawAll() {
    await Promise.all(this.panels.map((p) => this.drawPanel(p.id)));
  }

  /** Kept for callers that name a metric: redraws the panels that show it. */
  async drawKey(key) {
    await Promise.all(this.panels.filter((p) => p.metrics.includes(key)).map((p) => this.drawPanel(p.id)));
  }

  async drawPanel(id) {
    const c = this.cards.get(id);
    if (!c || this.destroyed || !c.card.isConnected || !this.Plotly) return;
    const panel = c.panel;
    const t0 = performance.now();
    const traces = this.traces(panel);
    await this.Plotly.react(c.plot, traces, this.layout(panel, traces), { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d", "toggleSpikelines"] });
    if (!c.bound) {
      c.bound = true;
      c.plot.on("plotly_relayout", (ev) => this.onRelayout(id, ev));
    }
    let total = 0, drawn = 0, zoomed = false, down = false;
    const lastVals = [];
    for (const key of panel.metrics) {
      for (const s of (this.data.get(key) || new Map()).values()) {
        total += s.total; drawn += this.view(s).steps.length;
        if (s.detail) zoomed = true;
        if (s.downsampled && !s.detail) down = true;
      }
    }
    c.card.dataset.points = String(drawn);
    c.card.dataset.total = String(total);
    c.card.dataset.zoomed = zoomed ? "1" : "0";
    c.card.dataset.drawMs = String(Math.round(performance.now() - t0));
    if (panel.metrics.length === 1) {
      for (const run of this.runs) {
        const s = this.data.get(panel.metrics[0])?.get(run.id);
        if (s && s.values.length) lastVals.push(fmtNumber(s.values[s.values.length - 1]));
      }
    }
    let noX = false;
    if (this.xMode === "epoch" || this.xMode === "wall" || this.xMode === "relative") {
      noX = panel.metrics.flatMap((k) => [...(this.data.get(k) || new Map()).values()]).every((s) => s.steps.length === 0 ||
        (this.xMode === "epoch" ? s.epochs.every((e) => e === null || e === undefined) : s.wall.every((w) => !Number.isFinite(w))));
    }
    c.card.classList.toggle("no-x", noX);
    c.meta.textContent = `${noX ? `no ${this.xMode === "epoch" ? "epoch" : "wall time"} logged · ` : ""}${this.runs.length === 1 && lastVals.length ? "last " + lastVals[0] + " · " : ""}${fmtCount(total)} pts${down ? ` · ${fmtCount(drawn)} shown` : ""}${zoomed ? " · zoomed, full detail" : ""}`;
  }

  /** SSE metric points: [{key, step, value, epoch, wall_time}] for one run. */
  addPoints(runId, points, replay = false) {
    if (this.pending && !replay) this.pending.push([runId, points]);
    if (!replay && points.length) {
      // Diagnostics: how long after it was logged (its wall_time) a batch of points got here.
      const wt = toNumber(points[0].wall_time); // the oldest point of the batch: the worst case
      if (Number.isFinite(wt)) {
        const lags = ((window.__runyard = window.__runyard || {}).pointLags = window.__runyard.pointLags || []);
        lags.push(Date.now() / 1000 - wt);
        if (lags.length > 500) lags.shift();
      }
    }
    const newKeys = [];
    for (const p of points) {
      if (!this.data.has(p.key)) newKeys.push(p.key);
      const s = this.series(p.key, runId);
      const step = Number(p.step);
      const last = s.steps.length ? s.steps[s.steps.length - 1] : -Infinity;
      if (step <= last) {
        // Already have it (history and stream overlap after a reconnect) unless it is a
        // rewrite of an existing step; keep the newest value for the same step.
        if (step === last) s.values[s.values.length - 1] = toNumber(p.value);
        continue;
      }
      s.steps.push(step);
      s.values.push(toNumber(p.value));
      s.epochs.push(p.epoch ?? null);
      s.wall.push(p.wall_time != null ? toNumber(p.wall_time) : Date.now() / 1000);
      s.total += 1;
      this.dirty.add(p.key);
    }
    for (const key of this.dirty) {
      const s = this.data.get(key)?.get(runId);
      if (s && s.steps.length > this.maxPoints * 4) decimate(s, this.maxPoints / 2);
    }
    if (replay) return;
    // A new key, or a key that had one point (a row of the values table) and now has a curve.
    if (newKeys.length || [...this.dirty].some((k) => this.scalarKeys.has(k) && !this.isScalarKey(k))) this.syncCards();
    if (this.dirty.size) this.scheduleDraw();
  }

  async onRelayout(id, ev) {
    const c = this.cards.get(id);
    if (!ev || !c) return;
    if (ev["xaxis.autorange"]) {
      let changed = false;
      for (const key of c.panel.metrics) for (const s of (this.data.get(key) || new Map()).values()) if (s.detail) { s.detail = null; changed = true; }
      if (changed) this.drawPanel(id);
      return;
    }
    let x0 = ev["xaxis.range[0]"], x1 = ev["xaxis.range[1]"];
    if (ev["xaxis.range"]) [x0, x1] = ev["xaxis.range"];
    if (x0 === undefined || x1 === undefined) return;
    if (this.xMode === "wall") { x0 = plotlyDateMs(x0); x1 = plotlyDateMs(x1); }
    await this.zoomTo(id, Number(x0), Number(x1));
  }

  /** Map an x range (in the current x mode) to steps and fetch that range of the panel's metrics at full detail. */
  async zoomTo(id, x0, x1) {
    const c = this.cards.get(id);
    if (!c) return;
    const jobs = [];
    for (const key of c.panel.metrics) {
      const byRun = this.data.get(key);
      if (!byRun) continue;
      for (const run of this.runs) {
        const s = byRun.get(run.id);
        if (!s || !s.steps.length || (!s.downsampled && !s.detail)) continue;
        let minStep, maxStep;
        if (this.xMode === "step") {
          minStep = Math.floor(x0); maxStep = Math.ceil(x1);
        } else {
          const origin = s.wall.find((w) => Number.isFinite(w)) ?? 0;
          let first = -1, last = -1;
          for (let i = 0; i < s.steps.length; i++) {
            const x = this.xOf(s, i, origin);
            if (x === null || x === undefined) continue;
            if (x >= x0 && first < 0) first = i;
            if (x <= x1) last = i;
          }
          if (first < 0 || last < 0) continue;
          minStep = s.steps[Math.max(0, first - 1)];
          maxStep = s.steps[Math.min(s.steps.length - 1, last + 1)];
        }
        const seq = (s.zoomSeq = (s.zoomSeq || 0) + 1);
        jobs.push(runsApi.metrics(run.id, { keys: key, min_step: minStep, max_step: maxStep, max_points: this.maxPoints }).then((res) => {
          const got = res.series && res.series[key];
          if (!got || seq !== s.zoomSeq) return;
          const d = fromApi(got);
          s.detail = { min: minStep, max: maxStep, steps: d.steps, values: d.values, epochs: d.epochs, wall: d.wall, downsampled: d.downsampled };
        }));
      }
    }
    if (!jobs.length) return;
    await Promise.all(jobs);
    await this.drawPanel(id);
    c.card.dataset.zoomRange = `${Math.round(x0)}-${Math.round(x1)}`;
  }

  setXMode(mode) { this.xMode = mode; for (const m of this.data.values()) for (const s of m.values()) s.detail = null; this.scheduleDraw(); }
  setLog(on) { this.logY = on; this.scheduleDraw(); }
  setSmoothing(w) { this.smoothing = w; this.scheduleDraw(); }
  setFilter(text) { this.filter = text; this.syncCards(); this.scheduleDraw(); }

  /** Controls bar (x axis, log scale, smoothing, filter) bound to this chart set. */
  controls() {
    const xSel = h("select", { class: "input input-sm", dataset: { testid: "x-mode" }, on: { change: (e) => this.setXMode(e.target.value) } },
      Object.entries(X_MODES).map(([v, label]) => h("option", { value: v }, label)));
    const log = h("input", { type: "checkbox", dataset: { testid: "log-scale" }, on: { change: (e) => this.setLog(e.target.checked) } });
    const smoothOut = h("output", { class: "smooth-val" }, "0");
    const slider = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", class: "slider", dataset: { testid: "smoothing" },
      on: { input: (e) => { const w = Number(e.target.value); smoothOut.textContent = w.toFixed(2); this.setSmoothing(w); } } });
    const filter = h("input", { type: "search", class: "input input-sm", placeholder: "Filter metrics", dataset: { testid: "metric-filter" },
      on: { input: (e) => this.setFilter(e.target.value) } });
    return h("div", { class: "chart-controls" },
      h("label", { class: "ctl" }, "X axis ", xSel),
      h("label", { class: "ctl" }, log, " Log scale"),
      h("label", { class: "ctl" }, "Smoothing ", slider, smoothOut),
      filter);
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.drawTimer);
    for (const c of this.cards.values()) {
      if (c.resizer) c.resizer.disconnect();
      if (this.Plotly) this.Plotly.purge(c.plot);
    }
  }
}
