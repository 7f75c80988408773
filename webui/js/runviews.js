// Runs page bars: saved views of a project (query + columns + sort + grouping; pick, save,
// delete; each one's address is #/runs?view=<id>) and bulk actions on the selected runs
// (tag, untag, cancel, delete: POST /api/v1/runs/bulk, each run checked as its own route would).

import { h, replace, toast, confirmDialog, promptDialog } from "./dom.js";
import { queryApi } from "./runquery.js";
import { TAG_RE } from "./tagsnotes.js";
import { bulkMax, canSubmitSomewhere, canWrite } from "./perm.js";

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** opts: state (the page's), projectId() (of state.project, or undefined), apply(view), saved(view).
 * Saving and deleting are offered to the project's members (a viewer may open views). */
export function viewsBar({ state, projectId, apply, saved }) {
  let list = [];
  const sel = h("select", { class: "input input-sm", "aria-label": "Saved views", dataset: { testid: "views" },
    on: { change: (e) => { const v = list.find((x) => String(x.id) === e.target.value); if (v) apply(v); } } });
  const save = h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "save-view" }, on: { click: onSave } }, "Save view");
  const del = h("button", { class: "btn btn-sm btn-danger", type: "button", dataset: { testid: "delete-view" }, on: { click: onDelete } }, "Delete view");
  const el = h("span", { class: "ctl views-bar" }, sel, save, del);

  const body = () => ({ query: state.q || "", columns: [...state.columns], sort: state.sort, group_by: state.groupBy || "" });
  const matches = (v, s) => same([v.query || "", v.columns || [], v.sort || "-created_at", v.group_by || ""], [s.q || "", s.columns, s.sort, s.groupBy || ""]);

  function render(current) {
    const pid = projectId();
    sel.disabled = pid === undefined;
    const write = pid !== undefined && canWrite(state.project);
    save.disabled = !write;
    save.hidden = pid !== undefined && !write;
    del.hidden = save.hidden;
    sel.title = pid === undefined ? "Pick a project to open or save its views" : "";
    const selected = current || list.find((v) => matches(v, state));
    del.disabled = !selected || !write;
    replace(sel, h("option", { value: "" }, pid === undefined ? "Views: pick a project" : list.length ? "Saved views…" : "No saved views"),
      list.map((v) => h("option", { value: v.id, selected: selected && selected.id === v.id }, v.name)));
  }

  async function refresh(current) {
    const pid = projectId();
    list = pid === undefined ? [] : ((await queryApi.views(pid).catch(() => null)) || { items: [] }).items;
    render(current);
  }

  async function onSave() {
    const pid = projectId();
    if (pid === undefined) return;
    const name = await promptDialog({ title: "Save this view", label: "name", confirmLabel: "Save", check: (v) => (v.trim() ? null : "A view needs a name.") });
    if (name === null) return;
    try {
      const v = await queryApi.saveView(pid, { name: name.trim(), ...body() });
      toast(`View “${v.name}” saved: its address is #/runs?view=${v.id}`, "ok");
      await refresh(v);
      if (saved) saved(v);
    } catch (err) { toast(err.message, "error"); }
  }

  async function onDelete() {
    const v = list.find((x) => String(x.id) === sel.value) || list.find((x) => matches(x, state));
    if (!v) return;
    if (!(await confirmDialog({ title: `Delete the view “${v.name}”?`, body: "Its address stops working; the runs are not touched.", confirmLabel: "Delete view", danger: true }))) return;
    try {
      await queryApi.deleteView(v.id);
      toast(`View “${v.name}” deleted`, "info");
      await refresh();
    } catch (err) { toast(err.message, "error"); }
  }

  return { el, refresh, render, matches };
}

const count = (n) => Number(n).toLocaleString("en-US");
const runsWord = (n) => `${count(n)} run${Number(n) === 1 ? "" : "s"}`;

/** opts: selected() -> ids, done(action, res) after an action (reload, clear the selection);
 * matching() -> null, or {query, expected} while the selection is every run the page's query
 * matches (the bar then acts by query: POST /runs/bulk with query and expected, the count shown);
 * selectMatching() / clearSelection() for the banner's buttons. The banner (returned as
 * `banner`) offers "Select all N runs that match" once every row of the page is selected. */
