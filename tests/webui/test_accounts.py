"""Accounts in the dashboard, in a real Chromium against a real server: the login page
(password, one-time links), logout, API tokens, the admin page (users, audit log), project
members, what each role is offered, and CSRF from another origin.

Users, projects and roles are written straight into the server's database (as
``runyard user create`` does); runs are made through the API with each user's own token, so
they have owners. The server caches sessions and roles for up to 2 s per process, so the
tests wait for conditions rather than for a fixed time."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import expect

from tests.webui.conftest import free_port, screenshot

pytestmark = pytest.mark.browser

XSS = '<img src=x onerror="window.__xss=1">'
PASSWORDS = {
    "root": "root-password-1",
    "alice": "alice-password-1",
    "bob": "bob-password-1",
    "vic": "vic-password-1",
    "pat": "pat-password-1",
    "erin": "erin-password-1",
}


@dataclass
class Accounts:
    server: object
    tokens: dict[str, str] = field(default_factory=dict)  # user -> personal read+write token
    ids: dict[str, int] = field(default_factory=dict)  # user -> id
    projects: dict[str, int] = field(default_factory=dict)  # name -> id
    runs: dict[str, int] = field(default_factory=dict)

    def client(self, user: str = "root") -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {self.tokens[user]}"}, timeout=30
        )

    def api(self, method: str, path: str, user: str = "root", **kw):
        with self.client(user) as c:
            res = c.request(method, path, **kw)
        res.raise_for_status()
        return res.json() if res.content else None


def _db(server):
    from server.db import get_engine, session_factory
    from server.settings import Settings

    return session_factory(get_engine(Settings(home=server.home).database_url))()


@pytest.fixture(scope="module")
def accts(server) -> Accounts:
    """root (server admin); project vision: pat admin, alice and bob members, vic viewer;
    project nlp: alice viewer; erin in no project. Each has a personal read+write token."""
    from server.auth import create_token
    from server.store import get_or_create_project
    from server.users import create_user, set_role

    out = Accounts(server)
    session = _db(server)
    try:
        vision = get_or_create_project(session, "vision")
        nlp = get_or_create_project(session, "nlp")
        session.commit()
        out.projects = {"vision": vision.id, "nlp": nlp.id}
        display = {
            "root": "Root Admin",
            "alice": "Alice Liddell",
            "bob": "Bob",
            "vic": "Vic Viewer",
            "pat": "Pat",
        }
        for name, password in PASSWORDS.items():
            user = create_user(
                session,
                name,
                display_name=display.get(name, name),
                email=f"{name}@example.org",
                password=password,
                is_admin=name == "root",
            )
            out.ids[name] = user.id
            out.tokens[name] = create_token(
                session, "personal", name="tests", scope="read+write", user_id=user.id
            )[1]
            for project, role in {
                "pat": [(vision, "admin")],
                "alice": [(vision, "member"), (nlp, "viewer")],
                "bob": [(vision, "member")],
                "vic": [(vision, "viewer")],
            }.get(name, []):
                set_role(session, project, user, role)
    finally:
        session.close()
    for owner in ("alice", "bob"):
        for suffix, status in (("live", None), ("done", "succeeded")):
            run = out.api(
                "POST",
                "/api/v1/runs",
                owner,
                json={"recipe": "external", "name": f"{owner}-{suffix}", "project": "vision"},
            )
            if status:
                out.api("PATCH", f"/api/v1/runs/{run['id']}", owner, json={"status": status})
            out.runs[f"{owner}-{suffix}"] = run["id"]
    return out


@pytest.fixture
def pages(browser, server):
    """new(user=None) -> a page in a fresh browser context, logged in as ``user`` (through the
    API, which sets the session cookie in the context) or not at all."""
    made = []

    def new(user: str | None = None, password: str | None = None):
        context = browser.new_context(base_url=server.url, viewport={"width": 1440, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        made.append((context, errors))
        if user is not None:
            res = context.request.post(
                "/api/v1/auth/login", data={"login": user, "password": password or PASSWORDS[user]}
            )
            assert res.status == 200, res.text()
        return page

    yield new
    for context, _ in made:
        context.close()
    errors = [e for _, errs in made for e in errs]
    assert not errors, f"JavaScript errors on the pages: {errors}"


def login_form(page, login: str, password: str) -> None:
    page.get_by_test_id("login-name").fill(login)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()


def confirm(page) -> None:
    page.get_by_test_id("confirm-ok").click()


# ---------------------------------------------------------------------------------------------


def test_open_mode_needs_no_login_and_says_so(page, server):
    """Before any account exists (this runs first in the module, before `accts` makes them)."""
    assert server.get("/api/v1/me")["open"] is True
    page.goto("/#/runs")
    expect(page.locator("h1")).to_have_text("Runs")
    expect(page.get_by_test_id("open-mode")).to_have_text("single-user mode")
    expect(page.get_by_test_id("user-menu")).to_have_count(0)
    page.goto("/#/login")
    expect(page.get_by_test_id("login-page")).to_contain_text("No login needed")


def test_password_login_wrong_password_and_logout(pages, server, accts):
    page = pages()
    rid = accts.runs["alice-live"]
    page.goto(f"/#/runs/{rid}")
    # Not logged in: the login page, which will come back here.
    expect(page.get_by_test_id("login-form")).to_be_visible()
    assert page.url.endswith("#/login?next=" + f"%23%2Fruns%2F{rid}"), page.url
    expect(page.get_by_test_id("user-menu")).to_have_count(0)
    screenshot(page, "login")

    login_form(page, "alice", "not-her-password")
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong name or password.")
    expect(page.get_by_test_id("login-password")).to_have_value("")

    login_form(page, "alice@example.org", PASSWORDS["alice"])  # the email works as the login too
    expect(page.get_by_test_id("run-name")).to_have_text("alice-live")
    assert page.url.endswith(f"#/runs/{rid}")
    expect(page.get_by_test_id("user-name")).to_have_text("Alice Liddell")
    expect(page.get_by_test_id("owner")).to_contain_text("alice")
    assert page.context.request.get("/api/v1/runs").status == 200

    page.get_by_test_id("user-menu").locator("summary").click()
    expect(page.get_by_test_id("menu-admin")).to_have_count(0)  # not a server admin
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    assert re.search(r"#/login$", page.url), page.url
    assert page.context.request.get("/api/v1/runs").status == 401
    assert page.context.request.get("/api/v1/me").json()["authenticated"] is False
    # Any page now leads to the login page.
    page.goto("/#/compare")
    expect(page.get_by_test_id("login-form")).to_be_visible()


def test_next_is_only_a_dashboard_hash(pages, server, accts):
    page = pages()
    page.goto("/#/login?next=https%3A%2F%2Fevil.example%2F")
    login_form(page, "bob", PASSWORDS["bob"])
    expect(page.locator("h1")).to_have_text("Runs")
    assert page.url.startswith(server.url) and page.url.endswith("#/runs"), page.url


def test_one_time_login_link(pages, server, accts):
    url = accts.api("POST", f"/api/v1/users/{accts.ids['bob']}/login-link", json={})["url"]
    assert url.startswith(server.url + "/#/login?link=")
    page = pages()
    page.goto(url)
    expect(page.locator("h1")).to_have_text("Runs")
    expect(page.get_by_test_id("user-name")).to_have_text("Bob")
    assert "link=" not in page.url, page.url  # taken out of the address bar
    assert "link=" not in page.evaluate("location.href")
    assert page.context.request.get("/api/v1/me").json()["user"]["name"] == "bob"

    # Used: a second browser gets a clear sentence and the login form.
    other = pages()
    other.goto(url)
    expect(other.get_by_test_id("login-error")).to_contain_text("This login link is unknown, used or expired")
    expect(other.get_by_test_id("login-form")).to_be_visible()
    assert "link=" not in other.url
    assert other.context.request.get("/api/v1/me").json()["authenticated"] is False


def test_tokens_page_create_use_revoke(pages, server, accts):
    page = pages("alice")
    page.goto("/#/tokens")
    page.get_by_test_id("token-name").fill("laptop scripts")
    page.get_by_test_id("token-scope").select_option("read+write")
    page.get_by_test_id("token-project").select_option("vision")
    page.get_by_test_id("create-token").click()
    box = page.get_by_test_id("token-secret")
    expect(box).to_contain_text("will not be shown again")
    secret = page.get_by_test_id("token-secret-value").input_value()
    assert secret.startswith("ryp_"), secret
    page.get_by_test_id("token-secret-copy").click()
    expect(page.get_by_test_id("token-secret-copy-status")).not_to_have_text("")
    row = page.locator("[data-testid=tokens-table] tr", has_text="laptop scripts")
    expect(row).to_contain_text(secret[:10])
    expect(row).to_contain_text("vision")
    expect(row).to_contain_text("active")
    screenshot(page, "tokens")

    # The secret works from a script...
    headers = {"Authorization": f"Bearer {secret}"}
    res = httpx.get(server.url + "/api/v1/runs", headers=headers)
    assert res.status_code == 200, res.text
    assert {r["project"] for r in res.json()["items"]} == {"vision"}  # limited to its project

    # ...and is never shown again.
    page.reload()
    expect(row).to_be_visible()
    expect(page.get_by_test_id("token-secret")).to_have_count(0)
    assert secret not in page.content()

    row.get_by_test_id("revoke-token").click()
    confirm(page)
    expect(row).to_contain_text("revoked")
    expect(row.get_by_test_id("revoke-token")).to_have_count(0)
    assert httpx.get(server.url + "/api/v1/runs", headers=headers).status_code == 401


def test_admin_page_users_and_audit_log(pages, server, accts):
    page = pages("root")
    page.goto("/#/runs")
    page.get_by_test_id("user-menu").locator("summary").click()
    page.get_by_test_id("menu-admin").click()
    expect(page.get_by_test_id("users-table")).to_contain_text("alice")

    # Create a user (the display name is shown as text, never parsed).
    page.get_by_test_id("new-user-name").fill("dave")
    page.get_by_test_id("new-user-display").fill(XSS)
    page.get_by_test_id("new-user-password").fill("dave-password-1")
    page.get_by_test_id("create-user").click()
    dave = page.locator("[data-testid=users-table] tr[data-user-name='dave']")
    expect(dave).to_contain_text(XSS)
    assert page.evaluate("window.__xss") is None

    # They can log in; a one-time link for them is shown once.
    other = pages("dave", "dave-password-1")
    other.goto("/#/runs")
    expect(other.get_by_test_id("user-name")).to_have_text(XSS)
    dave.get_by_test_id("make-login-link").click()
    expect(page.get_by_test_id("login-link-value")).to_have_value(re.compile(r"/#/login\?link=ryl_"))

    # A new password, set by the admin, ends their session; the new one works.
    dave.get_by_test_id("set-password").click()
    page.get_by_test_id("prompt-input").fill("short")
    page.get_by_test_id("prompt-ok").click()
    expect(page.get_by_test_id("prompt-error")).to_contain_text("at least 8")
    page.get_by_test_id("prompt-input").fill("dave-password-2")
    page.get_by_test_id("prompt-ok").click()
    expect(page.get_by_test_id("prompt-dialog")).to_have_count(0)
    expect(page.locator(".toast", has_text="Password of dave set")).to_be_visible()
    ok = other.context.request.post(
        "/api/v1/auth/login", data={"login": "dave", "password": "dave-password-2"}
    )
    assert ok.status == 200, ok.text()

    # Disable them: logged out, and their login fails.
    dave.get_by_test_id("disable-user").click()
    confirm(page)
    expect(dave).to_have_attribute("data-disabled", "1")
    expect(dave).to_contain_text("disabled")
    assert other.context.request.get("/api/v1/me").json()["authenticated"] is False
    res = other.context.request.post(
        "/api/v1/auth/login", data={"login": "dave", "password": "dave-password-2"}
    )
    assert res.status == 401 and "disabled" in res.json()["detail"]
    other.reload()
    expect(other.get_by_test_id("login-form")).to_be_visible()
    login_form(other, "dave", "dave-password-2")
    expect(other.get_by_test_id("login-error")).to_contain_text("disabled")
    # Enable again.
    dave.get_by_test_id("enable-user").click()
    expect(dave).to_have_attribute("data-disabled", "0")

    # Make / remove admin (never offered on your own row).
    dave.get_by_test_id("make-admin").click()
    confirm(page)
    expect(dave.get_by_test_id("remove-admin")).to_be_visible()
    me_row = page.locator("[data-testid=users-table] tr[data-user-name='root']")
    expect(me_row.get_by_test_id("disable-user")).to_have_count(0)
    expect(me_row.get_by_test_id("remove-admin")).to_have_count(0)

    # The audit log, newest first, with the events above; filter by action.
    csrf = page.context.request.get("/api/v1/me").json()["csrf"]
    made = page.context.request.post(
        "/api/v1/tokens", data={"name": "audit me", "scope": "read"}, headers={"X-CSRF-Token": csrf}
    )
    assert made.status == 201, made.text()
    page.reload()
    audit = page.get_by_test_id("audit-table")
    expect(audit).to_have_attribute("data-loaded", "1")
    actions = audit.locator("tbody tr")
    expect(actions.first).to_have_attribute("data-action", "token_created")
    for action in (
        "login",
        "token_created",
        "user_created",
        "user_disabled",
        "user_enabled",
        "password_reset",
        "login_link_created",
        "login_failed",
    ):
        expect(audit.locator(f"tr[data-action='{action}']").first).to_be_visible()
    ids = [int(x) for x in actions.evaluate_all("rows => rows.map(r => r.dataset.eventId)")]
    assert ids == sorted(ids, reverse=True)
    page.get_by_test_id("audit-action").select_option("user_created")
    expect(audit.locator("tbody tr").first).to_have_attribute("data-action", "user_created")
    expect(audit.locator("tbody tr:not([data-action='user_created'])")).to_have_count(0)
    expect(audit).to_contain_text("user dave")
    screenshot(page, "admin")


def test_audit_log_loads_more_by_before(pages, server, accts):
    """More events than a page (50): "Load more" asks for the ones before the oldest shown."""
    page = pages("root")
    with accts.client() as c:
        for i in range(55):
            c.patch(
                f"/api/v1/users/{accts.ids['erin']}", json={"display_name": f"erin {i}"}
            ).raise_for_status()
    page.goto("/#/admin")
    page.get_by_test_id("audit-action").select_option("user_updated")
    rows = page.locator("[data-testid=audit-table] tbody tr[data-action='user_updated']")
    expect(rows).to_have_count(50)
    page.get_by_test_id("audit-more").click()
    expect(rows).to_have_count(55)
    expect(page.get_by_test_id("audit-more")).to_be_hidden()
    ids = [int(x) for x in rows.evaluate_all("rows => rows.map(r => r.dataset.eventId)")]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 55


def test_viewer_sees_runs_but_no_actions(pages, server, accts):
    page = pages("vic")
    page.goto("/#/runs")
    for name in ("alice-live", "bob-live", "alice-done"):
        expect(page.locator(f"tr[data-run-id='{accts.runs[name]}']")).to_be_visible()
    expect(page.get_by_test_id("new-run")).to_have_count(0)
    expect(page.locator("#nav-new")).to_be_hidden()
    for name in ("alice-live", "alice-done"):
        page.goto(f"/#/runs/{accts.runs[name]}")
        expect(page.get_by_test_id("run-name")).to_have_text(name)
        expect(page.get_by_test_id("owner")).to_contain_text("alice")
        for testid in ("cancel-run", "delete-run", "resume-run", "clone-run", "rename-run"):
            expect(page.get_by_test_id(testid)).to_have_count(0)
    # The server refuses anyway.
    csrf = page.context.request.get("/api/v1/me").json()["csrf"]
    res = page.context.request.post(
        f"/api/v1/runs/{accts.runs['alice-live']}/cancel",
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert res.status == 403 and "role" in res.json()["detail"]


def test_member_changes_own_runs_only(pages, server, accts):
    page = pages("alice")
    page.goto(f"/#/runs/{accts.runs['alice-live']}")
    expect(page.get_by_test_id("cancel-run")).to_be_visible()
    expect(page.get_by_test_id("rename-run")).to_be_visible()
    page.goto(f"/#/runs/{accts.runs['bob-live']}")
    expect(page.get_by_test_id("run-name")).to_have_text("bob-live")
    expect(page.get_by_test_id("owner")).to_contain_text("bob")
    expect(page.get_by_test_id("cancel-run")).to_have_count(0)
    expect(page.get_by_test_id("rename-run")).to_have_count(0)
    page.goto(f"/#/runs/{accts.runs['bob-done']}")
    expect(page.get_by_test_id("run-name")).to_have_text("bob-done")
    expect(page.get_by_test_id("delete-run")).to_have_count(0)
    page.goto(f"/#/runs/{accts.runs['alice-done']}")
    expect(page.get_by_test_id("delete-run")).to_be_visible()

    # Rename her own run, through the dashboard (CSRF header and all).
    page.get_by_test_id("rename-run").click()
    page.get_by_test_id("prompt-input").fill("alice-done-renamed")
    page.get_by_test_id("prompt-ok").click()
    expect(page.get_by_test_id("run-name")).to_have_text("alice-done-renamed")
    assert accts.api("GET", f"/api/v1/runs/{accts.runs['alice-done']}")["name"] == "alice-done-renamed"

    # The new-run form offers only projects she may submit to (nlp: viewer), and a new name.
    page.goto("/#/new")
    expect(page.get_by_test_id("submit-run")).to_be_visible()
    options = page.locator("#project-options option").evaluate_all("os => os.map(o => o.value)")
    assert "vision" in options and "nlp" not in options, options
    expect(page.locator("#f-project")).not_to_have_value("nlp")


def test_project_members_page(pages, server, accts):
    vision = accts.projects["vision"]
    # A viewer sees the members, read-only.
    viewer = pages("vic")
    viewer.goto(f"/#/projects/{vision}/members")
    expect(viewer.get_by_test_id("members-table")).to_contain_text("alice")
    expect(viewer.get_by_test_id("members-readonly")).to_be_visible()
    expect(viewer.get_by_test_id("member-form")).to_have_count(0)
    expect(viewer.get_by_test_id("remove-member")).to_have_count(0)

    # The project's admin reaches it from the runs page's project filter and adds erin.
    page = pages("pat")
    page.goto("/#/runs")
    page.get_by_test_id("filter-project").select_option("vision")
    page.get_by_test_id("project-members").click()
    expect(page.get_by_test_id("project-name")).to_have_text("vision")
    page.get_by_test_id("member-user").fill("erin")
    page.get_by_test_id("member-new-role").select_option("member")
    page.get_by_test_id("add-member").click()
    erin = page.locator("[data-testid=members-table] tr[data-member='erin']")
    expect(erin).to_have_attribute("data-role", "member")
    members = {m["user"]: m["role"] for m in accts.api("GET", f"/api/v1/projects/{vision}/members")}
    assert members["erin"] == "member"
    # Change the role, then remove.
    erin.get_by_test_id("member-role").select_option("viewer")
    expect(erin).to_have_attribute("data-role", "viewer")
    erin.get_by_test_id("remove-member").click()
    confirm(page)
    expect(erin).to_have_count(0)
    # Unknown users are refused with the server's sentence.
    page.get_by_test_id("member-user").fill("nobody-here")
    page.get_by_test_id("add-member").click()
    expect(page.get_by_test_id("member-error")).to_contain_text("No user is named")
    screenshot(page, "members")

    # The projects list links there too.
    page.goto("/#/projects")
    row = page.locator("[data-testid=projects-table] tr[data-project='vision']")
    expect(row).to_contain_text("admin")
    row.get_by_test_id("project-members-link").click()
    expect(page.get_by_test_id("members-table")).to_be_visible()


ATTACK_PAGES = {
    "/fetch.html": """<!doctype html><script>
      window.__done = fetch("{server}/api/v1/runs/{rid}/cancel", {{method: "POST", credentials: "include",
        body: "x", headers: {{"Content-Type": "text/plain"}}}}).then(r => "answered " + r.status, e => "failed " + e);
    </script>""",
    "/form.html": """<!doctype html><form id=f method=POST action="{server}/api/v1/runs/{rid}/cancel">
      <input name=x value=1></form><script>document.getElementById("f").submit()</script>""",
    "/json.html": """<!doctype html><form id=f method=POST enctype="text/plain" action="{server}/api/v1/runs">
      <input name='{{"recipe":"external","name":"csrf-pwned","project":"vision","pad":"' value='"}}'></form>
      <script>document.getElementById("f").submit()</script>""",
}


@pytest.fixture
def attacker(server, accts):
    """Another origin (a second loopback port) serving the attack pages."""
    rid = accts.runs["alice-live"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name
            body = ATTACK_PAGES.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            data = body.format(server=server.url, rid=rid).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_csrf_from_another_origin_is_refused(pages, server, accts, attacker):
    rid = accts.runs["alice-live"]
    page = pages("alice")  # logged in: the session cookie is in this browser context
    runs_before = accts.api("GET", "/api/v1/runs", params={"limit": 1000})["total"]
    log_before = server.log.read_text(errors="replace")
    sent: list[str] = []
    answers: list[tuple[str, str, int]] = []
    page.context.on(
        "request",
        lambda r: sent.append(r.url) if r.method == "POST" and r.url.startswith(server.url) else None,
    )
    page.context.on(
        "response",
        lambda r: (
            answers.append((r.request.method, r.url, r.status))
            if r.url.startswith(server.url) and r.request.method == "POST"
            else None
        ),
    )

    attack = page.context.new_page()
    attack.goto(attacker + "/fetch.html")
    outcome = attack.evaluate("window.__done")
    assert outcome.startswith("failed"), outcome  # the answer is not readable cross-origin either
    attack.goto(attacker + "/form.html")
    attack.wait_for_url(f"{server.url}/api/v1/runs/{rid}/cancel")
    assert (
        "Cross-site requests" in attack.content()
        or "may not change anything" in attack.content()
        or ("CSRF" in attack.content())
    ), attack.content()
    attack.goto(attacker + "/json.html")
    attack.wait_for_url(f"{server.url}/api/v1/runs")

    # All three reached the server. The fetch's answer is hidden from the page (and from the
    # browser's response events) by CORS; the two form posts were answered 403, not 401: the
    # session cookie went along (same site, another port) and was refused anyway.
    assert sent == [f"{server.url}/api/v1/runs/{rid}/cancel"] * 2 + [f"{server.url}/api/v1/runs"], sent
    assert len(answers) >= 2 and all(status == 403 for _, _, status in answers), answers

    run = accts.api("GET", f"/api/v1/runs/{rid}")
    assert run["status"] == "running" and run["cancel_requested"] is False
    assert accts.api("GET", "/api/v1/runs", params={"limit": 1000})["total"] == runs_before
    assert accts.api("GET", "/api/v1/runs", params={"q": "csrf-pwned"})["total"] == 0
    log = server.log.read_text(errors="replace")[len(log_before) :]
    assert "Traceback" not in log and "Internal Server Error" not in log and " 500" not in log, log[-3000:]

    # The dashboard itself, in the same browser, still changes things (it sends the CSRF header).
    page.goto(f"/#/runs/{rid}")
    page.get_by_test_id("cancel-run").click()
    confirm(page)
    expect(page.get_by_test_id("cancel-run")).to_be_disabled()
    assert accts.api("GET", f"/api/v1/runs/{rid}")["cancel_requested"] is True
