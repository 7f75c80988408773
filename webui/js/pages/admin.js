// Admin page. Server admins: the users (create, disable / enable, make / remove admin, set a
// password, a one-time login link shown once) and the whole audit log. Project admins see
// the audit log of their projects only.

import { h, replace, toast, confirmDialog, promptDialog, secretBox, field } from "../dom.js";
import { account, currentMe, loadMe } from "../api.js";
import { canReadAudit } from "../perm.js";
import { fmtDateTime, fmtRelative } from "../format.js";

const AUDIT_PAGE = 50;
const ACTIONS = ["login", "login_failed", "login_blocked", "logout", "token_created", "token_revoked", "user_created",
  "user_updated", "user_disabled", "user_enabled", "password_reset", "password_changed", "role_changed", "login_link_created",
  "run_submitted", "run_cancelled", "run_resumed", "run_deleted", "checkpoint_downloaded", "checkpoint_deleted"];

function detailText(detail) {
  const entries = Object.entries(detail || {});
  if (!entries.length) return "";
  return entries.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
}

function usersSection(me) {
  const tbody = h("tbody");
  const linkBox = h("div", { dataset: { testid: "login-link-box" } });
  const formError = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "user-error" } });
  let users = [];

  async function reload() {
    users = await account.users();
    renderUsers();
  }

  async function act(fn, okText) {
    try { await fn(); if (okText) toast(okText, "ok"); await reload(); } catch (err) { toast(err.message, "error", 6000); }
  }

  async function toggleDisabled(u) {
    if (!u.disabled) {
      const ok = await confirmDialog({ title: `Disable ${u.name}?`, body: "They are logged out everywhere and their API tokens are revoked. You can enable the account again later (tokens stay revoked).", confirmLabel: "Disable user", danger: true });
      if (!ok) return;
    }
    await act(() => account.updateUser(u.id, { disabled: !u.disabled }), u.disabled ? `${u.name} enabled` : `${u.name} disabled`);
  }

  async function toggleAdmin(u) {
    const ok = await confirmDialog(u.is_admin
      ? { title: `Remove ${u.name}'s admin role?`, body: "They keep their project roles.", confirmLabel: "Remove admin", danger: true }
      : { title: `Make ${u.name} a server admin?`, body: "Server admins may do everything on this server: every project, every user.", confirmLabel: "Make admin" });
    if (!ok) return;
    await act(() => account.updateUser(u.id, { is_admin: !u.is_admin }), u.is_admin ? `${u.name} is no longer an admin` : `${u.name} is now an admin`);
  }

  async function setPassword(u) {
    const pw = await promptDialog({ title: `Set ${u.name}'s password`, body: "This logs them out of every session.", label: "new password", type: "password", confirmLabel: "Set password", autocomplete: "new-password",
      check: (v) => (v.length < 8 ? "A password has at least 8 characters." : null) });
    if (pw === null) return;
    await act(() => account.setPassword(u.id, pw), `Password of ${u.name} set`);
  }

  async function makeLink(u) {
    try {
      const { url } = await account.loginLink(u.id);
      replace(linkBox, secretBox(url, { title: `One-time login link for ${u.name}`, warning: "Send it to them privately; it works once, for a limited time, and will not be shown again.", testid: "login-link" }));
      linkBox.scrollIntoView({ block: "nearest" });
    } catch (err) { toast(err.message, "error", 6000); }
  }

  function renderUsers() {
    const self = me.user ? me.user.id : null;
    replace(tbody, users.map((u) => h("tr", { dataset: { userId: u.id, userName: u.name, disabled: u.disabled ? "1" : "0" }, class: u.disabled && "muted" },
      h("td", { class: "mono" }, u.name),
      h("td", null, u.display_name || ""),
      h("td", null, u.email || h("span", { class: "muted" }, "—")),
      h("td", null, u.is_admin ? h("span", { class: "tag tag-best" }, "admin") : null,
        u.disabled ? h("span", { class: "badge badge-cancelled" }, "disabled") : null,
        u.sso ? h("span", { class: "tag tag-last" }, "sso") : null),
      h("td", null, u.has_password ? "yes" : h("span", { class: "muted" }, "no")),
      h("td", { title: u.last_login_at ? fmtDateTime(u.last_login_at) : "" }, u.last_login_at ? fmtRelative(u.last_login_at) : h("span", { class: "muted" }, "never")),
      h("td", { class: "actions" },
        u.id === self ? null : h("button", { class: ["btn", "btn-sm", !u.disabled && "btn-danger"], type: "button", dataset: { testid: u.disabled ? "enable-user" : "disable-user" }, on: { click: () => toggleDisabled(u) } }, u.disabled ? "Enable" : "Disable"),
        u.id === self ? null : h("button", { class: "btn btn-sm", type: "button", dataset: { testid: u.is_admin ? "remove-admin" : "make-admin" }, on: { click: () => toggleAdmin(u) } }, u.is_admin ? "Remove admin" : "Make admin"),
        h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "set-password" }, on: { click: () => setPassword(u) } }, "Set password"),
        u.disabled ? null : h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "make-login-link" }, on: { click: () => makeLink(u) } }, "Login link")))));
  }

  const name = h("input", { id: "nu-name", class: "input", required: true, maxlength: 100, autocomplete: "off", placeholder: "alice", dataset: { testid: "new-user-name" } });
  const display = h("input", { id: "nu-display", class: "input", maxlength: 200, autocomplete: "off", placeholder: "Alice Liddell", dataset: { testid: "new-user-display" } });
  const email = h("input", { id: "nu-email", class: "input", type: "email", maxlength: 320, autocomplete: "off", placeholder: "optional", dataset: { testid: "new-user-email" } });
  const password = h("input", { id: "nu-password", class: "input", type: "password", autocomplete: "new-password", placeholder: "optional: or send a login link", dataset: { testid: "new-user-password" } });
  const isAdmin = h("input", { id: "nu-admin", class: "checkbox", type: "checkbox", dataset: { testid: "new-user-admin" } });
  const submitBtn = h("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "create-user" } }, "Create user");

  async function submit(e) {
    e.preventDefault();
    formError.hidden = true;
    if (!name.value.trim()) { formError.hidden = false; formError.textContent = "A user needs a name."; name.focus(); return; }
    submitBtn.disabled = true;
    try {
      const u = await account.createUser({ name: name.value.trim(), display_name: display.value.trim(), email: email.value.trim() || null, password: password.value || null, is_admin: isAdmin.checked });
      toast(`User ${u.name} created`, "ok");
      for (const el of [name, display, email, password]) el.value = "";
      isAdmin.checked = false;
      await reload();
      if (!u.has_password) makeLink(u);
    } catch (err) {
      formError.hidden = false;
      formError.textContent = err.message;
    } finally {
      submitBtn.disabled = false;
    }
  }

  const el = h("section", { class: "panel", dataset: { testid: "users-section" } },
    h("div", { class: "panel-head" }, h("h2", null, "Users")),
    h("form", { class: "inline-form", novalidate: true, dataset: { testid: "user-form" }, on: { submit } },
      field("name", name), field("display name", display), field("email", email), field("password", password),
      h("div", { class: "field field-check" }, h("label", { class: "ctl inline-check" }, isAdmin, "server admin")),
      h("div", { class: "field field-submit" }, submitBtn)),
    formError, linkBox,
    h("div", { class: "table-wrap" }, h("table", { class: "table users-table", dataset: { testid: "users-table" } },
      h("thead", null, h("tr", null, ["Name", "Display name", "Email", "", "Password", "Last login", ""].map((c) => h("th", null, c)))),
      tbody)));
  return { el, load: reload };
}

