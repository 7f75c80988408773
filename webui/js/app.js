// Hash router: #/runs, #/new(?clone=<id>), #/runs/<id>, #/compare?ids=1,2, #/login,
// #/tokens, #/account, #/admin, #/projects, #/projects/<id>/members.
// Each page exports render(root, params, query) and may return a cleanup function
// (closing its live streams and timers) that runs before the next page renders.
//
// Who is logged in comes from GET /api/v1/me before any page renders: without a session
// (once accounts exist) every page but the login page sends you there, with `next` to come back.

import { h, replace, toast } from "./dom.js";
import { account, currentMe, forgetMe, loadMe, loginHash, onMeChange } from "./api.js";
import { canReadAudit, canSubmitSomewhere } from "./perm.js";
import * as runsPage from "./pages/runs.js";
import * as newRunPage from "./pages/newrun.js";
import * as runPage from "./pages/run.js";
import * as comparePage from "./pages/compare.js";
import * as loginPage from "./pages/login.js";
import * as tokensPage from "./pages/tokens.js";
import * as accountPage from "./pages/account.js";
import * as adminPage from "./pages/admin.js";
import * as projectsPage from "./pages/projects.js";

const routes = [
  [/^\/?$/, () => { location.replace("#/runs"); return null; }],
  [/^\/runs\/?$/, (m, q) => [runsPage, {}, q]],
  [/^\/new\/?$/, (m, q) => [newRunPage, {}, q]],
  [/^\/runs\/(\d+)\/?$/, (m, q) => [runPage, { id: Number(m[1]) }, q]],
  [/^\/compare\/?$/, (m, q) => [comparePage, {}, q]],
  [/^\/login\/?$/, (m, q) => [loginPage, {}, q]],
  [/^\/tokens\/?$/, (m, q) => [tokensPage, {}, q]],
  [/^\/account\/?$/, (m, q) => [accountPage, {}, q]],
  [/^\/admin\/?$/, (m, q) => [adminPage, {}, q]],
  [/^\/projects\/?$/, (m, q) => [projectsPage, {}, q]],
  [/^\/projects\/(\d+)\/members\/?$/, (m, q) => [projectsPage, { id: Number(m[1]) }, q]],
];
const PUBLIC_PATHS = /^\/login\/?$/;

let cleanup = null;
let renderSeq = 0;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

async function route() {
  const { path, query } = parseHash();
  const root = document.getElementById("app");
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  const seq = ++renderSeq;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", path.startsWith("/" + a.dataset.nav));
  }
  if (!PUBLIC_PATHS.test(path)) {
    // Roles may have changed since the last page: ask again (a failed request keeps the last answer).
    let me = null;
    try { me = await loadMe(); } catch (err) { console.error(err); }
    if (seq !== renderSeq) return;
    if (me && !me.authenticated) { location.replace(loginHash()); return; }
  }
  for (const [re, make] of routes) {
    const m = path.match(re);
    if (!m) continue;
    const target = make(m, query);
    if (!target) return;
    const [page, params, q] = target;
    replace(root, h("div", { class: "loading" }, "Loading…"));
    try {
      const result = await page.render(root, params, q);
      if (seq !== renderSeq) { if (typeof result === "function") result(); return; }
      cleanup = typeof result === "function" ? result : null;
    } catch (err) {
      console.error(err);
      if (seq === renderSeq) replace(root, h("div", { class: "page" }, h("div", { class: "error-box", role: "alert" }, err.message || String(err))));
    }
    return;
  }
  replace(root, h("div", { class: "page" }, h("div", { class: "error-box" }, `No page at ${path}.`), h("a", { href: "#/runs" }, "Go to runs")));
}

// ------------------------------------------------------------------ the header's user menu

export async function logout() {
  let answer = null;
  try { answer = await account.logout(); } catch (err) { if (err.status !== 401) { toast(err.message, "error"); return; } }
  forgetMe();
  // An SSO login also ends at the identity provider (its logout page comes back here).
  if (answer && answer.redirect) { location.href = answer.redirect; return; }
  location.hash = "#/login";
}

function renderUserArea(me) {
  const area = document.getElementById("user-area");
  if (!area) return;
  const authed = !!(me && me.authenticated);
  document.body.classList.toggle("anon", !!me && !authed);
  const navNew = document.getElementById("nav-new");
  if (navNew) navNew.hidden = authed && !canSubmitSomewhere();
  if (!me || !authed) { replace(area); return; }
  if (me.open) {
    replace(area, h("span", { class: "mode-note", dataset: { testid: "open-mode" },
      title: "No accounts exist yet, so anyone on this machine has full access without logging in. Create an admin with `runyard user create NAME --admin` to turn on logins." },
    "single-user mode"));
    return;
  }
  const user = me.user || {};
  const menu = h("details", { class: "usermenu", dataset: { testid: "user-menu" } });
  const close = () => { menu.open = false; };
  const item = (href, label, testid) => h("a", { href, class: "usermenu-item", dataset: { testid }, on: { click: close } }, label);
  append(menu,
    h("summary", { class: "usermenu-summary", title: user.email || user.name }, h("span", { class: "usermenu-name", dataset: { testid: "user-name" } }, user.display_name || user.name), h("span", { class: "usermenu-caret" }, "▾")),
    h("div", { class: "usermenu-list" },
      h("div", { class: "usermenu-who" }, h("div", null, user.display_name || user.name), h("div", { class: "muted small mono" }, user.name, me.is_admin ? " · server admin" : "")),
      item("#/tokens", "API tokens", "menu-tokens"),
      item("#/account", "Account", "menu-account"),
      me.is_admin ? item("#/admin", "Admin", "menu-admin") : canReadAudit() ? item("#/admin", "Audit log", "menu-audit") : null,
      h("button", { type: "button", class: "usermenu-item usermenu-logout", dataset: { testid: "logout" }, on: { click: () => { close(); logout(); } } }, "Log out")));
  replace(area, menu);
}

function append(el, ...children) { for (const c of children) if (c) el.append(c); }

document.addEventListener("click", (e) => {
  const menu = document.querySelector(".usermenu[open]");
  if (menu && !menu.contains(e.target)) menu.open = false;
});

onMeChange(renderUserArea);

// The server also serves index.html at /runs/<id> (the `url` of a run): map it to the hash route.
const direct = location.pathname.match(/^\/runs\/(\d+)\/?$/);
if (direct && !location.hash) history.replaceState(null, "", `/#/runs/${direct[1]}`);

window.addEventListener("hashchange", route);
route();
renderUserArea(currentMe());
