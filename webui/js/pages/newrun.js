// New-run page: a form generated from the recipe's JSON schema (params) and the trainer
// schema; 422 errors go next to their fields; "Clone" (#/new?clone=<id>) prefills it.
// Source "Code from an earlier run": the snapshot and entry point of an earlier code run of
// the project, its params form generated from the schema that run's process recorded (a JSON
// editor until one is), posted as {"recipe": "code", "code": {snapshot_id, entry}, ...}.

import { h, replace, toast } from "../dom.js";
import { recipes as recipesApi, runs as runsApi, projects as projectsApi, FloatValue, parseJSONExact, toJSONText } from "../api.js";
import { canWrite } from "../perm.js";
import { describeEntry, entryLabel, gitLine, shortSha } from "../code.js";
import { fmtDateTime } from "../format.js";

const CODE = "code";

// Used only when the server's recipe carries no trainer_schema.
const FALLBACK_TRAINER_SCHEMA = {
  type: "object",
  properties: {
    max_epochs: { type: "integer", minimum: 1, default: 3, description: "Stop after this many epochs." },
    precision: { type: "string", enum: ["32-true", "16-mixed", "bf16-mixed", "64-true"], default: "32-true", description: "Numeric precision of training." },
    accelerator: { type: "string", enum: ["auto", "cpu", "gpu"], default: "auto", description: "Where to train." },
    devices: { anyOf: [{ type: "integer", minimum: -1 }, { type: "array", items: { type: "integer" } }, { const: "auto" }], default: "auto", description: "Devices: a count (one process each, DDP), a list of GPU ids, -1 (all the worker's GPUs) or auto." },
    limit_train_batches: { anyOf: [{ type: "integer" }, { type: "number" }], default: 1.0, description: "Fraction (float) or number (int) of training batches per epoch." },
    fast_dev_run: { anyOf: [{ type: "boolean" }, { type: "integer" }], default: false, description: "Run 1 (or n) batch of train/val to smoke-test the recipe." },
    early_stopping_monitor: { anyOf: [{ type: "string" }, { type: "null" }], default: null, description: "Metric to watch for early stopping (e.g. val_loss); empty disables it." },
    early_stopping_patience: { type: "integer", minimum: 0, default: 3, description: "Epochs without improvement before stopping." },
  },
};

// Trainer fields shown up front, in this order; the rest sit under "More trainer options".
// `devices` (a count, a list of ids like [0,1], -1 or auto) is how many GPUs (or CPU processes) the run takes.
const TRAINER_PRIMARY = ["max_epochs", "precision", "accelerator", "devices", "strategy", "limit_train_batches", "fast_dev_run",
  "early_stopping", "early_stopping_monitor", "early_stopping_patience", "early_stopping_mode", "checkpoint_monitor", "seed"];

function resolve(schema, root) {
  let s = schema || {};
  let guard = 0;
  while (s.$ref && guard++ < 20) {
    const path = s.$ref.replace(/^#\//, "").split("/");
    let t = root;
    for (const p of path) t = t && t[p];
    s = { ...(t || {}), ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "$ref")) };
  }
  if (s.allOf && s.allOf.length === 1) s = { ...resolve(s.allOf[0], root), ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "allOf")) };
  return s;
}

/** Classify a property schema into an input kind. */
function kindOf(s, root) {
  s = resolve(s, root);
  if (s.enum) return { kind: "enum", options: s.enum, nullable: false, schema: s };
  if (s.const !== undefined) return { kind: "enum", options: [s.const], schema: s };
  const variants = s.anyOf || s.oneOf;
  if (variants) {
    const vs = variants.map((v) => resolve(v, root));
    const nonNull = vs.filter((v) => v.type !== "null");
    const nullable = nonNull.length < vs.length;
    if (nonNull.length === 1) {
      const k = kindOf({ ...nonNull[0], default: s.default, description: s.description ?? nonNull[0].description, title: s.title }, root);
      return { ...k, nullable };
    }
    const types = nonNull.map((v) => v.enum ? v.enum.map((e) => JSON.stringify(e)).join("|") : v.type);
    return { kind: "union", types, nullable, schema: s };
  }
  const t = Array.isArray(s.type) ? s.type.filter((x) => x !== "null") : [s.type];
  if (t.length > 1) return { kind: "union", types: t, nullable: Array.isArray(s.type) && s.type.includes("null"), schema: s };
  switch (t[0]) {
    case "boolean": return { kind: "boolean", schema: s };
    case "integer": return { kind: "integer", schema: s };
    case "number": return { kind: "number", schema: s };
    case "string": return { kind: "string", schema: s };
    case "object": if (s.properties) return { kind: "object", schema: s }; return { kind: "json", schema: s };
    case "array": return { kind: "json", schema: s };
    default: return { kind: "json", schema: s };
  }
}

