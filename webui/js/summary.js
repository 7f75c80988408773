// Model summary table from trainer_core's summary dict (summarize(...).to_dict()).
// Tolerant of layouts: a list of layer dicts, or parallel column lists.

import { h } from "./dom.js";
import { fmtCount } from "./format.js";

const COLUMN_ORDER = ["index", "name", "type", "params", "mode", "in_size", "in_sizes", "out_size", "out_sizes"];
const TOTAL_LABELS = {
  trainable_params: "Trainable params",
  non_trainable_params: "Non-trainable params",
  total_params: "Total params",
  size_mb: "Total estimated model params size (MB)",
  total_estimated_model_params_size_mb: "Total estimated model params size (MB)",
  train_modules: "Modules in train mode",
  eval_modules: "Modules in eval mode",
};

function layersOf(s) {
  if (Array.isArray(s.layers)) return s.layers;
  if (Array.isArray(s.rows)) return s.rows;
  if (Array.isArray(s.modules)) return s.modules;
  // Column-oriented: {names:[...], types:[...], params:[...]} or {layer_names, layer_types, param_nums}.
  const cols = Object.entries(s).filter(([, v]) => Array.isArray(v));
  if (!cols.length) return [];
  const n = Math.max(...cols.map(([, v]) => v.length));
  const rename = { names: "name", layer_names: "name", types: "type", layer_types: "type", param_nums: "params", num_params: "params", training_modes: "mode" };
  return Array.from({ length: n }, (_, i) => Object.fromEntries(cols.map(([k, v]) => [rename[k] || k, v[i]])));
}

function cell(col, v) {
  if (col === "params" || col === "num_params") return h("td", { class: "num" }, typeof v === "number" ? fmtCount(v) : String(v ?? ""));
  if (col === "mode" && typeof v === "boolean") return h("td", null, v ? "train" : "eval");
  if (v !== null && typeof v === "object") return h("td", { class: "mono" }, JSON.stringify(v));
  return h("td", { class: col === "type" || col === "name" ? "mono" : null }, v === null || v === undefined ? "" : String(v));
}

export function renderSummary(s) {
  if (!s || typeof s !== "object") return h("p", { class: "muted small" }, "No model summary.");
  if (s.summary && typeof s.summary === "object" && !Array.isArray(s.summary)) s = s.summary;
  const layers = layersOf(s);
  const cols = [];
  // Columns that are empty in every row (sizes without an example input) are left out.
  for (const l of layers) for (const [k, v] of Object.entries(l)) if (!cols.includes(k) && v !== null && v !== undefined && v !== "") cols.push(k);
  cols.sort((a, b) => (COLUMN_ORDER.indexOf(a) + 1 || 99) - (COLUMN_ORDER.indexOf(b) + 1 || 99));
  const showIndex = !cols.includes("index");
  const table = h("table", { class: "table summary-table", dataset: { testid: "summary-table" } },
    h("thead", null, h("tr", null, showIndex ? h("th", { class: "num" }, "") : null, cols.map((c) => h("th", { class: c === "params" ? "num" : null }, c.replace(/_/g, " "))))),
    h("tbody", null, layers.map((l, i) => h("tr", null, showIndex ? h("td", { class: "num muted" }, i) : null, cols.map((c) => cell(c, l[c]))))));
  const totals = Object.entries(s).filter(([k, v]) => !Array.isArray(v) && (typeof v === "number" || typeof v === "string") && (k in TOTAL_LABELS || /param|size/.test(k)));
  totals.sort(([a], [b]) => (Object.keys(TOTAL_LABELS).indexOf(a) + 1 || 99) - (Object.keys(TOTAL_LABELS).indexOf(b) + 1 || 99));
  const totalsEl = h("table", { class: "table kv summary-totals", dataset: { testid: "summary-totals" } },
    h("tbody", null, totals.map(([k, v]) => h("tr", { dataset: { total: k } }, h("th", null, TOTAL_LABELS[k] || k.replace(/_/g, " ")),
      h("td", { class: "num mono" }, typeof v === "number" && Number.isInteger(v) ? v.toLocaleString("en-US") + (v >= 1e4 ? ` (${fmtCount(v)})` : "") : typeof v === "number" ? v.toFixed(3) : v)))));
  return h("div", { class: "summary" }, layers.length ? table : null, totals.length ? totalsEl : null);
}
