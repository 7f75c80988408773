// Code runs (issue 10) on the run page: the snapshot (sha, size, entry point in words, git
// record, a file browser and its download), and every run's reproducibility record (the
// "Environment" section). Everything from the server is set as text (dom.js), file contents
// included: a snapshot holding `<script>` shows it as characters.

import { h, replace } from "./dom.js";
import { runs as runsApi, snapshots as snapshotsApi, FloatValue } from "./api.js";
import { fmtBytes, fmtDateTime, fmtValue, plural } from "./format.js";

/** At most this many files are listed at once; the filter box finds the others. */
const MAX_LISTED = 400;

export const shortSha = (sha, n = 12) => (sha ? String(sha).slice(0, n) : "—");

/** A remote URL without credentials in it (`https://user:token@host/x` → `https://host/x`). */
export function safeRemote(url) {
  return url ? String(url).replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, "$1") : url;
}

/** argv as a shell would need it typed (quotes where needed), for display only. */
export function shellJoin(argv) {
  if (!Array.isArray(argv)) return argv === null || argv === undefined ? "" : String(argv);
  return argv.map((a) => {
    const s = String(a);
    return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
  }).join(" ");
}

/** The argv of a command-kind run: the command, then each param as `key value` (`key` for true). */
export function commandArgv(entry, params) {
  const argv = [...(entry.command || [])];
  for (const [k, v] of Object.entries(params || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (v === true) argv.push(k);
    else argv.push(k, v instanceof FloatValue ? v.text : typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  return argv;
}

function splitSpec(spec) {
  const s = String(spec || "");
  const i = s.lastIndexOf(":");
  return i > 0 ? { file: s.slice(0, i), name: s.slice(i + 1) } : { file: s, name: "" };
}

/** The file an entry point starts from (opened first in the file browser). */
export function entryFile(entry) {
  if (!entry) return null;
  if (entry.kind === "module") return splitSpec(entry.model).file || null;
  if (entry.kind === "cli") return entry.script || null;
  if (entry.kind === "command") return (entry.command || []).find((a) => /\.py$/.test(String(a))) || null;
  return null;
}

/** A one-line label for an entry point (select options, compare table). */
export function entryLabel(entry) {
  if (!entry) return "—";
  if (entry.kind === "module") return `module ${entry.model}${entry.data ? ` + ${entry.data}` : ""}`;
  if (entry.kind === "cli") return `cli ${entry.script} ${entry.subcommand || ""}`.trim();
  if (entry.kind === "command") return `command ${shellJoin(entry.command)}`;
  return JSON.stringify(entry);
}

/** The entry point in words: what the run's process does with the snapshot. */
export function describeEntry(entry, params, { onOpen } = {}) {
  const file = (path) => (onOpen && path
    ? h("button", { type: "button", class: "linkish mono", title: `Show ${path}`, on: { click: () => onOpen(path) } }, path)
    : h("code", null, path));
  if (!entry) return h("span", { class: "muted" }, "No entry point recorded.");
  if (entry.kind === "module") {
    const model = splitSpec(entry.model);
    const data = entry.data ? splitSpec(entry.data) : null;
    return h("span", { dataset: { testid: "entry-words" } },
      "Trains the LightningModule ", h("code", null, model.name), " from ", file(model.file),
      data ? [" with the LightningDataModule ", h("code", null, data.name), " from ", file(data.file)] : " (no datamodule: the model provides its own data)",
      ", built from the parameters and trained by the worker with trainer_core.");
  }
  if (entry.kind === "cli") {
    return h("span", { dataset: { testid: "entry-words" } },
      "Runs the LightningCLI script ", file(entry.script), " with the subcommand ", h("code", null, entry.subcommand || "fit"),
      ", its config being the parameters: ", h("code", null, shellJoin(["python", entry.script, entry.subcommand || "fit", "--config", "runyard_config.yaml"])), ".");
  }
  if (entry.kind === "command") {
    return h("span", { dataset: { testid: "entry-words" } },
      "Runs the command ", h("code", null, shellJoin(entry.command)), ", with the parameters appended as options: ",
      h("code", null, shellJoin(commandArgv(entry, params))), ".");
  }
  return h("code", null, JSON.stringify(entry));
}

/** The git record: commit, branch, remote and an "uncommitted changes" badge. */
export function gitLine(git, { diff = null, onDiff = null } = {}) {
  if (!git || !git.commit) return h("span", { class: "muted" }, "Not a git repository (no git record).");
  return h("span", { class: "git-line", dataset: { testid: "git-record" } },
    h("code", { title: git.commit, dataset: { testid: "git-commit" } }, shortSha(git.commit, 10)),
    git.branch ? [" on ", h("code", { dataset: { testid: "git-branch" } }, git.branch)] : " (detached)",
    git.remote ? [" · ", h("span", { class: "mono small", dataset: { testid: "git-remote" } }, safeRemote(git.remote))] : null,
    git.dirty
      ? [" ", h("span", { class: "tag tag-dirty", dataset: { testid: "git-dirty" }, title: "The folder had changes not committed to git when it was packed" }, "uncommitted changes"),
        diff && diff.diff_bytes != null ? h("span", { class: "muted small" }, ` ${fmtBytes(diff.diff_bytes)}${diff.diff_truncated ? ", cut at 1 MiB" : ""}`) : null,
        onDiff ? [" ", h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "view-diff" }, on: { click: onDiff } }, "View diff")] : null]
      : [" ", h("span", { class: "tag tag-clean" }, "clean")]);
}

