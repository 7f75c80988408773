"""Tags, notes (rendered safely), bulk actions, saved views and the panel layout (issue 14), on
SQLite and PostgreSQL; and the role checks of bulk actions and views on an app with users."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient


def _external(client, project, name="r", **extra):
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": name, "project": project, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _project_id(client, name):
    return next(p["id"] for p in client.get("/api/v1/projects").json() if p["name"] == name)


def test_tags_at_creation_add_remove_and_limits(client):
    project = f"t-{uuid.uuid4().hex[:8]}"
    run = _external(client, project, tags=["baseline", "v1.2:x"])
    assert client.get(f"/api/v1/runs/{run['id']}").json()["tags"] == ["baseline", "v1.2:x"]
    r = client.post(f"/api/v1/runs/{run['id']}/tags", json={"tags": ["wide", "baseline"]})
    assert r.status_code == 200 and r.json() == {"tags": ["baseline", "v1.2:x", "wide"]}
    assert client.delete(f"/api/v1/runs/{run['id']}/tags/baseline").status_code == 204
    listed = client.get("/api/v1/runs", params={"project": project}).json()["items"]
    assert listed[0]["tags"] == ["v1.2:x", "wide"]
    for bad in (["has space"], ["x" * 65], [""], ["<b>"]):
        r = client.post(f"/api/v1/runs/{run['id']}/tags", json={"tags": bad})
        assert r.status_code == 422 and r.json()["field"] == "tags", r.text
    r = client.post("/api/v1/runs", json={"recipe": "external", "project": project, "tags": ["a b"]})
    assert r.status_code == 422 and r.json()["field"] == "tags"
    r = client.post(f"/api/v1/runs/{run['id']}/tags", json={"tags": [f"t{i}" for i in range(49)]})
    assert r.status_code == 422 and r.json()["field"] == "tags" and "at most 50" in r.json()["detail"]
    assert client.post(f"/api/v1/runs/{run['id']}/tags", json={"tags": [f"t{i}" for i in range(48)]}).status_code \
        == 200
    assert len(client.get(f"/api/v1/runs/{run['id']}").json()["tags"]) == 50
    assert client.post("/api/v1/runs/99999999/tags", json={"tags": ["a"]}).status_code == 404


XSS = """# Result

<script>alert(1)</script> <img src=x onerror="alert(2)"> <a href="javascript:alert(3)">x</a>

