// Runs page: the table of runs with live status, filters, sort, metric columns, compare; the
// query box (with completion), field columns, grouping, tags, bulk actions, saved views and the
// state in the address (runquery.js, runviews.js), keyboard navigation (runkeys.js), and
// parameter plots of the results (paramplots.js).

import { h, replace, toast } from "../dom.js";
import { runs as runsApi, projects as projectsApi, recipes as recipesApi } from "../api.js";
import { LiveStream } from "../sse.js";
import { canSubmitSomewhere } from "../perm.js";
import { tagChip } from "../tagsnotes.js";
import { queryErrorView, bindKeyboard } from "../runkeys.js";
import { attachCompletion, columnLabel, columnOptions, completions, groupRow, queryApi, stateHash } from "../runquery.js";
import { bulkBar, viewsBar } from "../runviews.js";
import { ParamPlots, plotFields, rowsFromValues } from "../paramplots.js";
import { fmtDateTime, fmtDuration, fmtNumber, fmtRelative, plural, runDuration, STATUSES } from "../format.js";

const PAGE_SIZE = 100;
// Fields the API sorts by (sort=[-]field or [-]metric:<key>); others are sorted in the page.
// Sorted by the server over all matching runs (project and duration since GET /runs sorts by them too);
// anything else (or an older server answering 422) is sorted here within the page.
const SERVER_SORTS = new Set(["id", "name", "project", "duration", "created_at", "updated_at", "started_at", "ended_at", "status", "recipe"]);
const serverSortable = (sort) => { const f = sort.replace(/^-/, ""); return SERVER_SORTS.has(f) || f.startsWith("metric:") || /^(params|hparams|metrics)\./.test(f); };
const FIELDS_KEY = "runyard.columns";
const COLS_KEY = "runyard.metricColumns";

// Filters survive navigating away and back.
// columns: query fields (params.lr, metrics.val_loss.min) shown with their values; groupBy: a field.
const state = { q: "", status: "", project: "", recipe: "", sort: "-created_at", offset: 0, selected: new Set(), columns: null, groupBy: "" };

export function statusBadge(status) {
  return h("span", { class: ["badge", `badge-${status}`], dataset: { status } }, status);
}

const BASE_COLUMNS = [
  { id: "status", label: "Status", sort: "status" },
  { id: "name", label: "Name", sort: "name" },
  { id: "project", label: "Project", sort: "project" },
  { id: "recipe", label: "Recipe", sort: "recipe" },
  { id: "started", label: "Started", sort: "started_at" },
  { id: "duration", label: "Duration", sort: "duration", num: true },
];

function loadMetricColumns() {
  try { const v = JSON.parse(localStorage.getItem(COLS_KEY) || "null"); return Array.isArray(v) ? v : null; } catch { return null; }
}

function clientSort(items, sort) {
  const desc = sort.startsWith("-");
  const field = desc ? sort.slice(1) : sort;
  const val = (r) => {
    if (field.startsWith("metric:")) { const v = r.last_metrics && r.last_metrics[field.slice(7)]; return v === undefined || v === null ? null : Number(v); }
    if (field === "duration") return runDuration(r);
    return r[field] ?? null;
  };
  return [...items].sort((a, b) => {
    const x = val(a), y = val(b);
    if (x === null && y === null) return 0;
    if (x === null) return 1;
    if (y === null) return -1;
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
    return desc ? -c : c;
  });
}

