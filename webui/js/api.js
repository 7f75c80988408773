// Thin fetch wrapper for the REST API (/api/v1). Errors become ApiError with the
// server's sentence (`detail`), the offending `field` and, for 422s, the raw list.
//
// Accounts: who is logged in comes from GET /api/v1/me (cached here). Every change made with
// the session cookie carries its CSRF token as X-CSRF-Token (a 403 about CSRF refetches it and
// retries once); a 401 from any other call means the session ended: go to the login page.

export const API = "/api/v1";

let me = null;
let meAt = 0;
let mePending = null;
const meListeners = new Set();

/** The cached answer of GET /api/v1/me (null before the first load). */
export function currentMe() { return me; }

/** Called with the new `me` whenever it changes (the header's user menu). */
export function onMeChange(fn) { meListeners.add(fn); return () => meListeners.delete(fn); }

function setMe(value) {
  const before = JSON.stringify(me);
  me = value;
  meAt = Date.now();
  if (JSON.stringify(me) !== before) for (const fn of meListeners) { try { fn(me); } catch (e) { console.error(e); } }
}

/**
 * GET /api/v1/me, at most once per `maxAgeMs` (0: always). A failed request (server down)
 * keeps the cached answer; without one it throws.
 */
export async function loadMe({ maxAgeMs = 0 } = {}) {
  if (me && maxAgeMs > 0 && Date.now() - meAt < maxAgeMs) return me;
  if (mePending) return mePending;
  mePending = (async () => {
    try {
      const res = await fetch(`${API}/me`, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      setMe(await res.json());
    } catch (err) {
      if (!me) throw err;
    } finally {
      mePending = null;
    }
    return me;
  })();
  return mePending;
}

/** Forget who is logged in (after logout, or when the server says the session ended). */
export function forgetMe() { setMe({ authenticated: false, open: false, sso: me ? me.sso : null }); }

/** The login page's address for coming back to `hash` (only a `#/...` hash, never the login page). */
export function loginHash(hash = location.hash) {
  const next = safeNext(hash);
  return next && next !== "#/runs" ? `#/login?next=${encodeURIComponent(next)}` : "#/login";
}

/** `value` if it is a dashboard hash (`#/...`, not the login page itself), else null. */
export function safeNext(value) {
  if (typeof value !== "string" || !/^#\/[^\s\\]*$/.test(value) || value.startsWith("#//")) return null;
  if (/^#\/login(?:[/?]|$)/.test(value)) return null;
  return value;
}

export function goLogin() {
  if (/^#\/login(?:[/?]|$)/.test(location.hash)) return;
  location.hash = loginHash();
}

/** After a live stream broke: if the server now says nobody is logged in, go to the login page. */
export async function checkSession() {
  try {
    const res = await fetch(`${API}/me`, { cache: "no-store" });
    if (!res.ok) return;
    const now = await res.json();
    setMe(now);
    if (!now.authenticated) goLogin();
  } catch { /* server unreachable: the stream keeps retrying */ }
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);
const isAccountPath = (url) => url.startsWith(`${API}/me`) || url.startsWith(`${API}/auth/`);

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.detail;
    super(typeof detail === "string" ? detail : `Request failed (${status})`);
    this.status = status;
    this.body = body;
    this.field = body && body.field;
    // one error schema (server/errors.py): detail is a sentence, body validation's list is under errors
    this.errors = body && Array.isArray(body.errors) ? body.errors : null;
  }
}

export async function api(path, { method = "GET", body, query, signal, keepFloats = false } = {}) {
  let url = path.startsWith("/") ? path : `${API}/${path}`;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === "") continue;
      qs.set(k, Array.isArray(v) ? v.join(",") : String(v));
    }
    const s = qs.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  const send = async () => {
    const init = { method, signal, headers: {} };
    // The server takes changes only as JSON, also those without a body (cancel, logout): a form or
    // another site's page cannot send that type (server/webguard.py).
    if (body !== undefined || BODY_METHODS.has(method.toUpperCase())) init.headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = toJSONText(body);
    if (!SAFE.has(method.toUpperCase())) {
      if (!me) await loadMe().catch(() => null);
      if (me && me.csrf) init.headers["X-CSRF-Token"] = me.csrf;
    }
    return fetch(url, init);
  };
  let res = await send();
  let retried = false;
  for (;;) {
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = parseJSON(text, keepFloats); } catch { data = { detail: text }; }
    }
    if (res.ok) return data;
    const err = new ApiError(res.status, data);
    if (res.status === 403 && !retried && !SAFE.has(method.toUpperCase()) && /csrf/i.test(err.message)) {
      // The session changed under us (logged in again in another tab): fetch its token, try once more.
      retried = true;
      await loadMe().catch(() => null);
      if (me && me.csrf) { res = await send(); continue; }
    }
    if (res.status === 401 && !isAccountPath(url)) {
      forgetMe();
      goLogin();
    }
    throw err;
  }
}