function infoRow(label, value, testid) {
  return h("tr", { dataset: testid ? { testid } : null }, h("th", null, label), h("td", null, value));
}

/** The snapshot's files (filter box, list) and the chosen file's text. */
function fileBrowser(snap) {
  const files = [...(snap.files || [])].sort((a, b) => a.path.localeCompare(b.path));
  let current = null;
  let seq = 0;
  const count = h("span", { class: "muted small", dataset: { testid: "file-count" } });
  const filter = h("input", { type: "search", class: "input input-sm", placeholder: "Filter files", "aria-label": "Filter files", dataset: { testid: "file-filter" },
    on: { input: () => renderList() } });
  const list = h("ul", { class: "file-list", dataset: { testid: "file-list" } });
  const viewHead = h("div", { class: "file-view-head", dataset: { testid: "file-view-head" } }, h("span", { class: "muted" }, "Choose a file to see its text."));
  const note = h("div", { class: "file-note", hidden: true, dataset: { testid: "file-note" } });
  const pre = h("pre", { class: "file-text", hidden: true, dataset: { testid: "file-text" } });

  function renderList() {
    const q = filter.value.trim().toLowerCase();
    const matching = q ? files.filter((f) => f.path.toLowerCase().includes(q)) : files;
    const shown = matching.slice(0, MAX_LISTED);
    replace(list, shown.map((f) => {
      const slash = f.path.lastIndexOf("/");
      return h("li", null, h("button", { type: "button", class: ["file-item", f.path === current && "active"], title: f.path, dataset: { path: f.path },
        "aria-current": f.path === current ? "true" : null, on: { click: () => open(f.path) } },
      h("span", { class: "file-name" }, slash >= 0 ? h("span", { class: "file-dir" }, f.path.slice(0, slash + 1)) : null, f.path.slice(slash + 1)),
      h("span", { class: "file-size" }, fmtBytes(f.size))));
    }),
    matching.length > shown.length ? h("li", { class: "muted small file-more" }, `${matching.length - shown.length} more: type in the filter to find them.`) : null,
    !matching.length ? h("li", { class: "muted small file-more" }, files.length ? "No file matches the filter." : "The snapshot has no files.") : null);
    count.textContent = q ? `${matching.length} of ${plural(files.length, "file")}` : plural(files.length, "file");
  }

  async function open(path) {
    const mine = ++seq;
    current = path;
    for (const b of list.querySelectorAll(".file-item")) {
      const on = b.dataset.path === path;
      b.classList.toggle("active", on);
      if (on) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
    }
    const meta = files.find((f) => f.path === path);
    replace(viewHead, h("span", { class: "mono file-path", dataset: { testid: "file-path" } }, path), meta ? h("span", { class: "muted small" }, fmtBytes(meta.size)) : null);
    note.hidden = true;
    pre.hidden = false;
    pre.dataset.loaded = "0";
    pre.textContent = "Loading…";
    try {
      const res = await snapshotsApi.file(snap.id, path);
      if (mine !== seq) return;
      if (res.binary || typeof res.text !== "string") {
        pre.hidden = true;
        pre.textContent = "";
        note.hidden = false;
        note.textContent = `Binary file (${fmtBytes(res.size)}): not shown here. Download the snapshot to get it.`;
      } else {
        pre.textContent = res.text;
        const lines = res.text ? res.text.split("\n").length - (res.text.endsWith("\n") ? 1 : 0) : 0;
        viewHead.append(h("span", { class: "muted small" }, ` · ${lines} line${lines === 1 ? "" : "s"}`));
        if (res.truncated || (res.size != null && res.size > new Blob([res.text]).size)) {
          note.hidden = false;
          note.textContent = `Only the first ${fmtBytes(new Blob([res.text]).size)} of ${fmtBytes(res.size)} are shown. Download the snapshot for the whole file.`;
        }
      }
      pre.dataset.loaded = "1";
    } catch (err) {
      if (mine !== seq) return;
      pre.hidden = true;
      pre.textContent = "";
      note.hidden = false;
      note.textContent = err.status === 404 ? `No file ${path} in this snapshot.` : `Could not read ${path}: ${err.message}`;
    }
  }

  renderList();
  const el = h("div", { class: "file-browser", dataset: { testid: "file-browser" } },
    h("div", { class: "file-side" }, h("div", { class: "file-side-head" }, filter, count), list),
    h("div", { class: "file-view" }, viewHead, note, pre));
  return { el, open, has: (path) => files.some((f) => f.path === path) };
}

