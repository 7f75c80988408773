// Formatting helpers shared by the pages.
import { toNumber, FloatValue } from "./api.js";

export function parseTime(iso) {
  if (!iso) return null;
  // The API sends UTC; tolerate a missing zone designator.
  const s = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z";
  const d = new Date(s);
  return isNaN(d) ? null : d;
}

const pad = (n) => String(n).padStart(2, "0");

/** "1 run", "2 runs": a count and its noun, singular for exactly one (plural: the noun's plural when not noun + "s"). */
export function plural(n, noun, pluralNoun) {
  return `${n} ${Number(n) === 1 ? noun : pluralNoun || noun + "s"}`;
}

export function fmtDateTime(iso) {
  const d = parseTime(iso);
  if (!d) return "—";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtRelative(iso) {
  const d = parseTime(iso);
  if (!d) return "—";
  const s = (Date.now() - d.getTime()) / 1000;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return fmtDateTime(iso).slice(0, 10);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60), r = s % 60;
  if (m < 60) return `${m}m ${pad(r)}s`;
  const hh = Math.floor(m / 60);
  return `${hh}h ${pad(m % 60)}m`;
}

/** Duration of a run, live for running ones (uses started_at and now). */
export function runDuration(run) {
  if (run.duration_s !== null && run.duration_s !== undefined && run.status !== "running") return run.duration_s;
  const start = parseTime(run.started_at);
  if (!start) return null;
  const end = parseTime(run.ended_at);
  return ((end ? end.getTime() : Date.now()) - start.getTime()) / 1000;
}

export function fmtNumber(v) {
  const x = toNumber(v);
  if (v === null || v === undefined) return "—";
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return x.toLocaleString("en-US");
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(3);
  return String(Number(x.toPrecision(4)));
}

export function fmtCount(n) {
  if (n === null || n === undefined) return "—";
  const x = Number(n);
  if (x >= 1e9) return (x / 1e9).toFixed(1) + " B";
  if (x >= 1e6) return (x / 1e6).toFixed(1) + " M";
  if (x >= 1e4) return (x / 1e3).toFixed(1) + " K";
  return x.toLocaleString("en-US");
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let x = Number(n), i = 0;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  return `${i === 0 ? x : x.toFixed(1)} ${units[i]}`;
}

/** Plain-value display for params tables (objects as compact JSON). */
export function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (v instanceof FloatValue) return v.text;
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : fmtNumber(v);
  return String(v);
}

export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
export const ACTIVE = new Set(["queued", "running"]);

/**
 * Text for plotly's titles, legends, hover labels and annotations, which render a subset of
 * HTML (`<a href>`, `<b>`, `<br>`, `<span style>`, entities): a run named
 * `<a href="http://x">evil</a>` must show as those characters, not as a link. Every user text
 * (run names, metric keys, project names, param values) given to plotly goes through this.
 */
export function plotlyText(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => PLOTLY_ENTITIES[c]);
}
// plotly decodes &amp; &lt; &gt; and numeric entities (not &quot;).
const PLOTLY_ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;" };
