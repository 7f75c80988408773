// Chart panels of a project: which charts show, in what order, and charts of several metrics
// (train_loss and val_loss on one step axis). Kept per project by the server
// (GET/PUT /api/v1/projects/{id}/layout: {panels: [{id, title, metrics, log_y}], hidden: [key]});
// where the server has no such route or the caller may not write it (403/404/405), this
// browser's localStorage keeps it instead.
//
// The editor lists the charts in order (move up/down, hide a metric's own chart, remove a
// chart of several metrics) and makes new ones from the keys present. Every change is saved
// at once, and the saved list is the order on every page load and live.

import { h, replace, toast } from "./dom.js";
import { api, projects } from "./api.js";

const LOCAL = (project) => `runyard.layout.${project}`;

async function projectId(name) {
  const list = await projects().catch(() => []);
  const p = (list || []).find((x) => x.name === name);
  return p ? p.id : null;
}

// No such route (an older server), or not allowed to (a viewer may not write a project's
// layout): this browser keeps it.
const missingRoute = (err) => err && (err.status === 403 || err.status === 404 || err.status === 405);

/** The project's layout ({panels: [], hidden: []} when none is saved). */
export async function loadLayout(project) {
  const empty = { panels: [], hidden: [] };
  const id = await projectId(project);
  if (id !== null) {
    try {
      const got = await api(`projects/${id}/layout`);
      if (got && (got.panels?.length || got.hidden?.length)) return got;
    } catch (err) {
      if (!missingRoute(err)) return empty;
    }
  }
  try { return JSON.parse(localStorage.getItem(LOCAL(project)) || "null") || empty; } catch { return empty; }
}

/** Save it on the server (where the route exists and the caller is a member), else locally. */
export async function saveLayout(project, layout) {
  const id = await projectId(project);
  if (id !== null) {
    try {
      await api(`projects/${id}/layout`, { method: "PUT", body: layout });
      localStorage.removeItem(LOCAL(project));
      return "server";
    } catch (err) {
      if (!missingRoute(err)) { toast(`The chart layout was not saved: ${err.message}`, "error"); return null; }
    }
  }
  localStorage.setItem(LOCAL(project), JSON.stringify(layout));
  return "local";
}

/** The "Charts…" button and its editor box for one MetricCharts. */
export class PanelEditor {
  constructor(charts, project) {
    this.charts = charts;
    this.project = project;
    this.box = h("div", { class: "panel-editor", hidden: true, dataset: { testid: "panel-editor" } });
    this.button = h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "edit-panels" }, on: { click: () => this.toggle() } }, "Charts…");
    this.saving = Promise.resolve();
    // Read at once; the charts wait for it before their first draw (same order from the start).
    this.ready = loadLayout(this.project).then((layout) => { this.charts.setLayout(layout); return layout; });
    charts.layoutReady = this.ready;
  }

  load() { return this.ready; }

  toggle() {
    this.box.hidden = !this.box.hidden;
    if (!this.box.hidden) this.render();
  }

  async apply(panels, hidden) {
    this.charts.setLayout({ panels, hidden: [...hidden] });
    const layout = this.charts.layoutState();
    this.render();
    this.saving = this.saving.then(() => saveLayout(this.project, layout)).then((where) => {
      if (where) this.box.dataset.saved = String(Number(this.box.dataset.saved || 0) + 1);
    });
    await this.saving;
  }

  render() {
    const panels = this.charts.layoutState().panels;
    const hidden = new Set(this.charts.hidden);
    const move = (i, d) => {
      const next = panels.slice();
      const [p] = next.splice(i, 1);
      next.splice(Math.max(0, Math.min(next.length, i + d)), 0, p);
      this.apply(next, hidden);
    };
    const rows = panels.map((p, i) => {
      const own = p.id === `m:${p.metrics[0]}` && p.metrics.length === 1;
      const show = h("input", { type: "checkbox", checked: !own || !hidden.has(p.metrics[0]), disabled: !own, dataset: { testid: "panel-show" },
        on: { change: (e) => { const next = new Set(hidden); if (e.target.checked) next.delete(p.metrics[0]); else next.add(p.metrics[0]); this.apply(panels, next); } } });
      return h("li", { class: "panel-row", dataset: { panel: p.id } },
        h("label", { class: "ctl" }, show, " ", h("span", { class: "mono" }, p.title)),
        own ? null : h("span", { class: "muted small" }, p.metrics.join(" + ")),
        h("span", { class: "spacer" }),
        h("button", { class: "btn btn-sm", type: "button", title: "Move up", "aria-label": `Move ${p.title} up`, disabled: i === 0, dataset: { testid: "panel-up" }, on: { click: () => move(i, -1) } }, "↑"),
        h("button", { class: "btn btn-sm", type: "button", title: "Move down", "aria-label": `Move ${p.title} down`, disabled: i === panels.length - 1, dataset: { testid: "panel-down" }, on: { click: () => move(i, 1) } }, "↓"),
        own ? null : h("button", { class: "btn btn-sm btn-danger", type: "button", dataset: { testid: "panel-remove" },
          on: { click: () => this.apply(panels.filter((x) => x.id !== p.id), hidden) } }, "Remove"));
    });
    const picks = this.charts.keys.map((k) => h("label", { class: "ctl" }, h("input", { type: "checkbox", value: k, dataset: { testid: "panel-metric" } }), " ", h("span", { class: "mono" }, k)));
    const title = h("input", { class: "input input-sm", placeholder: "Chart title", maxlength: "200", dataset: { testid: "panel-title" } });
    const logY = h("input", { type: "checkbox", dataset: { testid: "panel-log" } });
    const add = h("button", { class: "btn btn-sm btn-primary", type: "button", dataset: { testid: "panel-add" }, on: { click: () => {
      const metrics = [...this.box.querySelectorAll("[data-testid=panel-metric]:checked")].map((el) => el.value).slice(0, 20);
      if (!metrics.length) { toast("Pick the metrics to draw in the new chart.", "error"); return; }
      const id = `p${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
      this.apply([{ id, title: title.value.trim() || metrics.join(", "), metrics, log_y: logY.checked }, ...panels], hidden);
    } } }, "Add chart");
    replace(this.box,
      h("h3", { class: "sub" }, "Charts, in order"),
      h("ol", { class: "panel-list" }, rows),
      h("h3", { class: "sub" }, "New chart of several metrics"),
      h("div", { class: "panel-picks" }, picks),
      h("div", { class: "panel-new" }, title, h("label", { class: "ctl" }, logY, " Log scale"), add));
  }
}
