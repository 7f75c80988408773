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

// A labelled form field: <div class="field"><label for=input.id>label</label>input</div>.
export function field(label, input) {
  return h("div", { class: "field" }, h("label", { class: "field-label", for: input.id }, label), input);
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

/**
 * A modal asking for one value (a new name, a password) on <dialog>. Resolves the entered
 * string, or null when dismissed. `check(value)` may return an error sentence to show instead
 * of closing.
 */
export function promptDialog({ title, body, label, value = "", type = "text", confirmLabel = "Save", dismissLabel = "Back", check = null, autocomplete = "off" }) {
  return new Promise((resolve) => {
    const input = h("input", { class: "input", type, value, autocomplete, "aria-label": label || title, dataset: { testid: "prompt-input" } });
    const error = h("div", { class: "field-error", role: "alert", hidden: true, dataset: { testid: "prompt-error" } });
    const ok = h("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "prompt-ok" } }, confirmLabel);
    const cancel = h("button", { class: "btn", type: "button", dataset: { testid: "prompt-cancel" } }, dismissLabel);
    const form = h("form", { method: "dialog", class: "prompt-form" },
      label ? h("label", { class: "field-label" }, label) : null, input, error,
      h("div", { class: "dialog-actions" }, cancel, ok));
    const dlg = h("dialog", { class: "dialog", dataset: { testid: "prompt-dialog" } }, h("h3", null, title), body ? h("p", null, body) : null, form);
    const done = (result) => { dlg.close(); dlg.remove(); resolve(result); };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const problem = check ? check(input.value) : null;
      if (problem) { error.hidden = false; error.textContent = problem; input.focus(); return; }
      done(input.value);
    });
    cancel.addEventListener("click", () => done(null));
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); done(null); });
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
    input.select();
  });
}

/**
 * A secret shown once (a new API token, a login link): read-only text, a Copy button and the
 * warning that it will not be shown again. Without the async clipboard (plain http on another
 * host) the text is selected for the user to copy.
 */
export function secretBox(secret, { title = "Copy it now", warning = "It will not be shown again.", testid = "secret" } = {}) {
  const text = h("input", { class: "input input-mono secret-text", readonly: true, value: secret, spellcheck: "false", "aria-label": title, dataset: { testid: `${testid}-value` },
    on: { focus: (e) => e.target.select() } });
  const status = h("span", { class: "muted small", role: "status", dataset: { testid: `${testid}-copy-status` } });
  const copy = h("button", { class: "btn btn-primary", type: "button", dataset: { testid: `${testid}-copy` }, on: { click: async () => {
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(secret);
      status.textContent = "Copied.";
    } catch {
      text.focus();
      text.select();
      let copied = false;
      try { copied = document.execCommand("copy"); } catch { copied = false; }
      status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
    }
  } } }, "Copy");
  return h("div", { class: "secret-box", dataset: { testid } },
    h("div", { class: "secret-head" }, h("strong", null, title), h("span", { class: "secret-warning" }, warning)),
    h("div", { class: "secret-row" }, text, copy),
    status);
}
