"""Single sign-on with OpenID Connect against a real provider: panva/oidc-provider
(``tests/oidc/provider.js``, Node.js) on loopback, a real uvicorn Runyard server, and Chromium
(Playwright) clicking through the provider's login and consent pages.

Between Runyard and the provider's token endpoint sits a small proxy (the provider's discovery
document advertises the token endpoint there); it passes everything through, or rewrites the
ID token in the token response to check that a tampered, expired, wrongly signed or wrongly
addressed ID token is refused (401 page, no session, a ``login_failed`` audit event).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import need_service
from tests.server.conftest import REPO, free_port

OIDC_DIR = REPO / "tests" / "oidc"
CLIENT_ID = "runyard-tests"
CLIENT_SECRET = "runyard-tests-client-secret-0123456789"
GROUP_ROLES = ("ml-team=vision:member, ml-leads=vision:admin,viewers=vision:viewer,"
               "viewers=audio:viewer ,audio-team=audio:member")
ADMIN_GROUPS = "runyard-admins"
TIMEOUT_MS = 20_000


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --------------------------------------------------------------------------- the provider


def install_provider_packages() -> None:
    """``npm ci`` in tests/oidc once (a file lock keeps two pytest processes from racing)."""
    marker = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
    if marker.is_file():
        return
    npm = shutil.which("npm")
    need_service("npm", npm is not None, "install Node.js with npm, then `cd tests/oidc && npm ci`")
    lock_path = Path(tempfile.gettempdir()) / "runyard-tests-oidc-npm.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True,
                              text=True, timeout=600)
        need_service("oidc-provider (npm)", done.returncode == 0 and marker.is_file(),
                     f"`npm ci` in tests/oidc failed: {(done.stderr or done.stdout)[-500:]}")


class TokenProxy:
    """Forwards every request to the provider; for ``POST /token`` it can rewrite the
    ``id_token`` in the answer (``mode``), and it remembers the tokens it saw."""

    def __init__(self) -> None:
        self.upstream: tuple[str, int] | None = None
        self.mode = "pass"
        self.signing_key: Any = None  # the provider's private key (joserfc RSAKey)
        self.other_key: Any = None
        self.seen: list[str] = []  # every access/ID token that went through (to look for in logs)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "accept-encoding")}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=20)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    res = conn.getresponse()
                    data = res.read()
                    out_headers = [(k, v) for k, v in res.getheaders()
                                   if k.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                                        "content-length")]
                    status = res.status
                finally:
                    conn.close()
                if self.command == "POST" and self.path.split("?")[0] == "/token" and status == 200:
                    data = proxy.rewrite(data)
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def rewrite(self, data: bytes) -> bytes:
        answer = json.loads(data)
        for name in ("access_token", "id_token", "refresh_token"):
            if answer.get(name):
                self.seen.append(answer[name])
        if self.mode == "pass" or "id_token" not in answer:
            return data
        answer["id_token"] = self.bad_id_token(answer["id_token"], self.mode)
        if answer["id_token"] is None:
            del answer["id_token"]
        return json.dumps(answer).encode()

    def bad_id_token(self, token: str, mode: str) -> str | None:
        from joserfc import jwt

        header_b64, payload_b64, signature = token.split(".")
        header, claims = b64url_json(header_b64), b64url_json(payload_b64)
        now = int(time.time())
        key, kid = self.signing_key, header.get("kid")
        if mode == "missing":
            return None
        if mode == "tampered":  # one claim changed, the provider's signature kept
            claims["sub"] = "mallory"
            return f"{header_b64}.{b64url(json.dumps(claims).encode())}.{signature}"
        if mode == "alg_none":
            unsigned = {"alg": "none", "typ": "JWT"}
            return f"{b64url(json.dumps(unsigned).encode())}.{payload_b64}."
        if mode == "expired":  # validly signed by the provider's own key, but expired an hour ago
            claims.update(iat=now - 7200, exp=now - 3600, auth_time=now - 7200)
        elif mode == "wrong_key":  # the provider's kid, another key
            key = self.other_key
        elif mode == "unknown_kid":
            key, kid = self.other_key, "not-published"
        elif mode == "wrong_audience":  # for another client (azp naming us does not make it ours)
            claims.update(aud="some-other-client", azp=CLIENT_ID)
        elif mode == "wrong_issuer":
            claims["iss"] = "http://127.0.0.1:1"
        elif mode == "wrong_nonce":
            claims["nonce"] = "not-the-nonce-runyard-sent"
        else:
            raise ValueError(mode)
        return jwt.encode({"alg": "RS256", "kid": kid, "typ": "JWT"}, claims, key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class IdP:
    """oidc-provider as a subprocess; its accounts live in a JSON file it reads at each lookup."""

    def __init__(self, home: Path, redirect_uri: str, post_logout_uri: str, proxy: TokenProxy) -> None:
        from joserfc.jwk import RSAKey

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accounts_file = home / "accounts.json"
        self.accounts: dict[str, dict[str, Any]] = {}
        self.save()
        self.key = RSAKey.generate_key(2048, parameters={"kid": "runyard-tests-1", "alg": "RS256", "use": "sig"},
                                       private=True)
        jwks_file = home / "jwks.json"
        jwks_file.write_text(json.dumps({"keys": [self.key.as_dict(private=True)]}))
        jwks_file.chmod(0o600)
        proxy.upstream = ("127.0.0.1", self.port)
        proxy.signing_key = self.key
        proxy.other_key = RSAKey.generate_key(2048, private=True)
        self.log = home / "provider.log"
        env = {**os.environ, "OIDC_PORT": str(self.port), "OIDC_CLIENT_ID": CLIENT_ID,
               "OIDC_CLIENT_SECRET": CLIENT_SECRET, "OIDC_REDIRECT_URIS": redirect_uri,
               "OIDC_POST_LOGOUT_REDIRECT_URIS": post_logout_uri, "OIDC_JWKS_FILE": str(jwks_file),
               "OIDC_ACCOUNTS_FILE": str(self.accounts_file), "OIDC_TOKEN_PROXY": proxy.url,
               "NODE_ENV": "development"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["node", str(OIDC_DIR / "provider.js")], cwd=OIDC_DIR, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or self.ready(), 30, "oidc-provider to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"oidc-provider exited: {self.log.read_text()[-3000:]}")

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/.well-known/openid-configuration", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metadata(self) -> dict[str, Any]:
        return httpx.get(self.url + "/.well-known/openid-configuration", timeout=5).json()

    def save(self) -> None:
        tmp = self.accounts_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.accounts))
        tmp.replace(self.accounts_file)

    def account(self, login: str, *, groups: list[str] | None = None, **claims: Any) -> str:
        """Add or change an account (``login`` is the name typed on the login page and the subject)."""
        base = {"email": f"{login}@example.org", "email_verified": True, "preferred_username": login,
                "name": login.title()}
        self.accounts[login] = {**base, **claims, "groups": list(groups or [])}
        self.save()
        return login

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


class Runyard:
    """``uvicorn server.app:create_app --factory`` with SSO on, its output (access log on) in a file."""

    def __init__(self, home: Path, port: int, issuer: str) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_PORT": str(port), "RUNYARD_REAPER": "false",
               "RUNYARD_PUBLIC_URL": self.url, "RUNYARD_OIDC_ISSUER": issuer, "RUNYARD_OIDC_CLIENT_ID": CLIENT_ID,
               "RUNYARD_OIDC_CLIENT_SECRET": CLIENT_SECRET, "RUNYARD_OIDC_SCOPES": "openid email profile groups",
               "RUNYARD_OIDC_GROUP_ROLES": GROUP_ROLES, "RUNYARD_OIDC_ADMIN_GROUPS": ADMIN_GROUPS,
               "PYTHONUNBUFFERED": "1"}
        for name in ("RUNYARD_DATABASE_URL", "RUNYARD_TOKEN", "RUNYARD_SECRET_KEY", "RUNYARD_OIDC_GROUPS_CLAIM"):
            env.pop(name, None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "info"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or self.healthy(), 60, "the Runyard server to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {self.log.read_text()[-3000:]}")
        from server.db import get_engine, session_factory
        from server.settings import Settings

        self.sessionmaker = session_factory(get_engine(Settings(home=home).database_url))

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @contextlib.contextmanager
    def db(self):
        session = self.sessionmaker()
        try:
            yield session
        finally:
            session.close()

    def user(self, name: str):
        from server import users

        with self.db() as session:
            return users.user_by_name(session, name)

    def last_event(self, action: str):
        from server.models import AuditEvent

        with self.db() as session:
            return session.scalar(select(AuditEvent).where(AuditEvent.action == action)
                                  .order_by(AuditEvent.id.desc()).limit(1))

    def events_since(self, event_id: int, action: str | None = None) -> list:
        from server.models import AuditEvent

        with self.db() as session:
            query = select(AuditEvent).where(AuditEvent.id > event_id).order_by(AuditEvent.id)
            if action:
                query = query.where(AuditEvent.action == action)
            return list(session.scalars(query))

    def last_event_id(self) -> int:
        from sqlalchemy import func

        from server.models import AuditEvent

        with self.db() as session:
            return session.scalar(select(func.max(AuditEvent.id))) or 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy():
    p = TokenProxy()
    yield p
    p.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, proxy):
    """(idp, runyard): the provider (its token endpoint behind ``proxy``) and a Runyard server
    that uses it, with one password admin so the server is out of single-user open mode."""
    need_service("Node.js", shutil.which("node") is not None, "install Node.js (v18+) to run tests/oidc/provider.js")
    install_provider_packages()
    home = tmp_path_factory.mktemp("oidc")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    idp = IdP(home, f"{url}/auth/oidc/callback", f"{url}/auth/oidc/logged-out", proxy)
    server = None
    try:
        server = Runyard(home / "runyard", port, idp.url)
        from server import users

        with server.db() as session:
            users.create_user(session, "root", password="root-password-123", is_admin=True)
        yield idp, server
    finally:
        if server is not None:
            server.stop()
        idp.stop()


@pytest.fixture(scope="module")
def idp(stack):
    return stack[0]


@pytest.fixture(scope="module")
def runyard(stack):
    return stack[1]


@pytest.fixture
def context(browser, runyard, proxy):
    """A fresh browser (no cookies) per test (``browser``: tests/conftest.py's Chromium); requests
    off loopback are refused."""
    ctx = browser.new_context(base_url=runyard.url)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.route("**/*", lambda route: route.continue_() if urlsplit(route.request.url).hostname == "127.0.0.1"
              else route.abort())
    yield ctx
    ctx.close()
    proxy.mode = "pass"


class Login:
    """What one SSO login in the browser ended with."""

    def __init__(self, page, callback) -> None:
        self.page, self.callback = page, callback

    @property
    def status(self) -> int:
        return self.callback.status

    def reason(self) -> str:
        return self.page.locator("#reason").inner_text()


def sso_login(context, runyard, idp, login: str, next_path: str | None = None) -> Login:
    """Open /auth/oidc/login, sign in on the provider's page as ``login``, consent if asked,
    and come back to Runyard."""
    page = context.new_page()
    callbacks = []
    page.on("response", lambda r: callbacks.append(r) if r.url.startswith(runyard.url + "/auth/oidc/callback")
            else None)
    query = "?" + urlencode({"next": next_path}) if next_path is not None else ""
    page.goto(f"{runyard.url}/auth/oidc/login{query}", wait_until="domcontentloaded")
    page.wait_for_url(f"{idp.url}/interaction/**", wait_until="domcontentloaded")
    login_url = page.url
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "anything")
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: u.startswith(runyard.url) or (u.startswith(f"{idp.url}/interaction/")
                                                             and u != login_url), wait_until="commit")
    if not page.url.startswith(runyard.url):  # the consent page
        page.locator("input[name=prompt][value=consent]").wait_for(state="attached")
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: u.startswith(runyard.url), wait_until="commit")
    wait_until(lambda: callbacks, 10, "the callback's answer")
    return Login(page, callbacks[0])


def me(context, runyard) -> dict[str, Any]:
    r = context.request.get(runyard.url + "/api/v1/me")
    assert r.ok, r.text()
    return r.json()


def has_session_cookie(context) -> bool:
    return any(c["name"] == "runyard_session" for c in context.cookies())


# --------------------------------------------------------------------------- logins


@pytest.mark.browser
def test_first_login_creates_the_user_and_the_next_login_reuses_it(context, browser, runyard, idp):
    idp.account("u-alice", preferred_username="alice", name="Alice Liddell", email="alice@example.org",
                groups=["ml-team"])
    before = runyard.last_event_id()
    done = sso_login(context, runyard, idp, "u-alice")
    assert done.status == 303 and done.callback.headers["location"] == "/"
    who = me(context, runyard)
    assert who["authenticated"] and who["via"] == "session"
    assert who["user"]["name"] == "alice" and who["user"]["display_name"] == "Alice Liddell"
    assert who["user"]["email"] == "alice@example.org" and who["user"]["sso"] is True
    assert who["user"]["has_password"] is False
    assert who["roles"] == {"vision": "member"} and who["is_admin"] is False
    assert who["sso"]["url"] == "/auth/oidc/login"
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["runyard_session"]["httpOnly"] and cookies["runyard_session"]["sameSite"] == "Lax"
    user = runyard.user("alice")
    assert (user.oidc_issuer, user.oidc_subject) == (idp.url, "u-alice")
    actions = [e.action for e in runyard.events_since(before)]
    assert "user_created" in actions and "login" in actions and "role_changed" in actions
    login_event = runyard.last_event("login")
    assert login_event.detail.get("method") == "oidc" and login_event.user_id == user.id

    second = browser.new_context(base_url=runyard.url)
    try:
        again = sso_login(second, runyard, idp, "u-alice")
        assert again.status == 303
        assert me(second, runyard)["user"]["id"] == user.id
    finally:
        second.close()
    from server.models import User

    with runyard.db() as session:
        assert len(session.scalars(select(User).where(User.oidc_subject == "u-alice")).all()) == 1


@pytest.mark.browser
def test_the_login_state_cookie_is_short_lived_and_lax(context, runyard, idp):
    page = context.new_page()
    page.goto(f"{runyard.url}/auth/oidc/login", wait_until="domcontentloaded")
    page.wait_for_url(f"{idp.url}/interaction/**", wait_until="domcontentloaded")
    state = next(c for c in context.cookies() if c["name"] == "runyard_oidc")
    assert state["httpOnly"] and state["sameSite"] == "Lax" and state["path"] == "/auth/oidc"
    assert 0 < state["expires"] - time.time() <= 600 + 5
    query = parse_qs(urlsplit(page.url).query)
    assert not query  # the interaction page carries no secrets in its URL
    assert not has_session_cookie(context)


@pytest.mark.browser
def test_groups_map_to_roles_and_follow_the_provider_at_each_login(browser, runyard, idp):
    from server import store, users

    def login_as(groups: list[str]) -> dict[str, Any]:
        idp.account("u-bob", preferred_username="bob", groups=groups)
        ctx = browser.new_context(base_url=runyard.url)
        try:
            assert sso_login(ctx, runyard, idp, "u-bob").status == 303
            return me(ctx, runyard)
        finally:
            ctx.close()

    who = login_as(["ml-team", "ml-leads", "unmapped"])
    assert who["roles"] == {"vision": "admin"}  # several groups on one project: the highest role
    assert who["is_admin"] is False
    bob = runyard.user("bob")
    with runyard.db() as session:  # a role set by hand is not SSO's to change
        users.set_role(session, store.get_or_create_project(session, "manual"), users.get_user(session, bob.id),
                       "member")
    before = runyard.last_event_id()
    who = login_as(["viewers", "runyard-admins"])
    assert who["roles"] == {"vision": "viewer", "audio": "viewer", "manual": "member"}
    assert who["is_admin"] is True
    changes = {(e.detail.get("project"), e.detail.get("before"), e.detail.get("after"))
               for e in runyard.events_since(before, "role_changed") if e.detail.get("project")}
    assert changes == {("vision", "admin", "viewer"), ("audio", None, "viewer")}
    assert all(e.detail.get("source") == "sso" for e in runyard.events_since(before, "role_changed"))
    admin_events = [e for e in runyard.events_since(before, "role_changed") if "is_admin" in e.detail]
    assert [(e.detail["before"], e.detail["after"]) for e in admin_events] == [(False, True)]

    who = login_as([])  # removed from every group: the SSO roles go, the manual one stays
    assert who["roles"] == {"manual": "member"} and who["is_admin"] is False
    with runyard.db() as session:
        members = {m.role: m.source for _, m in users.members(session, store.get_or_create_project(session,
                                                                                                    "manual").id)}
    assert members == {"member": "manual"}


@pytest.mark.browser
def test_names_are_sanitised_made_unique_and_emails_never_merge_accounts(context, browser, runyard, idp):
    from server import users

    with runyard.db() as session:
        users.create_user(session, "dave", email="dave@example.org", password="dave-password-123")
    idp.account("u-dave", preferred_username="dave", email="Dave@example.org", groups=[])
    assert sso_login(context, runyard, idp, "u-dave").status == 303
    who = me(context, runyard)
    assert who["user"]["name"] == "dave-2" and who["user"]["email"] is None  # not attached to the other dave
    password_dave = runyard.user("dave")
    assert password_dave.oidc_subject is None and password_dave.email == "dave@example.org"

    idp.account("u-odd", preferred_username="  Dávid Smith!! ", email="odd@example.org", email_verified=False)
    ctx = browser.new_context(base_url=runyard.url)
    try:
        assert sso_login(ctx, runyard, idp, "u-odd").status == 303
        who = me(ctx, runyard)
        assert who["user"]["name"] == "David-Smith"
        assert who["user"]["email"] is None  # an unverified email is not stored
    finally:
        ctx.close()


@pytest.mark.browser
def test_logout_ends_the_session_and_sends_the_browser_to_the_provider(context, runyard, idp):
    idp.account("u-erin", preferred_username="erin", groups=["audio-team"])
    done = sso_login(context, runyard, idp, "u-erin")
    who = me(context, runyard)
    assert who["authenticated"] and who["roles"] == {"audio": "member"}
    r = context.request.post(runyard.url + "/api/v1/auth/logout", headers={"X-CSRF-Token": who["csrf"], "Content-Type": "application/json"})
    assert r.ok, r.text()
    redirect = r.json()["redirect"]
    end_session = idp.metadata()["end_session_endpoint"]
    assert redirect.startswith(end_session + "?")
    query = parse_qs(urlsplit(redirect).query)
    assert query["post_logout_redirect_uri"] == [runyard.url + "/auth/oidc/logged-out"]
    assert query["client_id"] == [CLIENT_ID]
    claims = b64url_json(query["id_token_hint"][0].split(".")[1])
    assert claims["sub"] == "u-erin" and claims["aud"] == CLIENT_ID
    # oidc-provider puts scope claims only in userinfo for the code flow: the groups (and the
    # roles checked above) came from the userinfo fallback
    assert "groups" not in claims
    assert me(context, runyard)["authenticated"] is False

    page = done.page  # the provider's logout page, then back to Runyard's login page
    page.goto(redirect, wait_until="domcontentloaded")
    page.click("button[name=logout][value=yes]")
    page.wait_for_url(lambda u: u.startswith(runyard.url + "/#/login"), wait_until="commit")
    assert me(context, runyard)["authenticated"] is False


BAD_TOKENS = {
    "tampered": "signature is not valid",
    "wrong_key": "signature is not valid",
    "unknown_kid": "key the provider does not publish",
    "alg_none": "",
    "expired": "has expired",
    "wrong_audience": "'aud'",
    "wrong_issuer": "'iss'",
    "wrong_nonce": "'nonce'",
    "missing": "no ID token",
}


@pytest.mark.browser
@pytest.mark.parametrize("mode", list(BAD_TOKENS))
def test_a_bad_id_token_is_refused(mode, context, runyard, idp, proxy):
    login = idp.account(f"u-bad-{mode}".replace("_", "-"), groups=["ml-team"])
    proxy.mode = mode
    before = runyard.last_event_id()
    done = sso_login(context, runyard, idp, login)
    assert done.status == 401
    assert "Single sign-on failed" in done.page.locator("h1").inner_text()
    assert BAD_TOKENS[mode] in done.reason()
    assert done.page.locator("a[href='/#/login']").count() == 1
    assert not has_session_cookie(context)
    assert me(context, runyard)["authenticated"] is False
    failed = runyard.events_since(before, "login_failed")
    assert len(failed) == 1 and failed[0].target == "sso" and BAD_TOKENS[mode] in failed[0].detail["reason"]
    assert not runyard.events_since(before, "login")
    assert runyard.user(login) is None  # no account was made from a refused token
    assert runyard.user("mallory") is None


@pytest.mark.browser
def test_a_disabled_user_is_refused(browser, context, runyard, idp):
    from server import users

    idp.account("u-frank", preferred_username="frank", groups=["ml-team"])
    first = browser.new_context(base_url=runyard.url)
    try:
        assert sso_login(first, runyard, idp, "u-frank").status == 303
        assert me(first, runyard)["authenticated"]
    finally:
        first.close()
    with runyard.db() as session:
        users.set_disabled(session, users.user_by_name(session, "frank"), True)
    before = runyard.last_event_id()
    done = sso_login(context, runyard, idp, "u-frank")
    assert done.status == 401 and "This account is disabled" in done.reason()
    assert not has_session_cookie(context)
    failed = runyard.events_since(before, "login_failed")
    assert len(failed) == 1 and failed[0].user_id == runyard.user("frank").id


@pytest.mark.browser
@pytest.mark.parametrize(("next_path", "location"), [
    ("/#/runs/3", "/#/runs/3"),
    ("https://evil.example/phish", "/"),
    ("//evil.example/phish", "/"),
])
def test_next_only_leads_to_this_site(next_path, location, context, runyard, idp):
    idp.account("u-gina", preferred_username="gina", groups=[])
    done = sso_login(context, runyard, idp, "u-gina", next_path=next_path)
    assert done.status == 303 and done.callback.headers["location"] == location
    assert urlsplit(done.page.url).netloc == urlsplit(runyard.url).netloc


# --------------------------------------------------------------------------- without a browser


def test_a_password_logout_has_no_provider_redirect(runyard):
    with httpx.Client(base_url=runyard.url, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"login": "root", "password": "root-password-123"})
        assert r.status_code == 200, r.text
        csrf = c.get("/api/v1/me").json()["csrf"]
        r = c.post("/api/v1/auth/logout", json={}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json() == {"logged_out": True, "redirect": None}


def test_the_logged_out_landing_goes_to_the_login_page(runyard):
    r = httpx.get(runyard.url + "/auth/oidc/logged-out", timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/#/login"


def test_a_provider_error_or_a_forged_callback_is_refused(runyard):
    before = runyard.last_event_id()
    with httpx.Client(base_url=runyard.url, timeout=10) as c:
        r = c.get("/auth/oidc/callback", params={"error": "access_denied", "error_description": "<b>no</b>",
                                                 "state": "x"})
        assert r.status_code == 401 and "access_denied" in r.text
        assert "&lt;b&gt;no&lt;/b&gt;" in r.text and "<b>no</b>" not in r.text  # escaped
        r = c.get("/auth/oidc/callback", params={"code": "forged-code", "state": "forged-state"})
        assert r.status_code == 401 and "login state is missing" in r.text
        assert "runyard_session" not in r.headers.get("set-cookie", "")
    failed = runyard.events_since(before, "login_failed")
    assert [e.target for e in failed] == ["sso", "sso"]


@pytest.mark.browser
def test_no_code_state_or_token_reaches_the_server_log(context, runyard, idp, proxy):
    idp.account("u-hank", preferred_username="hank", groups=["ml-team"])
    seen = len(proxy.seen)
    assert sso_login(context, runyard, idp, "u-hank").status == 303
    tokens = proxy.seen[seen:]
    assert tokens, "no token went through the proxy"
    def logged() -> str | None:
        text = runyard.log.read_text()
        return text if "/auth/oidc/callback?" in text else None

    text = wait_until(logged, 10, "an access log line of the callback")
    lines = [line for line in text.splitlines() if "/auth/oidc/callback?" in line]
    for line in lines:
        query = parse_qs(line.split("?", 1)[1].split(" ", 1)[0])
        assert "code" not in query or query["code"] == ["REDACTED"], line
        assert query.get("state", ["REDACTED"]) == ["REDACTED"], line
    assert any("code=REDACTED" in line for line in lines)
    for token in proxy.seen:
        assert token not in text


def test_the_metadata_must_name_the_configured_issuer(tmp_path, idp, proxy):
    """Pointed at another URL (the proxy, which serves the provider's metadata naming the
    provider's issuer), Runyard refuses to start a login (OpenID Connect Discovery 4.3)."""
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    settings = Settings(home=tmp_path, reaper=False, oidc_issuer=proxy.url, oidc_client_id=CLIENT_ID,
                        oidc_client_secret=CLIENT_SECRET, public_url="http://127.0.0.1:9")
    with TestClient(create_app(settings), follow_redirects=False) as c:
        r = c.get("/auth/oidc/login")
        assert r.status_code == 502 and "names the issuer" in r.text
        assert idp.url in r.text


def test_without_sso_the_routes_answer_404(tmp_path):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    with TestClient(create_app(Settings(home=tmp_path, reaper=False)), follow_redirects=False) as c:
        for path in ("/auth/oidc/login", "/auth/oidc/callback?code=x&state=y"):
            r = c.get(path)
            assert r.status_code == 404 and "Single sign-on is not configured" in r.json()["detail"]
        assert c.get("/api/v1/me").json()["sso"] is None
        assert "runyard_oidc" not in c.cookies


# --------------------------------------------------------------------------- pure functions


def test_group_role_mapping_parses_robustly():
    from server.oidc import parse_group_roles, roles_for_groups

    mapping = parse_group_roles(" ml-team = vision:member ,\nml-leads=vision:ADMIN;; cn=ops=audio:viewer ")
    assert mapping == {"ml-team": [("vision", "member")], "ml-leads": [("vision", "admin")],
                       "cn=ops": [("audio", "viewer")]}
    mapping = parse_group_roles("a=p:viewer,b=p:admin,c=p:member,c=q:viewer,")
    assert roles_for_groups({"a", "c"}, mapping) == {"p": "member", "q": "viewer"}
    assert roles_for_groups({"a", "b", "c"}, mapping) == {"p": "admin", "q": "viewer"}
    assert roles_for_groups(set(), mapping) == {}
    assert parse_group_roles("") == {}
    for bad in ("team", "team=vision", "team=vision:owner", "=vision:member", "team=:member"):
        with pytest.raises(ValueError, match="RUNYARD_OIDC_GROUP_ROLES"):
            parse_group_roles(bad)


def test_next_paths():
    from server.oidc import safe_next

    for good in ("/", "/#/runs/3", "/#/login?x=1", "/runs/7"):
        assert safe_next(good) == good
    for bad in (None, "", "runs", "https://evil.example", "//evil.example", "/\\evil.example", "\\\\evil",
                "/\t/evil.example", "javascript:alert(1)", "/" + "x" * 3000):
        assert safe_next(bad) is None


def test_the_access_log_filter_redacts_sensitive_query_values():
    from server.logredact import RedactQuery, install, redact_url

    assert redact_url("/auth/oidc/callback?code=abc&state=xyz&iss=http%3A%2F%2Fidp") == \
        "/auth/oidc/callback?code=REDACTED&state=REDACTED&iss=http%3A%2F%2Fidp"
    assert redact_url("/x?barcode=1&token=t&Password=p&id%5Ftoken=i&link") == \
        "/x?barcode=1&token=REDACTED&Password=REDACTED&id%5Ftoken=REDACTED&link"
    assert redact_url("/api/v1/runs?limit=5") == "/api/v1/runs?limit=5"
    assert redact_url("/plain") == "/plain"
    install()
    install()
    logger = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, RedactQuery) for f in logger.filters) == 1
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/auth/oidc/callback?code=secret&state=s2", "1.1", 303), None)
    assert RedactQuery().filter(record) is True
    assert "secret" not in record.getMessage() and "code=REDACTED&state=REDACTED" in record.getMessage()