export function bulkBar({ selected, done, matching = () => null, selectMatching = () => {}, clearSelection = () => {} }) {
  const countEl = h("span", { class: "muted", dataset: { testid: "bulk-count" } });
  const btn = (action, label, danger) => h("button", { class: ["btn", "btn-sm", danger && "btn-danger"], type: "button", dataset: { testid: `bulk-${action}` }, on: { click: () => run(action) } }, label);
  const el = h("div", { class: "bulk-bar", hidden: true, dataset: { testid: "bulk-bar" } }, countEl,
    btn("tag", "Tag…"), btn("untag", "Untag…"), btn("cancel", "Cancel", true), btn("delete", "Delete", true));
  const bannerText = h("span", { dataset: { testid: "select-all-text" } });
  const selectAll = h("button", { class: "btn btn-sm btn-link", type: "button", dataset: { testid: "select-all-matching" }, on: { click: () => selectMatching() } });
  const clearBtn = h("button", { class: "btn btn-sm btn-link", type: "button", dataset: { testid: "clear-selection" }, on: { click: () => clearSelection() } }, "Clear selection");
  const banner = h("div", { class: "select-all-banner", role: "status", hidden: true, dataset: { testid: "select-all-banner" } }, bannerText, selectAll, clearBtn);

  async function run(action) {
    const m = matching();
    const ids = m ? [] : selected();
    if (!m && !ids.length) return;
    const what = m ? `all ${runsWord(m.expected)} that match` : runsWord(ids.length);
    let tags;
    if (action === "tag" || action === "untag") {
      const text = await promptDialog({ title: `${action === "tag" ? "Tag" : "Untag"} ${what}`, label: "tags (space separated)", confirmLabel: action === "tag" ? "Tag" : "Untag",
        check: (v) => { const t = v.split(/[\s,]+/).filter(Boolean); if (!t.length) return "Name at least one tag."; const bad = t.find((x) => !TAG_RE.test(x)); return bad ? `“${bad}” is not a tag: 1-64 letters, digits and _ . : -` : null; } });
      if (text === null) return;
      tags = text.split(/[\s,]+/).filter(Boolean);
    } else {
      const verb = action === "cancel" ? "Cancel" : "Delete";
      const ok = await confirmDialog({ title: `${verb} ${what}?`,
        body: action === "delete" ? "Their metrics, logs and checkpoint files are removed for good. Active runs are not deleted." : "Queued runs are cancelled at once, running ones stop at their next step.",
        confirmLabel: m ? `${verb} ${runsWord(m.expected)}` : `${verb} runs`, danger: true });
      if (!ok) return;
    }
    try {
      const res = m ? await queryApi.bulkQuery(m.query, m.expected, action, tags) : await queryApi.bulk(ids, action, tags);
      const failed = res.results.filter((r) => !r.ok);
      const okCount = res.results.length - failed.length;
      toast(failed.length ? `${okCount} done; ${failed.length} not: ${failed.slice(0, 3).map((f) => `#${f.id} ${f.error}`).join("; ")}` : `${okCount} run${okCount === 1 ? "" : "s"} done`, failed.length ? "error" : "ok", failed.length ? 8000 : 4000);
      el.dataset.last = JSON.stringify({ action, ok: okCount, failed: failed.length, ...(m ? { matched: res.matched } : {}) });
      done(action, res);
    } catch (err) {
      toast(err.message, "error", err.status === 409 ? 8000 : 4000);
      // The count changed since it was shown: show the list again (the user repeats with the new count).
      if (m && err.status === 409) done(null, null);
    }
  }

  // Viewers only (no project to change anything in): no bulk actions to offer.
  // info: {pageAll (every row of the page is selected), shown (rows on the page), total (runs that
  // match), canMatch (the query can be sent: its project is known)}.
  function update(n, info = {}) {
    const m = matching();
    const can = canSubmitSomewhere();
    el.hidden = (m ? false : n < 1) || !can;
    countEl.textContent = m ? `All ${count(m.expected)} matching selected` : `${n} selected`;
    el.dataset.mode = m ? "query" : "ids";
    if (m) {
      bannerText.textContent = `All ${runsWord(m.expected)} that match are selected.`;
      selectAll.hidden = true;
      clearBtn.hidden = false;
      banner.hidden = !can;
    } else if (info.pageAll && info.canMatch && info.total > info.shown) {
      const cap = bulkMax();
      if (cap !== null && info.total > cap) {
        // More than one bulk action may take (RUNYARD_BULK_MAX): say so instead of offering it.
        bannerText.textContent = `All ${runsWord(info.shown)} on this page are selected. ${count(info.total)} match; a bulk action takes at most ${count(cap)} at a time: narrow the query to act on all of them.`;
        selectAll.hidden = true;
      } else {
        bannerText.textContent = `All ${runsWord(info.shown)} on this page are selected.`;
        selectAll.textContent = `Select all ${runsWord(info.total)} that match`;
        selectAll.hidden = false;
      }
      clearBtn.hidden = true;
      banner.hidden = !can;
    } else {
      banner.hidden = true;
    }
  }
  return { el, banner, update };
}
