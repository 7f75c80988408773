"""Browser-side defences (issue 11, point 4; ``server/webguard.py``): state-changing requests need
JSON (octet-stream on raw uploads), a present Origin must be ours, Host must be an allowed name,
every answer carries the security headers, only the dashboard's files are served, and user text
shown by plotly is escaped (in Chromium).

The app runs in open mode (no accounts): the in-process client acts as a server admin, so every
refusal here is the guard's, not a missing login."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from server.webguard import CSP, WebGuard, allowed_hosts, dashboard_file, host_allowed
from tests.server.conftest import free_port, start_server, stop_server, wait_healthy

REPO = Path(__file__).resolve().parents[2]
WEBUI = REPO / "webui"
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from server.app import create_app

    home = tmp_path_factory.mktemp("webguard-home")
    return create_app(Settings(home=home, reaper=False, broker_url="memory://",
                               public_url="https://runyard.example.org"))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def new_run(client: TestClient, name: str = "r") -> dict:
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": name})
    assert r.status_code == 201, r.text
    return r.json()


def runs_named(client: TestClient, name: str) -> list[dict]:
    return [r for r in client.get("/api/v1/runs", params={"limit": 500}).json()["items"] if r["name"] == name]


def assert_security_headers(response: httpx.Response, csp: str = CSP) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, dict(response.headers))
    policy = response.headers.get("content-security-policy", "")
    assert policy == csp, policy
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'" and directives["form-action"] == "'self'"


def test_the_guard_is_the_outermost_middleware(app):
    # Starlette runs user_middleware[0] first: the guard refuses before the body limits read a byte
    assert app.user_middleware[0].cls is WebGuard, [m.cls for m in app.user_middleware]


# --------------------------------------------------------------------------- Content-Type


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b'{"recipe": "external", "name": "forged"}'),
    ("text/plain;charset=UTF-8", b'{"recipe": "external", "name": "forged"}'),
    ("application/x-www-form-urlencoded", b"recipe=external&name=forged"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="recipe"\r\n\r\nexternal\r\n--x--'),
    (None, b'{"recipe": "external", "name": "forged"}'),
])
def test_a_change_that_is_not_json_is_415_and_stores_nothing(client, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/api/v1/runs", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert "Content-Type: application/json" in r.json()["detail"] and r.json()["field"] == "content-type"
    assert_security_headers(r)
    assert runs_named(client, "forged") == []


def test_bodiless_posts_need_json_too(client):
    run = new_run(client, "bodiless")
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
        r = client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
        assert r.status_code == 415, r.text
        assert "also without a body" in r.json()["detail"]
        assert client.get(f"/api/v1/runs/{run['id']}").json()["cancel_requested"] is False
    # the same request as JSON (what the dashboard and trainer_core's client send) works
    r = client.post(f"/api/v1/runs/{run['id']}/cancel", headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/runs/{run['id']}").json()["cancel_requested"] is True


def test_json_with_parameters_and_patch_and_put(client):
    run = new_run(client, "patch-me")
    r = client.patch(f"/api/v1/runs/{run['id']}", content=b'{"name": "patched"}',
                     headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200 and r.json()["name"] == "patched", r.text
    r = client.patch(f"/api/v1/runs/{run['id']}", content=b'{"name": "forged"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.put(f"/api/v1/runs/{run['id']}/hyperparameters", content=b'{"lr": 1}')
    assert r.status_code == 415
    assert client.get(f"/api/v1/runs/{run['id']}/hyperparameters").json() in ({}, None)


def test_raw_uploads_take_octet_stream(client):
    run = new_run(client, "uploads")
    path = f"/api/v1/runs/{run['id']}/checkpoints/upload"
    for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        r = client.put(path, params={"filename": "a.ckpt"}, content=b"weights", headers={"Content-Type": content_type})
        assert r.status_code == 415 and "application/octet-stream" in r.json()["detail"], r.text
    assert client.get(f"/api/v1/runs/{run['id']}/checkpoints").json() == []
    r = client.put(path, params={"filename": "a.ckpt"}, content=b"weights",
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    r = client.put(path, params={"filename": "b.ckpt"}, content=b"weights")  # curl -T: no Content-Type
    assert r.status_code == 201, r.text
    # the resumable upload's parts and code snapshots: the same rule
    r = client.put("/api/v1/uploads/0123456789abcdef0123456789abcdef", params={"offset": 0}, content=b"x",
                   headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.put("/api/v1/snapshots/" + "0" * 64, params={"project": "default"}, content=b"x",
                   headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 415
    # a JSON route that happens to look like an upload is not one: POST .../checkpoints/uploads is JSON
    r = client.post(f"/api/v1/runs/{run['id']}/checkpoints/uploads", content=b"x",
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 415


def test_delete_with_a_non_json_type_is_415(client):
    run = new_run(client, "delete-me")
    client.patch(f"/api/v1/runs/{run['id']}", json={"status": "succeeded"})
    r = client.delete(f"/api/v1/runs/{run['id']}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert client.get(f"/api/v1/runs/{run['id']}").status_code == 200
    assert client.delete(f"/api/v1/runs/{run['id']}").status_code == 204  # no type at all: fine
    assert client.get(f"/api/v1/runs/{run['id']}").status_code == 404


# --------------------------------------------------------------------------- Origin


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver.evil.example",
                                    "http://testserver:8080", "https://testserver", "http://127.0.0.1:9"])
def test_another_origin_may_not_change_anything_even_in_open_mode(client, origin):
    name = f"from-{origin}"
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": name}, headers={"Origin": origin})
    assert r.status_code == 403, r.text
    assert "may not change anything" in r.json()["detail"]
    assert_security_headers(r)
    assert runs_named(client, name) == []


def test_origin_is_checked_with_a_token_and_on_delete(client, app):
    from server.auth import create_token
    from server.users import create_user

    session = app.state.sessionmaker()
    try:
        user = create_user(session, "tess", password="tess-password-1", is_admin=True)
        _, secret = create_token(session, "personal", user_id=user.id, scope="read+write", name="t")
    finally:
        session.close()
    try:
        bearer = {"Authorization": f"Bearer {secret}"}
        run = client.post("/api/v1/runs", json={"recipe": "external", "name": "tok"}, headers=bearer).json()
        r = client.post(f"/api/v1/runs/{run['id']}/cancel", json={}, headers={**bearer, "Origin": "http://evil.example"})
        assert r.status_code == 403
        r = client.delete(f"/api/v1/runs/{run['id']}", headers={**bearer, "Origin": "http://evil.example"})
        assert r.status_code == 403
        assert client.get(f"/api/v1/runs/{run['id']}", headers=bearer).json()["cancel_requested"] is False
        r = client.post(f"/api/v1/runs/{run['id']}/cancel", json={}, headers={**bearer, "Origin": "http://testserver"})
        assert r.status_code == 200, r.text
    finally:  # back to open mode for the other tests
        from sqlalchemy import delete

        from server.models import Token, User

        session = app.state.sessionmaker()
        session.execute(delete(Token).where(Token.user_id == user.id))
        session.execute(delete(User).where(User.id == user.id))
        session.commit()
        session.close()
        from server.auth import clear_caches

        clear_caches()


def test_our_own_origins_may(client):
    for origin in ("http://testserver", "https://runyard.example.org"):  # Host, and RUNYARD_PUBLIC_URL's
        r = client.post("/api/v1/runs", json={"recipe": "external", "name": f"ok {origin}"}, headers={"Origin": origin})
        assert r.status_code == 201, (origin, r.text)
    # safe methods are not origin-checked (cross-origin reads are stopped by CORS, not by us)
    assert client.get("/api/v1/runs", headers={"Origin": "http://evil.example"}).status_code == 200


# --------------------------------------------------------------------------- Host


def clean_settings(monkeypatch, **values) -> Settings:
    for name in ("RUNYARD_ALLOWED_HOSTS", "RUNYARD_HOST", "RUNYARD_PUBLIC_URL", "RUNYARD_URL"):
        monkeypatch.delenv(name, raising=False)
    return Settings(**values)


def test_default_allowed_hosts(monkeypatch, tmp_path):
    defaults = allowed_hosts(clean_settings(monkeypatch, home=tmp_path))
    assert defaults == {"127.0.0.1", "localhost", "::1"}
    configured = allowed_hosts(clean_settings(monkeypatch, home=tmp_path, host="10.1.2.3",
                                              public_url="https://runyard.example.org/base",
                                              url="http://server:8000"))
    assert configured == {"10.1.2.3", "127.0.0.1", "localhost", "::1", "runyard.example.org", "server"}
    everywhere = allowed_hosts(clean_settings(monkeypatch, home=tmp_path, host="0.0.0.0"))
    assert socket.gethostname().lower() in everywhere and socket.getfqdn().lower() in everywhere
    assert "localhost" in everywhere
    assert allowed_hosts(clean_settings(monkeypatch, home=tmp_path, allowed_hosts="*")) is None
    listed = allowed_hosts(clean_settings(monkeypatch, home=tmp_path, allowed_hosts="A.example, *.lab.example"))
    assert listed == {"a.example", ".lab.example"}
    for host, ok in [("a.example", True), ("A.EXAMPLE:8443", True), ("a.example.", True), ("gpu.lab.example", True),
                     ("lab.example", True), ("evil-lab.example", False), ("localhost", False),
                     ("a.example.evil.example", False)]:
        assert host_allowed(host, listed) is ok, host
    assert host_allowed("[::1]:8000", defaults) and host_allowed("LOCALHOST:1", defaults)
    assert not host_allowed("127.0.0.1.nip.io", defaults) and not host_allowed("", defaults)
    assert not host_allowed("evil.example@127.0.0.1", defaults)


def test_other_hosts_are_refused_naming_the_setting(client):
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", "testserver.evil.example"):
        r = client.get("/api/v1/runs", headers={"Host": host})
        assert r.status_code == 400, (host, r.text)
        assert "RUNYARD_ALLOWED_HOSTS" in r.json()["detail"] and r.json()["field"] == "host"
        assert_security_headers(r)
        r = client.post("/api/v1/runs", json={"recipe": "external", "name": "rebound"}, headers={"Host": host})
        assert r.status_code == 400
    assert runs_named(client, "rebound") == []
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400  # the dashboard too
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200


def test_the_test_clients_host_is_refused_by_the_real_defaults(monkeypatch, tmp_path):
    from server.app import create_app

    settings = clean_settings(monkeypatch, home=tmp_path, reaper=False, broker_url="memory://")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:  # Host: testserver
        r = c.get("/healthz")
        assert r.status_code == 400 and "RUNYARD_ALLOWED_HOSTS" in r.json()["detail"]
        assert c.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_a_real_server_with_the_default_hosts_refuses_a_rebound_name(tmp_path):
    port = free_port()
    proc = start_server(tmp_path, port, RUNYARD_ALLOWED_HOSTS="", RUNYARD_HOST="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        assert httpx.get(f"http://localhost:{port}/healthz", timeout=10).status_code == 200
        for host in ("rebind.evil.example", f"rebind.evil.example:{port}"):
            r = httpx.get(url + "/api/v1/runs", headers={"Host": host}, timeout=10)
            assert r.status_code == 400 and "RUNYARD_ALLOWED_HOSTS" in r.json()["detail"], r.text
        r = httpx.post(url + "/api/v1/runs", json={"recipe": "external", "name": "x"},
                       headers={"Host": "rebind.evil.example"}, timeout=10)
        assert r.status_code == 400
        assert httpx.get(url + "/api/v1/runs", timeout=10).json()["total"] == 0
        # trainer_core's client (workers, RunyardLogger, the CLI) sends its bodiless POSTs as JSON
        from trainer_core.client import Client

        client = Client(url, token="")
        run = client.request("POST", "/api/v1/runs", json={"recipe": "external", "name": "via client"})
        assert client.request("POST", f"/api/v1/runs/{run['id']}/cancel")["cancel_requested"] is True
    finally:
        stop_server(proc)


# --------------------------------------------------------------------------- headers


def test_every_answer_carries_the_security_headers(client):
    run = new_run(client, "headers")
    for method, path, kwargs in [
        ("GET", "/", {}), ("GET", "/index.html", {}), ("GET", "/js/app.js", {}), ("GET", "/css/app.css", {}),
        ("GET", f"/runs/{run['id']}", {}), ("GET", "/static/plotly.min.js", {}), ("GET", "/healthz", {}),
        ("GET", "/api/v1/runs", {}), ("GET", "/api/v1/runs/999999", {}), ("GET", "/nothing-here", {}),
        ("HEAD", "/", {}), ("POST", f"/api/v1/runs/{run['id']}/cancel", {"json": {}}),
        ("POST", "/api/v1/runs", {"json": {"recipe": 1}}), ("GET", "/openapi.json", {}),
    ]:
        r = client.request(method, path, **kwargs)
        assert r.status_code < 500, (path, r.status_code)
        assert_security_headers(r)


def test_an_unexpected_error_still_carries_the_headers():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    guard = WebGuard(broken, Settings(allowed_hosts="*"))
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "query_string": b"",
             "headers": [(b"host", b"localhost")], "scheme": "http", "server": ("127.0.0.1", 80)}
    with pytest.raises(RuntimeError):
        asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 500
    headers = dict(sent[0]["headers"])
    assert headers[b"content-security-policy"] == CSP.encode() and headers[b"x-frame-options"] == b"DENY"
    assert json.loads(sent[1]["body"])["detail"].startswith("The server hit an unexpected error")


def test_the_api_docs_get_a_policy_with_their_inline_scripts_by_hash(client):
    import base64
    import hashlib

    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        r = client.get(path)
        assert r.status_code == 200
        policy = r.headers["content-security-policy"]
        script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script_src and "frame-ancestors 'none'" in policy
        assert r.headers["x-frame-options"] == "DENY"
        inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", r.text, re.S)
        for script in inline:
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in script_src, path
        assert int(r.headers["content-length"]) == len(r.content)
    assert client.get("/docs").text.count("<script") >= 2  # FastAPI's page: the bundle and its inline start


# --------------------------------------------------------------------------- the dashboard's files


def test_only_the_dashboards_files_are_served(client):
    served = ["/", "/index.html"] + ["/" + p.relative_to(WEBUI).as_posix()
                                     for p in sorted(WEBUI.rglob("*")) if p.suffix in (".js", ".css")]
    assert "/js/app.js" in served and "/js/pages/run.js" in served
    for path in served:
        r = client.get(path)
        assert r.status_code == 200, path
        if path.endswith(".js"):
            assert r.headers["content-type"].startswith("text/javascript"), path
    others = ["/" + p.relative_to(WEBUI).as_posix() for p in WEBUI.rglob("*")
              if p.is_file() and p.suffix not in (".js", ".css", ".html", ".svg", ".png", ".ico", ".webp")]
    assert "/__init__.py" in others
    for path in [*others, "/__init__.py", "/__pycache__/__init__.cpython-311.pyc", "/js/", "/js", "/css",
                 "/../server/app.py", "/js/../__init__.py", "/%2e%2e/server/settings.py", "/.git/config",
                 "/js/app.js.map", "/webui/__init__.py", "/js/.hidden.js"]:
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "import" not in r.text
    assert client.post("/js/app.js", json={}).status_code in (404, 405)


def test_the_allow_list():
    for name in ("", "index.html", "css/app.css", "js/app.js", "js/pages/run.js", "img/logo.svg"):
        assert dashboard_file(name) is not None, name
    for name in ("__init__.py", "js/__pycache__/x.js", "js/app.py", "css/app.css.bak", "img/x.html",
                 "../server/app.py", "js/.x.js", "other/index.html", "index.htm"):
        assert dashboard_file(name) is None, name


# --------------------------------------------------------------------------- plotly escaping (Chromium)

EVIL = '<a href="http://x">evil</a><b>bold</b>'


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from tests.webui.conftest import Server

    server = Server(tmp_path_factory.mktemp("webguard-live")).start()
    yield server
    server.stop()


def test_run_names_and_metric_keys_show_as_text_in_plotly(browser, live):  # browser: tests/conftest.py
    from playwright.sync_api import expect

    evil_key = '<b>key</b><a href="http://y">k</a>'
    first = live.external_run(EVIL)
    second = live.external_run("other & <i>plain</i>")
    for run in (first, second):
        live.log_points(run["id"], [{"key": k, "step": s, "value": float(s)} for s in range(80)
                                    for k in ("loss", evil_key)])
    context = browser.new_context(base_url=live.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:  # (page functions are arrow functions: the page's CSP refuses eval of a string)
        # one run: the trace is named by its metric key; two runs (compare): by "#id name", with a legend
        page.goto(f"/#/runs/{first['id']}")
        plots = page.locator(".js-plotly-plot")
        expect(plots.first).to_be_visible(timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 2",
                               timeout=30_000)
        names = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].map(p => p.data[0].name)")
        page.goto(f"/#/compare?ids={first['id']},{second['id']}")
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .legend .traces').length >= 4",
                               timeout=30_000)
        legend = page.evaluate("[...document.querySelectorAll('.js-plotly-plot .legend .legendtext')]"
                               ".map(t => t.textContent)")
        assert f"#{first['id']} {EVIL}"[:47] + "…" in legend or f"#{first['id']} {EVIL}" in legend, legend
        assert f"#{second['id']} other & <i>plain</i>" in legend, legend
        # nothing of the names became markup inside any plot: no links, no bold or italic
        assert page.locator(".js-plotly-plot a").count() == 0
        assert page.locator(".js-plotly-plot tspan[style*='font-weight:bold'], .js-plotly-plot tspan[style*='italic']"
                            ).count() == 0
        # the hover label repeats the name: still text
        plot = page.locator(".js-plotly-plot").first
        box = plot.locator(".nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("() => document.querySelector('.hoverlayer') && "
                               "document.querySelector('.hoverlayer').textContent.includes('evil')", timeout=10_000)
        hover = page.evaluate("document.querySelector('.hoverlayer').textContent")
        assert "<a href" in hover or "<b>" in hover, hover
        assert page.locator(".hoverlayer a").count() == 0
        # what the dashboard gave plotly: the single run's trace named by its escaped metric key
        assert "&lt;b&gt;key&lt;/b&gt;&lt;a href=&#34;http://y&#34;&gt;k&lt;/a&gt;" in names, names
    finally:
        context.close()
    assert not errors, errors
