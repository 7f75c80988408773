// Login page: name (or email) and password, single sign-on when the server has it, and the
// one-time login links (`#/login?link=<secret>`: the secret sits in the fragment so no server
// log sees it; it is taken out of the address bar before anything else happens).

import { h, replace } from "../dom.js";
import { account, loadMe, safeNext } from "../api.js";

function nextOf(query) {
  return safeNext(query.get("next") || "") || "#/runs";
}

export async function render(root, _params, query) {
  const link = query.get("link");
  const next = nextOf(query);
  if (link) {
    // Out of the address bar (and the history) at once: the link works one time only.
    const rest = new URLSearchParams(query);
    rest.delete("link");
    history.replaceState(null, "", `${location.pathname}${location.search}#/login${rest.toString() ? "?" + rest : ""}`);
  }

  let me = null;
  try { me = await loadMe(); } catch { me = null; }

  const error = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "login-error" } });
  const showError = (msg) => { error.hidden = false; error.textContent = msg; };
  const card = h("div", { class: "login-card", dataset: { testid: "login-page" } });
  replace(root, h("div", { class: "page login-page" }, card));

  if (link) {
    replace(card, h("h1", null, "Logging in…"), h("p", { class: "muted" }, "Checking your login link."), error);
    try {
      await account.loginWithLink(link);
      await loadMe();
      location.hash = next;
      return;
    } catch (err) {
      replace(card);
      showError(err.status === 429 ? err.message : err.message || "This login link did not work.");
      me = await loadMe().catch(() => me);
    }
  }

  if (me && me.authenticated && !link) {
    // Already logged in (or no accounts exist yet): nothing to do here.
    if (me.open) {
      replace(card, h("h1", null, "No login needed"),
        h("p", null, "No accounts exist on this server yet, so the dashboard is open to this machine (single-user mode). ",
          "Create an admin with ", h("code", null, "runyard user create NAME --admin"), " to turn on logins."),
        h("a", { class: "btn btn-primary", href: next }, "Go to the dashboard"));
      return;
    }
    location.replace(next);
    return;
  }

  const login = h("input", { id: "login-name", class: "input", name: "username", autocomplete: "username", required: true, dataset: { testid: "login-name" } });
  const password = h("input", { id: "login-password", class: "input", type: "password", name: "password", autocomplete: "current-password", required: true, dataset: { testid: "login-password" } });
  const submitBtn = h("button", { class: "btn btn-primary login-submit", type: "submit", dataset: { testid: "login-submit" } }, "Log in");

  async function submit(e) {
    e.preventDefault();
    error.hidden = true;
    if (!login.value.trim() || !password.value) { showError("Enter your name (or email) and password."); return; }
    submitBtn.disabled = true;
    submitBtn.textContent = "Logging in…";
    try {
      await account.login(login.value.trim(), password.value);
      await loadMe();
      location.hash = next;
    } catch (err) {
      showError(err.message);
      password.value = "";
      password.focus();
    } finally {
      submitBtn.disabled = false;
      submitBtn.textContent = "Log in";
    }
  }

  const sso = me && me.sso ? h("div", { class: "login-sso" },
    h("a", { class: "btn login-sso-btn", href: `${me.sso.url}?next=${encodeURIComponent("/" + next)}`, dataset: { testid: "login-sso" } }, `Log in with ${me.sso.name || "single sign-on"}`),
    h("div", { class: "login-or" }, h("span", null, "or"))) : null;

  replace(card,
    h("div", { class: "login-brand" }, h("span", { class: "brand-mark" }, "▲"), " Runyard"),
    h("h1", null, "Log in"),
    error,
    sso,
    h("form", { class: "login-form", novalidate: true, dataset: { testid: "login-form" }, on: { submit } },
      h("div", { class: "field" }, h("label", { class: "field-label", for: "login-name" }, "Name or email"), login),
      h("div", { class: "field" }, h("label", { class: "field-label", for: "login-password" }, "Password"), password),
      submitBtn),
    h("p", { class: "muted small login-help" }, "No password yet? Ask an admin for a one-time login link."));
  login.focus();
}
