"""Accounts, sessions, API tokens, project visibility and the audit log, on SQLite and
PostgreSQL; and the attacks of docs/security.md: wrong/disabled/expired/revoked/forged
credentials, CSRF, session fixation, enumeration, a token of one project on another."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from server import auth, users
from server.models import AuditEvent, BrowserSession, Token, utcnow

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def own_backend(request, tmp_path_factory):
    """A database of this module's own: the accounts made here must not turn other modules'
    databases (which run in single-user open mode) into ones that need a login."""
    home = tmp_path_factory.mktemp(f"accounts-{request.param}")
    if request.param == "sqlite":
        yield f"sqlite:///{home / 'runyard.db'}", home
        return
    import secrets

    import psycopg

    base = request.getfixturevalue("pg_url").rsplit("/", 1)[0]
    name = f"runyard_accounts_{secrets.token_hex(4)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}", home
    from server.db import dispose_engine

    dispose_engine(f"{base}/{name}")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def app(own_backend):
    from server.app import create_app
    from server.settings import Settings

    url, home = own_backend
    settings = Settings(home=home, database_url=url, reaper=False, broker_url="memory://", login_max_failures=3,
                        login_max_failures_per_address=8, login_window=600)
    application = create_app(settings)
    with TestClient(application):  # runs the migrations
        pass
    session = application.state.sessionmaker()
    try:
        from server.store import get_or_create_project

        projects = {name: get_or_create_project(session, name) for name in ("vision", "nlp")}
        session.commit()
        made = {}
        for name, admin in (("root", True), ("alice", False), ("bob", False), ("carol", False), ("dave", False)):
            made[name] = users.create_user(session, name, email=f"{name}@example.org", password=PASSWORD,
                                           is_admin=admin)
        users.set_role(session, projects["vision"], made["alice"], "member")
        users.set_role(session, projects["vision"], made["bob"], "viewer")
        users.set_role(session, projects["nlp"], made["carol"], "admin")
        users.set_role(session, projects["nlp"], made["alice"], "member")
    finally:
        session.close()
    application.state.test_projects = {k: v.id for k, v in projects.items()}
    return application


@pytest.fixture
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        app.state.login_limiter = None  # each test starts with no failed logins counted
        yield c


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log ``client`` in (its cookie jar keeps the session); returns the CSRF token."""
    r = client.post("/api/v1/auth/login", json={"login": name, "password": password})
    assert r.status_code == 200, r.text
    me = client.get("/api/v1/me").json()
    assert me["authenticated"] and me["user"]["name"] == name
    client.headers["X-CSRF-Token"] = me["csrf"]
    return me["csrf"]


def token_of(client: TestClient, name: str, **body) -> str:
    login(client, name)
    r = client.post("/api/v1/tokens", json={"name": "t", **body})
    assert r.status_code == 201, r.text
    client.cookies.clear()
    client.headers.pop("X-CSRF-Token", None)
    return r.json()["token"]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def audit_actions(app, **where) -> list[str]:
    session = app.state.sessionmaker()
    try:
        query = select(AuditEvent.action).order_by(AuditEvent.id)
        for k, v in where.items():
            query = query.where(getattr(AuditEvent, k) == v)
        return list(session.scalars(query))
    finally:
        session.close()


# --------------------------------------------------------------------------- login


def test_without_credentials_everything_but_login_is_401(client):
    assert client.get("/api/v1/runs").status_code == 401
    assert "Log in" in client.get("/api/v1/runs").json()["detail"]
    assert client.get("/api/v1/me").json() == {"authenticated": False, "open": False, "sso": None}
    assert client.get("/healthz").status_code == 200


