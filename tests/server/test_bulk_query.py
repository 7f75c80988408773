"""Bulk actions over every run a query matches (``POST /api/v1/runs/bulk`` with ``query`` and
``expected``), on SQLite and PostgreSQL; and the role checks of a query bulk on an app with users."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

BULK_MAX = 150  # this module's RUNYARD_BULK_MAX


@pytest.fixture(scope="module")
def app_settings(app_settings):
    """The backend's settings (tests/server/conftest.py) with a small cap on query bulks."""
    return app_settings.model_copy(update={"bulk_max": BULK_MAX})


def _project_id(client, name):
    return next(p["id"] for p in client.get("/api/v1/projects").json() if p["name"] == name)


def _runs(client, project, n, params=None, headers=None):
    ids = []
    for i in range(n):
        r = client.post("/api/v1/runs", headers=headers, json={"recipe": "external", "name": f"r{i}",
                                                               "project": project, "params": params or {}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _total(client, headers=None, **params):
    r = client.get("/api/v1/runs", headers=headers, params={"limit": 1, **params})
    assert r.status_code == 200, r.text
    return r.json()["total"]


def _bulk(client, headers=None, **body):
    return client.post("/api/v1/runs/bulk", headers=headers, json=body)


@pytest.fixture(scope="module")
def seeded(client):
    """130 matching runs in one project (more than the dashboard's page of 100), 5 there that do not
    match, and 20 in another project that match the same query."""
    project, other = f"bq-{uuid.uuid4().hex[:8]}", f"bq-{uuid.uuid4().hex[:8]}"
    matching = _runs(client, project, 130, {"lr": 0.1})
    _runs(client, project, 5, {"lr": 0.5})
    _runs(client, other, 20, {"lr": 0.1})
    return project, other, _project_id(client, project), matching


def test_tag_by_query_over_more_than_a_page(client, seeded):
    project, other, pid, matching = seeded
    query = {"project": pid, "q": "params.lr < 0.2"}
    shown = _total(client, project=project, q="params.lr < 0.2")
    assert shown == 130
    r = _bulk(client, query=query, expected=shown, action="tag", tags=["by-query"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["matched"] == 130 and len(out["results"]) == 130
    assert all(x["ok"] for x in out["results"]) and sorted(x["id"] for x in out["results"]) == sorted(matching)
    assert _total(client, project=project, q="tag:by-query") == 130
    assert _total(client, project=project, q="params.lr > 0.2 and tag:by-query") == 0  # non-matching runs
    assert _total(client, project=other, q="tag:by-query") == 0  # the other project's runs
    # untag by query: the same shape, and the tag is gone from all 130
    r = _bulk(client, query={**query, "q": "tag:by-query"}, expected=130, action="untag", tags=["by-query"])
    assert r.status_code == 200 and r.json()["matched"] == 130, r.text
    assert _total(client, q="tag:by-query") == 0


def test_a_changed_count_is_refused_and_changes_nothing(client, seeded):
    project, _, pid, _ = seeded
    for expected in (129, 131, 0):
        r = _bulk(client, query={"project": pid, "q": "params.lr < 0.2"}, expected=expected, action="tag",
                  tags=["stale"])
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["field"] == "expected"
        assert "130" in body["detail"] and str(expected) in body["detail"] and "nothing" in body["detail"]
    assert _total(client, q="tag:stale") == 0
    r = _bulk(client, query={"project": pid, "q": "params.lr < 0.2"}, expected=129, action="delete")
    assert r.status_code == 409
    assert _total(client, project=project) == 135


def test_the_cap(client, seeded):
    _, _, pid, _ = seeded
    r = _bulk(client, query={"project": pid, "q": ""}, expected=BULK_MAX + 1, action="tag", tags=["capped"])
    assert r.status_code == 422 and r.json()["field"] == "query", r.text
    assert str(BULK_MAX) in r.json()["detail"] and "RUNYARD_BULK_MAX" in r.json()["detail"]
    # shown fewer than the cap but more match now: only the first cap + 1 ids are read, the count is exact
    everything = _total(client)
    assert everything > BULK_MAX
    r = _bulk(client, query={"q": ""}, expected=BULK_MAX, action="tag", tags=["capped"])
    assert r.status_code == 409 and str(everything) in r.json()["detail"], r.text
    assert _total(client, q="tag:capped") == 0


def test_bad_bodies_name_their_field(client, seeded):
    _, _, pid, _ = seeded
    good = {"project": pid, "q": ""}
    for body, status, field in [
        ({"ids": [1], "query": good, "expected": 1, "action": "cancel"}, 422, "query"),
        ({"action": "cancel"}, 422, "ids"),
        ({"query": good, "action": "cancel"}, 422, "expected"),
        ({"query": good, "expected": -1, "action": "cancel"}, 422, "expected"),
        ({"query": {"project": pid, "q": "params.lr <"}, "expected": 1, "action": "cancel"}, 422, "query.q"),
        ({"query": {"project": pid, "status": "sleeping"}, "expected": 1, "action": "cancel"}, 422, "query.status"),
        ({"query": {"project": pid, "bogus": 1}, "expected": 1, "action": "cancel"}, 422, "query.bogus"),
        ({"query": "params.lr < 1", "expected": 1, "action": "cancel"}, 422, "query"),
        ({"query": {"project": 0}, "expected": 1, "action": "cancel"}, 422, "query.project"),
        ({"query": good, "expected": 1, "action": "tag"}, 422, "tags"),
    ]:
        r = _bulk(client, **body)
        assert r.status_code == status and r.json().get("field") == field, (body, r.text)
        assert r.json()["detail"].endswith("."), r.text
    r = _bulk(client, query={"project": 99999999}, expected=0, action="cancel")
    assert r.status_code == 404 and "Project 99999999" in r.json()["detail"], r.text
    r = _bulk(client, query={"project": pid, "q": "params.lr <"}, expected=1, action="cancel")
    assert r.json()["column"] >= 10  # the query's error says where, as GET /runs does


def test_cancel_then_delete_by_query(client):
    project = f"bqd-{uuid.uuid4().hex[:8]}"
    ids = _runs(client, project, 3)
    pid = _project_id(client, project)
    r = _bulk(client, query={"project": pid, "status": "running"}, expected=3, action="cancel")
    assert r.status_code == 200 and [x["ok"] for x in r.json()["results"]] == [True] * 3, r.text
    for run_id in ids:  # an external run's script ends it
        assert client.patch(f"/api/v1/runs/{run_id}", json={"status": "cancelled"}).status_code == 200
    r = _bulk(client, query={"project": pid, "status": "cancelled", "recipe": "external"}, expected=3,
              action="delete")
    assert r.status_code == 200 and r.json()["matched"] == 3, r.text
    assert all(x["ok"] for x in r.json()["results"])
    assert _total(client, project=project) == 0
    r = _bulk(client, query={"project": pid}, expected=0, action="delete")  # nothing left: nothing to do
    assert r.status_code == 200 and r.json() == {"results": [], "matched": 0}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """An app with users: a member and a viewer of "alpha", a member of "beta", an outsider."""
    from server import users
    from server.app import create_app
    from server.auth import create_token
    from server.settings import Settings
    from server.store import get_or_create_project

    home = tmp_path_factory.mktemp("bulk-team")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 't.db'}", reaper=False, broker_url="memory://")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        session = client.app.state.sessionmaker()
        try:
            projects = {name: get_or_create_project(session, name) for name in ("alpha", "beta")}
            session.commit()
            tokens, ids = {}, {}
            for name, project, role in (("member", "alpha", "member"), ("viewer", "alpha", "viewer"),
                                        ("betam", "beta", "member"), ("outsider", None, None)):
                user = users.create_user(session, name, password="correct horse")
                if project:
                    users.set_role(session, projects[project], user, role)
                tokens[name] = {"Authorization": "Bearer " + create_token(
                    session, "personal", name="t", scope="read+write", user_id=user.id)[1]}
            ids = {name: project.id for name, project in projects.items()}
        finally:
            session.close()
        _runs(client, "alpha", 3, headers=tokens["member"])
        _runs(client, "beta", 2, headers=tokens["betam"])
        yield client, tokens, ids


def test_a_query_bulk_counts_and_changes_only_what_the_caller_may(team):
    client, tokens, projects = team
    member, viewer, betam, outsider = (tokens[n] for n in ("member", "viewer", "betam", "outsider"))
    # the member sees alpha's 3 runs only: beta's 2 neither count nor change
    assert _total(client, headers=member) == 3
    r = _bulk(client, headers=member, query={"q": ""}, expected=5, action="tag", tags=["all"])
    assert r.status_code == 409 and "3" in r.json()["detail"], r.text
    r = _bulk(client, headers=member, query={"q": ""}, expected=3, action="tag", tags=["all"])
    assert r.status_code == 200 and r.json()["matched"] == 3 and all(x["ok"] for x in r.json()["results"]), r.text
    assert _total(client, headers=betam, q="tag:all") == 0 and _total(client, headers=member, q="tag:all") == 3
    # a project the caller may not see is missing, as everywhere
    r = _bulk(client, headers=member, query={"project": projects["beta"]}, expected=2, action="tag", tags=["x"])
    assert r.status_code == 404 and r.json()["detail"] == (f"Project {projects['beta']} does not exist; list "
                                                           "projects with GET /api/v1/projects.")
    # a viewer's query counts the runs they see, and changes none of them (each checked as by id)
    r = _bulk(client, headers=viewer, query={"project": projects["alpha"]}, expected=3, action="tag", tags=["v"])
    assert r.status_code == 200 and r.json()["matched"] == 3, r.text
    assert [x["ok"] for x in r.json()["results"]] == [False] * 3 and "viewer" in r.json()["results"][0]["error"]
    assert _total(client, headers=member, q="tag:v") == 0
    r = _bulk(client, headers=viewer, query={"q": ""}, expected=3, action="delete")
    assert [x["ok"] for x in r.json()["results"]] == [False] * 3
    # an outsider sees nothing: 0 match, and claiming any other number is refused
    r = _bulk(client, headers=outsider, query={"q": ""}, expected=0, action="delete")
    assert r.status_code == 200 and r.json() == {"results": [], "matched": 0}
    assert _bulk(client, headers=outsider, query={"q": ""}, expected=5, action="delete").status_code == 409
    assert _total(client, headers=member) == 3 and _total(client, headers=betam) == 2
