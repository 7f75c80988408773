// New-run page: a form generated from the recipe's JSON schema (params) and the trainer
// schema; 422 errors go next to their fields; "Clone" (#/new?clone=<id>) prefills it.

import { h, replace, toast } from "../dom.js";
import { recipes as recipesApi, runs as runsApi, projects as projectsApi, FloatValue } from "../api.js";
import { canWrite } from "../perm.js";

// Used only when the server's recipe carries no trainer_schema.
const FALLBACK_TRAINER_SCHEMA = {
  type: "object",
  properties: {
    max_epochs: { type: "integer", minimum: 1, default: 3, description: "Stop after this many epochs." },
    precision: { type: "string", enum: ["32-true", "16-mixed", "bf16-mixed", "64-true"], default: "32-true", description: "Numeric precision of training." },
    limit_train_batches: { anyOf: [{ type: "integer" }, { type: "number" }], default: 1.0, description: "Fraction (float) or number (int) of training batches per epoch." },
    fast_dev_run: { anyOf: [{ type: "boolean" }, { type: "integer" }], default: false, description: "Run 1 (or n) batch of train/val to smoke-test the recipe." },
    early_stopping_monitor: { anyOf: [{ type: "string" }, { type: "null" }], default: null, description: "Metric to watch for early stopping (e.g. val_loss); empty disables it." },
    early_stopping_patience: { type: "integer", minimum: 0, default: 3, description: "Epochs without improvement before stopping." },
  },
};