/**
 * The "Code" section of a code run: fills `box` (snapshot facts, entry point, git, files).
 * Resolves once the snapshot is read (and the entry file, if any, requested).
 */
export async function renderCodeSection(box, run) {
  const code = run.code;
  if (!code || !code.snapshot_id) {
    replace(box, h("p", { class: "muted small" }, "This run names no code snapshot."));
    return;
  }
  let snap;
  try {
    snap = await snapshotsApi.get(code.snapshot_id);
  } catch (err) {
    replace(box, h("p", { class: "muted small", dataset: { testid: "code-missing" } },
      err.status === 404 ? `Snapshot ${shortSha(code.sha256)} is not available.` : `Could not read the snapshot: ${err.message}`));
    return;
  }
  const browser = fileBrowser(snap);
  const git = snap.git || code.git;
  const diffPath = ".runyard/git.diff";
  const href = snap.download_url || snapshotsApi.downloadUrl(snap.id);
  replace(box,
    h("table", { class: "table kv code-facts", dataset: { testid: "code-facts" } }, h("tbody", null,
      infoRow("Snapshot", h("span", null, h("code", { title: snap.sha256, dataset: { testid: "snapshot-sha" } }, shortSha(snap.sha256)),
        " ", h("a", { class: "btn btn-sm", href, download: `snapshot-${shortSha(snap.sha256)}.tar.gz`, dataset: { testid: "download-snapshot" } }, "Download")), "code-snapshot"),
      infoRow("Size", `${fmtBytes(snap.size)} packed · ${fmtBytes(snap.unpacked_bytes)} unpacked · ${plural(snap.file_count ?? (snap.files || []).length, "file")}`, "code-size"),
      infoRow("Entry point", describeEntry(code.entry, run.params, { onOpen: (p) => browser.open(p) }), "code-entry"),
      infoRow("Git", gitLine(git, { diff: snap.git, onDiff: browser.has(diffPath) ? () => browser.open(diffPath) : null }), "code-git"),
      infoRow("Uploaded", `${fmtDateTime(snap.created_at)}${snap.created_by ? ` by ${snap.created_by}` : ""}`))),
    browser.el);
  const first = entryFile(code.entry);
  if (first && browser.has(first)) await browser.open(first);
}

// ------------------------------------------------------------------ environment

/** The record's fields in the order shown, with their labels. */
const ENV_FIELDS = [
  ["command", "Command"], ["cwd", "Working folder"], ["python", "Python"], ["executable", "Interpreter"],
  ["platform", "Platform"], ["torch", "torch"], ["cuda", "CUDA"], ["cudnn", "cuDNN"], ["hostname", "Host"],
  ["gpus", "GPUs"], ["seed", "Seed"], ["git", "Git"], ["time", "Recorded"],
];

