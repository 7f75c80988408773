// Tags and the markdown note of one run (run page): tags as chips (× removes one, the box adds
// one or several, space or comma separated), the note shown as the server renders it
// (`note_html`: markdown-it with raw HTML disabled and unsafe links dropped) with an editor for
// its markdown source. Both are searchable from the runs page (`tag:<name>`, a word of the note).

import { h, replace, toast } from "./dom.js";
import { api } from "./api.js";

export const TAG_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

export const tagsApi = {
  add: (id, tags) => api(`runs/${id}/tags`, { method: "POST", body: { tags } }),
  remove: (id, tag) => api(`runs/${id}/tags/${encodeURIComponent(tag)}`, { method: "DELETE" }),
  setNote: (id, note) => api(`runs/${id}/note`, { method: "PUT", body: { note } }),
};

/** A tag chip; `onRemove` adds the × button. */
export function tagChip(tag, onRemove) {
  return h("span", { class: "chip chip-sm tag-chip", dataset: { tag } }, tag,
    onRemove ? h("button", { type: "button", class: "chip-x", title: `Remove the tag ${tag}`, "aria-label": `Remove tag ${tag}`, on: { click: () => onRemove(tag) } }, "×") : null);
}

/**
 * Defence in depth: the server's note_html is safe by construction; parse it inert (a
 * <template> runs nothing) and keep only plain markup, no scripts, handlers or odd links.
 */
export function safeFragment(html) {
  const tpl = document.createElement("template");
  tpl.innerHTML = String(html || "");
  for (const el of tpl.content.querySelectorAll("*")) {
    if (/^(script|style|iframe|object|embed|form|input|button|link|meta|base|svg|math)$/i.test(el.tagName)) { el.remove(); continue; }
    for (const a of [...el.attributes]) {
      const name = a.name.toLowerCase();
      if (name.startsWith("on") || name === "style" || name === "srcset") el.removeAttribute(a.name);
      else if ((name === "href" || name === "src") && !/^(https?:|mailto:|#|\/(?!\/))/i.test(a.value.trim())) el.removeAttribute(a.name);
    }
    if (el.tagName === "A") { el.setAttribute("rel", "noopener noreferrer nofollow"); el.setAttribute("target", "_blank"); }
  }
  return tpl.content;
}

export class RunTagsNote {
  /** run: the run as GET /runs/{id} answers it; mayEdit: the caller may change it (member). */
  constructor(run, { mayEdit = true } = {}) {
    this.run = run;
    this.mayEdit = mayEdit;
    this.tags = [...(run.tags || [])];
    this.note = run.note || "";
    this.noteHtml = run.note_html || "";
    this.tagsEl = h("div", { class: "run-tags", dataset: { testid: "run-tags" } });
    this.noteEl = h("div", { class: "run-note", dataset: { testid: "run-note" } });
    this.renderTags();
    this.renderNote();
  }

  renderTags() {
    const input = h("input", { class: "input input-sm", placeholder: "add tags", maxlength: "400", size: 12, "aria-label": "Add tags", dataset: { testid: "tag-input" },
      on: { keydown: (e) => { if (e.key === "Enter") { e.preventDefault(); this.addTags(input.value); } } } });
    replace(this.tagsEl,
      h("span", { class: "info-label" }, "Tags"),
      this.tags.length ? this.tags.map((t) => tagChip(t, this.mayEdit ? (x) => this.removeTag(x) : null)) : h("span", { class: "muted small" }, "none"),
      this.mayEdit ? [input, h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "add-tag" }, on: { click: () => this.addTags(input.value) } }, "Add")] : null);
  }

  async addTags(text) {
    const tags = String(text || "").split(/[\s,]+/).filter(Boolean);
    if (!tags.length) return;
    const bad = tags.find((t) => !TAG_RE.test(t));
    if (bad) { toast(`“${bad}” is not a tag: 1-64 letters, digits and _ . : -`, "error"); return; }
    try {
      const res = await tagsApi.add(this.run.id, tags);
      this.tags = res.tags;
      this.renderTags();
      this.tagsEl.querySelector("input")?.focus();
    } catch (err) { toast(err.message, "error"); }
  }

  async removeTag(tag) {
    try {
      await tagsApi.remove(this.run.id, tag);
      this.tags = this.tags.filter((t) => t !== tag);
      this.renderTags();
    } catch (err) { toast(err.message, "error"); }
  }

  /** Tags read again (GET /runs/{id}: the status events do not carry them). */
  update(run) {
    if (Array.isArray(run.tags) && JSON.stringify(run.tags) !== JSON.stringify(this.tags)) { this.tags = [...run.tags]; this.renderTags(); }
  }

  renderNote(editing = false) {
    if (editing) {
      const area = h("textarea", { class: "input note-source", rows: 8, maxlength: String(64 * 1024), dataset: { testid: "note-source" } });
      area.value = this.note;
      const save = async () => {
        try {
          const res = await tagsApi.setNote(this.run.id, area.value);
          this.note = res.note || "";
          this.noteHtml = res.note_html || "";
          this.renderNote(false);
        } catch (err) { toast(err.message, "error"); }
      };
      replace(this.noteEl, area, h("div", { class: "note-actions" },
        h("button", { class: "btn btn-sm btn-primary", type: "button", dataset: { testid: "save-note" }, on: { click: save } }, "Save note"),
        h("button", { class: "btn btn-sm", type: "button", on: { click: () => this.renderNote(false) } }, "Cancel"),
        h("span", { class: "muted small" }, "Markdown; HTML is shown as text.")));
      area.focus();
      return;
    }
    const body = h("div", { class: "note-html", dataset: { testid: "note-html" } });
    if (this.noteHtml) body.append(safeFragment(this.noteHtml));
    else body.append(h("p", { class: "muted small" }, "No note."));
    replace(this.noteEl, body,
      this.mayEdit ? h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "edit-note" }, on: { click: () => this.renderNote(true) } }, this.note ? "Edit note" : "Add a note") : null);
  }
}
