// Hash router: #/runs, #/new(?clone=<id>), #/runs/<id>, #/compare?ids=1,2.
// Each page exports render(root, params, query) and may return a cleanup function
// (closing its live streams and timers) that runs before the next page renders.

import { h, replace } from "./dom.js";
import * as runsPage from "./pages/runs.js";
import * as newRunPage from "./pages/newrun.js";
import * as runPage from "./pages/run.js";
import * as comparePage from "./pages/compare.js";

const routes = [
  [/^\/?$/, () => { location.replace("#/runs"); return null; }],
  [/^\/runs\/?$/, (m, q) => [runsPage, {}, q]],
  [/^\/new\/?$/, (m, q) => [newRunPage, {}, q]],
  [/^\/runs\/(\d+)\/?$/, (m, q) => [runPage, { id: Number(m[1]) }, q]],
  [/^\/compare\/?$/, (m, q) => [comparePage, {}, q]],
];

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

// The server also serves index.html at /runs/<id> (the `url` of a run): map it to the hash route.
const direct = location.pathname.match(/^\/runs\/(\d+)\/?$/);
if (direct && !location.hash) history.replaceState(null, "", `/#/runs/${direct[1]}`);

window.addEventListener("hashchange", route);
route();
