// What the logged-in user may do, from GET /api/v1/me (see server/policy.py). The dashboard
// only leaves out what the role does not allow; the server decides (and refuses) either way.
//
// Roles per project: viewer (reads) < member (also submits, resumes, clones, and changes its
// own runs) < admin (everything in the project, manages members). Server admins, and the
// single-user open mode (no accounts yet), may do everything.

import { currentMe } from "./api.js";

const RANK = { viewer: 1, member: 2, admin: 3 };

export const isOpenMode = () => !!(currentMe() && currentMe().open);
export const isServerAdmin = () => !!(currentMe() && currentMe().authenticated && currentMe().is_admin);
export const myName = () => { const me = currentMe(); return me && me.user ? me.user.name : null; };

/** The user's role in a project (by name): "viewer" | "member" | "admin" | null. */
export function roleIn(project) {
  const me = currentMe();
  if (!me || !me.authenticated) return null;
  if (me.open || me.is_admin) return "admin";
  return (me.roles || {})[project] || null;
}

/** May submit, resume and clone runs in `project`. A project that does not exist yet may be made by anyone. */
export function canWrite(project) {
  return (RANK[roleIn(project)] || 0) >= RANK.member;
}

/** May manage the project's members. */
export function canManage(project) {
  return roleIn(project) === "admin";
}

/** May cancel, delete or rename `run` (and delete its checkpoints): the owner as member, or a project admin. */
export function canChangeRun(run) {
  const role = roleIn(run.project);
  if (role === "admin") return true;
  return role === "member" && !!run.owner && run.owner === myName();
}

/** Whether to offer "New run": a role to submit with somewhere, or no project yet (a new one is theirs). */
export function canSubmitSomewhere() {
  const me = currentMe();
  if (!me || !me.authenticated) return false;
  if (me.open || me.is_admin) return true;
  const roles = Object.values(me.roles || {});
  return roles.length === 0 || roles.some((r) => (RANK[r] || 0) >= RANK.member);
}

/** May read the audit log: server admins (all of it) and project admins (their projects'). */
export function canReadAudit() {
  const me = currentMe();
  if (!me || !me.authenticated) return false;
  if (me.open || me.is_admin) return true;
  return Object.values(me.roles || {}).includes("admin");
}

/** The most runs one bulk action by query may take (RUNYARD_BULK_MAX, from /me's limits), or null. */
export function bulkMax() {
  const me = currentMe();
  const v = me && me.limits ? me.limits.bulk_max : null;
  return Number.isFinite(v) ? v : null;
}
