// DOM building without innerHTML: every string from the server becomes a text node,
// so a run named `<img src=x onerror=alert(1)>` is shown as text and never parsed.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * h("div", {class: "x", on: {click: fn}, dataset: {id: 1}}, "text", child, [more])
 * Attribute values are set with setAttribute / properties; children that are strings or
 * numbers become text nodes; null/undefined/false children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

function applyAttrs(el, attrs) {
  if (!attrs) return;
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key === "value" || key === "checked" || key === "selected" || key === "disabled") {
      el[key] = value;
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key.startsWith("on")) {
      throw new Error(`inline handler attribute ${key} refused; use {on: {...}}`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

/** A small toast in the corner; kind = "info" | "error" | "ok". */
export function toast(message, kind = "info", ms = 4000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: ["toast", `toast-${kind}`], role: "status" }, message);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

/**
 * A modal confirmation built on <dialog>. Resolves true when confirmed.
 */
export function confirmDialog({ title, body, confirmLabel = "Confirm", dismissLabel = "Back", danger = false }) {
  return new Promise((resolve) => {
    const ok = h("button", { class: ["btn", danger ? "btn-danger" : "btn-primary"], type: "button", dataset: { testid: "confirm-ok" } }, confirmLabel);
    const cancel = h("button", { class: "btn", type: "button", dataset: { testid: "confirm-cancel" } }, dismissLabel);
    const dlg = h("dialog", { class: "dialog", dataset: { testid: "confirm-dialog" } },
      h("h3", null, title),
      h("p", null, body),
      h("div", { class: "dialog-actions" }, cancel, ok));
    const done = (value) => { dlg.close(); dlg.remove(); resolve(value); };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}
