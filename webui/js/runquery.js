// The runs page's query tools (issue 14): the keys present (GET /api/v1/runs/keys) for the
// column chooser and the search box's completion, the page state in the URL
// (#/runs?q=&columns=&sort=&group_by=, or #/runs?view=<id>), saved views per project, group
// rows (GET /api/v1/runs/groups) and bulk actions on the selected runs (POST /api/v1/runs/bulk).

import { h, replace } from "./dom.js";
import { api } from "./api.js";
import { fmtNumber } from "./format.js";

export const OPERATORS = ["=", "!=", "<", "<=", ">", ">=", "~", "in (", "and", "or", "not"];
const AGGS = ["last", "min", "max"];

export const queryApi = {
  keys: (project) => api("runs/keys", { query: { project } }),
  groups: (query) => api("runs/groups", { query }),
  bulk: (ids, action, tags) => api("runs/bulk", { method: "POST", body: { ids, action, ...(tags ? { tags } : {}) } }),
  // Every run a query matches ({project, q, status, recipe}); expected: the count the user was shown (409 if it changed).
  bulkQuery: (query, expected, action, tags) => api("runs/bulk", { method: "POST", body: { query, expected, action, ...(tags ? { tags } : {}) } }),
  views: (projectId) => api(`projects/${projectId}/views`),
  view: (id) => api(`views/${id}`),
  saveView: (projectId, body) => api(`projects/${projectId}/views`, { method: "POST", body }),
  deleteView: (id) => api(`views/${id}`, { method: "DELETE" }),
};

/** The column label of a query field: `params.lr` → `lr`, `metrics.val_loss.min` → `val_loss (min)`. */
export function columnLabel(field) {
  const m = /^metrics\.(.+)\.(last|min|max)$/.exec(field);
  if (m) return `${m[1]} (${m[2]})`;
  return field.replace(/^(params|hparams)\./, "");
}

/** Every completion the keys allow: fields, params.*, hparams.*, metrics.*.last|min|max, tag:*. */
export function completions(keys) {
  const k = keys || {};
  return [
    ...(k.fields || []),
    ...(k.params || []).map((p) => `params.${p}`),
    ...(k.hparams || []).map((p) => `hparams.${p}`),
    ...(k.metrics || []).flatMap((m) => AGGS.map((a) => `metrics.${m}.${a}`)),
    ...(k.tags || []).map((t) => `tag:${t}`),
  ];
}

/** The select of columns to add: params, hyperparameters, metrics (last/min/max each). */
export function columnOptions(keys, chosen) {
  const have = new Set(chosen);
  const group = (label, fields) => {
    const left = fields.filter((f) => !have.has(f));
    return left.length ? h("optgroup", { label }, left.map((f) => h("option", { value: f }, f))) : null;
  };
  const k = keys || {};
  return [
    h("option", { value: "" }, "+ column"),
    group("Parameters", (k.params || []).map((p) => `params.${p}`)),
    group("Hyperparameters", (k.hparams || []).map((p) => `hparams.${p}`)),
    group("Metrics", (k.metrics || []).flatMap((m) => AGGS.map((a) => `metrics.${m}.${a}`))),
  ];
}

/**
 * Completion for the search box: the word under the caret against `words()`, a list under
 * the box; ↓/↑ choose, Tab or Enter takes one, Escape closes.
 */