def test_login_sets_a_safe_cookie_and_logout_ends_the_session(client, app):
    r = client.post("/api/v1/auth/login", json={"login": "alice@example.org", "password": PASSWORD})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "runyard_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain http here; https below
    assert "Max-Age=1209600".lower() in cookie  # RUNYARD_SESSION_MAX_AGE, 14 days
    csrf = client.get("/api/v1/me").json()["csrf"]
    assert client.get("/api/v1/runs").status_code == 200
    r = client.post("/api/v1/auth/logout", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    client.cookies.set("runyard_session", cookie.split("runyard_session=")[1].split(";")[0])
    r = client.get("/api/v1/runs")
    assert r.status_code == 401 and "session has ended" in r.json()["detail"]
    assert "logout" in audit_actions(app) and "login" in audit_actions(app)


def test_cookie_is_secure_over_https(app):
    with TestClient(app, base_url="https://runyard.test", raise_server_exceptions=False) as c:
        r = c.post("/api/v1/auth/login", json={"login": "bob", "password": PASSWORD})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()


def test_wrong_password_unknown_user_and_disabled_user(client, app, monkeypatch):
    verified = []
    original = users._hasher.verify_and_update, users._hasher.verify
    monkeypatch.setattr(users._hasher, "verify_and_update", lambda p, h: verified.append("known") or original[0](p, h))
    monkeypatch.setattr(users._hasher, "verify", lambda p, h: verified.append("dummy") or original[1](p, h))
    wrong = client.post("/api/v1/auth/login", json={"login": "alice", "password": "nope-nope"})
    unknown = client.post("/api/v1/auth/login", json={"login": "mallory", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Wrong name or password."}
    assert verified == ["known", "dummy"]  # one argon2 verification either way: no timing difference by design
    session = app.state.sessionmaker()
    try:
        users.set_disabled(session, users.user_by_name(session, "dave"), True)
        # a disabled user with the wrong password learns nothing either
        r = client.post("/api/v1/auth/login", json={"login": "dave", "password": "nope-nope"})
        assert r.json() == {"detail": "Wrong name or password."}
        r = client.post("/api/v1/auth/login", json={"login": "dave", "password": PASSWORD})
        assert r.status_code == 401 and "disabled" in r.json()["detail"]
    finally:
        users.set_disabled(session, users.user_by_name(session, "dave"), False)
        session.close()
    assert "login_failed" in audit_actions(app)


def test_login_attempts_are_rate_limited_per_account_and_per_address(client, app):
    for _ in range(3):
        assert client.post("/api/v1/auth/login", json={"login": "bob", "password": "bad-bad-bad"}).status_code == 401
    r = client.post("/api/v1/auth/login", json={"login": "bob", "password": PASSWORD})  # even the right one
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and "try again" in r.json()["detail"]
    # the email names the same account: it shares the budget
    assert client.post("/api/v1/auth/login", json={"login": "bob@example.org", "password": PASSWORD}).status_code == 429
    # an unknown account is limited the same way (no enumeration through the limit)
    for _ in range(3):
        client.post("/api/v1/auth/login", json={"login": "nobody-here", "password": "bad-bad-bad"})
    assert client.post("/api/v1/auth/login", json={"login": "nobody-here", "password": "x" * 8}).status_code == 429
    # per address: 8 failures from this address over any accounts block everyone from it
    for i in range(2):
        client.post("/api/v1/auth/login", json={"login": f"spray{i}", "password": "bad-bad-bad"})
    r = client.post("/api/v1/auth/login", json={"login": "carol", "password": PASSWORD})
    assert r.status_code == 429
    assert "login_blocked" in audit_actions(app)


def test_session_expiry_idle_timeout_and_revocation(client, app):
    login(client, "alice")
    assert client.get("/api/v1/runs").status_code == 200
    session = app.state.sessionmaker()
    try:
        row = session.scalars(select(BrowserSession).order_by(BrowserSession.id.desc())).first()
        session.execute(update(BrowserSession).where(BrowserSession.id == row.id)
                        .values(last_seen_at=utcnow() - timedelta(days=4)))  # idle for longer than 3 days
        session.commit()
        auth.clear_caches()
        assert client.get("/api/v1/runs").status_code == 401
        login(client, "alice")
        row = session.scalars(select(BrowserSession).order_by(BrowserSession.id.desc())).first()
        session.execute(update(BrowserSession).where(BrowserSession.id == row.id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
        auth.clear_caches()
        assert client.get("/api/v1/runs").status_code == 401
        # a password reset ends every session of the user
        login(client, "alice")
        users.set_password(session, users.user_by_name(session, "alice"), PASSWORD)
        assert client.get("/api/v1/runs").status_code == 401
    finally:
        session.close()


def test_session_fixation_a_planted_cookie_is_never_promoted(client, app):
    # the attacker plants a cookie value of their choice, then a session of their own
    client.cookies.set("runyard_session", "attacker-chosen-value")
    r = client.post("/api/v1/auth/login", json={"login": "alice", "password": PASSWORD})
    new = r.cookies.get("runyard_session")
    assert new and new != "attacker-chosen-value"
    with TestClient(app, raise_server_exceptions=False) as attacker:
        attacker.post("/api/v1/auth/login", json={"login": "bob", "password": PASSWORD})
        planted = attacker.cookies.get("runyard_session")
        victim = TestClient(app, raise_server_exceptions=False)
        victim.cookies.set("runyard_session", planted)
        r = victim.post("/api/v1/auth/login", json={"login": "alice", "password": PASSWORD})
        assert r.cookies.get("runyard_session") not in (None, planted)
        # the planted session was ended by the victim's login: the attacker's copy is dead
        assert attacker.get("/api/v1/runs").status_code == 401


def test_csrf_every_change_made_with_the_cookie_needs_the_token_and_our_origin(client, app):
    csrf = login(client, "alice")
    client.headers.pop("X-CSRF-Token")
    body = {"recipe": "external", "project": "vision", "name": "csrf"}
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    assert client.post("/api/v1/runs", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    evil = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert client.post("/api/v1/runs", json=body, headers=evil).status_code == 403
    cross = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    assert client.post("/api/v1/runs", json=body, headers=cross).status_code == 403
    # a text/plain "simple request" body is not JSON to us either (server/webguard.py: 415)
    r = client.post("/api/v1/runs", content=b'{"recipe":"external"}', headers={"Content-Type": "text/plain",
                                                                           "X-CSRF-Token": csrf})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    ok = client.post("/api/v1/runs", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"})
    assert ok.status_code == 201, ok.text
    # the login form itself refuses other origins (login CSRF)
    client.cookies.clear()
    r = client.post("/api/v1/auth/login", json={"login": "alice", "password": PASSWORD},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


# --------------------------------------------------------------------------- tokens


def test_personal_tokens_scope_expiry_revocation_forgery_and_last_used(client, app):
    secret = token_of(client, "alice", scope="read")
    assert secret.startswith("ryp_")
    with TestClient(app, raise_server_exceptions=False) as api:
        assert api.get("/api/v1/runs", headers=bearer(secret)).status_code == 200
        r = api.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}, headers=bearer(secret))
        assert r.status_code == 403 and "scope 'read'" in r.json()["detail"]
        # tokens cannot make tokens
        write = token_of(client, "alice", scope="read+write")
        r = api.post("/api/v1/tokens", json={"name": "x"}, headers=bearer(write))
        assert r.status_code == 403
        r = api.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}, headers=bearer(write))
        assert r.status_code == 201 and r.json()["owner"] == "alice"
        # the list never shows secrets; last use is recorded
        login(client, "alice")
        listed = client.get("/api/v1/tokens").json()
        assert all("token" not in t and secret not in str(t) for t in listed)
        assert any(t["last_used_at"] for t in listed)
        # revoke
        token_id = next(t["id"] for t in listed if secret.startswith(t["prefix"]))
        assert client.delete(f"/api/v1/tokens/{token_id}").status_code == 204
        auth.clear_caches()
        r = api.get("/api/v1/runs", headers=bearer(secret))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        # someone else's token id: as if it did not exist
        login(client, "bob")
        other = next(t["id"] for t in listed if write.startswith(t["prefix"]))
        assert client.delete(f"/api/v1/tokens/{other}").status_code == 404
        # expired
        session = app.state.sessionmaker()
        try:
            session.execute(update(Token).where(Token.id == other).values(expires_at=utcnow() - timedelta(seconds=1)))
            session.commit()
        finally:
            session.close()
        auth.clear_caches()
        assert api.get("/api/v1/runs", headers=bearer(write)).status_code == 401
        # forged and malformed
        for forged in ("ryp_" + "A" * 43, secret[:-1] + ("B" if secret[-1] != "B" else "C"), "x", "a" * 5000):
            r = api.get("/api/v1/runs", headers=bearer(forged))
            assert r.status_code == 401, forged
        assert api.get("/api/v1/runs", headers={"Authorization": "Basic abc"}).status_code == 401
        # a login link's token is not an API token
        session = app.state.sessionmaker()
        try:
            link_secret = auth.create_token(session, "login", name="l", scope="login",
                                            user_id=users.user_by_name(session, "alice").id)[1]
        finally:
            session.close()
        assert api.get("/api/v1/runs", headers=bearer(link_secret)).status_code == 401
    actions = audit_actions(app)
    assert "token_created" in actions and "token_revoked" in actions


def test_a_token_limited_to_one_project_sees_nothing_of_another(client, app):
    login(client, "alice")  # member of vision and nlp
    nlp_run = client.post("/api/v1/runs", json={"recipe": "external", "project": "nlp"}).json()["id"]
    vision_token = token_of(client, "alice", scope="read+write", project="vision")
    with TestClient(app, raise_server_exceptions=False) as api:
        h = bearer(vision_token)
        r = api.get(f"/api/v1/runs/{nlp_run}", headers=h)
        assert r.status_code == 404 and r.json()["detail"].startswith(f"Run {nlp_run} does not exist")
        assert all(run["project"] == "vision" for run in api.get("/api/v1/runs", headers=h).json()["items"])
        assert [p["name"] for p in api.get("/api/v1/projects", headers=h).json()] == ["vision"]
        r = api.post("/api/v1/runs", json={"recipe": "external", "project": "nlp"}, headers=h)
        assert r.status_code == 403
        r = api.post("/api/v1/runs", json={"recipe": "external", "project": "brand-new"}, headers=h)
        assert r.status_code == 403 and "limited to one project" in r.json()["detail"]


# --------------------------------------------------------------------------- projects and visibility


def test_lists_and_streams_show_only_visible_projects(client, app):
    login(client, "carol")  # admin of nlp only
    nlp = client.post("/api/v1/runs", json={"recipe": "external", "project": "nlp", "name": "n"}).json()
    login(client, "alice")
    vision = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision", "name": "v"}).json()
    login(client, "carol")
    listed = {r["id"] for r in client.get("/api/v1/runs?limit=1000").json()["items"]}
    assert nlp["id"] in listed and vision["id"] not in listed
    projects = client.get("/api/v1/projects").json()
    assert [(p["name"], p["role"]) for p in projects] == [("nlp", "admin")]
    r = client.get(f"/api/v1/runs/{vision['id']}")
    assert r.status_code == 404
    assert r.json() == client.get("/api/v1/runs/987654321").json() | {
        "detail": f"Run {vision['id']} does not exist; list runs with GET /api/v1/runs."}
    # /api/v1/events: carol's stream (in her own browser) never mentions vision's runs
    from server.api.events import RunListPoller

    with TestClient(app, raise_server_exceptions=False) as carols_browser:
        login(carols_browser, "carol")
        session = app.state.sessionmaker()
        try:
            carol = auth._session_principal(session, carols_browser.cookies.get("runyard_session"),
                                            app.state.settings)
        finally:
            session.close()
        poller = RunListPoller(SimpleNamespace(app=app, state=SimpleNamespace(principal=carol)))
        poller.poll()
        login(client, "alice")
        client.patch(f"/api/v1/runs/{vision['id']}", json={"name": "v2"})
        carols_browser.patch(f"/api/v1/runs/{nlp['id']}", json={"name": "n2"})
        events = poller.poll()
    assert any(f'"id":{nlp["id"]}' in e for e in events)
    assert not any(f'"id":{vision["id"]}' in e for e in events)


def test_member_changes_own_runs_viewer_only_reads_admin_manages(client, app):
    login(client, "alice")  # member of vision
    mine = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}).json()["id"]
    login(client, "root")
    theirs = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}).json()["id"]
    login(client, "alice")
    assert client.patch(f"/api/v1/runs/{mine}", json={"name": "mine"}).status_code == 200
    r = client.patch(f"/api/v1/runs/{theirs}", json={"name": "x"})
    assert r.status_code == 403 and "member" in r.json()["detail"]
    login(client, "bob")  # viewer
    assert client.get(f"/api/v1/runs/{mine}").status_code == 200
    r = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision"})
    assert r.status_code == 403 and "member" in r.json()["detail"]
    assert client.get(f"/api/v1/projects/{app.state.test_projects['vision']}/members").status_code == 200
    r = client.put(f"/api/v1/projects/{app.state.test_projects['vision']}/members/dave", json={"role": "viewer"})
    assert r.status_code == 403
    # a project admin manages members; the change is audited and takes effect
    login(client, "carol")
    nlp = app.state.test_projects["nlp"]
    r = client.put(f"/api/v1/projects/{nlp}/members/bob", json={"role": "viewer"})
    assert r.status_code == 200
    assert client.put(f"/api/v1/projects/{nlp}/members/bob", json={"role": "owner"}).status_code == 422
    assert client.put(f"/api/v1/projects/{nlp}/members/nobody", json={"role": "viewer"}).status_code == 404
    login(client, "bob")
    assert "nlp" in client.get("/api/v1/me").json()["roles"]
    login(client, "carol")
    assert client.delete(f"/api/v1/projects/{nlp}/members/bob").status_code == 204
    assert audit_actions(app, action="role_changed")
    # a new project belongs to whoever starts it
    login(client, "bob")
    r = client.post("/api/v1/runs", json={"recipe": "external", "project": "bobs-own"})
    assert r.status_code == 201
    assert client.get("/api/v1/me").json()["roles"]["bobs-own"] == "admin"