const SHORT = { integer: "int", number: "float", boolean: "bool", string: "text", array: "list", object: "dict" };

function typeLabel(k) {
  const opt = k.nullable ? ", optional" : "";
  switch (k.kind) {
    case "union": return k.types.map((t) => SHORT[t] || t).join(" | ") + opt;
    case "enum": return "choice" + opt;
    case "json": return "JSON";
    default: return (SHORT[k.kind] || k.kind) + opt;
  }
}

/** Parse a text value for a union field: bool, int, float, null, or string. */
function parseLoose(text, types) {
  const t = text.trim();
  if (t === "") return undefined;
  if (types.includes("boolean") && /^(true|false)$/i.test(t)) return t.toLowerCase() === "true";
  if ((types.includes("integer") || types.includes("number")) && /^[-+]?\d+$/.test(t)) return parseInt(t, 10);
  // "1.0" in an `int | float` field means the float (a fraction of batches), not the int 1.
  if (types.includes("number") && t !== "" && !isNaN(Number(t))) return Number.isInteger(Number(t)) ? new FloatValue(t) : Number(t);
  if (t === "null") return null;
  if (types.includes("array") || types.includes("object")) { try { return JSON.parse(t); } catch { /* keep text */ } }
  return t;
}

/**
 * Build the inputs of one schema group. Returns {el, fields}: `fields` maps a dotted
 * path ("params.lr") to {get(), set(v), showError(msg), row}.
 */
function buildGroup(prefix, schema, root, values, primary) {
  schema = resolve(schema, root);
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  let names = Object.keys(props);
  if (primary) names = [...primary.filter((n) => n in props), ...names.filter((n) => !primary.includes(n))];
  const extra = Object.keys(values || {}).filter((k) => !(k in props));
  const fields = new Map();
  const rows = [];
  const advanced = [];
  const defaults = {};
  for (const name of [...names, ...extra]) {
    const path = `${prefix}.${name}`;
    const propSchema = props[name] || {};
    const k = props[name] ? kindOf(propSchema, root) : { kind: "json", schema: {} };
    const s = resolve(propSchema, root);
    const initial = values && name in values ? values[name] : (s.default !== undefined ? s.default : k.schema && k.schema.default);
    defaults[name] = s.default;
    if (k.kind === "object") {
      const sub = buildGroup(path, k.schema, root, initial && typeof initial === "object" ? initial : {}, null);
      for (const [p, f] of sub.fields) fields.set(p, f);
      const fieldset = h("fieldset", { class: "subgroup" }, h("legend", null, s.title || name), sub.el);
      rows.push(fieldset);
      fields.set(path, { group: true, get: (onlyChanged) => sub.collect(onlyChanged), set: () => {}, showError: (m) => sub.showGroupError(m), row: fieldset });
      continue;
    }
    const f = buildField(path, name, k, s, initial, required.has(name), !props[name]);
    fields.set(path, f);
    // Fields outside `primary` fold away unless a clone set them to something non-default.
    const isAdvanced = primary && !primary.includes(name) && !(values && name in values && JSON.stringify(values[name]) !== JSON.stringify(s.default));
    (isAdvanced ? advanced : rows).push(f.row);
  }
  const errBox = h("div", { class: "field-error", hidden: true });
  const more = advanced.length ? h("details", { class: "more-fields", dataset: { testid: `${prefix}-more` } },
    h("summary", null, `More ${prefix} options (${advanced.length})`), h("div", { class: "field-grid" }, advanced)) : null;
  const el = h("div", null, h("div", { class: "field-grid" }, rows, errBox), more);
  // onlyChanged: leave out values equal to the schema default (the API fills those in), so
  // the run records what was actually chosen.
  const collect = (onlyChanged = false) => {
    const out = {};
    for (const name of [...names, ...extra]) {
      const f = fields.get(`${prefix}.${name}`);
      if (!f) continue;
      const v = f.get(onlyChanged);
      if (v === undefined) continue;
      if (onlyChanged && !f.group && name in defaults && JSON.stringify(v) === JSON.stringify(defaults[name] ?? null)) continue;
      out[name] = v;
    }
    return out;
  };
  return { el, fields, collect, showGroupError: (m) => { errBox.hidden = false; errBox.textContent = m; } };
}