function auditSection() {
  const tbody = h("tbody");
  const more = h("button", { class: "btn btn-sm", type: "button", hidden: true, dataset: { testid: "audit-more" }, on: { click: () => load(false) } }, "Load more");
  const actionSel = h("select", { class: "input", "aria-label": "Action", dataset: { testid: "audit-action" }, on: { change: () => load(true) } },
    h("option", { value: "" }, "Action: all"), ACTIONS.map((a) => h("option", { value: a }, a)));
  let oldest = null;
  let seq = 0;

  async function load(fresh) {
    const mine = ++seq;
    const query = { limit: AUDIT_PAGE, action: actionSel.value || undefined, before: fresh ? undefined : oldest ?? undefined };
    let events;
    try { events = await account.audit(query); } catch (err) { toast(err.message, "error"); return; }
    if (mine !== seq) return;
    if (fresh) replace(tbody);
    if (fresh && !events.length) tbody.append(h("tr", null, h("td", { colspan: 7, class: "empty" }, "No events.")));
    for (const e of events) {
      tbody.append(h("tr", { dataset: { eventId: e.id, action: e.action } },
        h("td", { title: fmtDateTime(e.time) }, fmtDateTime(e.time)),
        h("td", null, e.actor || h("span", { class: "muted" }, "—")),
        h("td", null, h("code", { class: "audit-action" }, e.action)),
        h("td", null, e.target || ""),
        h("td", { class: "num" }, e.project_id ?? ""),
        h("td", { class: "mono" }, e.address || ""),
        h("td", { class: "mono audit-detail" }, detailText(e.detail))));
    }
    if (events.length) oldest = events[events.length - 1].id;
    more.hidden = events.length < AUDIT_PAGE;
    tbody.closest("table")?.setAttribute("data-loaded", "1");
  }

  const el = h("section", { class: "panel", dataset: { testid: "audit-section" } },
    h("div", { class: "panel-head" }, h("h2", null, "Audit log"), h("span", { class: "muted small" }, "newest first"), h("span", { class: "spacer" }), actionSel,
      h("button", { class: "btn btn-sm", type: "button", on: { click: () => load(true) } }, "Refresh")),
    h("div", { class: "table-wrap" }, h("table", { class: "table audit-table", dataset: { testid: "audit-table" } },
      h("thead", null, h("tr", null, ["Time", "Actor", "Action", "Target", "Project", "Address", "Detail"].map((c) => h("th", { class: c === "Project" ? "num" : null }, c)))),
      tbody)),
    h("div", { class: "pager" }, more));
  return { el, load: () => load(true) };
}

export async function render(root) {
  const me = currentMe() || await loadMe();
  if (!canReadAudit()) {
    replace(root, h("div", { class: "page" }, h("div", { class: "page-head" }, h("h1", null, "Admin")),
      h("div", { class: "error-box", role: "alert" }, "Only server admins (and, for the audit log of their projects, project admins) can open this page.")));
    return;
  }
  const sections = [];
  if (me.is_admin) sections.push(usersSection(me));
  sections.push(auditSection());
  replace(root, h("div", { class: "page page-wide admin-page", dataset: { testid: "admin-page" } },
    h("div", { class: "page-head" }, h("h1", null, me.is_admin ? "Admin" : "Audit log"),
      me.open ? h("span", { class: "muted" }, "single-user mode: users you create here turn on logins") : null),
    sections.map((s) => s.el)));
  await Promise.all(sections.map((s) => s.load()));
}