// The API sends non-finite floats as "NaN" / "Infinity" / "-Infinity" strings; JSON.parse
// keeps them as strings and `toNumber` turns them back into numbers where values are read.
// keepFloats: a whole number written as a float (`1.0`) comes back as a FloatValue instead of
// the JS number 1, where the difference matters (a clone's `limit_train_batches: 1.0` is "all
// batches", `1` is one batch). Uses the reviver's source text (Chromium 114+).
function parseJSON(text, keepFloats = false) {
  if (!keepFloats) return JSON.parse(text);
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && Number.isInteger(value) && context && /[.eE]/.test(context.source || "") ? new FloatValue(value) : value);
}

/**
 * A number that must reach the server as a JSON float even when it is whole: JS has one
 * number type, so JSON.stringify(1.0) is "1", which a `int | float` field reads as the int 1.
 */
export class FloatValue {
  constructor(n) { this.n = Number(n); }
  get text() { return Number.isInteger(this.n) ? `${this.n}.0` : String(this.n); }
  toString() { return this.text; }
  valueOf() { return this.n; }
  toJSON() { return this.n; }
}

const FLOAT_MARK = "\u0000runyard-float:";

/** JSON text read with whole floats kept as FloatValues (`1.0` stays a float): for JSON typed in a form. */
export function parseJSONExact(text) { return parseJSON(text, true); }

/** JSON.stringify that writes FloatValues as floats (`1.0`); `indent` as JSON.stringify's. */
export function toJSONText(body, indent) {
  let marked = false;
  const text = JSON.stringify(body, function (key, value) {
    const raw = this[key];
    if (raw instanceof FloatValue) { marked = true; return FLOAT_MARK + raw.text; }
    return value;
  }, indent);
  if (!marked) return text;
  return text.replace(/"\\u0000runyard-float:([^"]+)"/g, "$1");
}

export function toNumber(v) {
  if (typeof v === "number") return v;
  if (v === "NaN" || v === null || v === undefined) return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return Number(v);
}

export const runs = {
  list: (query, signal) => api("runs", { query, signal }),
  get: (id, opts = {}) => api(`runs/${id}`, opts),
  create: (body) => api("runs", { method: "POST", body }),
  cancel: (id) => api(`runs/${id}/cancel`, { method: "POST" }),
  remove: (id) => api(`runs/${id}`, { method: "DELETE" }),
  rename: (id, name) => api(`runs/${id}`, { method: "PATCH", body: { name } }),
  resume: (id, checkpointId) => api(`runs/${id}/resume`, { method: "POST", body: checkpointId ? { checkpoint_id: checkpointId } : {} }),
  metricKeys: (id) => api(`runs/${id}/metric-keys`),
  metrics: (id, query, signal) => api(`runs/${id}/metrics`, { query, signal }),
  checkpoints: (id) => api(`runs/${id}/checkpoints`),
  // optional: 200 null (not a 404, a console error) while the run has no summary yet
  summary: (id) => api(`runs/${id}/summary`, { query: { optional: true } }),
  logs: (id, query) => api(`runs/${id}/logs`, { query }),
  // Code runs (issue 10): the schema its process recorded, and every run's reproducibility record.
  codeSchema: (id) => api(`runs/${id}/code-schema`),
  environment: (id) => api(`runs/${id}/environment`, { query: { optional: true } }),  // null while none
};

/** A path inside a snapshot, each segment escaped (a file may be named `a b#?.py`). */
const snapshotPath = (path) => String(path).split("/").map(encodeURIComponent).join("/");

export const snapshots = {
  list: (query) => api("snapshots", { query }),
  get: (id) => api(`snapshots/${id}`),
  file: (id, path) => api(`snapshots/${id}/files/${snapshotPath(path)}`),
  downloadUrl: (id) => `${API}/snapshots/${id}/download`,
};

export const recipes = () => api("recipes");
export const projects = () => api("projects");

export const account = {
  login: (login, password) => api("auth/login", { method: "POST", body: { login, password } }),
  loginWithLink: (token) => api("auth/link", { method: "POST", body: { token } }),
  logout: () => api("auth/logout", { method: "POST" }),
  changePassword: (current_password, new_password) => api("me/password", { method: "POST", body: { current_password, new_password } }),
  tokens: () => api("tokens"),
  createToken: (body) => api("tokens", { method: "POST", body }),
  revokeToken: (id) => api(`tokens/${id}`, { method: "DELETE" }),
  users: () => api("users"),
  createUser: (body) => api("users", { method: "POST", body }),
  updateUser: (id, body) => api(`users/${id}`, { method: "PATCH", body }),
  setPassword: (id, password) => api(`users/${id}/password`, { method: "POST", body: { password } }),
  loginLink: (id) => api(`users/${id}/login-link`, { method: "POST" }),
  audit: (query) => api("audit", { query }),
  members: (projectId) => api(`projects/${projectId}/members`),
  setMember: (projectId, user, role) => api(`projects/${projectId}/members/${encodeURIComponent(user)}`, { method: "PUT", body: { role } }),
  removeMember: (projectId, user) => api(`projects/${projectId}/members/${encodeURIComponent(user)}`, { method: "DELETE" }),
  quotas: (projectId) => api(`projects/${projectId}/quotas`),
  setQuotas: (projectId, body) => api(`projects/${projectId}/quotas`, { method: "PUT", body }),
};
export const downloadUrl = (ckptId) => `${API}/checkpoints/${ckptId}/download`;
export const removeCheckpoint = (ckptId) => api(`checkpoints/${ckptId}`, { method: "DELETE" });
