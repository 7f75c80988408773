// Projects: the list you may see with your role in each (#/projects), and one project's
// members (#/projects/<id>/members), which its admins (and server admins) change.

import { h, replace, toast, confirmDialog } from "../dom.js";
import { account, projects as projectsApi } from "../api.js";
import { canManage, isServerAdmin, isOpenMode, myName } from "../perm.js";
import { fmtBytes, fmtDuration } from "../format.js";

const ROLES = ["viewer", "member", "admin"];

export async function render(root, params) {
  if (params.id) return renderMembers(root, params.id);
  const list = await projectsApi();
  replace(root, h("div", { class: "page", dataset: { testid: "projects-page" } },
    h("div", { class: "page-head" }, h("h1", null, "Projects"), h("span", { class: "muted" }, `${list.length} project${list.length === 1 ? "" : "s"}`)),
    h("div", { class: "table-wrap" }, h("table", { class: "table", dataset: { testid: "projects-table" } },
      h("thead", null, h("tr", null, h("th", null, "Project"), h("th", { class: "num" }, "Runs"), h("th", null, "Your role"), h("th", null, ""))),
      h("tbody", null, list.length ? list.map((p) => h("tr", { dataset: { projectId: p.id, project: p.name } },
        h("td", null, h("a", { href: `#/runs?project=${encodeURIComponent(p.name)}` }, p.name)),
        h("td", { class: "num" }, p.run_count),
        h("td", null, p.role ? h("span", { class: ["role", `role-${p.role}`] }, p.role) : h("span", { class: "muted" }, "—")),
        h("td", { class: "actions" }, h("a", { class: "btn btn-sm", href: `#/projects/${p.id}/members`, dataset: { testid: "project-members-link" } }, canManage(p.name) ? "Manage members" : "Members"))))
        : h("tr", null, h("td", { colspan: 4, class: "empty" }, "No projects you can see yet. A project is made by starting a run in it, or an admin adds you to one.")))))));
}

async function renderMembers(root, id) {
  const [list, members] = await Promise.all([projectsApi(), account.members(id)]);
  const project = list.find((p) => p.id === id);
  if (!project) throw new Error(`Project ${id} does not exist (or you may not see it).`);
  const manage = canManage(project.name);
  let rows = members;
  const tbody = h("tbody");
  const formError = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "member-error" } });

  async function reload() {
    rows = await account.members(id);
    renderRows();
  }

  async function setRole(user, role, select) {
    try {
      await account.setMember(id, user, role);
      toast(`${user} is now ${role} in ${project.name}`, "ok");
      await reload();
    } catch (err) {
      toast(err.message, "error", 6000);
      if (select) select.value = rows.find((m) => m.user === user)?.role || select.value;
    }
  }

  async function remove(m) {
    const self = m.user === myName();
    const ok = await confirmDialog({ title: `Remove ${m.user} from ${project.name}?`, body: self ? "You remove yourself: you may lose access to this project." : `They can no longer see its runs (unless they are a server admin).`, confirmLabel: "Remove member", danger: true });
    if (!ok) return;
    try {
      await account.removeMember(id, m.user);
      toast(`${m.user} removed from ${project.name}`, "info");
      await reload();
    } catch (err) { toast(err.message, "error", 6000); }
  }

  function renderRows() {
    if (!rows.length) { replace(tbody, h("tr", null, h("td", { colspan: 5, class: "empty" }, "No members yet."))); return; }
    replace(tbody, rows.map((m) => {
      const select = manage ? h("select", { class: "input input-sm", "aria-label": `Role of ${m.user}`, dataset: { testid: "member-role" },
        on: { change: (e) => setRole(m.user, e.target.value, e.target) } }, ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r))) : null;
      return h("tr", { dataset: { member: m.user, role: m.role } },
        h("td", { class: "mono" }, m.user),
        h("td", null, m.display_name || ""),
        h("td", null, select || h("span", { class: ["role", `role-${m.role}`] }, m.role)),
        h("td", { class: "muted" }, m.source === "oidc" ? "single sign-on" : m.source),
        h("td", { class: "actions" }, manage ? h("button", { class: "btn btn-sm btn-danger", type: "button", dataset: { testid: "remove-member" }, on: { click: () => remove(m) } }, "Remove") : null));
    }));
  }

  let addForm = null;
  if (manage) {
    const userInput = h("input", { id: "member-user", class: "input", required: true, autocomplete: "off", list: "member-user-options", placeholder: "user name", dataset: { testid: "member-user" } });
    const options = h("datalist", { id: "member-user-options" });
    const roleSel = h("select", { id: "member-new-role", class: "input", dataset: { testid: "member-new-role" } }, ROLES.map((r) => h("option", { value: r, selected: r === "member" }, r)));
    const submitBtn = h("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "add-member" } }, "Add member");
    // Only server admins may list users; others type the name.
    if (isServerAdmin() && !isOpenMode()) account.users().then((us) => replace(options, us.filter((u) => !u.disabled).map((u) => h("option", { value: u.name }, u.display_name && u.display_name !== u.name ? u.display_name : null)))).catch(() => {});
    addForm = h("form", { class: "inline-form", novalidate: true, dataset: { testid: "member-form" }, on: { submit: async (e) => {
      e.preventDefault();
      formError.hidden = true;
      const user = userInput.value.trim();
      if (!user) { formError.hidden = false; formError.textContent = "Enter the user's name."; userInput.focus(); return; }
      submitBtn.disabled = true;
      try {
        await account.setMember(id, user, roleSel.value);
        toast(`${user} added to ${project.name} as ${roleSel.value}`, "ok");
        userInput.value = "";
        await reload();
      } catch (err) {
        formError.hidden = false;
        formError.textContent = err.message;
      } finally { submitBtn.disabled = false; }
    } } },
    h("div", { class: "field" }, h("label", { class: "field-label", for: "member-user" }, "user"), userInput, options),
    h("div", { class: "field" }, h("label", { class: "field-label", for: "member-new-role" }, "role"), roleSel),
    h("div", { class: "field field-submit" }, submitBtn));
  }

  renderRows();
  const quotaPanel = h("section", { class: "panel", dataset: { testid: "quotas-panel" } });
  renderQuotas(quotaPanel, id, project.name).catch((err) => replace(quotaPanel, h("p", { class: "muted" }, `Quotas: ${err.message}`)));
  replace(root, h("div", { class: "page", dataset: { testid: "members-page", projectId: id } },
    h("div", { class: "page-head" },
      h("div", { class: "run-title" }, h("a", { href: "#/projects", class: "crumb" }, "Projects"), h("span", { class: "crumb-sep" }, "/"),
        h("h1", { dataset: { testid: "project-name" } }, project.name), h("span", { class: "muted" }, "members")),
      h("span", { class: "spacer" }),
      h("a", { class: "btn", href: `#/runs?project=${encodeURIComponent(project.name)}` }, "Runs")),
    manage ? h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Add a member")), addForm, formError,
      h("p", { class: "muted small" }, "viewer: reads runs · member: also starts runs and changes its own · admin: changes every run and manages members"))
      : h("p", { class: "muted", dataset: { testid: "members-readonly" } }, project.role ? `Your role here is ${project.role}; only the project's admins change its members.` : "Only the project's admins change its members."),
    h("div", { class: "table-wrap" }, h("table", { class: "table", dataset: { testid: "members-table" } },
      h("thead", null, h("tr", null, ["User", "Display name", "Role", "Source", ""].map((c) => h("th", null, c)))),
      tbody)),
    quotaPanel));
}

