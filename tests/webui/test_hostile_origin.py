"""A hostile page on another origin (a second loopback port) tries what a browser lets any site
try against a Runyard on this machine, with no account (open mode, the laptop case): a no-cors
``fetch`` POST of metrics with a ``text/plain`` body, HTML form POSTs that cancel a run and
resume one, and framing the dashboard. Each is refused (``server/webguard.py``): no point
stored, the run not cancelled, no new run, the frame blocked. The same actions from the
dashboard itself still work, its pages raise no Content-Security-Policy violation, and a DNS
name rebound to 127.0.0.1 gets 400 (Host check)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from tests.helpers.chromium import CHROMIUM_ARGS
from tests.webui.conftest import free_port
from tests.webui.data import training_curves

RECIPE = "digits_classifier"
CSP_LISTENER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`));
"""


class Hostile:
    """http://127.0.0.1:<another port>: serves whatever pages the test puts in ``pages``."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's name
                body = pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile():
    h = Hostile()
    yield h
    h.close()


def finished_run_with_checkpoint(server, name: str) -> int:
    """A stopped recipe run with a checkpoint of its own training: one the dashboard can resume."""
    from sqlalchemy.orm import Session

    from server import store
    from server.db import get_engine
    from server.settings import Settings

    with Session(get_engine(Settings(home=server.home).database_url)) as s:
        run = store.create_run(s, recipe=RECIPE, name=name, status="running")
        store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/last.ckpt", step=10, epoch=1, is_last=True, attempt=1)
        s.commit()
        store.finish_run(s, run.id, "cancelled")
        s.commit()
        return run.id


def total_runs(server) -> int:
    return server.get("/api/v1/runs?limit=1")["total"]


def metric_keys(server, run_id: int) -> list[str]:
    return [k["key"] for k in server.get(f"/api/v1/runs/{run_id}/metric-keys")]


def test_a_hostile_page_is_refused_and_the_dashboard_is_not(browser, server, hostile):
    live = server.external_run("victim (running)")
    done = finished_run_with_checkpoint(server, "victim (stopped)")
    before = total_runs(server)
    s, rid = server.url, live["id"]
    hostile.pages.update({
        "/fetch.html": f"""<!doctype html><script>
          const points = JSON.stringify({{points: [{{key: "injected", step: 1, value: 1}}]}});
          const outcome = (r) => r.then(res => res.type, () => "failed");
          window.__done = Promise.all([
            outcome(fetch("{s}/api/v1/runs/{rid}/metrics", {{method: "POST", mode: "no-cors",
              headers: {{"Content-Type": "text/plain"}}, body: points}})),
            outcome(fetch("{s}/api/v1/runs/{rid}/cancel", {{method: "POST", mode: "no-cors"}})),
          ]);
        </script>""",
        "/cancel.html": f"""<!doctype html><form id=f method=POST action="{s}/api/v1/runs/{rid}/cancel">
          <input name=confirm value=1></form><script>document.getElementById("f").submit()</script>""",
        # text/plain forms can spell JSON: name + "=" + value is {{"checkpoint_id_pad":"="}}
        "/resume.html": f"""<!doctype html><form id=f method=POST enctype="text/plain"
          action="{s}/api/v1/runs/{done}/resume"><input name='{{"pad":"' value='"}}'></form>
          <script>document.getElementById("f").submit()</script>""",
        "/frame.html": f"""<!doctype html><p>an innocent page</p>
          <iframe id=dash src="{s}/" width=800 height=600 onload="window.__loaded = (window.__loaded || 0) + 1"></iframe>
          <iframe id=run src="{s}/runs/{rid}" width=800 height=600 onload="window.__loaded = (window.__loaded || 0) + 1"></iframe>""",
    })
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        attack = context.new_page()
        console: list[str] = []
        attack.on("console", lambda m: console.append(m.text))

        # 1. no-cors fetches: they reach the server, which refuses them (checked below); the page
        # cannot even see an opaque answer (Cross-Origin-Resource-Policy: same-origin)
        sent: list[str] = []
        attack.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
        attack.goto(hostile.url + "/fetch.html")
        assert attack.evaluate("window.__done") == ["failed", "failed"]
        assert sorted(sent) == [f"{s}/api/v1/runs/{rid}/cancel", f"{s}/api/v1/runs/{rid}/metrics"], sent
        # 2. a form that cancels the run: the browser shows the server's refusal
        with attack.expect_response(f"{s}/api/v1/runs/{rid}/cancel") as answer:
            attack.goto(hostile.url + "/cancel.html")
        assert answer.value.status == 403, answer.value.text()
        assert "may not change anything" in answer.value.text()
        # 3. a text/plain form that spells JSON, to resume a stopped run
        with attack.expect_response(f"{s}/api/v1/runs/{done}/resume") as answer:
            attack.goto(hostile.url + "/resume.html")
        assert answer.value.status == 403, answer.value.text()
        # 4. the dashboard (and a run's page) inside another site's frames: blocked
        attack.goto(hostile.url + "/frame.html")
        attack.wait_for_function("() => window.__loaded === 2")
        framed = [f for f in attack.frames if f != attack.main_frame]
        assert len(framed) == 2
        for frame in framed:
            assert not frame.url.startswith(s), frame.url  # Chromium's error page instead
            assert frame.locator(".topbar").count() == 0
        expect(attack.locator("p")).to_have_text("an innocent page")
        assert any("frame-ancestors" in line for line in console), console

        # The server's state is unchanged: no point stored, not cancelled, no new run.
        assert metric_keys(server, rid) == []
        assert server.get(f"/api/v1/runs/{rid}")["cancel_requested"] is False
        assert server.get(f"/api/v1/runs/{rid}")["status"] == "running"
        assert total_runs(server) == before

        # The same actions from the dashboard itself work.
        page = context.new_page()
        page.goto(f"{s}/#/runs/{rid}")
        expect(page.get_by_test_id("run-name")).to_have_text("victim (running)")
        status = page.evaluate(f"""fetch("/api/v1/runs/{rid}/metrics", {{method: "POST",
            headers: {{"Content-Type": "application/json"}},
            body: JSON.stringify({{points: [{{key: "from_the_dashboard", step: 1, value: 1}}]}})}}).then(r => r.status)""")
        assert status == 200
        assert metric_keys(server, rid) == ["from_the_dashboard"]
        page.get_by_test_id("cancel-run").click()
        page.get_by_test_id("confirm-ok").click()
        expect(page.get_by_test_id("cancel-run")).to_be_disabled()
        assert server.get(f"/api/v1/runs/{rid}")["cancel_requested"] is True
        page.goto(f"{s}/#/runs/{done}")
        page.get_by_test_id("resume-run").click()
        page.wait_for_url(lambda url: "#/runs/" in url and not url.endswith(f"#/runs/{done}"))
        assert total_runs(server) == before + 1
        resumed = server.get(f"/api/v1/runs/{page.url.rsplit('/', 1)[1]}")
        assert resumed["resumed_from_id"] == done and resumed["status"] == "queued"
        server.post(f"/api/v1/runs/{resumed['id']}/cancel")  # no worker here: not left queued
    finally:
        context.close()


def test_dashboard_pages_raise_no_csp_violation(browser, server):
    a = server.external_run("csp-a", params={"lr": 0.01})
    b = server.external_run("csp-b", params={"lr": 0.02})
    server.log_points(a["id"], training_curves(seed=1, steps=120, lr=1e-2))
    server.log_points(b["id"], training_curves(seed=2, steps=120, lr=2e-2))
    context = browser.new_context(base_url=server.url, viewport={"width": 1440, "height": 900}, accept_downloads=True)
    context.add_init_script(CSP_LISTENER)
    console: list[str] = []
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        seen: list[str] = []

        def visit(hash_: str, ready: str) -> None:
            page.goto("/" + hash_)
            page.locator(ready).first.wait_for(timeout=30_000)
            seen.extend(page.evaluate("window.__csp.splice(0)"))

        visit("#/runs", f"tr[data-run-id='{a['id']}']")
        visit(f"#/runs/{a['id']}", ".js-plotly-plot .scatterlayer .trace")
        # plotly's PNG export (canvas, data: and blob: URLs) still works under the policy
        plot = page.locator(".js-plotly-plot").first
        plot.hover()
        with page.expect_download() as download:
            plot.locator(".modebar-btn[data-title^='Download plot as a']").first.click()
        assert download.value.suggested_filename.endswith(".png")
        visit(f"#/compare?ids={a['id']},{b['id']}", ".js-plotly-plot .legend .traces")
        visit("#/new", "#f-recipe")
        visit("#/projects", "[data-testid=projects-table]")
        page.goto(f"/runs/{a['id']}")  # the run's own URL serves the dashboard too
        page.locator(".topbar").wait_for()
        seen.extend(page.evaluate("window.__csp.splice(0)"))
        assert seen == [], seen
        assert not [line for line in console if "Content Security Policy" in line], console
        assert not errors, errors
    finally:
        context.close()


def test_a_dns_name_rebound_to_loopback_is_refused(browser, server, chromium_path):
    """What DNS rebinding does: the attacker's name resolves to 127.0.0.1, so its page would be
    same-origin with the server. The Host header still names the attacker's host: 400."""
    # a second Chromium of the same Playwright, whose resolver maps the attacker's name to loopback
    rebinding = browser.browser_type.launch(
        executable_path=chromium_path, args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.evil.test 127.0.0.1"])
    try:
        page = rebinding.new_page()
        rebound = f"http://rebind.evil.test:{server.port}"
        answer = page.goto(rebound + "/")
        assert answer.status == 400
        assert "RUNYARD_ALLOWED_HOSTS" in answer.text()
        status = page.evaluate("""fetch("/api/v1/runs", {method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({recipe: "external", name: "rebound"})}).then(r => r.status)""")
        assert status == 400
        assert page.goto(rebound + "/api/v1/runs").status == 400
        # the real name still works in the same browser
        assert page.goto(f"{server.url}/").status == 200
    finally:
        rebinding.close()
    assert not [r for r in server.get("/api/v1/runs?limit=500")["items"] if r["name"] == "rebound"]
