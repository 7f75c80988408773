// Thin fetch wrapper for the REST API (/api/v1). Errors become ApiError with the
// server's sentence (`detail`), the offending `field` and, for 422s, the raw list.

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.detail;
    super(typeof detail === "string" ? detail : `Request failed (${status})`);
    this.status = status;
    this.body = body;
    this.field = body && body.field;
    this.errors = Array.isArray(detail) ? detail : null;
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
  const init = { method, signal, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = toJSONText(body);
  }
  const res = await fetch(url, init);
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = parseJSON(text, keepFloats); } catch { data = { detail: text }; }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
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

/** JSON.stringify that writes FloatValues as floats (`1.0`). */
export function toJSONText(body) {
  let marked = false;
  const text = JSON.stringify(body, function (key, value) {
    const raw = this[key];
    if (raw instanceof FloatValue) { marked = true; return FLOAT_MARK + raw.text; }
    return value;
  });
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
  resume: (id, checkpointId) => api(`runs/${id}/resume`, { method: "POST", body: checkpointId ? { checkpoint_id: checkpointId } : {} }),
  metricKeys: (id) => api(`runs/${id}/metric-keys`),
  metrics: (id, query, signal) => api(`runs/${id}/metrics`, { query, signal }),
  checkpoints: (id) => api(`runs/${id}/checkpoints`),
  summary: (id) => api(`runs/${id}/summary`),
  logs: (id, query) => api(`runs/${id}/logs`, { query }),
};

export const recipes = () => api("recipes");
export const projects = () => api("projects");
export const downloadUrl = (ckptId) => `${API}/checkpoints/${ckptId}/download`;
