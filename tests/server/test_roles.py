"""Roles on every route: the matrix of (route from the app's own route table) x (caller).

The expected answer of each cell is derived here from the role rules of docs/security.md,
independently of server/policy.py: a route added to the app without a rule fails the first
test; a rule that lets the wrong caller through fails the matrix.
"""

from __future__ import annotations

import re
import secrets

import pytest
from fastapi.testclient import TestClient

from server import users
from server.auth import (
    RUN_CHECKPOINT_ROUTES,
    RUN_READS,
    RUN_SNAPSHOT_ROUTES,
    RUN_UPLOAD_ROUTES,
    RUN_WRITES,
    WORKER_ALSO,
    WORKER_ROUTES,
)
from server.models import Checkpoint, ModelSummary, Upload
from server.policy import RULES, app_routes
from server.store import missing_checkpoint, missing_run, missing_snapshot, missing_upload
from server.webguard import upload_types


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An app with users of every role in project "alpha", an outsider with their own project,
    and tokens; a fresh run (external, running, submitted by ``member``) for each request."""
    from server.app import create_app
    from server.auth import create_token
    from server.settings import Settings

    home = tmp_path_factory.mktemp("roles")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'r.db'}", reaper=False, broker_url="memory://")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        session = client.app.state.sessionmaker()
        try:
            from server.store import get_or_create_project

            alpha = get_or_create_project(session, "alpha")
            beta = get_or_create_project(session, "beta")
            session.commit()
            made = {}
            for name, admin in (("sadmin", True), ("padmin", False), ("member", False), ("member2", False),
                                ("viewer", False), ("outsider", False), ("extra", False)):
                made[name] = users.create_user(session, name, password="correct horse", is_admin=admin)
            for name, role in (("padmin", "admin"), ("member", "member"), ("member2", "member"),
                               ("viewer", "viewer"), ("extra", "viewer")):
                users.set_role(session, alpha, made[name], role)
            users.set_role(session, beta, made["outsider"], "admin")
            read_token = create_token(session, "personal", name="ro", scope="read", user_id=made["member"].id)[1]
            worker_token = create_token(session, "worker", name="w")[1]
            ids = {name: u.id for name, u in made.items()}
            victim_token = create_token(session, "personal", name="victim", scope="read",
                                        user_id=made["extra"].id)[0].id
            snapshot_id = _alpha_snapshot(client, session, alpha.id, tmp_path_factory.mktemp("roles-code"))
        finally:
            session.close()
        cookies = {name: login(client, name) for name in ("sadmin", "padmin", "member", "member2", "viewer",
                                                           "outsider")}
        yield {"client": client, "alpha": alpha.id, "ids": ids, "cookies": cookies, "read_token": read_token,
               "worker_token": worker_token, "victim_token": victim_token, "snapshot_id": snapshot_id}


def _alpha_snapshot(client: TestClient, session, project_id: int, folder) -> int:
    """A code snapshot of project alpha (its row and its blob), for the snapshot routes."""
    from server import snapshots
    from server.store import add_snapshot, snapshot_key

    (folder / "train.py").write_text("print('hi')\n")
    packed = snapshots.pack(folder)
    blob = folder.parent / "snapshot.tar.gz"
    blob.write_bytes(packed.data)
    client.app.state.artifacts.put_file(snapshot_key(packed.sha256), blob)
    row, _ = add_snapshot(session, project_id=project_id, sha256=packed.sha256, size=len(packed.data),
                          unpacked_bytes=sum(f["size"] for f in packed.files), files=packed.files, git=packed.git)
    return row.id


def login(client: TestClient, name: str) -> tuple[str, str]:
    """A new session of ``name``: (cookie, CSRF token)."""
    client.cookies.clear()
    r = client.post("/api/v1/auth/login", json={"login": name, "password": "correct horse"})
    assert r.status_code == 200, r.text
    cookie = r.cookies.get("runyard_session")
    client.cookies.clear()
    client.cookies.set("runyard_session", cookie)
    csrf = client.get("/api/v1/me").json()["csrf"]
    client.cookies.clear()
    return cookie, csrf


def fresh_target(client: TestClient, project_id: int, owner_id: int) -> dict:
    """A running external run of ``owner_id`` in the project, with a checkpoint, an upload and a summary,
    and a run token for its attempt."""
    from server.auth import create_token
    from server.store import create_run

    session = client.app.state.sessionmaker()
    try:
        run = create_run(session, recipe="external", project="alpha", status="running", max_attempts=1,
                         owner_id=owner_id)
        checkpoint = Checkpoint(run_id=run.id, path=f"{run.id}/x.ckpt", attempt=1)
        upload = Upload(id=secrets.token_hex(16), run_id=run.id, filename="u.ckpt", size=10, sha256="0" * 64,
                        received=0, meta={}, attempt=1)
        session.add_all([checkpoint, upload, ModelSummary(run_id=run.id, summary={"rows": []})])
        session.commit()
        run_token = create_token(session, "run", run_id=run.id, attempt=run.attempt)[1]
        return {"run_id": run.id, "checkpoint_id": checkpoint.id, "upload_id": upload.id, "run_token": run_token}
    finally:
        session.close()


# The contract of docs/security.md, written out on its own (not read from server/policy.py):
# (method, path) -> who may call it. "public", "user" (any logged-in user), "admin" (server
# admins), "worker", or "<read|write|own|manage> <run|checkpoint|upload|project>".
R, W, O = "read run", "write run", "own run"  # noqa: E741 - short names keep the table readable
SPEC = {
    ("GET", "/healthz"): "public", ("GET", "/static/plotly.min.js"): "public",
    ("GET", "/static/plotly-basic.min.js"): "public", ("GET", "/static/plotly-basic.{digest}.min.js"): "public", ("GET", "/static/docs/{version}/{name}"): "public",
    ("GET", "/runs/{run_id}"): "public",
    ("GET", "/openapi.json"): "public", ("GET", "/docs"): "public", ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public", ("GET", "/api/v1/me"): "public", ("POST", "/api/v1/auth/login"): "public",
    ("POST", "/api/v1/auth/link"): "public", ("GET", "/auth/oidc/login"): "public",
    ("GET", "/auth/oidc/callback"): "public", ("GET", "/auth/oidc/logged-out"): "public",
    ("POST", "/api/v1/auth/logout"): "user", ("POST", "/api/v1/me/password"): "user",
    ("GET", "/api/v1/tokens"): "user", ("POST", "/api/v1/tokens"): "user", ("DELETE", "/api/v1/tokens/{token_id}"): "user",
    ("GET", "/api/v1/users"): "admin", ("POST", "/api/v1/users"): "admin", ("PATCH", "/api/v1/users/{user_id}"): "admin",
    ("POST", "/api/v1/users/{user_id}/password"): "admin", ("POST", "/api/v1/users/{user_id}/login-link"): "admin",
    ("GET", "/api/v1/audit"): "user", ("GET", "/api/v1/projects"): "user",
    ("GET", "/api/v1/projects/{project_id}/members"): "read project",
    ("PUT", "/api/v1/projects/{project_id}/members/{user_name}"): "manage project",
    ("DELETE", "/api/v1/projects/{project_id}/members/{user_name}"): "manage project",
    ("GET", "/api/v1/projects/{project_id}/quotas"): "read project",
    ("PUT", "/api/v1/projects/{project_id}/quotas"): "admin",
    ("POST", "/api/v1/runs"): "user", ("GET", "/api/v1/runs"): "user", ("GET", "/api/v1/events"): "user",
    ("GET", "/api/v1/runs/{run_id}"): R, ("PATCH", "/api/v1/runs/{run_id}"): O, ("DELETE", "/api/v1/runs/{run_id}"): O,
    ("POST", "/api/v1/runs/{run_id}/cancel"): O, ("POST", "/api/v1/runs/{run_id}/resume"): W,
    ("GET", "/api/v1/runs/{run_id}/hyperparameters"): R, ("PUT", "/api/v1/runs/{run_id}/hyperparameters"): O,
    ("GET", "/api/v1/runs/{run_id}/summary"): R, ("PUT", "/api/v1/runs/{run_id}/summary"): O,
    ("POST", "/api/v1/runs/{run_id}/heartbeat"): O, ("POST", "/api/v1/runs/{run_id}/finish"): O,
    ("POST", "/api/v1/runs/{run_id}/metrics"): O, ("GET", "/api/v1/runs/{run_id}/metrics"): R,
    ("GET", "/api/v1/runs/{run_id}/metric-keys"): R, ("GET", "/api/v1/runs/{run_id}/logs"): R,
    ("POST", "/api/v1/runs/{run_id}/logs"): O, ("GET", "/api/v1/runs/{run_id}/events"): R,
    ("GET", "/api/v1/runs/keys"): "user", ("GET", "/api/v1/runs/groups"): "user",
    ("POST", "/api/v1/runs/{run_id}/tags"): W, ("DELETE", "/api/v1/runs/{run_id}/tags/{tag}"): W,
    ("PUT", "/api/v1/runs/{run_id}/note"): W, ("POST", "/api/v1/runs/bulk"): "user",
    ("GET", "/api/v1/projects/{project_id}/views"): "read project",
    ("POST", "/api/v1/projects/{project_id}/views"): "write project",
    ("GET", "/api/v1/views/{view_id}"): "user", ("PUT", "/api/v1/views/{view_id}"): "user",
    ("DELETE", "/api/v1/views/{view_id}"): "user",
    ("GET", "/api/v1/projects/{project_id}/layout"): "read project",
    ("PUT", "/api/v1/projects/{project_id}/layout"): "write project",
    ("GET", "/api/v1/runs/{run_id}/checkpoints"): R, ("POST", "/api/v1/runs/{run_id}/checkpoints"): O,
    ("POST", "/api/v1/runs/{run_id}/checkpoints/uploads"): O, ("PUT", "/api/v1/runs/{run_id}/checkpoints/upload"): O,
    ("GET", "/api/v1/uploads/{upload_id}"): "own upload", ("PUT", "/api/v1/uploads/{upload_id}"): "own upload",
    ("GET", "/api/v1/checkpoints/{checkpoint_id}/download"): "read checkpoint",
    ("PATCH", "/api/v1/checkpoints/{checkpoint_id}"): "own checkpoint",
    ("DELETE", "/api/v1/checkpoints/{checkpoint_id}"): "own checkpoint",
    ("GET", "/api/v1/snapshots"): "user", ("PUT", "/api/v1/snapshots/{sha256}"): "user",
    ("GET", "/api/v1/snapshots/{snapshot_id}"): "read snapshot",
    ("GET", "/api/v1/snapshots/{snapshot_id}/files/{path}"): "read snapshot",
    ("GET", "/api/v1/snapshots/{snapshot_id}/download"): "read snapshot",
    ("GET", "/api/v1/runs/{run_id}/code-schema"): R, ("PUT", "/api/v1/runs/{run_id}/code-schema"): O,
    ("GET", "/api/v1/runs/{run_id}/environment"): R, ("PUT", "/api/v1/runs/{run_id}/environment"): O,
    ("GET", "/api/v1/recipes"): "user", ("GET", "/api/v1/workers"): "user", ("POST", "/api/v1/workers"): "worker",
    ("POST", "/api/v1/workers/{worker_id}/heartbeat"): "worker", ("POST", "/api/v1/runs/{run_id}/claim"): "worker",
    ("POST", "/api/v1/runs/{run_id}/requeue"): "worker",
}

ROLE_OF = {"sadmin": "admin", "padmin": "admin", "member": "member", "member2": "member", "viewer": "viewer",
           "outsider": None}
RANK = {"viewer": 1, "member": 2, "admin": 3}
SAFE = ("GET", "HEAD")


def expected(caller: str, method: str, path: str) -> str:
    """'ok', '401', '403' or '404' for this caller on this route (the rules of docs/security.md)."""
    key = (method, path)
    if caller == "worker":
        return "ok" if key in WORKER_ROUTES or key in WORKER_ALSO else "403"
    if caller == "run":
        if key in RUN_SNAPSHOT_ROUTES:
            return "403"  # the fresh run is no code run: the snapshot is not its own (test_snapshots.py)
        return "ok" if key in RUN_READS | RUN_WRITES | RUN_CHECKPOINT_ROUTES | RUN_UPLOAD_ROUTES else "403"
    target, _, need_name = SPEC[key].partition(" ")
    if need_name:
        need_name, target = target, need_name
    if target == "public":
        return "ok"
    if caller == "anonymous":
        return "401"
    if target == "worker":
        return "403"
    if caller == "read_token" and method not in SAFE:
        return "403"
    name = "member" if caller == "read_token" else caller
    if key == ("GET", "/api/v1/audit"):  # admins only: server admins, and each project's admins for it
        return "ok" if name in ("sadmin", "padmin", "outsider") else "403"
    if target == "user":
        return "ok"
    if target == "admin":
        return "ok" if name == "sadmin" else "403"
    role = ROLE_OF[name]
    if role is None:
        return "404"
    need = {"read": 1, "write": 2, "own": 2, "manage": 3}[need_name]
    if RANK[role] < need:
        return "403"
    if need_name == "own" and role != "admin" and name != "member":  # the fresh runs are member's
        return "403"
    return "ok"


CALLERS = ["anonymous", "sadmin", "padmin", "member", "member2", "viewer", "outsider", "read_token", "worker", "run"]


def test_every_route_of_the_app_has_an_access_rule(world):
    routes = app_routes(world["client"].app)
    assert len(routes) > 50
    missing = [r for r in routes if r not in RULES]
    assert not missing, f"routes without a rule in server/policy.py: {missing}"
    stale = [r for r in RULES if r not in routes]
    assert not stale, f"rules for routes that do not exist: {stale}"
    unspecified = [r for r in routes if r not in SPEC]
    assert not unspecified, f"routes missing from this test's SPEC (and from docs/security.md?): {unspecified}"


def _url(path: str, target: dict, world: dict) -> str:
    values = {**target, "project_id": world["alpha"], "user_id": world["ids"]["extra"], "worker_id": 1,
              "user_name": "extra", "token_id": world["victim_token"], "snapshot_id": world["snapshot_id"],
              "sha256": "0" * 64, "path": "train.py",
              "digest": "0" * 16, "version": "0", "name": "swagger-ui.css", "tag": "t1", "view_id": 1}
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def _missing_detail(path: str, target: dict, world: dict) -> str | None:
    if "{run_id}" in path:
        return missing_run(target["run_id"]).message
    if "{checkpoint_id}" in path:
        return missing_checkpoint(target["checkpoint_id"]).message
    if "{upload_id}" in path:
        return missing_upload(target["upload_id"]).message
    if "{snapshot_id}" in path:
        return missing_snapshot(world["snapshot_id"]).message
    if "{project_id}" in path:
        return f"Project {world['alpha']} does not exist; list projects with GET /api/v1/projects."
    return None


@pytest.mark.parametrize("caller", CALLERS)
def test_route_role_matrix(world, caller):
    client: TestClient = world["client"]
    wrong = []
    for method, path in app_routes(client.app):
        if path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            continue
        target = fresh_target(client, world["alpha"], world["ids"]["member"])
        url = _url(path, target, world)
        headers, cookies = {}, {}
        if caller in world["cookies"] and (method, path) == ("POST", "/api/v1/auth/logout"):
            cookie, csrf = login(client, caller)  # logging out ends a session: not the one of the matrix
            cookies["runyard_session"] = cookie
            headers["X-CSRF-Token"] = csrf
        elif caller in world["cookies"]:
            cookie, csrf = world["cookies"][caller]
            cookies["runyard_session"] = cookie
            headers["X-CSRF-Token"] = csrf
        elif caller == "read_token":
            headers["Authorization"] = f"Bearer {world['read_token']}"
        elif caller == "worker":
            headers["Authorization"] = f"Bearer {world['worker_token']}"
        elif caller == "run":
            headers["Authorization"] = f"Bearer {target['run_token']}"
        stream = path.endswith("/events")
        if stream:  # an event stream ends at once while the app says it is shutting down
            client.app.state.shutting_down.set()
        try:
            client.cookies.clear()
            for k, v in cookies.items():
                client.cookies.set(k, v)
            kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            if upload_types(method, path) is not None:  # raw uploads take bytes, not JSON (server/webguard.py)
                kwargs, headers = {"content": b""}, {**headers, "Content-Type": "application/octet-stream"}
            r = client.request(method, url, headers=headers, **kwargs)
            client.cookies.clear()
        finally:
            client.app.state.shutting_down.clear()
        want = expected(caller, method, path)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
        detail = body.get("detail") if isinstance(body, dict) else None
        missing = _missing_detail(path, target, world)
        if want == "ok":
            got_ok = r.status_code not in (401, 403) and not (r.status_code == 404 and detail == missing)
            # the few handler-level refusals an allowed caller meets with an empty body
            if (method, path) == ("POST", "/api/v1/tokens") and caller not in world["cookies"]:
                got_ok = r.status_code == 403
            if not got_ok:
                wrong.append(f"{method} {path}: expected allowed, got {r.status_code} {r.text[:150]}")
        elif want == "404":
            if r.status_code != 404 or detail != missing:
                wrong.append(f"{method} {path}: expected 404 as if missing, got {r.status_code} {r.text[:150]}")
        elif str(r.status_code) != want:
            wrong.append(f"{method} {path}: expected {want}, got {r.status_code} {r.text[:150]}")
        assert r.status_code < 500, f"{method} {path} as {caller}: {r.status_code} {r.text}"
    assert not wrong, f"{caller}:\n" + "\n".join(wrong)