// Trainer fields shown up front, in this order; the rest sit under "More trainer options".
const TRAINER_PRIMARY = ["max_epochs", "precision", "accelerator", "limit_train_batches", "fast_dev_run",
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

export async function render(root, _params, query) {
  const cloneId = query.get("clone");
  const [recipeList, cloneRun, projectList] = await Promise.all([
    recipesApi(),
    cloneId ? runsApi.get(cloneId, { keepFloats: true }) : null,
    projectsApi().catch(() => []),
  ]);
  const runnable = recipeList.filter((r) => r.name !== "external");
  if (!runnable.length) {
    replace(root, h("div", { class: "page" }, h("h1", null, "New run"), h("div", { class: "error-box" }, "The server has no recipes registered. Start a worker with built-in recipes, or list your modules in RUNYARD_RECIPES.")));
    return;
  }

  // Projects offered: those the user may submit to (member or admin there); any new name may
  // be typed too (whoever makes a project is its admin).
  const writable = projectList.filter((p) => canWrite(p.name));
  const known = new Set(projectList.map((p) => p.name));
  const pickProject = (name) => (!known.has(name) || canWrite(name) ? name : null);
  const initialProject = (cloneRun && pickProject(cloneRun.project)) || pickProject(query.get("project") || "default")
    || (writable[0] && writable[0].name) || "";

  let current = cloneRun && runnable.find((r) => r.name === cloneRun.recipe) ? cloneRun.recipe : runnable[0].name;
  let groups = null;

  const recipeSel = h("select", { id: "f-recipe", class: "input", name: "recipe", dataset: { field: "recipe" }, on: { change: (e) => { current = e.target.value; buildForm(null); } } },
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
  const topErrors = new Map([["recipe", errorSlot("recipe")], ["name", errorSlot("name")], ["project", errorSlot("project")], ["queue", errorSlot("queue")]]);
  const paramsBox = h("div", { class: "form-section-body" });
  const trainerBox = h("div", { class: "form-section-body" });
  const formError = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "form-error" } });
  const submitBtn = h("button", { type: "submit", class: "btn btn-primary", dataset: { testid: "submit-run" } }, "Start run");

  function errorSlot(path) { return h("div", { class: "field-error", role: "alert", hidden: true, dataset: { errorFor: path } }); }

  function buildForm(prefill) {
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
    replace(paramsBox, Object.keys(resolve(pSchema, pSchema).properties || {}).length || (prefill && Object.keys(prefill.params || {}).length)
      ? params.el : h("p", { class: "muted" }, "This recipe takes no parameters."));
    replace(trainerBox, trainer.el);
    groups = { params, trainer };
  }

  function clearErrors() {
    formError.hidden = true;
    for (const slot of topErrors.values()) { slot.hidden = true; slot.textContent = ""; }
    for (const g of Object.values(groups)) for (const f of g.fields.values()) if (f.clearError) f.clearError();
    for (const el of root.querySelectorAll(".invalid")) el.classList.remove("invalid");
  }

  function fieldFor(path) {
    for (const g of Object.values(groups)) if (g.fields.has(path)) return g.fields.get(path);
    return null;
  }

  /** Find the field an error belongs to from FastAPI's loc list or our {field}. */
  function locate(loc) {
    let parts = (Array.isArray(loc) ? loc : String(loc).split(".")).map(String);
    if (parts[0] === "body") parts = parts.slice(1);
    const candidates = [parts.join(".")];
    if (parts.length === 1) candidates.push(`params.${parts[0]}`, `trainer.${parts[0]}`);
    if (parts.length > 1) candidates.push(`params.${parts.slice(-1)[0]}`, `trainer.${parts.slice(-1)[0]}`);
    for (let i = parts.length; i > 0; i--) candidates.push(parts.slice(0, i).join("."));
    for (const c of candidates) {
      if (topErrors.has(c)) return { show: (m) => { const s = topErrors.get(c); s.hidden = false; s.textContent = m; s.closest(".field")?.classList.add("invalid"); } };
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
      const short = raw.replace(/^Invalid value for [\w.\[\]]+: /, "");
      const msg = target ? short.charAt(0).toUpperCase() + short.slice(1) : raw;
      if (target && target.show) target.show(msg);
      else if (target) target.showError(msg);
      else unplaced.push(e.loc ? `${[].concat(e.loc).filter((x) => x !== "body").join(".")}: ${msg}` : msg);
    }
    if (unplaced.length) { formError.hidden = false; formError.textContent = unplaced.join(" "); }
    for (const d of root.querySelectorAll("details.more-fields")) if (d.querySelector(".invalid")) d.open = true;
    const first = root.querySelector(".invalid input, .invalid select");
    if (first) first.focus();
  }

  async function submit(e) {
    e.preventDefault();
    clearErrors();
    const params = groups.params.collect();
    const trainer = groups.trainer.collect(true);
    const bad = [];
    for (const g of Object.values(groups)) for (const [path, f] of g.fields) if (!f.group && f.get() === "__invalid__") { f.showError("Enter a number."); bad.push(path); }
    if (bad.length) return;
    const body = { recipe: current, params, trainer, project: projectInput.value.trim() || "default", queue: queueInput.value.trim() || "runyard" };
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

  buildForm(cloneRun ? { params: cloneRun.params || {}, trainer: cloneRun.trainer || {} } : null);

  const topField = (label, input, slot, help) => h("div", { class: "field" }, h("label", { class: "field-label", for: input.id }, label), h("div", { class: "field-control" }, input), help ? h("div", { class: "field-help" }, help) : null, slot);

  replace(root, h("div", { class: "page page-form" },
    h("div", { class: "page-head" }, h("h1", null, cloneRun ? `Clone run #${cloneRun.id}` : "New run"),
      cloneRun ? h("span", { class: "muted" }, "Settings copied from ", h("a", { href: `#/runs/${cloneRun.id}` }, cloneRun.name || `run ${cloneRun.id}`)) : null),
    h("form", { class: "run-form", novalidate: true, dataset: { testid: "new-run-form" }, on: { submit } },
      h("section", { class: "form-section" }, h("h2", null, "Run"),
        h("div", { class: "field-grid" },
          topField("recipe", recipeSel, topErrors.get("recipe"), null),
          unavailable,
          topField("name", nameInput, topErrors.get("name"), null),
          topField("project", projectInput, topErrors.get("project"), writable.length < projectList.length ? "Projects where you are a member, or a new name (you become its admin)." : null), projectOptions),
        recipeDesc),
      h("section", { class: "form-section" }, h("h2", null, "Parameters ", h("span", { class: "muted small" }, "from the recipe's schema")), paramsBox),
      h("section", { class: "form-section" }, h("h2", null, "Trainer"), trainerBox,
        h("div", { class: "field-grid" }, topField("queue", queueInput, topErrors.get("queue"),
          "Only workers started with --queues including this name take the run. Default: runyard"))),
      formError,
      h("div", { class: "form-actions" }, submitBtn, h("a", { class: "btn", href: "#/runs" }, "Cancel")))));
}
