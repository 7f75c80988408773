"""Who may call which route: one table, checked for every request by ``server.auth.authorize``.

Each route of the app, as ``(METHOD, path template)``, has a :class:`Rule`:

- ``target`` says what the route acts on, which decides the project whose role counts:
  ``public`` (no login: health, login, the dashboard's files), ``user`` (any logged-in user;
  the handler filters what it returns, e.g. lists show only visible projects' runs),
  ``admin`` (server-wide admins only), ``run`` / ``checkpoint`` / ``upload`` (the run named by
  the path, or the run the checkpoint / upload belongs to), ``project`` (``{project_id}`` in
  the path), ``snapshot`` (the code snapshot ``{snapshot_id}``: its project), ``worker``
  (worker tokens only).
- ``need`` is the least role that may call it: ``read`` (viewer), ``write`` (member),
  ``own`` (a member on a run they submitted, or a project admin on any), ``manage`` (project
  admin). Server admins pass every check.

A target the caller may not read answers 404 exactly as if it did not exist; a target they
may read but not change answers 403 naming the role it needs. Worker and run tokens are
checked by their own narrower rules first (``server/auth.py``). ``tests/server/test_roles.py``
walks the app's route table and fails for a route missing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    target: str
    need: str = "read"


PUBLIC = Rule("public")
USER = Rule("user")
ADMIN = Rule("admin")

RULES: dict[tuple[str, str], Rule] = {
    # service and the dashboard
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/static/plotly.min.js"): PUBLIC,
    ("GET", "/static/plotly-basic.min.js"): PUBLIC,  # the basic bundle the dashboard uses
    ("GET", "/static/plotly-basic.{digest}.min.js"): PUBLIC,  # the same, by content hash (immutable)
    ("GET", "/static/docs/{version}/{name}"): PUBLIC,  # Swagger UI's and ReDoc's files, offline
    ("GET", "/runs/{run_id}"): PUBLIC,  # the dashboard's page (index.html); its data needs a login
    ("GET", "/openapi.json"): PUBLIC,  # the API's description (no data)
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # accounts and sessions
    ("GET", "/api/v1/me"): PUBLIC,  # who am I (or: not logged in, and how to log in)
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/link"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): USER,
    ("GET", "/auth/oidc/login"): PUBLIC,
    ("GET", "/auth/oidc/callback"): PUBLIC,
    ("GET", "/auth/oidc/logged-out"): PUBLIC,
    ("POST", "/api/v1/me/password"): USER,
    ("GET", "/api/v1/tokens"): USER,
    ("POST", "/api/v1/tokens"): USER,
    ("DELETE", "/api/v1/tokens/{token_id}"): USER,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("PATCH", "/api/v1/users/{user_id}"): ADMIN,
    ("POST", "/api/v1/users/{user_id}/password"): ADMIN,
    ("POST", "/api/v1/users/{user_id}/login-link"): ADMIN,
    ("GET", "/api/v1/audit"): USER,  # server admins: everything; project admins: their projects
    # projects
    ("GET", "/api/v1/projects"): USER,
    ("GET", "/api/v1/projects/{project_id}/members"): Rule("project", "read"),
    ("PUT", "/api/v1/projects/{project_id}/members/{user_name}"): Rule("project", "manage"),
    ("DELETE", "/api/v1/projects/{project_id}/members/{user_name}"): Rule("project", "manage"),
    ("GET", "/api/v1/projects/{project_id}/quotas"): Rule("project", "read"),  # server/quotas.py
    ("PUT", "/api/v1/projects/{project_id}/quotas"): ADMIN,  # only server admins set quotas
    # runs
    ("POST", "/api/v1/runs"): USER,  # the handler checks member on the body's project
    ("GET", "/api/v1/runs"): USER,
    ("GET", "/api/v1/events"): USER,
    ("GET", "/api/v1/runs/{run_id}"): Rule("run", "read"),
    ("PATCH", "/api/v1/runs/{run_id}"): Rule("run", "own"),
    ("DELETE", "/api/v1/runs/{run_id}"): Rule("run", "own"),
    ("POST", "/api/v1/runs/{run_id}/cancel"): Rule("run", "own"),
    ("POST", "/api/v1/runs/{run_id}/resume"): Rule("run", "write"),
    ("GET", "/api/v1/runs/{run_id}/hyperparameters"): Rule("run", "read"),
    ("PUT", "/api/v1/runs/{run_id}/hyperparameters"): Rule("run", "own"),
    ("GET", "/api/v1/runs/{run_id}/summary"): Rule("run", "read"),
    ("PUT", "/api/v1/runs/{run_id}/summary"): Rule("run", "own"),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"): Rule("run", "own"),
    ("POST", "/api/v1/runs/{run_id}/finish"): Rule("run", "own"),
    ("POST", "/api/v1/runs/{run_id}/metrics"): Rule("run", "own"),
    ("GET", "/api/v1/runs/{run_id}/metrics"): Rule("run", "read"),
    ("GET", "/api/v1/runs/{run_id}/metric-keys"): Rule("run", "read"),
    ("GET", "/api/v1/runs/{run_id}/logs"): Rule("run", "read"),
    ("POST", "/api/v1/runs/{run_id}/logs"): Rule("run", "own"),
    ("GET", "/api/v1/runs/{run_id}/events"): Rule("run", "read"),
    # issue 14: query keys, groups, tags, notes, bulk actions, saved views, panel layout
    ("GET", "/api/v1/runs/keys"): USER,  # the handler lists the visible projects' keys only
    ("GET", "/api/v1/runs/groups"): USER,  # the handler groups the visible projects' runs only
    ("POST", "/api/v1/runs/{run_id}/tags"): Rule("run", "write"),
    ("DELETE", "/api/v1/runs/{run_id}/tags/{tag}"): Rule("run", "write"),
    ("PUT", "/api/v1/runs/{run_id}/note"): Rule("run", "write"),
    ("POST", "/api/v1/runs/bulk"): USER,  # the handler checks each run as its single-run route would
    ("GET", "/api/v1/projects/{project_id}/views"): Rule("project", "read"),
    ("POST", "/api/v1/projects/{project_id}/views"): Rule("project", "write"),
    ("GET", "/api/v1/views/{view_id}"): USER,  # the handler checks the view's project (read)
    ("PUT", "/api/v1/views/{view_id}"): USER,  # ... (member)
    ("DELETE", "/api/v1/views/{view_id}"): USER,  # ... (member)
    ("GET", "/api/v1/projects/{project_id}/layout"): Rule("project", "read"),
    ("PUT", "/api/v1/projects/{project_id}/layout"): Rule("project", "write"),
    # checkpoints
    ("GET", "/api/v1/runs/{run_id}/checkpoints"): Rule("run", "read"),
    ("POST", "/api/v1/runs/{run_id}/checkpoints"): Rule("run", "own"),
    ("POST", "/api/v1/runs/{run_id}/checkpoints/uploads"): Rule("run", "own"),
    ("PUT", "/api/v1/runs/{run_id}/checkpoints/upload"): Rule("run", "own"),
    ("GET", "/api/v1/uploads/{upload_id}"): Rule("upload", "own"),
    ("PUT", "/api/v1/uploads/{upload_id}"): Rule("upload", "own"),
    ("GET", "/api/v1/checkpoints/{checkpoint_id}/download"): Rule("checkpoint", "read"),
    ("PATCH", "/api/v1/checkpoints/{checkpoint_id}"): Rule("checkpoint", "own"),
    ("DELETE", "/api/v1/checkpoints/{checkpoint_id}"): Rule("checkpoint", "own"),
    # code snapshots and code runs (docs/code-runs.md)
    ("GET", "/api/v1/snapshots"): USER,  # the handler lists visible projects' snapshots only
    ("PUT", "/api/v1/snapshots/{sha256}"): USER,  # the handler checks member on ?project=
    ("GET", "/api/v1/snapshots/{snapshot_id}"): Rule("snapshot", "read"),
    ("GET", "/api/v1/snapshots/{snapshot_id}/files/{path}"): Rule("snapshot", "read"),
    ("GET", "/api/v1/snapshots/{snapshot_id}/download"): Rule("snapshot", "read"),
    ("GET", "/api/v1/runs/{run_id}/code-schema"): Rule("run", "read"),
    ("PUT", "/api/v1/runs/{run_id}/code-schema"): Rule("run", "own"),
    ("GET", "/api/v1/runs/{run_id}/environment"): Rule("run", "read"),
    ("PUT", "/api/v1/runs/{run_id}/environment"): Rule("run", "own"),
    # workers and recipes
    ("GET", "/api/v1/recipes"): USER,
    ("GET", "/api/v1/workers"): USER,
    ("POST", "/api/v1/workers"): Rule("worker"),
    ("POST", "/api/v1/workers/{worker_id}/heartbeat"): Rule("worker"),
    ("POST", "/api/v1/runs/{run_id}/claim"): Rule("worker"),
    ("POST", "/api/v1/runs/{run_id}/requeue"): Rule("worker"),
}

NEED_RANK = {"read": 1, "write": 2, "own": 2, "manage": 3}
ROLE_FOR_NEED = {"read": "viewer", "write": "member", "own": "member", "manage": "admin"}
DOING = {"read": "read it", "write": "change it", "own": "change it", "manage": "manage its members"}


def rule_for(method: str, path: str) -> Rule | None:
    return RULES.get(("GET" if method == "HEAD" else method, path))


def app_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) the app answers with a handler of ours, for the route x
    role test: the OpenAPI schema, plus the routes left out of it (the app's own and those of
    the routers it included, ``app.state.routers``)."""
    out = set()
    for path, operations in app.openapi().get("paths", {}).items():
        for method in operations:
            out.add((method.upper(), path))
    routes = list(app.router.routes)
    for router in getattr(app.state, "routers", ()):
        routes.extend(router.routes)
    for route in routes:
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None)
        if methods and path and getattr(route, "include_in_schema", True) is False:
            out.update((m, path) for m in methods if m != "HEAD")
    return sorted(out)