function buildField(path, name, k, s, initial, required, isExtra) {
  const id = `f-${path.replace(/[^a-zA-Z0-9_-]/g, "-")}`;
  let input, get, set;
  const markDirty = () => clearError();
  // A checkbox cannot say "not set": optional booleans get a three-way select.
  if (k.kind === "boolean" && k.nullable) k = { ...k, kind: "enum", options: [true, false] };
  switch (k.kind) {
    case "boolean":
      input = h("input", { type: "checkbox", id, class: "checkbox", on: { change: markDirty } });
      get = () => input.checked;
      set = (v) => { input.checked = !!v; };
      break;
    case "enum":
      input = h("select", { id, class: "input", on: { change: markDirty } },
        k.nullable ? h("option", { value: "" }, "— not set —") : null,
        k.options.map((o, i) => h("option", { value: String(i) }, String(o))));
      get = () => (input.value === "" ? (k.nullable ? null : undefined) : k.options[Number(input.value)]);
      set = (v) => { const i = k.options.findIndex((o) => o === v || String(o) === String(v)); input.value = i >= 0 ? String(i) : ""; };
      break;
    case "integer":
    case "number":
      input = h("input", { type: "number", id, class: "input", step: k.kind === "integer" ? "1" : "any",
        min: s.minimum, max: s.maximum, placeholder: k.nullable ? "not set" : null, on: { input: markDirty } });
      get = () => {
        const t = input.value.trim();
        if (t === "") {
          if (input.validity.badInput) return "__invalid__";
          return k.nullable ? null : undefined;
        }
        return k.kind === "integer" && /^[-+]?\d+$/.test(t) ? parseInt(t, 10) : Number(t);
      };
      set = (v) => { input.value = v === null || v === undefined ? "" : String(v); };
      break;
    case "string":
      input = h("input", { type: "text", id, class: "input", placeholder: k.nullable ? "not set" : null, on: { input: markDirty } });
      get = () => (input.value === "" ? (k.nullable ? null : (required ? "" : undefined)) : input.value);
      set = (v) => { input.value = v === null || v === undefined ? "" : String(v); };
      break;
    case "union":
      input = h("input", { type: "text", id, class: "input", placeholder: k.types.map((t) => SHORT[t] || t).join(" or ") + (k.nullable ? ", or empty" : ""), on: { input: markDirty } });
      get = () => { const v = parseLoose(input.value, k.types); return v === undefined && k.nullable ? null : v; };
      set = (v) => { input.value = v === null || v === undefined ? "" : v instanceof FloatValue ? v.text : typeof v === "object" ? JSON.stringify(v) : String(v); };
      break;
    default:
      input = h("input", { type: "text", id, class: "input input-mono", placeholder: "JSON", on: { input: markDirty } });
      get = () => { const t = input.value.trim(); if (t === "") return undefined; try { return JSON.parse(t); } catch { return t; } };
      set = (v) => { input.value = v === undefined ? "" : JSON.stringify(v); };
  }
  input.name = path;
  input.dataset.field = path;
  if (required) input.required = true;
  set(initial);
  const err = h("div", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true, dataset: { errorFor: path } });
  input.setAttribute("aria-describedby", `${id}-error`);
  const defaultText = s.default === undefined ? null : s.default === null ? "not set" : typeof s.default === "string" ? s.default : JSON.stringify(s.default);
  const help = s.description || defaultText !== null
    ? h("div", { class: "field-help" }, s.description || "", defaultText !== null ? h("span", { class: "field-default" }, `${s.description ? " " : ""}Default: ${defaultText}`) : null)
    : null;
  const row = h("div", { class: ["field", k.kind === "boolean" && "field-bool"], dataset: { path } },
    h("label", { for: id, class: "field-label" }, s.title && s.title.toLowerCase().replace(/ /g, "_") !== name.toLowerCase() ? s.title : name,
      required ? h("span", { class: "req", title: "required" }, " *") : null,
      h("span", { class: "field-type" }, isExtra ? "extra" : typeLabel(k))),
    h("div", { class: "field-control" }, input),
    help, err);
  function clearError() { err.hidden = true; err.textContent = ""; row.classList.remove("invalid"); }
  return {
    row, input, get, set,
    showError(msg) { err.hidden = false; err.textContent = msg; row.classList.add("invalid"); },
    clearError,
  };
}

/**
 * A JSON editor standing in for a params form when no schema is recorded yet (a code run that
 * never started): one textarea, parsed on submit; errors show under it like a field's.
 */
