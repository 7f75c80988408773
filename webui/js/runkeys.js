// Runs table helpers: keyboard navigation (j/k or ↓/↑ move, Enter opens, x selects; see
// docs/dashboard.md) and the view of a query the server could not read (its message, and the
// query with a caret under the column the 422 names).

import { h } from "./dom.js";

const TYPING = /^(INPUT|TEXTAREA|SELECT)$/;

/** The 422 of a bad query: `{detail, field: "q", column}` as the message over the query and a caret. */
export function queryErrorView(query, err) {
  const column = Number(err.body && err.body.column);
  const text = String(query || "");
  const at = Number.isFinite(column) && column >= 1 ? Math.min(column, text.length + 1) : null;
  return [
    h("div", { class: "query-error-msg" }, err.message, at ? ` (column ${at})` : ""),
    at ? h("pre", { class: "query-error-where", dataset: { testid: "query-error-where" } },
      text, "\n", " ".repeat(at - 1), h("span", { class: "query-caret", dataset: { testid: "query-caret" } }, "^")) : null,
  ];
}

/**
 * Keys on the runs table. j / ↓: next row, k / ↑: previous (the arrows while the table has
 * the focus, j/k anywhere but in a text field), Enter: open the row's run, x: select it.
 * The row under the cursor is marked `.cursor` (aria-selected) and survives re-renders.
 */
export function bindKeyboard(table, tbody, { toggle, open }) {
  let cursorId = null;
  const rows = () => [...tbody.querySelectorAll("tr[data-run-id]")];
  const mark = () => {
    for (const r of rows()) {
      const on = r.dataset.runId === cursorId;
      r.classList.toggle("cursor", on);
      if (on) r.setAttribute("aria-selected", "true"); else r.removeAttribute("aria-selected");
    }
  };
  const move = (d) => {
    const list = rows();
    if (!list.length) return;
    const i = list.findIndex((r) => r.dataset.runId === cursorId);
    const next = list[i < 0 ? (d > 0 ? 0 : list.length - 1) : Math.max(0, Math.min(list.length - 1, i + d))];
    cursorId = next.dataset.runId;
    mark();
    next.scrollIntoView({ block: "nearest" });
  };
  const onKey = (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (TYPING.test(t.tagName) || t.isContentEditable)) return;
    if (document.querySelector("dialog[open], .modal-backdrop")) return;
    const arrows = document.activeElement === table || table.contains(document.activeElement);
    if (e.key === "j" || (arrows && e.key === "ArrowDown")) { e.preventDefault(); move(1); return; }
    if (e.key === "k" || (arrows && e.key === "ArrowUp")) { e.preventDefault(); move(-1); return; }
    if (cursorId === null) return;
    const row = rows().find((r) => r.dataset.runId === cursorId);
    if (!row) return;
    if (e.key === "Enter" && !(t && t.tagName === "A")) { e.preventDefault(); open(Number(cursorId)); return; }
    if (e.key === "x") {
      e.preventDefault();
      const box = row.querySelector("input[type=checkbox]");
      if (box) { box.checked = !box.checked; row.classList.toggle("selected", box.checked); toggle(Number(cursorId), box.checked); }
    }
  };
  document.addEventListener("keydown", onKey);
  const observer = new MutationObserver(() => { if (cursorId !== null) mark(); });
  observer.observe(tbody, { childList: true });
  return () => { document.removeEventListener("keydown", onKey); observer.disconnect(); };
}