def test_server_admin_manages_users(client, app):
    login(client, "root")
    r = client.post("/api/v1/users", json={"name": "erin", "email": "erin@example.org", "password": "short"})
    assert r.status_code == 422 and r.json()["field"] == "password"
    r = client.post("/api/v1/users", json={"name": "erin", "email": "erin@example.org", "password": PASSWORD})
    assert r.status_code == 201
    erin = r.json()["id"]
    assert client.post("/api/v1/users", json={"name": "erin"}).status_code == 409
    link = client.post(f"/api/v1/users/{erin}/login-link", json={}).json()["url"]
    assert "#/login?link=" in link
    assert client.patch(f"/api/v1/users/{erin}", json={"email": "not-an-email"}).status_code == 422
    assert client.patch(f"/api/v1/users/{erin}", json={"email": "alice@example.org"}).status_code == 409
    assert client.patch(f"/api/v1/users/{erin}", json={"disabled": True}).json()["disabled"] is True
    assert client.patch(f"/api/v1/users/{client.get('/api/v1/me').json()['user']['id']}",
                        json={"disabled": True}).status_code == 409  # not yourself
    with TestClient(app, raise_server_exceptions=False) as other:
        r = other.post("/api/v1/auth/login", json={"login": "erin", "password": PASSWORD})
        assert r.status_code == 401 and "disabled" in r.json()["detail"]
        r = other.post("/api/v1/auth/link", json={"token": link.split("link=")[1]})
        assert r.status_code == 401
    login(client, "alice")
    assert client.get("/api/v1/users").status_code == 403
    r = client.get("/api/v1/audit")
    assert r.status_code == 403
    login(client, "root")
    events = client.get("/api/v1/audit?limit=1000").json()
    assert {"user_created", "user_disabled", "login", "login_link_created"} <= {e["action"] for e in events}