function jsonGroup(prefix, value) {
  const id = `f-${prefix}-json`;
  const text = toJSONText(value || {}, 2);
  const input = h("textarea", { id, class: "input input-mono json-editor", name: prefix, spellcheck: "false",
    rows: String(Math.min(24, Math.max(4, text.split("\n").length + 1))), dataset: { field: prefix } });
  input.value = text;
  const err = h("div", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true, dataset: { errorFor: prefix } });
  input.setAttribute("aria-describedby", `${id}-error`);
  const row = h("div", { class: "field field-wide", dataset: { path: prefix } },
    h("label", { for: id, class: "field-label" }, prefix, h("span", { class: "field-type" }, "JSON object")),
    h("div", { class: "field-control" }, input), err);
  const parse = () => {
    try {
      const v = parseJSONExact(input.value.trim() || "{}");
      return v && typeof v === "object" && !Array.isArray(v) ? { ok: true, v } : { ok: false, msg: "Enter a JSON object: {\"name\": value, …}." };
    } catch (e) { return { ok: false, msg: `Not valid JSON: ${e.message}` }; }
  };
  const f = {
    row, input,
    get: () => { const p = parse(); return p.ok ? p.v : undefined; },
    set: (v) => { input.value = toJSONText(v || {}, 2); },
    problem: () => { const p = parse(); return p.ok ? null : p.msg; },
    showError(msg) { err.hidden = false; err.textContent = msg; row.classList.add("invalid"); },
    clearError() { err.hidden = true; err.textContent = ""; row.classList.remove("invalid"); },
  };
  input.addEventListener("input", () => f.clearError());
  return { el: h("div", { class: "field-grid" }, row), fields: new Map([[prefix, f]]), collect: () => f.get() || {}, showGroupError: (m) => f.showError(m) };
}

/** An earlier code run as a select option: id, name, entry point, snapshot. */
function codeRunLabel(r) {
  const entry = r.code ? entryLabel(r.code.entry) : "no snapshot";
  return `#${r.id} ${r.name || ""} · ${entry} · ${r.code ? shortSha(r.code.sha256, 8) : ""} · ${fmtDateTime(r.created_at).slice(0, 16)}`;
}

