// Parallel coordinates in plain SVG: one vertical axis per column (parameters, then the chosen
// metric last), one line per run coloured by that metric. Hovering a line names its run (and
// highlights it), clicking it opens the run. Dragging along an axis picks a range on it (a
// brush); only the runs inside every picked range stay coloured, the status line under the plot
// counts them and offers to compare them; clicking an axis without dragging clears its range.
// Ranges are kept in data units per column on the box, so a redraw (another metric chosen, new
// results) keeps those of the columns still drawn.
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
export function drawParcoords(box, dims, rows, { open, compare, height = 320 } = {}) {
  const width = Math.max(360, box.clientWidth || 900);
  // Room for the first axis' tick labels (left of it) and the last axis' title (centred on it).
  const m = { l: 70, r: 70, t: 40, b: 28 };
  const plotH = height - m.t - m.b;
  const step = dims.length > 1 ? (width - m.l - m.r) / (dims.length - 1) : 0;
  const xOf = (i) => (dims.length > 1 ? m.l + i * step : width / 2);
  const bottom = m.t + plotH;
  // Per column: y of a value, and the value range [a, b] a pixel span [y0, y1] covers.
  const scales = [], spans = [];
  for (const d of dims) {
    if (!d.numeric) {
      const n = Math.max(1, d.cats.length - 1);
      scales.push((v) => (v === null ? null : bottom - (v / n) * plotH));
      spans.push((y0, y1) => [((bottom - y1) / plotH) * n, ((bottom - y0) / plotH) * n]);
      continue;
    }
    const finite = d.values.filter((v) => v !== null && Number.isFinite(v));
    const lo = finite.length ? Math.min(...finite) : 0, hi = finite.length ? Math.max(...finite) : 1;
    d.lo = lo; d.hi = hi;
    scales.push((v) => (v === null || !Number.isFinite(v) ? null : bottom - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * plotH));
    spans.push(hi > lo
      ? (y0, y1) => [lo + ((bottom - y1) / plotH) * (hi - lo), lo + ((bottom - y0) / plotH) * (hi - lo)]
      : (y0, y1) => ((y0 <= m.t + plotH / 2 && y1 >= m.t + plotH / 2) ? [lo, lo] : [Infinity, -Infinity]));
  }
  const color = dims[dims.length - 1];
  const cScale = (v) => (color.numeric ? (color.hi > color.lo ? (v - color.lo) / (color.hi - color.lo) : 0.5) : v / Math.max(1, color.cats.length - 1));
  const lines = svg("g", { class: "pc-lines" });
  const paths = [];
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
    paths.push({ path, ri });
  });

  const brushes = box.pcBrushes || (box.pcBrushes = new Map());
  for (const key of [...brushes.keys()]) if (!dims.some((d) => d.key === key)) brushes.delete(key);
  const status = h("p", { class: "muted small pc-status", dataset: { testid: "parcoords-status" } });
  const brushRects = dims.map(() => svg("rect", { class: "pc-brush", x: -100, y: 0, width: 0, height: 0 }));
  const inside = (ri) => dims.every((dim, i) => {
    const b = brushes.get(dim.key);
    if (!b) return true;
    const v = dim.values[ri];
    return v !== null && Number.isFinite(v) && v >= b[0] && v <= b[1];
  });
  const placeBrush = (i) => {
    const b = brushes.get(dims[i].key), rect = brushRects[i];
    if (!b) { rect.setAttribute("width", "0"); return; }
    const yOf = (v) => Math.max(m.t, Math.min(bottom, scales[i](v)));
    const top = b[1] === b[0] ? yOf(b[1]) - 4 : yOf(b[1]), low = b[1] === b[0] ? yOf(b[0]) + 4 : yOf(b[0]);
    rect.setAttribute("x", String(xOf(i) - 8)); rect.setAttribute("width", "16");
    rect.setAttribute("y", String(top)); rect.setAttribute("height", String(Math.max(2, low - top)));
  };
  const apply = (restack) => {
    let active = 0;
    const picked = [];
    for (const { path, ri } of paths) {
      const on = inside(ri);
      path.classList.toggle("pc-off", !on);
      if (on) { active += 1; picked.push(rows[ri].id); if (restack) lines.append(path); }
    }
    dims.forEach((_, i) => placeBrush(i));
    box.dataset.active = String(active);
    const total = paths.length;
    if (!brushes.size) {
      replace(status, `${total} run${total === 1 ? "" : "s"}. Drag along an axis to pick a range; click the axis to clear it.`);
      return;
    }
    const clearAll = h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "parcoords-clear" },
      on: { click: () => { brushes.clear(); apply(true); } } }, "Clear ranges");
    const cmp = compare && active > 1 && active <= 50
      ? h("button", { class: "btn btn-sm", type: "button", dataset: { testid: "parcoords-compare" }, on: { click: () => compare(picked) } }, `Compare these ${active}`)
      : null;
    replace(status, `${active} of ${total} run${total === 1 ? "" : "s"} in the ranges picked (${[...brushes.keys()].join(", ")}). `, cmp, " ", clearAll);
  };
  let root = null;
  // The pointer's y in the plot's own units (the SVG may be scaled by the page), on the axis.
  const plotY = (e) => {
    const ctm = root.getScreenCTM();
    const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(ctm ? ctm.inverse() : new DOMMatrix());
    // Within 4 px of an end is the end: the lowest and highest values sit exactly there.
    return p.y > bottom - 4 ? bottom : p.y < m.t + 4 ? m.t : p.y;
  };
  function brushAxis(hit, i) {
    let y0 = null;
    const pick = (y1) => {
      const [a, b] = spans[i](Math.min(y0, y1), Math.max(y0, y1));
      brushes.set(dims[i].key, [a, b]);
    };
    hit.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      hit.setPointerCapture(e.pointerId);
      y0 = plotY(e);
    });
    hit.addEventListener("pointermove", (e) => {
      if (y0 === null) return;
      const y1 = plotY(e);
      if (Math.abs(y1 - y0) >= 3) { pick(y1); apply(false); }
    });
    const end = (e) => {
      if (y0 === null) return;
      const y1 = plotY(e);
      if (Math.abs(y1 - y0) < 3) brushes.delete(dims[i].key); else pick(y1);
      y0 = null;
      apply(true);
    };
    hit.addEventListener("pointerup", end);
    hit.addEventListener("pointercancel", () => { y0 = null; apply(true); });
  }
  const axes = dims.map((dim, i) => {
    const x = xOf(i);
    const ticks = dim.numeric
      ? [[dim.lo, m.t + plotH], [dim.hi, m.t]].map(([v, y]) => svg("text", { x: x - 6, y: y + 4, "text-anchor": "end", class: "pc-tick" }, fmtNumber(v)))
      : dim.cats.map((c, k) => svg("text", { x: x - 6, y: scales[i](k) + 4, "text-anchor": "end", class: "pc-tick" }, short(c, 14)));
    const hit = svg("rect", { x: x - 12, y: m.t, width: 24, height: plotH, class: "pc-hit", "data-key": dim.key },
      svg("title", null, `Drag to pick a range of ${dim.key}; click to clear it`));
    brushAxis(hit, i);
    return svg("g", { class: "pc-axis", "data-key": dim.key },
      svg("line", { x1: x, x2: x, y1: m.t, y2: m.t + plotH, class: "pc-axis-line" }),
      svg("text", { x, y: m.t - 14, "text-anchor": "middle", class: "pc-label" }, short(dim.key, Math.max(8, Math.floor(Math.min(step || 280, 280) / 6.5))), svg("title", null, dim.key)),
      ticks, brushRects[i], hit);
  });
  root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "pc-svg", role: "img", "aria-label": "Parallel coordinates of the runs" },
    svg("style", null, ".pc-line{fill:none;stroke-width:1.6;opacity:.75;cursor:pointer}.pc-line:hover{stroke-width:3.5;opacity:1}"
      + ".pc-line.pc-off{stroke:#d1d5db;opacity:.35;pointer-events:none}.pc-hit{fill:transparent;cursor:ns-resize}.pc-brush{fill:#2563eb;fill-opacity:.18;stroke:#2563eb;stroke-width:1}"
      + ".pc-axis-line{stroke:#6b7280;stroke-width:1}.pc-label{font-size:11px;font-weight:600;fill:#3b4252}.pc-tick{font-size:10px;fill:#6b7280;paint-order:stroke;stroke:#fff;stroke-width:3px}"),
    lines, axes);
  replace(box, h("div", { class: "table-wrap" }, root), status);
  box.dataset.dims = String(dims.length);
  box.dataset.lines = String(lines.childElementCount);
  apply(true);
}
