// Two chart sets over one history read: training metrics, and the `system/*` series
// (CPU, RAM, GPU, the process's RSS, sampled by trainer_core every few seconds) in a section
// of their own, drawn against time since the first sample.
//
// TrainingCharts reads the history of every key once (as MetricCharts does) and hands the
// system series to its SystemCharts, so the page makes one request, not two; live points are
// split the same way. While the history loads every point goes through MetricCharts' replay
// (nothing is lost in between); the system series move over when the cards are made.

import { h } from "./dom.js";
import { MetricCharts } from "./charts.js";

export const SYSTEM_PREFIX = "system/";
export const isSystemKey = (key) => typeof key === "string" && key.startsWith(SYSTEM_PREFIX);

const SYSTEM_X_MODES = [["relative", "Time since first sample"], ["wall", "Wall time"], ["step", "Sample number"]];

export class SystemCharts extends MetricCharts {
  /** opts as MetricCharts', plus `onKeys(keys)`: called when the set of system keys changes. */
  constructor(container, opts) {
    super(container, opts);
    this.xMode = "relative";
    this.onKeys = opts.onKeys || null;
    this.pending = null; // never loads by itself: TrainingCharts gives it the history
    this.knownKeys = "";
  }

  /** A system series is a curve from its first sample on (the values table is for test results). */
  isScalarKey() {
    return false;
  }

  /** History (or live series seen while it loaded) from the training charts: key -> Map(run -> series). */
  adopt(byKey, Plotly) {
    if (Plotly) this.Plotly = Plotly;
    for (const [key, byRun] of byKey) this.data.set(key, byRun);
    this.syncCards();
    this.scheduleDraw();
  }

  /** The training charts finished a history read: draw everything, mark the container loaded. */
  async finishLoad(Plotly) {
    if (this.destroyed) return;
    if (Plotly) this.Plotly = Plotly;
    this.syncCards();
    await this.drawAll();
    this.container.dataset.loaded = "1";
  }

  async load() { /* see TrainingCharts.load */ }

  syncCards() {
    super.syncCards();
    const empty = this.container.querySelector(":scope > .empty");
    if (empty && !this.keys.length) {
      empty.textContent = "No system metrics recorded. A run's process samples CPU, RAM and GPU every few seconds once training starts (trainer_core's RunyardLogger).";
    }
    const now = this.keys.join("\n");
    if (now !== this.knownKeys) {
      this.knownKeys = now;
      if (this.onKeys) this.onKeys(this.keys);
    }
  }

  /** Controls bar of its own: the x axis (time since first sample by default). */
  controls() {
    const xSel = h("select", { class: "input input-sm", dataset: { testid: "system-x-mode" }, on: { change: (e) => this.setXMode(e.target.value) } },
      SYSTEM_X_MODES.map(([v, label]) => h("option", { value: v, selected: v === this.xMode }, label)));
    return h("div", { class: "chart-controls" }, h("label", { class: "ctl" }, "X axis ", xSel));
  }
}

export class TrainingCharts extends MetricCharts {
  /** MetricCharts without the system/* keys, which go to `system` (a SystemCharts). */
  constructor(container, opts, system) {
    super(container, opts);
    this.system = system;
  }

  syncCards() {
    const moved = new Map();
    for (const [key, byRun] of this.data) if (isSystemKey(key)) moved.set(key, byRun);
    for (const key of moved.keys()) { this.data.delete(key); this.dirty.delete(key); }
    if (moved.size) this.system.adopt(moved, this.Plotly);
    super.syncCards();
  }

  addPoints(runId, points, replay = false) {
    // While the history loads (and when it is replayed) everything takes MetricCharts' path.
    if (replay || this.pending) return super.addPoints(runId, points, replay);
    const sys = [], rest = [];
    for (const p of points) (isSystemKey(p.key) ? sys : rest).push(p);
    if (sys.length) this.system.addPoints(runId, sys);
    if (rest.length) super.addPoints(runId, rest);
  }

  async load() {
    const timing = await super.load();
    if (timing) await this.system.finishLoad(this.Plotly);
    return timing;
  }

  destroy() {
    super.destroy();
    this.system.destroy();
  }
}