function envValue(key, v) {
  if (key === "command") return h("code", { class: "wrap" }, shellJoin(v));
  if (key === "gpus") return Array.isArray(v) ? (v.length ? v.join(", ") : "none") : fmtValue(v);
  if (key === "seed") return v === null || v === undefined ? h("span", { class: "muted" }, "not set (seed_everything was not called)") : String(v);
  if (key === "cuda" || key === "cudnn") return v === null || v === undefined ? h("span", { class: "muted" }, "none") : String(v);
  if (key === "git") return v ? gitLine(v) : h("span", { class: "muted" }, "none");
  if (key === "time") return typeof v === "number" ? fmtDateTime(new Date(v * 1000).toISOString()) : fmtDateTime(v);
  return v === null || v === undefined ? "—" : typeof v === "object" ? h("code", null, JSON.stringify(v)) : String(v);
}

/** The flat view compared across runs (compare page): `env.<field>`, `env.packages.<name>`. */
export function environmentFlat(record) {
  const out = {};
  if (!record) return out;
  for (const [key] of ENV_FIELDS) {
    if (key === "time" || key === "cwd" || key === "executable" || !(key in record)) continue;
    const v = record[key];
    if (key === "command") out["env.command"] = shellJoin(v);
    else if (key === "gpus") out["env.gpus"] = Array.isArray(v) ? v.join(", ") || "none" : v;
    else if (key === "git") {
      if (v && typeof v === "object") {
        if ("commit" in v) out["env.git.commit"] = v.commit ? shortSha(v.commit) : v.commit;
        for (const k of ["branch", "dirty"]) if (k in v) out[`env.git.${k}`] = v[k];
      } else out["env.git"] = v;
    } else out[`env.${key}`] = v;
  }
  return out;
}

/** The "Environment" section: record fields, the packages folded with a filter box. */
export class EnvironmentView {
  constructor(runId) {
    this.runId = runId;
    this.el = h("div", { dataset: { testid: "environment" } }, h("p", { class: "muted small" }, "Loading…"));
    this.stamp = undefined;
    this.filterText = "";
  }

  async load() {
    let res;
    try {
      res = await runsApi.environment(this.runId);
    } catch (err) {
      if (err.status !== 404) {
        if (this.stamp === undefined) replace(this.el, h("p", { class: "muted small" }, `Could not read the environment: ${err.message}`));
        return;
      }
      res = null;
    }
    const stamp = res ? `${res.updated_at}` : null;
    if (stamp === this.stamp) return;
    this.stamp = stamp;
    this.render(res && res.record);
  }

  render(record) {
    this.el.dataset.recorded = record ? "1" : "0";
    if (!record) {
      replace(this.el, h("p", { class: "muted small", dataset: { testid: "env-missing" } },
        "Not recorded: the run's process records it (RunyardLogger, from trainer_core) once training starts."));
      return;
    }
    const wasOpen = !!this.el.querySelector("details.env-packages[open]");
    const rows = ENV_FIELDS.filter(([k]) => k in record).map(([k, label]) =>
      h("tr", { dataset: { env: k } }, h("th", null, label), h("td", { class: "mono" }, envValue(k, record[k]))));
    const packages = Object.entries(record.packages || {}).sort(([a], [b]) => a.toLowerCase().localeCompare(b.toLowerCase()));
    const body = h("tbody");
    const shown = h("span", { class: "muted small" });
    const filter = h("input", { type: "search", class: "input input-sm", placeholder: "Filter packages", "aria-label": "Filter packages", value: this.filterText,
      dataset: { testid: "package-filter" }, on: { input: (e) => { this.filterText = e.target.value; fill(); } } });
    const fill = () => {
      const q = this.filterText.trim().toLowerCase();
      const match = q ? packages.filter(([n]) => n.toLowerCase().includes(q)) : packages;
      replace(body, match.map(([n, v]) => h("tr", { dataset: { package: n } }, h("th", null, n), h("td", { class: "mono" }, fmtValue(v)))));
      shown.textContent = q ? `${match.length} of ${packages.length}` : "";
    };
    fill();
    const details = h("details", { class: "env-packages", open: wasOpen, dataset: { testid: "env-packages" } },
      h("summary", null, `Installed packages (${packages.length})`),
      h("div", { class: "env-packages-head" }, filter, shown),
      h("div", { class: "env-packages-list" }, h("table", { class: "table kv", dataset: { testid: "package-table" } }, body)));
    replace(this.el, h("table", { class: "table kv env-table", dataset: { testid: "env-table" } }, h("tbody", null, rows)), packages.length ? details : null);
  }
}