// The project's quotas (server/quotas.py): everyone who sees the project reads them; server admins
// change them (a value sets one, an empty field resets it to the server's default).
const QUOTAS = [
  ["checkpoint_bytes", "Checkpoint bytes", "all of the project's checkpoint files", (v) => fmtBytes(v)],
  ["keep_best", "Keep best", "checkpoints per run, by score", (v) => String(v)],
  ["keep_last", "Keep last", "newest checkpoints per run", (v) => String(v)],
  ["keep_every", "Keep every", "also the first checkpoint of every N steps (0: off)", (v) => (v ? `${v} steps` : "off")],
  ["metric_keys_per_run", "Metric keys per run", "distinct keys one run may log", (v) => v.toLocaleString()],
  ["points_per_run", "Points per run", "metric points one run may hold", (v) => v.toLocaleString()],
  ["max_run_seconds", "Longest run time", "seconds; runs get it as max_time, the reaper stops them past it", (v) => fmtDuration(v)],
];

async function renderQuotas(panel, id, projectName) {
  const q = await account.quotas(id);
  const admin = isServerAdmin();
  const inputs = {};
  const error = h("div", { class: "error-box", role: "alert", hidden: true, dataset: { testid: "quota-error" } });
  const rows = QUOTAS.map(([name, label, help, show]) => {
    const own = q.overrides[name];
    inputs[name] = admin ? h("input", { class: "input input-sm", type: "number", min: name === "keep_last" ? 1 : 0, step: name === "max_run_seconds" ? "any" : 1,
      value: own ?? "", placeholder: String(q.defaults[name]), "aria-label": label, dataset: { testid: `quota-${name}` } }) : null;
    return h("tr", { dataset: { quota: name } },
      h("td", null, label, h("div", { class: "muted small" }, help)),
      h("td", { class: "num", dataset: { testid: `quota-value-${name}` } }, show(q.quotas[name])),
      h("td", { class: "muted" }, own === null || own === undefined ? "default" : "set"),
      admin ? h("td", null, inputs[name]) : null);
  });
  const save = admin ? h("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "save-quotas" } }, "Save quotas") : null;
  const form = h("form", { novalidate: true, dataset: { testid: "quota-form" }, on: { submit: async (e) => {
    e.preventDefault();
    if (!admin) return;
    error.hidden = true;
    const body = {};
    for (const [name] of QUOTAS) {
      const raw = inputs[name].value.trim();
      const before = q.overrides[name];
      const value = raw === "" ? null : Number(raw);
      if (value !== null && !Number.isFinite(value)) { error.hidden = false; error.textContent = `${name}: not a number`; return; }
      if (value !== (before ?? null)) body[name] = value;
    }
    if (!Object.keys(body).length) { toast("Nothing changed", "info"); return; }
    save.disabled = true;
    try {
      await account.setQuotas(id, body);
      toast(`Quotas of ${projectName} saved`, "ok");
      await renderQuotas(panel, id, projectName);
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
    } finally { save.disabled = false; }
  } } },
  h("div", { class: "table-wrap" }, h("table", { class: "table", dataset: { testid: "quotas-table" } },
    h("thead", null, h("tr", null, ["Quota", "Value", "", ...(admin ? ["Set (empty: default)"] : [])].map((c) => h("th", null, c)))),
    h("tbody", null, rows))),
  admin ? h("p", null, save) : null);
  replace(panel,
    h("div", { class: "panel-head" }, h("h2", null, "Quotas"),
      h("span", { class: "muted", dataset: { testid: "quota-usage" } },
        `checkpoints: ${fmtBytes(q.usage.checkpoint_bytes)} of ${fmtBytes(q.quotas.checkpoint_bytes)} (${q.usage.checkpoints} files)`)),
    form, error,
    admin ? null : h("p", { class: "muted small" }, "Only server admins change quotas."));
}
