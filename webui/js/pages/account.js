// Account page: who you are, your roles, and changing your password.

import { h, replace, toast, field } from "../dom.js";
import { account, currentMe, forgetMe, loadMe } from "../api.js";
import { fmtDateTime } from "../format.js";

export async function render(root) {
  const me = currentMe() || await loadMe();
  if (me.open) {
    replace(root, h("div", { class: "page" }, h("div", { class: "page-head" }, h("h1", null, "Account")),
      h("div", { class: "notice" }, "No accounts exist yet: this server is in single-user mode. Create an admin with ",
        h("code", null, "runyard user create NAME --admin"), " to turn on logins.")));
    return;
  }
  const user = me.user;
  const roles = Object.entries(me.roles || {}).sort(([a], [b]) => a.localeCompare(b));

  const current = h("input", { id: "pw-current", class: "input", type: "password", autocomplete: "current-password", dataset: { testid: "pw-current" } });
  const next = h("input", { id: "pw-new", class: "input", type: "password", autocomplete: "new-password", minlength: 8, dataset: { testid: "pw-new" } });
  const again = h("input", { id: "pw-again", class: "input", type: "password", autocomplete: "new-password", dataset: { testid: "pw-again" } });
  const error = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "pw-error" } });
  const submitBtn = h("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "pw-submit" } }, "Change password");

  async function submit(e) {
    e.preventDefault();
    error.hidden = true;
    const fail = (msg) => { error.hidden = false; error.textContent = msg; };
    if (next.value.length < 8) return fail("A password has at least 8 characters.");
    if (next.value !== again.value) return fail("The new passwords differ.");
    submitBtn.disabled = true;
    try {
      await account.changePassword(current.value, next.value);
      toast("Password changed", "ok");
      current.value = next.value = again.value = "";
      // Changing the password ends sessions; if it ended this one too, log in again.
      const now = await loadMe().catch(() => null);
      if (now && !now.authenticated) { forgetMe(); location.hash = "#/login"; }
    } catch (err) {
      fail(err.message);
    } finally {
      submitBtn.disabled = false;
    }
  }

  replace(root, h("div", { class: "page page-form", dataset: { testid: "account-page" } },
    h("div", { class: "page-head" }, h("h1", null, "Account")),
    h("section", { class: "panel" },
      h("table", { class: "table kv account-kv" }, h("tbody", null,
        h("tr", null, h("th", null, "name"), h("td", { dataset: { testid: "account-name" } }, user.name)),
        h("tr", null, h("th", null, "display name"), h("td", null, user.display_name || "—")),
        h("tr", null, h("th", null, "email"), h("td", null, user.email || "—")),
        h("tr", null, h("th", null, "server admin"), h("td", null, user.is_admin ? "yes" : "no")),
        h("tr", null, h("th", null, "last login"), h("td", null, fmtDateTime(user.last_login_at))),
        h("tr", null, h("th", null, "projects"), h("td", null, roles.length
          ? roles.map(([p, r], i) => [i ? ", " : "", p, h("span", { class: "muted" }, ` (${r})`)])
          : h("span", { class: "muted" }, user.is_admin ? "all (server admin)" : "none yet")))))),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "Change password")),
      h("form", { class: "stack-form", novalidate: true, dataset: { testid: "password-form" }, on: { submit } },
        user.has_password ? field("current password", current) : h("p", { class: "muted small" }, "You have no password yet (you logged in by a link or single sign-on): set one here."),
        field("new password", next), field("new password again", again),
        error,
        h("div", { class: "form-actions" }, submitBtn)),
      h("p", { class: "muted small" }, "Changing your password logs out your other sessions."))));
}