export async function render(root, _params, query) {
  const cloneId = query.get("clone");
  const [recipeList, cloneRun, projectList] = await Promise.all([
    recipesApi(),
    cloneId ? runsApi.get(cloneId, { keepFloats: true }) : null,
    projectsApi().catch(() => []),
  ]);
  const runnable = recipeList.filter((r) => r.name !== "external" && r.name !== CODE);
  const cloneIsCode = !!cloneRun && (cloneRun.recipe === CODE || !!cloneRun.code);
  // Where the run's code comes from: an installed recipe, or the snapshot of an earlier code run.
  let source = cloneIsCode || query.get("source") === "code" || !runnable.length ? "code" : "recipe";
  // A module-kind code run takes the recipes' trainer arguments (TrainerArgs).
  const recipeTrainerSchema = (runnable.find((r) => r.trainer_schema && r.trainer_schema.properties) || {}).trainer_schema || FALLBACK_TRAINER_SCHEMA;

  // Projects offered: those the user may submit to (member or admin there); any new name may
  // be typed too (whoever makes a project is its admin).
  const writable = projectList.filter((p) => canWrite(p.name));
  const known = new Set(projectList.map((p) => p.name));
  const pickProject = (name) => (!known.has(name) || canWrite(name) ? name : null);
  const initialProject = (cloneRun && pickProject(cloneRun.project)) || pickProject(query.get("project") || "default")
    || (writable[0] && writable[0].name) || "";

  let current = cloneRun && !cloneIsCode && runnable.find((r) => r.name === cloneRun.recipe) ? cloneRun.recipe : (runnable[0] ? runnable[0].name : null);
  // What the params/trainer boxes show for each source (kept while the other is shown), and
  // the groups of fields being submitted.
  const views = { recipe: null, code: null };
  let groups = { params: null, trainer: null };

  const recipeSel = h("select", { id: "f-recipe", class: "input", name: "recipe", dataset: { field: "recipe" }, disabled: !runnable.length, on: { change: (e) => { current = e.target.value; buildForm(null); } } },
    runnable.map((r) => h("option", { value: r.name, selected: r.name === current, dataset: { available: String(r.available !== false) } },
      r.available === false ? `${r.name} (unavailable)` : r.name)));
  const recipeDesc = h("p", { class: "recipe-desc" });
  // A recipe no live worker serves: it can still be queued; a worker that publishes it takes the run.
  const unavailable = h("div", { class: "notice", role: "status", hidden: true, dataset: { testid: "recipe-unavailable" } });
  const nameInput = h("input", { id: "f-name", class: "input", name: "name", dataset: { field: "name" }, placeholder: "optional: a name for this run",
    value: cloneRun ? `${cloneRun.name || "run-" + cloneRun.id}-clone` : "" });
  const projectInput = h("input", { id: "f-project", class: "input", name: "project", dataset: { field: "project" }, list: "project-options",
    value: initialProject, placeholder: "a project you are a member of, or a new name" });
  const projectOptions = h("datalist", { id: "project-options" }, writable.map((p) => h("option", { value: p.name })));
  const queueInput = h("input", { id: "f-queue", class: "input", name: "queue", dataset: { field: "queue" }, placeholder: "runyard",
    value: cloneRun && cloneRun.queue ? cloneRun.queue : "runyard" });
  const topErrors = new Map(["recipe", "name", "project", "queue", "code"].map((k) => [k, errorSlot(k)]));
  const paramsBox = h("div", { class: "form-section-body" });
  const paramsHint = h("span", { class: "muted small" });
  const trainerBox = h("div", { class: "form-section-body" });
  const formError = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "form-error" } });
  const submitBtn = h("button", { type: "submit", class: "btn btn-primary", dataset: { testid: "submit-run" } }, "Start run");

  // The code source: earlier code runs of the project, the one picked, its recorded schema.
  const codeRunSel = h("select", { id: "f-code-run", class: "input", name: "code_run", dataset: { field: "code.run" },
    on: { change: (e) => pickCodeRun(Number(e.target.value), null) } });
  const codeRunsNote = h("div", { class: "notice", role: "status", hidden: true, dataset: { testid: "code-runs-note" } });
  const codeSummary = h("div", { class: "code-summary", dataset: { testid: "code-source-summary" } });
  const schemaNote = h("div", { class: "notice", role: "status", hidden: true, dataset: { testid: "code-schema-note" } });
  let codeRunsFor = null; // the project whose code runs the select lists
  let listSeq = 0, pickSeq = 0;
  let picked = null; // {run, schema, schemaError}

  function errorSlot(path) { return h("div", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: path } }); }
  const currentProject = () => projectInput.value.trim() || "default";

  function show() {
    const v = views[source];
    replace(paramsBox, v ? v.paramsEl : null);
    replace(trainerBox, v ? v.trainerEl : null);
    paramsHint.textContent = v ? v.hint : "";
    groups = v ? v.groups : { params: null, trainer: null };
  }

  function buildForm(prefill) {
    if (!current) {
      views.recipe = { paramsEl: h("p", { class: "muted" }, "No recipe to choose."), trainerEl: null, hint: "", groups: { params: null, trainer: null } };
      if (source === "recipe") show();
      return;
    }
    const recipe = runnable.find((r) => r.name === current);
    recipeDesc.textContent = recipe.description || "";
    unavailable.hidden = recipe.available !== false;
    unavailable.textContent = recipe.available === false
      ? "No live worker serves this recipe now. A run you start waits in its queue until a worker that publishes it starts."
      : "";
    const pSchema = recipe.params_schema || { properties: {} };
    const tSchema = recipe.trainer_schema && recipe.trainer_schema.properties ? recipe.trainer_schema : FALLBACK_TRAINER_SCHEMA;
    const params = buildGroup("params", pSchema, pSchema, prefill ? prefill.params : null, null);
    const trainer = buildGroup("trainer", tSchema, tSchema, prefill ? prefill.trainer : null, TRAINER_PRIMARY);
    views.recipe = {
      paramsEl: Object.keys(resolve(pSchema, pSchema).properties || {}).length || (prefill && Object.keys(prefill.params || {}).length)
        ? params.el : h("p", { class: "muted" }, "This recipe takes no parameters."),
      trainerEl: trainer.el, hint: "from the recipe's schema", groups: { params, trainer },
    };
    if (source === "recipe") show();
  }

  /** List the project's code runs; pick `keepId` (or the newest). */
  async function loadCodeRuns(keepId) {
    const project = currentProject();
    const mine = ++listSeq;
    codeRunSel.disabled = true;
    let items = [];
    let failed = null;
    try {
      items = ((await runsApi.list({ recipe: CODE, project, limit: 200, sort: "-created_at" })) || {}).items || [];
    } catch (err) { failed = err; }
    if (mine !== listSeq) return;
    codeRunsFor = project;
    items = items.filter((r) => r.code && r.code.snapshot_id);
    if (cloneIsCode && cloneRun.project === project && !items.some((r) => r.id === cloneRun.id)) items.unshift(cloneRun);
    replace(codeRunSel, items.map((r) => h("option", { value: String(r.id) }, codeRunLabel(r))));
    codeRunSel.disabled = !items.length;
    codeRunsNote.hidden = items.length > 0;
    codeRunsNote.textContent = failed
      ? `Could not list the code runs of ${project}: ${failed.message}`
      : `No code run in project “${project}” yet. Submit your project folder once (runyard submit PATH --project ${project}, see docs/your-code.md); then any run of it can be edited and started again here.`;
    const want = keepId && items.some((r) => r.id === keepId) ? keepId : items.length ? items[0].id : null;
    if (want === null) { picked = null; buildCodeForm(null); return; }
    codeRunSel.value = String(want);
    await pickCodeRun(want, cloneIsCode && want === cloneRun.id ? cloneRun : null);
  }

  /** Read an earlier code run (exact params) and its recorded schema, then build the form from them. */
  async function pickCodeRun(id, given) {
    const mine = ++pickSeq;
    clearErrors();
    replace(codeSummary, h("span", { class: "muted small" }, "Loading…"));
    let schemaError = null;
    let run, schema;
    try {
      [run, schema] = await Promise.all([
        // a list item shows oversized values cut (its "truncated" names them): read the whole run then
        given && !(given.truncated || []).length ? given : runsApi.get(id, { keepFloats: true }),
        runsApi.codeSchema(id).catch((err) => { if (err.status !== 404) schemaError = err; return null; }),
      ]);
    } catch (err) {
      if (mine !== pickSeq) return;
      picked = null;
      buildCodeForm(null);
      replace(codeSummary, h("div", { class: "error-box" }, `Could not read run #${id}: ${err.message}`));
      return;
    }
    if (mine !== pickSeq) return;
    picked = { run, schema, schemaError };
    // Start from that run's settings: params, trainer arguments and queue.
    if (run.queue && !given) queueInput.value = run.queue;
    buildCodeForm({ params: run.params || {}, trainer: run.trainer || {} });
  }

  function buildCodeForm(prefill) {
    schemaNote.hidden = true;
    if (!picked) {
      replace(codeSummary);
      views.code = { paramsEl: h("p", { class: "muted" }, "Pick an earlier code run above: its snapshot and entry point are started again with the settings below."),
        trainerEl: null, hint: "", groups: { params: null, trainer: null } };
      if (source === "code") show();
      return;
    }
    const { run, schema, schemaError } = picked;
    const entry = run.code ? run.code.entry : null;
    const kind = entry ? entry.kind : null;
    const row = (label, ...content) => h("div", { class: "code-summary-row" }, h("span", { class: "info-label" }, label), h("div", null, content));
    replace(codeSummary,
      row("snapshot", h("code", { title: run.code ? run.code.sha256 : "", dataset: { testid: "code-source-sha" } }, run.code ? shortSha(run.code.sha256) : "—"),
        h("span", { class: "muted" }, " of "), h("a", { href: `#/runs/${run.id}` }, run.name || `run ${run.id}`), h("span", { class: "run-id" }, `#${run.id}`),
        h("span", { class: "muted small" }, " (its files are on its run page)")),
      row("entry", describeEntry(entry, prefill.params)),
      row("git", gitLine(run.code && run.code.git)));
    let params;
    let hint;
    if (schema && schema.params_schema) {
      const ps = schema.params_schema;
      params = buildGroup("params", ps, ps, prefill.params, null);
      hint = kind === "cli" ? "the LightningCLI config, from its --print_config" : kind === "command" ? "the command's options" : "from the schema the run recorded";
      if (!Object.keys(resolve(ps, ps).properties || {}).length && !Object.keys(prefill.params || {}).length) params.el = h("p", { class: "muted" }, "This entry point takes no parameters.");
    } else {
      schemaNote.hidden = false;
      schemaNote.textContent = schemaError
        ? `Could not read the schema recorded for run #${run.id} (${schemaError.message}): edit the parameters as JSON.`
        : `No form for this entry point yet: its schema is recorded when run #${run.id} first starts (by the run's own process). Until then, edit the parameters as JSON (prefilled with that run's); the run's process checks them.`;
      params = jsonGroup("params", prefill.params);
      hint = "as JSON";
    }
    let trainer = null;
    let trainerEl;
    if (kind === "module") {
      const ts = schema && schema.trainer_schema && schema.trainer_schema.properties ? schema.trainer_schema : recipeTrainerSchema;
      trainer = buildGroup("trainer", ts, ts, prefill.trainer, TRAINER_PRIMARY);
      trainerEl = trainer.el;
    } else {
      trainerEl = h("p", { class: "muted small", dataset: { testid: "trainer-note" } }, kind === "cli"
        ? "The trainer's settings are part of the LightningCLI config above (its trainer section)."
        : "A command sets up its own trainer: pass its options as parameters above.");
    }
    views.code = { paramsEl: params.el, trainerEl, hint, groups: { params, trainer } };
    if (source === "code") show();
  }

  function setSource(next) {
    source = next;
    recipePart.hidden = source !== "recipe";
    codePart.hidden = source !== "code";
    clearErrors();
    if (source === "code" && codeRunsFor !== currentProject()) {
      views.code = null;
      show();
      loadCodeRuns(picked ? picked.run.id : null);
      return;
    }
    show();
  }

  let projectTimer = null;
  function projectChanged() {
    clearTimeout(projectTimer);
    projectTimer = setTimeout(() => { if (source === "code" && codeRunsFor !== currentProject()) loadCodeRuns(null); }, 400);
  }
  projectInput.addEventListener("input", projectChanged);
  projectInput.addEventListener("change", projectChanged);

  function activeGroups() { return [groups.params, groups.trainer].filter(Boolean); }

  function clearErrors() {
    formError.hidden = true;
    for (const slot of topErrors.values()) { slot.hidden = true; slot.textContent = ""; }
    for (const g of activeGroups()) for (const f of g.fields.values()) if (f.clearError) f.clearError();
    for (const el of root.querySelectorAll(".invalid")) el.classList.remove("invalid");
  }

  function fieldFor(path) {
    for (const g of activeGroups()) if (g.fields.has(path)) return g.fields.get(path);
    return null;
  }

  const showTop = (c) => ({ show: (m) => { const s = topErrors.get(c); s.hidden = false; s.textContent = m; s.closest(".field")?.classList.add("invalid"); } });

  /** Find the field an error belongs to from FastAPI's loc list or our {field}. */
  function locate(loc) {
    let parts = (Array.isArray(loc) ? loc : String(loc).split(".")).map(String);
    if (parts[0] === "body") parts = parts.slice(1);
    // code.snapshot_id, code.entry.model, …: next to the earlier-run choice.
    if (parts[0] === "code") return showTop("code");
    const candidates = [parts.join(".")];
    if (parts.length === 1) candidates.push(`params.${parts[0]}`, `trainer.${parts[0]}`);
    if (parts.length > 1) candidates.push(`params.${parts.slice(-1)[0]}`, `trainer.${parts.slice(-1)[0]}`);
    for (let i = parts.length; i > 0; i--) candidates.push(parts.slice(0, i).join("."));
    for (const c of candidates) {
      if (topErrors.has(c)) return showTop(c);
      const f = fieldFor(c);
      if (f) return f;
    }
    return null;
  }

  function showApiErrors(err) {
    const unplaced = [];
    const list = err.errors ? err.errors : [{ loc: err.field ? String(err.field).split(".") : null, msg: err.message }];
    for (const e of list) {
      const raw = e.msg || e.message || String(e);
      const target = e.loc ? locate(e.loc) : null;
      // Next to its field the "Invalid value for params.x:" prefix only repeats the label.
      const short = raw.replace(/^Invalid value for [\w.\[\]-]+: /, "");
      const msg = target ? short.charAt(0).toUpperCase() + short.slice(1) : raw;
      if (target && target.show) target.show(msg);
      else if (target) target.showError(msg);
      else unplaced.push(e.loc ? `${[].concat(e.loc).filter((x) => x !== "body").join(".")}: ${msg}` : msg);
    }
    if (unplaced.length) { formError.hidden = false; formError.textContent = unplaced.join(" "); }
    for (const d of root.querySelectorAll("details.more-fields")) if (d.querySelector(".invalid")) d.open = true;
    const first = root.querySelector(".invalid input, .invalid select, .invalid textarea");
    if (first) first.focus();
  }

  async function submit(e) {
    e.preventDefault();
    clearErrors();
    const bad = [];
    for (const g of activeGroups()) {
      for (const [path, f] of g.fields) {
        if (f.group) continue;
        const problem = f.problem ? f.problem() : f.get() === "__invalid__" ? "Enter a number." : null;
        if (problem) { f.showError(problem); bad.push(path); }
      }
    }
    if (bad.length) { const first = root.querySelector(".invalid input, .invalid select, .invalid textarea"); if (first) first.focus(); return; }
    const params = groups.params ? groups.params.collect() : {};
    const trainer = groups.trainer ? groups.trainer.collect(true) : {};
    const common = { params, trainer, project: currentProject(), queue: queueInput.value.trim() || "runyard" };
    let body;
    if (source === "code") {
      if (!picked || !picked.run.code) { showTop("code").show("Pick an earlier code run to start from."); return; }
      body = { recipe: CODE, code: { snapshot_id: picked.run.code.snapshot_id, entry: picked.run.code.entry }, ...common };
    } else {
      if (!current) { showTop("recipe").show("Choose a recipe."); return; }
      body = { recipe: current, ...common };
    }
    if (nameInput.value.trim()) body.name = nameInput.value.trim();
    submitBtn.disabled = true;
    submitBtn.textContent = "Starting…";
    try {
      const run = await runsApi.create(body);
      toast(`Run #${run.id} queued`, "ok");
      for (const warning of run.warnings || []) toast(warning, "warn", 8000);
      location.hash = `#/runs/${run.id}`;
    } catch (err) {
      if (err.status === 422 || err.status === 400 || err.status === 409) showApiErrors(err);
      else { formError.hidden = false; formError.textContent = `The server could not start the run: ${err.message}`; }
    } finally {
      submitBtn.disabled = false;
      submitBtn.textContent = "Start run";
    }
  }

  buildForm(cloneRun && !cloneIsCode ? { params: cloneRun.params || {}, trainer: cloneRun.trainer || {} } : null);
  buildCodeForm(null);

  const topField = (label, input, slot, help) => h("div", { class: "field" }, h("label", { class: "field-label", for: input.id }, label), h("div", { class: "field-control" }, input), help ? h("div", { class: "field-help" }, help) : null, slot);

  const sourceRecipe = h("input", { type: "radio", name: "source", value: "recipe", id: "f-source-recipe", checked: source === "recipe", disabled: !runnable.length,
    dataset: { testid: "source-recipe" }, on: { change: () => setSource("recipe") } });
  const sourceCode = h("input", { type: "radio", name: "source", value: "code", id: "f-source-code", checked: source === "code",
    dataset: { testid: "source-code" }, on: { change: () => setSource("code") } });
  const sourceField = h("div", { class: "field field-wide" }, h("span", { class: "field-label" }, "source"),
    h("div", { class: "source-choice", role: "radiogroup", "aria-label": "Where the run's code comes from" },
      h("label", { class: "radio", for: "f-source-recipe" }, sourceRecipe, "Recipe"),
      h("label", { class: "radio", for: "f-source-code" }, sourceCode, "Code from an earlier run")),
    !runnable.length ? h("div", { class: "field-help" }, "The server has no recipes registered (start a worker with built-in recipes, or list your modules in RUNYARD_RECIPES); your own code can still be started again.") : null);
  const recipePart = h("div", { class: "source-part", hidden: source !== "recipe", dataset: { testid: "recipe-source" } },
    h("div", { class: "field-grid" }, topField("recipe", recipeSel, topErrors.get("recipe"), null), unavailable), recipeDesc);
  const codePart = h("div", { class: "source-part", hidden: source !== "code", dataset: { testid: "code-source" } },
    h("div", { class: "field-grid" }, h("div", { class: "field field-wide" }, h("label", { class: "field-label", for: codeRunSel.id }, "earlier code run"),
      h("div", { class: "field-control" }, codeRunSel),
      h("div", { class: "field-help" }, "Its snapshot and entry point run again, with the parameters below (prefilled from it)."), topErrors.get("code"))),
    codeRunsNote, codeSummary, schemaNote);

  show();
  replace(root, h("div", { class: "page page-form" },
    h("div", { class: "page-head" }, h("h1", null, cloneRun ? `Clone run #${cloneRun.id}` : "New run"),
      cloneRun ? h("span", { class: "muted" }, "Settings copied from ", h("a", { href: `#/runs/${cloneRun.id}` }, cloneRun.name || `run ${cloneRun.id}`)) : null),
    h("form", { class: "run-form", novalidate: true, dataset: { testid: "new-run-form" }, on: { submit } },
      h("section", { class: "form-section" }, h("h2", null, "Run"),
        h("div", { class: "field-grid" }, sourceField),
        recipePart, codePart,
        h("div", { class: "field-grid run-fields" },
          topField("name", nameInput, topErrors.get("name"), null),
          topField("project", projectInput, topErrors.get("project"), writable.length < projectList.length ? "Projects where you are a member, or a new name (you become its admin)." : null), projectOptions)),
      h("section", { class: "form-section" }, h("h2", null, "Parameters ", paramsHint), paramsBox),
      h("section", { class: "form-section" }, h("h2", null, "Trainer"), trainerBox,
        h("div", { class: "field-grid" }, topField("queue", queueInput, topErrors.get("queue"),
          "Only workers started with --queues including this name take the run. Default: runyard"))),
      formError,
      h("div", { class: "form-actions" }, submitBtn, h("a", { class: "btn", href: "#/runs" }, "Cancel")))));
  if (source === "code") await loadCodeRuns(cloneIsCode ? cloneRun.id : null);
  return () => clearTimeout(projectTimer);
}
