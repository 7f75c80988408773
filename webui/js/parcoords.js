// Parallel coordinates in plain SVG: one vertical axis per column (parameters, then the chosen
// metric last), one line per run coloured by that metric. Hovering a line names its run (and
// highlights it), clicking it opens the run.
//
// Why not plotly's `parcoords`: it draws with WebGL only (a blank "WebGL is not supported"
// box in a browser without it, such as a headless or GPU-less one), and it has no per-line
// hover or click. A thousand runs by a dozen axes are a thousand <path>s: cheap in SVG.
// Every label is a text node (run names and param values are user text).

import { h, svg, replace } from "./dom.js";
import { fmtNumber } from "./format.js";

// Viridis, 5 stops.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

export function viridis(t) {
  if (!Number.isFinite(t)) return "#9ca3af";
  const x = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

/**
 * dims: [{key, numeric, cats: [str], values: [number|null]}] (categories as indexes into cats);
 * rows: [{id, name}] in the same order as each dim's values. The last dim colours the lines.
 */
export function drawParcoords(box, dims, rows, { open, height = 320 } = {}) {
  const width = Math.max(360, box.clientWidth || 900);
  // Room for the first axis' tick labels (left of it) and the last axis' title (centred on it).
  const m = { l: 70, r: 70, t: 40, b: 28 };
  const plotH = height - m.t - m.b;
  const step = dims.length > 1 ? (width - m.l - m.r) / (dims.length - 1) : 0;
  const xOf = (i) => (dims.length > 1 ? m.l + i * step : width / 2);
  const scales = dims.map((d) => {
    if (!d.numeric) {
      const n = Math.max(1, d.cats.length - 1);
      return (v) => (v === null ? null : m.t + plotH - (v / n) * plotH);
    }
    const finite = d.values.filter((v) => v !== null && Number.isFinite(v));
    const lo = finite.length ? Math.min(...finite) : 0, hi = finite.length ? Math.max(...finite) : 1;
    d.lo = lo; d.hi = hi;
    return (v) => (v === null || !Number.isFinite(v) ? null : m.t + plotH - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * plotH);
  });
  const color = dims[dims.length - 1];
  const cScale = (v) => (color.numeric ? (color.hi > color.lo ? (v - color.lo) / (color.hi - color.lo) : 0.5) : v / Math.max(1, color.cats.length - 1));
  const lines = svg("g", { class: "pc-lines" });
  rows.forEach((r, ri) => {
    let d = "", pen = false;
    dims.forEach((dim, i) => {
      const y = scales[i](dim.values[ri]);
      if (y === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${xOf(i).toFixed(1)},${y.toFixed(1)}`;
      pen = true;
    });
    if (!d) return;
    const cv = color.values[ri];
    const label = [`#${r.id} ${r.name}`, ...dims.map((dim) => `${dim.key}: ${dim.values[ri] === null ? "—" : dim.numeric ? fmtNumber(dim.values[ri]) : dim.cats[dim.values[ri]]}`)].join("\n");
    const path = svg("path", { d, class: "pc-line", stroke: cv === null ? "#9ca3af" : viridis(cScale(cv)), "data-run-id": r.id }, svg("title", null, label));
    if (open) path.addEventListener("click", () => open(r.id));
    path.addEventListener("mouseenter", () => { lines.append(path); box.dataset.hover = String(r.id); });
    lines.append(path);
  });
  const axes = dims.map((dim, i) => {
    const x = xOf(i);
    const ticks = dim.numeric
      ? [[dim.lo, m.t + plotH], [dim.hi, m.t]].map(([v, y]) => svg("text", { x: x - 6, y: y + 4, "text-anchor": "end", class: "pc-tick" }, fmtNumber(v)))
      : dim.cats.map((c, k) => svg("text", { x: x - 6, y: scales[i](k) + 4, "text-anchor": "end", class: "pc-tick" }, short(c, 14)));
    return svg("g", { class: "pc-axis", "data-key": dim.key },
      svg("line", { x1: x, x2: x, y1: m.t, y2: m.t + plotH, class: "pc-axis-line" }),
      svg("text", { x, y: m.t - 14, "text-anchor": "middle", class: "pc-label" }, short(dim.key, Math.max(8, Math.floor(Math.min(step || 280, 280) / 6.5))), svg("title", null, dim.key)),
      ticks);
  });
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "pc-svg", role: "img", "aria-label": "Parallel coordinates of the runs" },
    svg("style", null, ".pc-line{fill:none;stroke-width:1.6;opacity:.75;cursor:pointer}.pc-line:hover{stroke-width:3.5;opacity:1}"
      + ".pc-axis-line{stroke:#6b7280;stroke-width:1}.pc-label{font-size:11px;font-weight:600;fill:#3b4252}.pc-tick{font-size:10px;fill:#6b7280;paint-order:stroke;stroke:#fff;stroke-width:3px}"),
    lines, axes);
  replace(box, h("div", { class: "table-wrap" }, root));
  box.dataset.dims = String(dims.length);
  box.dataset.lines = String(lines.childElementCount);
}