export async function render(root, _params, query) {
  // #/runs?project=<name> (from the projects page) opens the list filtered to that project.
  if (query && query.has("project")) { state.project = query.get("project"); state.offset = 0; }
  if (state.columns === null) { try { state.columns = JSON.parse(localStorage.getItem(FIELDS_KEY) || "[]"); } catch { state.columns = []; } }
  // A shared address: #/runs?view=<id> (a saved view) or the unsaved state itself.
  let sharedView = null;
  if (query && query.has("view")) {
    sharedView = await queryApi.view(query.get("view")).catch((err) => { toast(`Could not open the view: ${err.message}`, "error"); return null; });
    if (sharedView) {
      applyView(sharedView);
      // A view belongs to a project: show that project's runs and views.
      const p = ((await projectsApi().catch(() => [])) || []).find((x) => x.id === sharedView.project_id);
      if (p) state.project = p.name;
    }
  } else if (query && ["q", "columns", "sort", "group_by"].some((k) => query.has(k))) {
    state.q = query.get("q") || "";
    state.columns = (query.get("columns") || "").split(",").filter(Boolean);
    state.sort = query.get("sort") || "-created_at";
    state.groupBy = query.get("group_by") || "";
    state.offset = 0;
  }
  function applyView(v) {
    state.q = v.query || "";
    state.columns = [...(v.columns || [])];
    state.sort = v.sort || "-created_at";
    state.groupBy = v.group_by || "";
    state.offset = 0;
  }
  let keys = null;
  let groups = null;
  let metricCols = loadMetricColumns();
  let items = [];
  let total = 0;
  let knownKeys = new Set();
  let serverSorts = true;
  let loadSeq = 0;
  let reloadTimer = null;

  const tbody = h("tbody");
  const thead = h("thead");
  const countEl = h("span", { class: "muted", dataset: { testid: "run-count" } });
  const pager = h("div", { class: "pager" });
  const compareBtn = h("button", { class: "btn btn-primary", type: "button", disabled: true, dataset: { testid: "compare-selected" },
    on: { click: () => { location.hash = `#/compare?ids=${[...state.selected].join(",")}`; } } }, "Compare");
  const views = viewsBar({ state, projectId: () => (state.project ? projectIds.get(state.project) : undefined),
    apply: (v) => { sharedView = v; applyView(v); search.value = state.q; renderFieldChooser(); load(); },
    saved: (v) => { sharedView = v; history.replaceState(null, "", `#/runs?view=${v.id}`); } });
  // "Select all N runs that match": the selection is then the query (as it was when chosen), not
  // ids; it ends when the selection is cleared, a row unticked, the filters change or after an action.
  let allMatching = null; // {key, query}
  const filterKey = () => JSON.stringify([state.q || "", state.status || "", state.project || "", state.recipe || ""]);
  const matchQuery = () => {
    if (state.project && !projectIds.has(state.project)) return null;
    return { project: state.project ? projectIds.get(state.project) : null, q: state.q || "",
      ...(state.status ? { status: state.status } : {}), ...(state.recipe ? { recipe: state.recipe } : {}) };
  };
  function endMatching(keepPage) {
    if (!allMatching) return;
    allMatching = null;
    // Unticking one row while all matched leaves the page's rows selected (as Gmail does).
    if (keepPage) { state.selected.clear(); for (const r of items) state.selected.add(r.id); }
  }
  function clearSelection() {
    allMatching = null;
    state.selected.clear();
    renderHead(); renderBody(); updateCompare();
  }
  const bulk = bulkBar({ selected: () => [...state.selected],
    matching: () => (allMatching ? { query: allMatching.query, expected: total } : null),
    selectMatching: () => { const query = matchQuery(); if (!query) return; allMatching = { key: filterKey(), query }; renderHead(); renderBody(); updateCompare(); },
    clearSelection,
    done: (action) => {
      if (action === "delete" || allMatching) { allMatching = null; state.selected.clear(); }
      updateCompare(); load(); loadKeys();
    } });

  const search = h("input", { type: "search", class: "input", placeholder: "Search names, or a query: params.lr < 0.01 and tag:baseline", value: state.q, dataset: { testid: "search" },
    spellcheck: false, autocomplete: "off", "aria-describedby": "query-error",
    on: { input: (e) => { state.q = e.target.value; state.offset = 0; scheduleReload(250); } } });
  const searchBox = attachCompletion(search, () => completions(keys));
  // Columns of any query field (params, hyperparameters, a metric's last/min/max), from the keys present.
  const addField = h("select", { class: "input input-sm", "aria-label": "Add a column", dataset: { testid: "add-column" },
    on: { change: (e) => { if (e.target.value) setFields([...state.columns, e.target.value]); } } });
  const fieldChips = h("span", { class: "col-chips", dataset: { testid: "column-chips" } });
  const groupSel = h("select", { class: "input input-sm", "aria-label": "Group by", dataset: { testid: "group-by" },
    on: { change: (e) => { state.groupBy = e.target.value; state.offset = 0; load(); } } });
  function renderFieldChooser() {
    replace(fieldChips, state.columns.map((f) => h("span", { class: "chip chip-sm", dataset: { field: f } }, columnLabel(f),
      h("button", { type: "button", class: "chip-x", title: `Remove the ${f} column`, "aria-label": `Remove column ${f}`,
        on: { click: () => setFields(state.columns.filter((x) => x !== f)) } }, "×"))));
    replace(addField, columnOptions(keys, state.columns));
    const k = keys || {};
    const fields = ["status", "project", "recipe", "user", ...(k.params || []).map((p) => `params.${p}`), ...(k.hparams || []).map((p) => `hparams.${p}`)];
    if (state.groupBy && !fields.includes(state.groupBy)) fields.push(state.groupBy);
    replace(groupSel, h("option", { value: "" }, "No grouping"), fields.map((f) => h("option", { value: f, selected: f === state.groupBy }, `Group by ${f}`)));
  }
  function setFields(cols) {
    state.columns = [...new Set(cols)];
    localStorage.setItem(FIELDS_KEY, JSON.stringify(state.columns));
    renderFieldChooser();
    load();
  }
  async function loadKeys() {
    keys = await queryApi.keys(state.project || undefined).catch(() => keys);
    renderFieldChooser();
  }
  const mkSelect = (key, label, options) => h("select", { class: "input", dataset: { testid: `filter-${key}` }, "aria-label": label,
    on: { change: (e) => { state[key] = e.target.value; state.offset = 0; load(); } } },
    h("option", { value: "" }, `${label}: all`), options.map((o) => h("option", { value: o, selected: o === state[key] }, o)));
  const statusSel = mkSelect("status", "Status", STATUSES);
  const projectSel = mkSelect("project", "Project", state.project ? [state.project] : []);
  const recipeSel = mkSelect("recipe", "Recipe", state.recipe ? [state.recipe] : []);

  // Metric columns: chips for the chosen keys, a select to add one (keys seen in the listed
  // runs), or type any key and press Enter.
  const colChips = h("span", { class: "col-chips", dataset: { testid: "metric-column-chips" } });
  const addCol = h("select", { class: "input input-sm", "aria-label": "Add a metric column", dataset: { testid: "add-metric-column" },
    on: { change: (e) => { if (e.target.value) setMetricCols([...(metricCols || []), e.target.value]); } } });
  const colsInput = h("input", { class: "input input-sm", placeholder: "or type a key", dataset: { testid: "metric-columns" }, size: 12,
    on: { keydown: (e) => { if (e.key === "Enter" && e.target.value.trim()) { setMetricCols([...(metricCols || []), ...e.target.value.split(",").map((x) => x.trim()).filter(Boolean)]); e.target.value = ""; } } } });

  function renderColumnChooser() {
    const chosen = metricCols || [];
    replace(colChips, chosen.map((k) => h("span", { class: "chip chip-sm", dataset: { key: k } }, k,
      h("button", { type: "button", class: "chip-x", title: `Remove the ${k} column`, "aria-label": `Remove column ${k}`,
        on: { click: () => setMetricCols(chosen.filter((x) => x !== k)) } }, "×"))));
    const options = [...knownKeys].filter((k) => !chosen.includes(k)).sort();
    replace(addCol, h("option", { value: "" }, "+ metric column"), options.map((k) => h("option", { value: k }, k)));
  }

  function setMetricCols(cols) {
    metricCols = [...new Set(cols)];
    localStorage.setItem(COLS_KEY, JSON.stringify(metricCols));
    renderColumnChooser();
    load();
  }

  // The selected project's members page (roles), next to the project filter.
  const projectIds = new Map();
  const membersLink = h("a", { class: "btn btn-sm", hidden: true, dataset: { testid: "project-members" }, title: "Who may see and change this project's runs" }, "Members");
  function updateMembersLink() {
    const pid = state.project ? projectIds.get(state.project) : undefined;
    membersLink.hidden = pid === undefined;
    if (pid !== undefined) membersLink.href = `#/projects/${pid}/members`;
  }
  projectSel.addEventListener("change", () => { updateMembersLink(); loadKeys(); views.refresh(); });

  // Options for project / recipe filters.
  projectsApi().then((ps) => {
    for (const p of ps) projectIds.set(p.name, p.id);
    fillSelect(projectSel, "Project", [...ps.map((p) => p.name), ...(state.project ? [state.project] : [])], state.project);
    updateMembersLink();
    views.refresh(sharedView);
  }).catch(() => {});
  recipesApi().then((rs) => fillSelect(recipeSel, "Recipe", [...rs.map((r) => r.name), "external"], state.recipe)).catch(() => {});

  function fillSelect(sel, label, values, current) {
    replace(sel, h("option", { value: "" }, `${label}: all`), [...new Set(values)].map((v) => h("option", { value: v, selected: v === current }, v)));
  }

  // Parameter plots of the query's results (up to 1,000 runs), on demand.
  const plotsBox = h("section", { class: "panel", hidden: true, dataset: { testid: "results-plots" } });
  let plots = null;
  const plotBtn = h("button", { class: "btn", type: "button", dataset: { testid: "plot-results" }, title: "Parallel coordinates and a scatter of the matching runs (up to 1,000)",
    on: { click: () => (plotsBox.hidden ? showPlots() : hidePlots()) } }, "Plot results");
  function hidePlots() { plotsBox.hidden = true; if (plots) plots.destroy(); plots = null; replace(plotsBox); plotBtn.textContent = "Plot results"; }
  async function showPlots() {
    plotBtn.textContent = "Hide plots";
    plotsBox.hidden = false;
    replace(plotsBox, h("div", { class: "panel-head" }, h("h2", null, "Parameter plots")), h("p", { class: "muted small" }, "Loading…"));
    try {
      const k = await queryApi.keys(state.project || undefined);
      const fields = plotFields(k);
      const res = await runsApi.list({ q: state.q, status: state.status, project: state.project, recipe: state.recipe, sort: state.sort, limit: 1000, columns: fields.length ? fields : undefined });
      if (plotsBox.hidden) return;
      if (plots) plots.destroy();
      plots = new ParamPlots(rowsFromValues(res.items));
      replace(plotsBox, h("div", { class: "panel-head" }, h("h2", null, "Parameter plots"),
        h("span", { class: "muted" }, res.total > res.items.length ? `the first ${res.items.length} of ${res.total} matching runs` : `${res.items.length} matching runs`)), plots.el);
      const Plotly = window.Plotly || (await new Promise((resolve) => { const t = setInterval(() => { if (window.Plotly) { clearInterval(t); resolve(window.Plotly); } }, 50); }));
      await plots.draw(Plotly);
    } catch (err) {
      replace(plotsBox, h("p", { class: "error-box" }, `Could not plot the runs: ${err.message}`));
    }
  }
  const table = h("table", { class: "table runs-table", tabindex: "0", dataset: { testid: "runs-table" } }, thead, tbody);
  const queryError = h("div", { class: "error-box query-error", id: "query-error", hidden: true, role: "alert", dataset: { testid: "query-error" } });
  replace(root, h("div", { class: "page page-wide" },
    h("div", { class: "page-head" },
      h("h1", null, "Runs"), countEl,
      h("span", { class: "spacer" }),
      plotBtn,
      compareBtn,
      canSubmitSomewhere() ? h("a", { class: "btn", href: "#/new", dataset: { testid: "new-run" } }, "New run") : null),
    h("div", { class: "toolbar" }, searchBox, statusSel, projectSel, membersLink, recipeSel, h("span", { class: "ctl ctl-grow" }, "Columns", colChips, addCol, colsInput)),
    h("div", { class: "toolbar" }, h("span", { class: "ctl ctl-grow" }, "Fields", fieldChips, addField), groupSel, views.el),
    queryError,
    bulk.el,
    bulk.banner,
    plotsBox,
    h("div", { class: "table-wrap" }, table),
    pager));

  function columns() {
    return [...BASE_COLUMNS, ...(metricCols || []).map((k) => ({ id: `metric:${k}`, label: k, sort: `metric:${k}`, metric: k })),
      ...state.columns.map((f) => ({ id: `field:${f}`, label: columnLabel(f), sort: f, field: f }))];
  }

  function renderHead() {
    const selAll = h("input", { type: "checkbox", "aria-label": "Select all", dataset: { testid: "select-page" }, checked: items.length > 0 && (!!allMatching || items.every((r) => state.selected.has(r.id))),
      on: { change: (e) => {
        if (!e.target.checked && allMatching) { clearSelection(); return; }
        for (const r of items) e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id); renderBody(); updateCompare();
      } } });
    const desc = state.sort.startsWith("-");
    const active = desc ? state.sort.slice(1) : state.sort;
    replace(thead, h("tr", null, h("th", { class: "col-check" }, selAll),
      columns().map((c) => h("th", { class: ["sortable", (c.metric || c.num || c.field) && "num", active === c.sort && "sorted"], dataset: { sort: c.sort }, title: `Sort by ${c.label}`,
        on: { click: () => { state.sort = active === c.sort && !desc ? `-${c.sort}` : c.sort; state.offset = 0; load(); } } },
        c.label, h("span", { class: "sort-ind" }, active === c.sort ? (desc ? " ▼" : " ▲") : "")))));
  }

  function rowFor(run) {
    const check = h("input", { type: "checkbox", "aria-label": `Select run ${run.id}`, checked: !!allMatching || state.selected.has(run.id),
      on: { change: (e) => { toggleRow(run.id, e.target.checked); e.target.closest("tr").classList.toggle("selected", e.target.checked); } } });
    const cells = columns().map((c) => {
      switch (c.id) {
        case "status": return h("td", null, statusBadge(run.status));
        case "name": return h("td", { class: "cell-name" }, h("a", { href: `#/runs/${run.id}`, class: "run-link" }, run.name || `run ${run.id}`), h("span", { class: "run-id" }, `#${run.id}`),
          (run.tags || []).length ? h("span", { class: "row-tags" }, run.tags.map((t) => tagChip(t))) : null);
        case "project": return h("td", null, run.project);
        case "recipe": return h("td", null, h("code", null, run.recipe));
        case "started": return h("td", { title: fmtDateTime(run.started_at || run.created_at) }, run.started_at ? fmtRelative(run.started_at) : h("span", { class: "muted" }, `queued ${fmtRelative(run.created_at)}`));
        case "duration": return h("td", { class: "num cell-duration" }, fmtDuration(runDuration(run)));
        default: {
          if (c.field) {
            const v = run.values ? run.values[c.field] : undefined;
            const shown = v === undefined || v === null ? h("span", { class: "muted" }, "—") : typeof v === "number" || /^-?(NaN|Infinity)$/.test(v) ? fmtNumber(v) : String(v);
            return h("td", { class: typeof v === "number" ? "num" : "num mono", dataset: { field: c.field } }, shown);
          }
          const v = run.last_metrics ? run.last_metrics[c.metric] : undefined;
          return h("td", { class: "num", dataset: { metric: c.metric } }, v === undefined || v === null ? h("span", { class: "muted" }, "—") : fmtNumber(v));
        }
      }
    });
    return h("tr", { dataset: { runId: run.id, status: run.status }, class: (allMatching || state.selected.has(run.id)) && "selected" }, h("td", { class: "col-check" }, check), cells);
  }

  function toggleRow(id, on) {
    if (!on && allMatching) { endMatching(true); renderHead(); }
    on ? state.selected.add(id) : state.selected.delete(id);
    updateCompare();
    if (!on) { const head = thead.querySelector("input[type=checkbox]"); if (head) head.checked = false; }
  }

  function renderBody() {
    if (!items.length) {
      replace(tbody, h("tr", null, h("td", { colspan: columns().length + 1, class: "empty" },
        state.q || state.status || state.project || state.recipe ? "No run matches these filters." : "No runs yet. Start one from New run, or log one from a script with RunyardLogger.")));
    } else {
      const out = [];
      const span = BASE_COLUMNS.length;
      let last;
      for (const r of items) {
        if (state.groupBy && groups) {
          // The groups' values come back as text (a JSON param compared as a string): match them so.
          const v = r.values ? r.values[state.groupBy] ?? null : null;
          const key = v === null ? "\u0000null" : String(v);
          if (out.length === 0 || key !== last) {
            last = key;
            const g = groups.find((x) => (x.value === null || x.value === undefined ? "\u0000null" : String(x.value)) === key) || { value: v, count: "?", aggregates: {} };
            out.push(groupRow(g, columns(), span));
          }
        }
        out.push(rowFor(r));
      }
      replace(tbody, out);
    }
    countEl.textContent = plural(total, "run");
    replace(pager, total > PAGE_SIZE ? [
      h("button", { class: "btn btn-sm", disabled: state.offset === 0, on: { click: () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); load(); } } }, "‹ Previous"),
      h("span", { class: "muted" }, `${state.offset + 1}–${Math.min(total, state.offset + PAGE_SIZE)} of ${total}`),
      h("button", { class: "btn btn-sm", disabled: state.offset + PAGE_SIZE >= total, on: { click: () => { state.offset += PAGE_SIZE; load(); } } }, "Next ›"),
    ] : []);
  }

  function updateCompare() {
    const pageAll = items.length > 0 && items.every((r) => state.selected.has(r.id));
    bulk.update(state.selected.size, { pageAll, shown: items.length, total, canMatch: matchQuery() !== null });
    compareBtn.disabled = state.selected.size < 1;
    compareBtn.textContent = state.selected.size ? `Compare ${state.selected.size}` : "Compare";
  }

  async function load() {
    const seq = ++loadSeq;
    const fields = [...new Set([...state.columns, ...(state.groupBy ? [state.groupBy] : [])])];
    const query = { q: state.q, status: state.status, project: state.project, recipe: state.recipe, limit: PAGE_SIZE, offset: state.offset,
      metric_keys: metricCols && metricCols.length ? metricCols : undefined, columns: fields.length ? fields : undefined };
    const byServer = serverSorts && serverSortable(state.sort);
    query.sort = byServer ? state.sort : "-created_at";
    // Grouped: the rows in group order (then the group's aggregate row heads each group).
    if (state.groupBy) query.sort = state.groupBy;
    const numeric = fields.filter((f) => /^(params|hparams|metrics)\./.test(f) && f !== state.groupBy);
    let res;
    try {
      const groupsP = state.groupBy
        ? queryApi.groups({ group_by: state.groupBy, project: state.project || undefined, q: state.q || undefined, columns: numeric.length ? numeric : undefined })
        : Promise.resolve(null);
      [res, groups] = await Promise.all([runsApi.list(query), groupsP.then((g) => (g ? g.groups : null))]);
    } catch (err) {
      // A query the server cannot read: say why, and where (the column it names).
      if (err.status === 422 && err.field === "q") {
        if (seq === loadSeq) { queryError.hidden = false; replace(queryError, queryErrorView(state.q, err)); search.setAttribute("aria-invalid", "true"); }
        return;
      }
      if (serverSorts && err.status === 422) { serverSorts = false; return load(); }
      if (seq === loadSeq) toast(`Could not load runs: ${err.message}`, "error");
      return;
    }
    if (seq !== loadSeq) return;
    queryError.hidden = true;
    search.removeAttribute("aria-invalid");
    items = byServer ? res.items : clientSort(res.items, state.sort);
    total = res.total ?? items.length;
    if (allMatching && allMatching.key !== filterKey()) { allMatching = null; state.selected.clear(); }
    renderHead();
    renderBody();
    updateCompare();
    table.dataset.loaded = "1";
    table.dataset.grouped = state.groupBy ? "1" : "0";
    // The address names what is shown (a saved view's, until it is changed), to share it.
    const hash = sharedView && views.matches(sharedView, state) ? `#/runs?view=${sharedView.id}` : stateHash(state);
    if (location.hash !== hash && location.hash.startsWith("#/runs") && !/^#\/runs\/\d/.test(location.hash)) history.replaceState(null, "", hash);
    discoverKeys(!metricCols);
  }

  // Suggest metric columns from the most recent runs' keys; pick defaults the first time.
  const keysAsked = new Set();
  async function discoverKeys(pickDefaults) {
    // Keys of up to 8 listed runs not asked before (a run's keys rarely change after it starts).
    const fresh = items.filter((r) => !keysAsked.has(r.id) || r.status === "running").slice(0, 8);
    if (!fresh.length) return;
    for (const r of fresh) keysAsked.add(r.id);
    const lists = await Promise.all(fresh.map((r) => runsApi.metricKeys(r.id).catch(() => [])));
    const before = knownKeys.size;
    for (const l of lists) for (const k of l) knownKeys.add(k.key);
    if (knownKeys.size !== before) renderColumnChooser();
    if (pickDefaults && !metricCols && knownKeys.size) {
      const prefer = ["val_loss", "train_loss", "loss", "val_acc", "test_loss"];
      const picks = prefer.filter((k) => knownKeys.has(k)).slice(0, 3);
      setMetricCols(picks.length ? picks : [...knownKeys].sort().slice(0, 2));
    }
  }

  function scheduleReload(ms = 500) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, ms);
  }

  function matchesFilters(run) {
    if (state.status && run.status !== state.status) return false;
    if (state.project && run.project !== state.project) return false;
    if (state.recipe && run.recipe !== state.recipe) return false;
    // A query (anything but a plain word) is the server's to evaluate: reload rather than guess.
    if (state.q && (/[\s:=<>~()]/.test(state.q.trim()) || !(run.name || "").toLowerCase().includes(state.q.toLowerCase()))) return false;
    return true;
  }

  const stream = new LiveStream("/api/v1/events", {
    run: (ev) => {
      if (!ev || !ev.run) return;
      const run = ev.run;
      const idx = items.findIndex((r) => r.id === run.id);
      if (ev.action === "deleted") {
        if (idx >= 0) { items.splice(idx, 1); total -= 1; renderBody(); }
        state.selected.delete(run.id);
        updateCompare();
        return;
      }
      if (idx >= 0) {
        items[idx] = { ...items[idx], ...run, last_metrics: { ...(items[idx].last_metrics || {}), ...(run.last_metrics || {}) } };
        const old = tbody.querySelector(`tr[data-run-id="${run.id}"]`);
        if (old) old.replaceWith(rowFor(items[idx]));
        if (!matchesFilters(items[idx]) || state.sort.replace("-", "") === "status") scheduleReload(300);
      } else if (matchesFilters(run)) {
        scheduleReload(200);
      }
    },
  }, { onResync: () => load() });

  // Running durations tick; metric columns of running runs refresh every few seconds.
  const tick = setInterval(() => {
    for (const r of items) {
      if (r.status !== "running") continue;
      const cell = tbody.querySelector(`tr[data-run-id="${r.id}"] .cell-duration`);
      if (cell) cell.textContent = fmtDuration(runDuration(r));
    }
  }, 1000);
  const refresh = setInterval(() => {
    if (metricCols && metricCols.length && items.some((r) => r.status === "running")) load();
  }, 5000);

  renderColumnChooser();
  renderFieldChooser();
  loadKeys();
  renderHead();
  const unbindKeys = bindKeyboard(table, tbody, {
    toggle: (id, on) => toggleRow(id, on),
    open: (id) => { location.hash = `#/runs/${id}`; },
  });
  await load();

  return () => { hidePlots(); unbindKeys(); stream.close(); clearInterval(tick); clearInterval(refresh); clearTimeout(reloadTimer); };
}