def test_one_time_login_link(client, app):
    from server.api.account import login_link_for

    session = app.state.sessionmaker()
    try:
        url = login_link_for(session, users.user_by_name(session, "bob"), app.state.settings)
    finally:
        session.close()
    secret = url.split("#/login?link=")[1]
    session = app.state.sessionmaker()
    try:  # a newer link replaces it
        newer = login_link_for(session, users.user_by_name(session, "bob"), app.state.settings).split("link=")[1]
    finally:
        session.close()
    assert client.post("/api/v1/auth/link", json={"token": secret}).status_code == 401
    secret = newer
    assert client.post("/api/v1/auth/link", json={"token": secret}).status_code == 200
    assert client.get("/api/v1/me").json()["user"]["name"] == "bob"
    client.cookies.clear()
    r = client.post("/api/v1/auth/link", json={"token": secret})
    assert r.status_code == 401 and "used or expired" in r.json()["detail"]


def test_audit_log_records_run_and_checkpoint_actions(client, app):
    login(client, "alice")
    run = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}).json()["id"]
    r = client.put(f"/api/v1/runs/{run}/checkpoints/upload?filename=last.ckpt", content=b"weights")
    assert r.status_code == 201, r.text
    checkpoint = r.json()["id"]
    assert client.get(f"/api/v1/checkpoints/{checkpoint}/download").content == b"weights"
    # a download continued with a Range is the same download: not audited again
    assert client.get(f"/api/v1/checkpoints/{checkpoint}/download", headers={"Range": "bytes=3-"}).status_code == 206
    assert client.post(f"/api/v1/runs/{run}/cancel", json={}).status_code == 200
    client.post(f"/api/v1/runs/{run}/finish", json={"status": "cancelled"})
    assert client.delete(f"/api/v1/runs/{run}").status_code == 204
    login(client, "root")
    events = client.get("/api/v1/audit?limit=1000").json()
    mine = [e for e in events if e["target"] in (f"run {run}", f"checkpoint {checkpoint}")]
    assert [e["action"] for e in reversed(mine)] == ["run_submitted", "checkpoint_downloaded", "run_cancelled",
                                                      "run_deleted"]
    assert all(e["actor"] == "alice" and e["user_id"] and e["project_id"] == app.state.test_projects["vision"]
               for e in mine)
    assert all(e["address"] == "testclient" for e in mine)
    # filters, and paging with before=
    only = client.get("/api/v1/audit?action=run_deleted").json()
    assert only and {e["action"] for e in only} == {"run_deleted"}
    page = client.get(f"/api/v1/audit?limit=2&before={events[0]['id']}").json()
    assert [e["id"] for e in page] == [e["id"] for e in events[1:3]]
    # project admins read their projects' events only
    login(client, "carol")
    client.post("/api/v1/runs", json={"recipe": "external", "project": "nlp"})
    theirs = client.get("/api/v1/audit").json()
    assert theirs and all(e["project_id"] == app.state.test_projects["nlp"] for e in theirs)