def test_userinfo_completes_the_id_token_only_when_needed():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from server.oidc import Refused, _with_userinfo

    def run(coro):  # in a thread of its own: Playwright's loop may be running in this one
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()

    calls = []

    class Client:
        def __init__(self, info):
            self.info = info

        async def userinfo(self, token):
            calls.append(token)
            return self.info

    settings = SimpleNamespace(oidc_groups_claim="groups")
    metadata = {"userinfo_endpoint": "http://idp/userinfo"}
    token = {"access_token": "at"}
    full = {"sub": "s1", "groups": ["g"], "email": "a@x", "preferred_username": "a", "name": "A"}
    assert run(_with_userinfo(Client({}), token, full, metadata, settings)) == full and not calls
    partial = {"sub": "s1", "email": "id@x"}
    merged = run(_with_userinfo(Client({"sub": "s1", "email": "ui@x", "groups": ["g2"]}), token, partial,
                                        metadata, settings))
    assert merged == {"sub": "s1", "email": "id@x", "groups": ["g2"]} and len(calls) == 1  # the ID token wins
    with pytest.raises(Refused, match="another subject"):
        run(_with_userinfo(Client({"sub": "s2", "groups": ["admins"]}), token, partial, metadata, settings))
    assert run(_with_userinfo(Client({}), token, partial, {}, settings)) == partial  # no endpoint