export function attachCompletion(input, words) {
  const list = h("ul", { class: "suggest", hidden: true, role: "listbox", dataset: { testid: "query-suggest" } });
  let items = [], active = -1;
  const tokenAt = () => {
    const upto = input.value.slice(0, input.selectionStart ?? input.value.length);
    const m = /[A-Za-z0-9_.:\-/]*$/.exec(upto);
    return { start: upto.length - m[0].length, text: m[0] };
  };
  const close = () => { list.hidden = true; items = []; active = -1; };
  const take = (word) => {
    const { start, text } = tokenAt();
    const end = start + text.length;
    const after = input.value.slice(end);
    const pad = word.endsWith("(") ? "" : " ";
    input.value = input.value.slice(0, start) + word + pad + after.replace(/^\s*/, after ? " " : "");
    const caret = start + word.length + pad.length;
    input.setSelectionRange(caret, caret);
    close();
    input.dispatchEvent(new Event("input", { bubbles: true }));
    show(); // after a field: its operators
  };
  function show() {
    const { text, start } = tokenAt();
    const before = input.value.slice(0, start).trimEnd();
    // After a field name: operators; else fields and keys starting with (or containing) the word.
    const pool = text === "" && /[A-Za-z0-9_.\]]$/.test(before) && !/\b(and|or|not|in)$/.test(before) ? OPERATORS : words();
    const low = text.toLowerCase();
    const starts = pool.filter((w) => w.toLowerCase().startsWith(low) && w.toLowerCase() !== low);
    const contains = low ? pool.filter((w) => !w.toLowerCase().startsWith(low) && w.toLowerCase().includes(low)) : [];
    items = [...starts, ...contains].slice(0, 12);
    active = -1;
    if (!items.length || (!text && pool !== OPERATORS)) { close(); return; }
    replace(list, items.map((w, i) => h("li", { role: "option", dataset: { value: w, i }, on: { mousedown: (e) => { e.preventDefault(); take(w); } } }, w)));
    list.hidden = false;
  }
  const mark = () => { [...list.children].forEach((li, i) => li.classList.toggle("active", i === active)); };
  input.addEventListener("input", (e) => { if (e.isTrusted || e.inputType) show(); });
  input.addEventListener("blur", close);
  input.addEventListener("keydown", (e) => {
    if (list.hidden) return;
    if (e.key === "ArrowDown") { e.preventDefault(); active = (active + 1) % items.length; mark(); }
    else if (e.key === "ArrowUp") { e.preventDefault(); active = (active - 1 + items.length) % items.length; mark(); }
    else if ((e.key === "Tab" || e.key === "Enter") && items.length) { e.preventDefault(); take(items[Math.max(0, active)]); }
    else if (e.key === "Escape") close();
  });
  return h("span", { class: "suggest-wrap" }, input, list);
}

/** The page state as `#/runs?...` (empty parts left out). */
export function stateHash(s) {
  const qs = new URLSearchParams();
  if (s.q) qs.set("q", s.q);
  if (s.columns && s.columns.length) qs.set("columns", s.columns.join(","));
  if (s.sort && s.sort !== "-created_at") qs.set("sort", s.sort);
  if (s.groupBy) qs.set("group_by", s.groupBy);
  const text = qs.toString();
  return text ? `#/runs?${text}` : "#/runs";
}

/** A group header row: the value, how many runs, and mean (min–max) of each numeric column. */
export function groupRow(group, columns, span) {
  const value = group.value === null || group.value === undefined ? "(none)" : String(group.value);
  return h("tr", { class: "group-row agg-row", dataset: { group: value } },
    h("td", { class: "col-check" }),
    columns.map((c, i) => {
      if (i === 0) return h("th", { colspan: span, class: "group-label" }, h("span", { class: "mono" }, value), h("span", { class: "muted small" }, ` · ${group.count} run${group.count === 1 ? "" : "s"}`));
      if (i < span) return null;
      const a = c.field && group.aggregates ? group.aggregates[c.field] : null;
      if (!a || a.mean === null || a.mean === undefined) return h("td", null);
      return h("td", { class: "num agg", dataset: { agg: c.field }, title: `mean ${fmtNumber(a.mean)} · min ${fmtNumber(a.min)} · max ${fmtNumber(a.max)}` },
        h("span", { class: "agg-mean" }, fmtNumber(a.mean)), h("span", { class: "muted small agg-range" }, ` ${fmtNumber(a.min)}–${fmtNumber(a.max)}`));
    }));
}