[click](javascript:alert(4)) [data](data:text/html;base64,PHNjcmlwdD4=) [vb](  JaVaScRiPt:alert(5))
![img](javascript:alert(6)) [ok](https://example.com/a?b=1) **bold** `code`
"""


def test_note_is_rendered_without_html_passthrough(client):
    project = f"n-{uuid.uuid4().hex[:8]}"
    run = _external(client, project)
    r = client.put(f"/api/v1/runs/{run['id']}/note", json={"note": XSS})
    assert r.status_code == 200, r.text
    got = client.get(f"/api/v1/runs/{run['id']}").json()
    assert got["note"] == XSS
    html = got["note_html"]
    assert "<h1>Result</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert '<a href="https://example.com/a?b=1">ok</a>' in html
    assert not re.search(r"<script", html, re.I)
    assert not re.search(r"<[^>]+\son\w+\s*=", html, re.I)  # no event handler attribute in any tag
    assert not re.search(r"(href|src)\s*=\s*\"\s*(javascript|data|vbscript):", html, re.I)
    assert "&lt;script&gt;" in html  # shown as text
    r = client.put(f"/api/v1/runs/{run['id']}/note", json={"note": "x" * 65537})
    assert r.status_code == 422 and "note" in r.json()["field"]
    assert client.put(f"/api/v1/runs/{run['id']}/note", json={"note": ""}).status_code == 200
    got = client.get(f"/api/v1/runs/{run['id']}").json()
    assert got["note"] is None and got["note_html"] == ""
    client.put(f"/api/v1/runs/{run['id']}/note", json={"note": "findme"})
    names = client.get("/api/v1/runs", params={"project": project, "q": "note ~ FINDME"}).json()["items"]
    assert [n["id"] for n in names] == [run["id"]]


def test_bulk_tag_untag_cancel_delete(client):
    project = f"b-{uuid.uuid4().hex[:8]}"
    ids = [_external(client, project, name=f"r{i}")["id"] for i in range(3)]
    r = client.post("/api/v1/runs/bulk", json={"ids": [*ids, 99999999], "action": "tag", "tags": ["sweep"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, True, True, False]
    assert "not found" in results[3]["error"]
    assert client.get("/api/v1/runs", params={"project": project, "q": "tag:sweep"}).json()["total"] == 3
    r = client.post("/api/v1/runs/bulk", json={"ids": ids[:1], "action": "untag", "tags": ["sweep"]})
    assert r.json()["results"] == [{"id": ids[0], "ok": True}]
    assert client.get("/api/v1/runs", params={"project": project, "q": "tag:sweep"}).json()["total"] == 2
    r = client.post("/api/v1/runs/bulk", json={"ids": ids[:2], "action": "delete"})
    assert [x["ok"] for x in r.json()["results"]] == [False, False]  # running: cancel first
    assert "cancel" in r.json()["results"][0]["error"]
    r = client.post("/api/v1/runs/bulk", json={"ids": ids[:2], "action": "cancel"})
    assert [x["ok"] for x in r.json()["results"]] == [True, True]
    assert all(client.get(f"/api/v1/runs/{i}").json()["cancel_requested"] for i in ids[:2])
    for run_id in ids[:2]:  # an external run's script ends it
        assert client.patch(f"/api/v1/runs/{run_id}", json={"status": "cancelled"}).status_code == 200
    r = client.post("/api/v1/runs/bulk", json={"ids": ids[:2], "action": "delete"})
    assert [x["ok"] for x in r.json()["results"]] == [True, True], r.text
    assert [i["id"] for i in client.get("/api/v1/runs", params={"project": project}).json()["items"]] == [ids[2]]
    for body, field in [({"ids": [], "action": "tag", "tags": ["a"]}, "ids"),
                        ({"ids": list(range(1, 1002)), "action": "cancel"}, "ids"),
                        ({"ids": [1], "action": "explode"}, "action"), ({"ids": [1], "action": "tag"}, "tags"),
                        ({"ids": [1], "action": "tag", "tags": ["bad tag"]}, "tags")]:
        r = client.post("/api/v1/runs/bulk", json=body)
        assert r.status_code == 422 and field in r.json()["field"], r.text


def test_saved_views_and_layout(client):
    project = f"v-{uuid.uuid4().hex[:8]}"
    _external(client, project)
    pid = _project_id(client, project)
    body = {"name": "best", "query": "tag:baseline and metrics.val_loss.min < 0.1", "columns": ["params.lr",
            "metrics.val_loss.min"], "sort": "-metrics.val_loss.min", "group_by": "params.opt"}
    r = client.post(f"/api/v1/projects/{pid}/views", json=body)
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["id"] and {k: view[k] for k in body} == body
    assert [v["id"] for v in client.get(f"/api/v1/projects/{pid}/views").json()["items"]] == [view["id"]]
    assert client.get(f"/api/v1/views/{view['id']}").json()["query"] == body["query"]
    r = client.put(f"/api/v1/views/{view['id']}", json={**body, "name": "renamed"})
    assert r.status_code == 200 and r.json()["name"] == "renamed"
    for bad, field in [({"name": "x", "query": "a and ("}, "query"), ({"name": "x", "columns": ["nope"]}, "columns"),
                       ({"name": "x", "sort": "bogus"}, "sort"), ({"name": ""}, "name")]:
        r = client.post(f"/api/v1/projects/{pid}/views", json=bad)
        assert r.status_code == 422 and field in r.json()["field"], r.text
    assert client.delete(f"/api/v1/views/{view['id']}").status_code == 204
    assert client.get(f"/api/v1/views/{view['id']}").status_code == 404
    assert client.get("/api/v1/projects/99999999/views").status_code == 404

    assert client.get(f"/api/v1/projects/{pid}/layout").json() == {"panels": [], "hidden": []}
    layout = {"panels": [{"id": "p1", "title": "Loss", "metrics": ["train_loss", "val_loss"], "log_y": True},
                         {"id": "p2", "title": "Acc", "metrics": ["acc"], "log_y": False}], "hidden": ["lr"]}
    r = client.put(f"/api/v1/projects/{pid}/layout", json=layout)
    assert r.status_code == 200 and r.json() == layout
    assert client.get(f"/api/v1/projects/{pid}/layout").json() == layout
    for bad in ({"panels": [{"id": "p", "metrics": [f"m{i}" for i in range(21)]}]},
                {"panels": [{"id": f"p{i}"} for i in range(101)]},
                {"panels": [{"id": "p"}, {"id": "p"}]}, {"panels": [{"title": "no id"}]}, {"bogus": 1}):
        r = client.put(f"/api/v1/projects/{pid}/layout", json=bad)
        assert r.status_code == 422, r.text
        assert r.json().get("field", "").startswith(("panels", "bogus")), r.text


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """An app with users: a member and a viewer of project "alpha", an outsider."""
    from server import users
    from server.app import create_app
    from server.auth import create_token
    from server.settings import Settings
    from server.store import get_or_create_project

    home = tmp_path_factory.mktemp("team")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 't.db'}", reaper=False, broker_url="memory://")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        session = client.app.state.sessionmaker()
        try:
            alpha = get_or_create_project(session, "alpha")
            get_or_create_project(session, "beta")
            session.commit()
            tokens = {}
            for name, role in (("member", "member"), ("member2", "member"), ("viewer", "viewer"), ("outsider", None)):
                user = users.create_user(session, name, password="correct horse")
                if role:
                    users.set_role(session, alpha, user, role)
                tokens[name] = {"Authorization": "Bearer " + create_token(
                    session, "personal", name="t", scope="read+write", user_id=user.id)[1]}
            alpha_id = alpha.id
        finally:
            session.close()
        yield client, tokens, alpha_id


def test_bulk_and_views_check_each_callers_role(team):
    client, tokens, alpha = team
    mine = client.post("/api/v1/runs", headers=tokens["member"], json={"recipe": "external", "project": "alpha"})
    theirs = client.post("/api/v1/runs", headers=tokens["member2"], json={"recipe": "external", "project": "alpha"})
    ids = [mine.json()["id"], theirs.json()["id"]]
    r = client.post("/api/v1/runs/bulk", headers=tokens["member"], json={"ids": ids, "action": "tag", "tags": ["x"]})
    assert [x["ok"] for x in r.json()["results"]] == [True, True]  # a member may tag any run of the project
    r = client.post("/api/v1/runs/bulk", headers=tokens["member"], json={"ids": ids, "action": "cancel"})
    assert [x["ok"] for x in r.json()["results"]] == [True, False]  # but cancel only their own
    r = client.post("/api/v1/runs/bulk", headers=tokens["viewer"], json={"ids": ids, "action": "tag", "tags": ["y"]})
    assert [x["ok"] for x in r.json()["results"]] == [False, False] and "viewer" in r.json()["results"][0]["error"]
    r = client.post("/api/v1/runs/bulk", headers=tokens["outsider"], json={"ids": ids, "action": "delete"})
    assert [x["error"] for x in r.json()["results"]] == [f"Run {ids[0]} not found.", f"Run {ids[1]} not found."]
    assert client.get("/api/v1/runs", headers=tokens["outsider"], params={"q": "tag:x"}).json()["total"] == 0
    keys = client.get("/api/v1/runs/keys", headers=tokens["outsider"]).json()
    assert keys["tags"] == []
    assert client.get("/api/v1/runs/keys", headers=tokens["viewer"]).json()["tags"] == ["x"]

    view = client.post(f"/api/v1/projects/{alpha}/views", headers=tokens["member"], json={"name": "v"}).json()
    assert client.get(f"/api/v1/views/{view['id']}", headers=tokens["viewer"]).status_code == 200
    assert client.put(f"/api/v1/views/{view['id']}", headers=tokens["viewer"], json={"name": "w"}).status_code == 403
    assert client.delete(f"/api/v1/views/{view['id']}", headers=tokens["viewer"]).status_code == 403
    assert client.get(f"/api/v1/views/{view['id']}", headers=tokens["outsider"]).status_code == 404
    assert client.put(f"/api/v1/projects/{alpha}/layout", headers=tokens["viewer"], json={}).status_code == 403
    assert client.get(f"/api/v1/projects/{alpha}/layout", headers=tokens["viewer"]).status_code == 200
    assert client.put(f"/api/v1/projects/{alpha}/layout", headers=tokens["member"], json={}).status_code == 200


def test_logger_and_submit_set_tags_at_creation(live_server, tmp_path):
    """RunyardLogger(tags=...) and `runyard submit --tag` against a real server process."""
    import os
    import subprocess
    import sys

    import httpx

    from trainer_core.loggers.runyard import RunyardLogger

    url, _ = live_server
    project = f"lg-{uuid.uuid4().hex[:8]}"
    logger = RunyardLogger(url=url, project=project, name="tagged", save_dir=tmp_path, flush_interval=0.05,
                           heartbeat_interval=0, tags=["from-logger", "v2"], environment=False)
    logger.log_metrics({"loss": 0.5}, step=0)
    logger.finalize("success")
    runs = httpx.get(f"{url}/api/v1/runs", params={"project": project, "q": "tag:from-logger"}).json()["items"]
    assert [(r["name"], r["tags"]) for r in runs] == [("tagged", ["from-logger", "v2"])]
    done = subprocess.run([sys.executable, "-m", "server.cli", "submit", "external", "--project", project, "--name",
                           "cli-run", "--tag", "a", "--tag", "b:c", "--url", url], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RUNYARD_URL": url})
    assert done.returncode == 0, done.stdout + done.stderr
    runs = httpx.get(f"{url}/api/v1/runs", params={"project": project, "q": "tag:b:c"}).json()["items"]
    assert [(r["name"], r["tags"]) for r in runs] == [("cli-run", ["a", "b:c"])]