def test_open_mode_serves_only_this_machine_until_an_account_exists(tmp_path):
    from server.app import create_app
    from server.settings import Settings

    settings = Settings(home=tmp_path, reaper=False, broker_url="memory://")
    application = create_app(settings)
    with TestClient(application, raise_server_exceptions=False) as local:
        assert local.get("/api/v1/runs").status_code == 200
        assert local.get("/api/v1/me").json()["open"] is True
        # a page on another site cannot drive the local open server
        r = local.post("/api/v1/runs", json={"recipe": "external"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert local.post("/api/v1/runs", json={"recipe": "external"},
                          headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert local.post("/api/v1/runs", json={"recipe": "external"}).status_code == 201  # curl, scripts
    with TestClient(application, client=("10.1.2.3", 40000), raise_server_exceptions=False) as remote:
        r = remote.get("/api/v1/runs")
        assert r.status_code == 401 and "runyard user create" in r.json()["detail"]
    session = application.state.sessionmaker()
    try:
        users.create_user(session, "first", password=PASSWORD, is_admin=True)
    finally:
        session.close()
    with TestClient(application, raise_server_exceptions=False) as local:
        assert local.get("/api/v1/runs").status_code == 401


# --------------------------------------------------------------------------- a real server


def test_tokens_in_urls_are_never_logged_and_the_logger_uses_runyard_token(tmp_path, monkeypatch):
    from tests.server.conftest import free_port, stop_server, wait_healthy

    home, port = tmp_path / "home", free_port()
    from server.db import get_engine, session_factory, upgrade_database
    from server.settings import Settings

    settings = Settings(home=home)
    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    session = session_factory(get_engine(settings.database_url))()
    try:
        user = users.create_user(session, "scripter", password=PASSWORD, is_admin=True)
        secret = auth.create_token(session, "personal", name="logger", scope="read+write", user_id=user.id)[1]
    finally:
        session.close()
    import os
    import subprocess
    import sys

    from tests.server.conftest import REPO

    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as out:  # uvicorn's access log on (start_server logs warnings only)
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "info"],
            cwd=REPO, env={**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_REAPER": "false"},
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        for query in (f"token={secret}", f"access_token={secret}", f"code={secret}&state={secret}"):
            httpx.get(f"{base}/api/v1/runs?{query}", timeout=10)
            httpx.get(f"{base}/auth/oidc/callback?{query}", timeout=10)
        # RunyardLogger takes RUNYARD_TOKEN: the run is the token's user's
        from trainer_core.loggers.runyard import RunyardLogger

        monkeypatch.setenv("RUNYARD_TOKEN", secret)
        logger = RunyardLogger(url=base, project="scripts", name="from a script", save_dir=str(tmp_path / "spool"))
        logger.log_metrics({"loss": 0.5}, step=1)
        logger.finalize("success")
        runs = httpx.get(f"{base}/api/v1/runs", headers=bearer(secret), timeout=10).json()["items"]
        assert [(r["name"], r["owner"], r["status"]) for r in runs] == [("from a script", "scripter", "succeeded")]
        assert httpx.get(f"{base}/api/v1/runs", timeout=10).status_code == 401
    finally:
        stop_server(proc)
    text = log_path.read_text()
    assert "GET /api/v1/runs?" in text, text[-2000:]  # the access log is on ...
    assert secret not in text and secret[:20] not in text  # ... and never holds the token


def test_open_event_streams_end_when_the_session_ends(client, app):
    from server.api.events import RunEventPoller, RunListPoller

    login(client, "alice")
    run = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}).json()["id"]
    session = app.state.sessionmaker()
    try:
        alice = auth._session_principal(session, client.cookies.get("runyard_session"), app.state.settings)
    finally:
        session.close()
    request = SimpleNamespace(app=app, state=SimpleNamespace(principal=alice))
    listing, one = RunListPoller(request), RunEventPoller(request, run, None)
    listing.poll()
    assert any(e.startswith("event: status") for e in one.poll())
    client.post("/api/v1/auth/logout", json={})
    assert listing.poll()[0].startswith("event: ended")
    assert one.poll()[0].startswith("event: ended")


def test_ended_sessions_are_swept_after_a_day(client, app):
    from server.app import sweep_sessions

    login(client, "bob")
    session = app.state.sessionmaker()
    try:
        row = session.scalars(select(BrowserSession).order_by(BrowserSession.id.desc())).first()
        session.execute(update(BrowserSession).where(BrowserSession.id == row.id)
                        .values(expires_at=utcnow() - timedelta(days=2)))
        session.commit()
        assert sweep_sessions(app) >= 1
        assert session.get(BrowserSession, row.id, populate_existing=True) is None
    finally:
        session.close()


def test_workers_list_names_only_runs_the_caller_may_see(client, app):
    login(client, "alice")
    run = client.post("/api/v1/runs", json={"recipe": "external", "project": "vision"}).json()["id"]
    session = app.state.sessionmaker()
    try:
        worker_token = auth.create_token(session, "worker", name="w")[1]
    finally:
        session.close()
    with TestClient(app, raise_server_exceptions=False) as w:
        w.headers["Authorization"] = f"Bearer {worker_token}"
        worker_id = w.post("/api/v1/workers", json={"name": "gpu-1"}).json()["id"]
        assert w.post(f"/api/v1/workers/{worker_id}/heartbeat", json={"run_id": run}).status_code == 200
    shown = {x["name"]: x["run_id"] for x in client.get("/api/v1/workers").json()}
    assert shown["gpu-1"] == run
    login(client, "carol")  # nlp only
    shown = {x["name"]: x["run_id"] for x in client.get("/api/v1/workers").json()}
    assert shown["gpu-1"] is None
