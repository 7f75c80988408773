// API tokens page: your personal tokens (scripts, the RunyardLogger, the CLI send them as
// `Authorization: Bearer <token>`), a form to make one, its secret shown once, revoke.

import { h, replace, toast, confirmDialog, secretBox, field } from "../dom.js";
import { account, currentMe, projects as projectsApi } from "../api.js";
import { fmtDateTime, fmtRelative, parseTime } from "../format.js";

const EXPIRY = [["30", "30 days"], ["90", "90 days"], ["365", "1 year"], ["", "never"]];

function tokenState(t) {
  if (t.revoked) return h("span", { class: "badge badge-cancelled" }, "revoked");
  const exp = parseTime(t.expires_at);
  if (exp && exp.getTime() <= Date.now()) return h("span", { class: "badge badge-failed" }, "expired");
  return h("span", { class: "badge badge-succeeded" }, "active");
}

export async function render(root) {
  const me = currentMe();
  if (me && me.open) {
    replace(root, h("div", { class: "page" }, h("div", { class: "page-head" }, h("h1", null, "API tokens")),
      h("div", { class: "notice", dataset: { testid: "tokens-open-mode" } },
        "API tokens belong to accounts, and none exist yet: this server is in single-user mode, where scripts on this machine need no token. ",
        "Create an admin with ", h("code", null, "runyard user create NAME --admin"), ", log in, and make tokens here.")));
    return;
  }
  const [tokens, projectList] = await Promise.all([account.tokens(), projectsApi().catch(() => [])]);
  let list = tokens;

  const tbody = h("tbody");
  const created = h("div", { dataset: { testid: "new-token" } });
  const formError = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "token-error" } });

  function renderList() {
    if (!list.length) { replace(tbody, h("tr", null, h("td", { colspan: 9, class: "empty" }, "No tokens yet."))); return; }
    replace(tbody, list.map((t) => h("tr", { dataset: { tokenId: t.id, revoked: t.revoked ? "1" : "0" }, class: t.revoked && "muted" },
      h("td", { class: "token-name" }, t.name),
      h("td", null, h("code", null, `${t.prefix}…`)),
      h("td", null, t.scope),
      h("td", null, t.project || h("span", { class: "muted" }, "all")),
      h("td", { title: fmtDateTime(t.created_at) }, fmtRelative(t.created_at)),
      h("td", null, t.expires_at ? fmtDateTime(t.expires_at).slice(0, 10) : h("span", { class: "muted" }, "never")),
      h("td", { title: t.last_used_at ? fmtDateTime(t.last_used_at) : "" }, t.last_used_at ? fmtRelative(t.last_used_at) : h("span", { class: "muted" }, "never")),
      h("td", null, tokenState(t)),
      h("td", { class: "actions" }, t.revoked ? null : h("button", { class: "btn btn-sm btn-danger", type: "button", dataset: { testid: "revoke-token" }, on: { click: () => revoke(t) } }, "Revoke")))));
  }

  async function reload() {
    list = await account.tokens();
    renderList();
  }

  async function revoke(t) {
    const ok = await confirmDialog({ title: `Revoke token “${t.name}”?`, body: `Scripts using ${t.prefix}… stop working at once. This cannot be undone.`, confirmLabel: "Revoke token", danger: true });
    if (!ok) return;
    try {
      await account.revokeToken(t.id);
      toast(`Token “${t.name}” revoked`, "info");
      await reload();
    } catch (err) { toast(err.message, "error"); }
  }

  const nameInput = h("input", { id: "token-name", class: "input", required: true, maxlength: 200, placeholder: "e.g. laptop training scripts", dataset: { testid: "token-name" } });
  const scopeSel = h("select", { id: "token-scope", class: "input", dataset: { testid: "token-scope" } },
    h("option", { value: "read" }, "read"), h("option", { value: "read+write", selected: true }, "read+write"));
  const expirySel = h("select", { id: "token-expiry", class: "input", dataset: { testid: "token-expiry" } },
    EXPIRY.map(([v, label]) => h("option", { value: v, selected: v === "90" }, label)));
  const projectSel = h("select", { id: "token-project", class: "input", dataset: { testid: "token-project" } },
    h("option", { value: "" }, "all my projects"), projectList.map((p) => h("option", { value: p.name }, p.name)));
  const submitBtn = h("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "create-token" } }, "Create token");

  async function submit(e) {
    e.preventDefault();
    formError.hidden = true;
    const name = nameInput.value.trim();
    if (!name) { formError.hidden = false; formError.textContent = "Give the token a name (what it is for)."; nameInput.focus(); return; }
    submitBtn.disabled = true;
    try {
      const t = await account.createToken({ name, scope: scopeSel.value, expires_in_days: expirySel.value ? Number(expirySel.value) : null, project: projectSel.value || null });
      replace(created, secretBox(t.token, { title: `Your new token “${t.name}”`, warning: "Copy it now: it will not be shown again. Send it as 'Authorization: Bearer <token>'.", testid: "token-secret" }));
      nameInput.value = "";
      await reload();
    } catch (err) {
      formError.hidden = false;
      formError.textContent = err.message;
    } finally {
      submitBtn.disabled = false;
    }
  }

  renderList();
  replace(root, h("div", { class: "page", dataset: { testid: "tokens-page" } },
    h("div", { class: "page-head" }, h("h1", null, "API tokens"), h("span", { class: "muted" }, "for scripts, the logger and the CLI")),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "New token")),
      h("form", { class: "inline-form", novalidate: true, dataset: { testid: "token-form" }, on: { submit } },
        field("name", nameInput), field("scope", scopeSel), field("expires", expirySel), field("project", projectSel),
        h("div", { class: "field field-submit" }, submitBtn)),
      formError, created),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "Your tokens")),
      h("div", { class: "table-wrap" }, h("table", { class: "table", dataset: { testid: "tokens-table" } },
        h("thead", null, h("tr", null, ["Name", "Prefix", "Scope", "Project", "Created", "Expires", "Last used", "State", ""].map((c) => h("th", null, c)))),
        tbody)))));
}
