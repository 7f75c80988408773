"""Single sign-on with OpenID Connect: the authorization code flow with PKCE (S256).

Authlib's Starlette client does the protocol and every check of the ID token: its signature
against the provider's JWKS, ``iss`` (the issuer in the provider's metadata, which must be
``RUNYARD_OIDC_ISSUER``), ``aud`` (must contain our client id), ``azp``, ``exp``/``iat`` (2
minutes leeway), ``nonce`` and ``at_hash``. No token is parsed or verified by hand here.

- ``GET /auth/oidc/login?next=/#/runs/3``: a login state (state, nonce, PKCE verifier) in a
  short-lived signed cookie (``runyard_oidc``, 10 minutes, SameSite=Lax, HttpOnly, sent only
  to ``/auth/oidc/``), then a redirect to the provider. ``next`` is kept only when it is a path on this site.
- ``GET /auth/oidc/callback``: the code is exchanged, the ID token validated, the user found
  by (issuer, subject) or created on the first login, their SSO roles recomputed from the
  groups claim (``RUNYARD_OIDC_GROUP_ROLES``), ``is_admin`` set from
  ``RUNYARD_OIDC_ADMIN_GROUPS`` when that is set, and a normal browser session started.
  Any failure answers a small 401 page and writes a ``login_failed`` audit event.
- ``GET /auth/oidc/logged-out``: where the provider sends the browser back after logout (a
  URI without a fragment, as providers require); it redirects to the dashboard's login page.

Codes, states and tokens are never logged (``server.logredact`` also keeps them out of the
access log). See docs/security.md (Single sign-on).
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import unicodedata
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from joserfc import errors as jose_errors
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from server import audit, logredact, users
from server.errors import ApiError
from server.models import BrowserSession, Project, User
from server.store import Conflict

log = logging.getLogger(__name__)
router = APIRouter(tags=["accounts"])

CLIENT = "runyard"  # the client's name in the Authlib registry
STATE_COOKIE = "runyard_oidc"
STATE_MAX_AGE = 600
NEXT_KEY = "runyard_next"  # in the state cookie: state -> where to go after the login
CALLBACK_PATH = "/auth/oidc/callback"
LOGGED_OUT_PATH = "/auth/oidc/logged-out"
LOGIN_PAGE = "/#/login"
NOT_CONFIGURED = ("Single sign-on is not configured (RUNYARD_OIDC_ISSUER and RUNYARD_OIDC_CLIENT_ID are not set); "
                  "log in with a name and password.")
LEEWAY_S = 120


class Refused(Exception):
    """A login that must not go on: ``reason`` is shown to the user and audited."""

    def __init__(self, reason: str, status: int = 401, actor: str = "", user_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.actor, self.user_id = reason, status, actor, user_id


# --------------------------------------------------------------------------- settings


def parse_group_roles(text: str) -> dict[str, list[tuple[str, str]]]:
    """``"group=project:role, group2=project:role"`` -> group -> [(project, role)]. Entries are
    separated by commas, semicolons or newlines; blanks around them are ignored. A group name
    may itself contain ``=`` (the last ``=`` splits), a project name may contain ``:`` (the last
    ``:`` splits). A malformed entry raises ValueError naming it."""
    out: dict[str, list[tuple[str, str]]] = {}
    for raw in re.split(r"[,;\n]", text or ""):
        item = raw.strip()
        if not item:
            continue
        group, eq, target = item.rpartition("=")
        project, colon, role = target.rpartition(":")
        group, project, role = group.strip(), project.strip(), role.strip().lower()
        if not eq or not colon or not group or not project:
            raise ValueError(f"RUNYARD_OIDC_GROUP_ROLES: {item!r} is not group=project:role")
        if role not in users.ROLE_RANK:
            raise ValueError(f"RUNYARD_OIDC_GROUP_ROLES: {item!r}: the role is one of "
                             f"{', '.join(users.ROLES)}, not {role!r}")
        if len(project) > 200:
            raise ValueError(f"RUNYARD_OIDC_GROUP_ROLES: {item!r}: a project name has at most 200 characters")
        out.setdefault(group, []).append((project, role))
    return out


def parse_groups(text: str) -> set[str]:
    return {g.strip() for g in re.split(r"[,;\n]", text or "") if g.strip()}


def roles_for_groups(groups: set[str], mapping: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """project -> role for a user in ``groups``; several groups on one project: the highest wins."""
    wanted: dict[str, str] = {}
    for group in sorted(groups):
        for project, role in mapping.get(group, ()):
            if project not in wanted or users.ROLE_RANK[role] > users.ROLE_RANK[wanted[project]]:
                wanted[project] = role
    return wanted


def groups_of(claims: dict[str, Any], claim: str) -> set[str]:
    """The groups claim as a set of strings (a list, or one string: one group)."""
    value = claims.get(claim)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return set()
    return {v for v in value if isinstance(v, str) and v}


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a relative path on this site (``/#/runs/3``), else None: the login
    must never redirect to another site (``//evil``, ``/\\evil``, ``https://evil``)."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


# --------------------------------------------------------------------------- set-up


def install(app: Any, settings: Any) -> None:
    """Keep secrets out of the access log (always); when SSO is configured, the login-state
    cookie's middleware and the Authlib client (``app.state.oidc``, the registry)."""
    logredact.install()
    app.state.oidc = None
    if not settings.oidc_enabled:
        return
    app.state.oidc_group_roles = parse_group_roles(settings.oidc_group_roles)
    app.state.oidc_admin_groups = parse_groups(settings.oidc_admin_groups)
    # The cookie goes only to the SSO routes (path), so no other answer re-sends or refreshes it.
    cookie_path = urlsplit(settings.public_url).path.rstrip("/") + "/auth/oidc"
    app.add_middleware(SessionMiddleware, secret_key=settings.signing_key(), session_cookie=STATE_COOKIE,
                       max_age=STATE_MAX_AGE, path=cookie_path, same_site="lax",
                       https_only=settings.public_url.startswith("https://"))
    client_kwargs: dict[str, Any] = {"scope": settings.oidc_scopes, "code_challenge_method": "S256",
                                     "timeout": 15}
    if not settings.oidc_client_secret:  # a public client: PKCE only
        client_kwargs["token_endpoint_auth_method"] = "none"
    oauth = OAuth()
    oauth.register(name=CLIENT, server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
                   client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret or None,
                   client_kwargs=client_kwargs)
    app.state.oidc = oauth


def _client(request: Request) -> Any:
    oauth = getattr(request.app.state, "oidc", None)
    if oauth is None:
        raise ApiError(404, NOT_CONFIGURED)
    return oauth.create_client(CLIENT)


def _check_issuer(metadata: dict[str, Any], settings: Any) -> None:
    """OpenID Connect Discovery: the metadata's issuer is the URL it was read from."""
    issuer = str(metadata.get("issuer") or "")
    if issuer.rstrip("/") != settings.oidc_issuer:
        raise Refused(f"the provider's metadata names the issuer {issuer!r}, not RUNYARD_OIDC_ISSUER "
                      f"{settings.oidc_issuer!r}; fix RUNYARD_OIDC_ISSUER", 502)


async def _metadata(client: Any, settings: Any) -> dict[str, Any]:
    try:
        metadata = await client.load_server_metadata()
    except Exception as exc:  # httpx (or httpx2, which Authlib prefers) errors, bad JSON
        log.warning("SSO: cannot read %s/.well-known/openid-configuration: %s", settings.oidc_issuer,
                    type(exc).__name__)
        raise Refused("the identity provider could not be reached; try again later", 502) from None
    _check_issuer(metadata, settings)
    return metadata


def _metadata_sync(client: Any, settings: Any) -> dict[str, Any] | None:
    """The provider's metadata from a sync handler (logout); None if it cannot be read."""
    metadata = client.server_metadata
    if "_loaded_at" not in metadata:
        try:
            r = httpx.get(f"{settings.oidc_issuer}/.well-known/openid-configuration", timeout=10)
            r.raise_for_status()
            found = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("SSO: cannot read the provider's metadata for logout: %s", type(exc).__name__)
            return None
        if not isinstance(found, dict):
            return None
        metadata.update(found)
    try:
        _check_issuer(metadata, settings)
    except Refused:
        return None
    return metadata


def _page(reason: str, status: int = 401) -> HTMLResponse:
    text = html.escape(reason)
    body = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Single sign-on failed</title>"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"></head>"
            "<body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem\">"
            f"<h1>Single sign-on failed</h1><p id=\"reason\">Single sign-on failed: {text}</p>"
            f"<p><a href=\"{LOGIN_PAGE}\">Back to the login page</a></p></body></html>")
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- routes


@router.get("/auth/oidc/login", include_in_schema=False)
async def oidc_login(request: Request, next: str | None = None) -> Response:  # the parameter's name
    """Start a single sign-on: redirect to the identity provider."""
    client = _client(request)
    settings = request.app.state.settings
    try:
        await _metadata(client, settings)
    except Refused as exc:
        return _page(exc.reason, exc.status)
    state = secrets.token_urlsafe(32)
    pending = {k: v for k, v in dict(request.session.get(NEXT_KEY) or {}).items() if isinstance(v, str)}
    pending = dict(list(pending.items())[-4:])  # a few logins in other tabs may be under way
    pending[state] = safe_next(next) or "/"
    request.session[NEXT_KEY] = pending
    redirect_uri = settings.public_url.rstrip("/") + CALLBACK_PATH
    try:
        return await client.authorize_redirect(request, redirect_uri, state=state)
    except Exception as exc:  # as above; RuntimeError: no authorization endpoint
        log.warning("SSO: cannot start the login: %s", type(exc).__name__)
        return _page("the identity provider's metadata has no usable authorization endpoint", 502)


@router.get("/auth/oidc/logged-out", include_in_schema=False)
def oidc_logged_out() -> Response:
    """Where the identity provider sends the browser after logout: the login page."""
    return RedirectResponse(LOGIN_PAGE, status_code=303)


def _reason(exc: Exception) -> str:
    """A short, safe description of why the code exchange or the ID token failed."""
    if isinstance(exc, MismatchingStateError):
        return ("the login state is missing or does not match (the login took longer than 10 minutes, was "
                "started in another browser, or was already used); start again")
    if isinstance(exc, jose_errors.ExpiredTokenError):
        return "the ID token has expired"
    if isinstance(exc, jose_errors.BadSignatureError):
        return "the ID token's signature is not valid"
    if isinstance(exc, jose_errors.InvalidKeyIdError):
        return "the ID token is signed with a key the provider does not publish"
    if isinstance(exc, jose_errors.MissingClaimError):
        return f"the ID token lacks the claim {exc.claim!r}"
    if isinstance(exc, jose_errors.InvalidClaimError):
        return f"the ID token's claim {exc.claim!r} is not valid"
    if isinstance(exc, jose_errors.UnsupportedAlgorithmError | jose_errors.MissingAlgorithmError):
        return "the ID token is signed with an algorithm the provider does not announce"
    if isinstance(exc, jose_errors.JoseError):
        return "the ID token is not valid"
    if isinstance(exc, OAuthError):
        return f"the identity provider refused the code ({exc.error or 'error'})"
    if isinstance(exc, httpx.HTTPError) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
        return "the identity provider could not be reached"
    return "the identity provider's answer could not be used"


@router.get(CALLBACK_PATH, include_in_schema=False)
async def oidc_callback(request: Request) -> Response:
    """The identity provider sends the browser back here with a code (or an error)."""
    client = _client(request)
    settings = request.app.state.settings
    state = request.query_params.get("state") or ""
    pending = request.session.get(NEXT_KEY) or {}
    next_url = pending.pop(state, None) if isinstance(pending, dict) else None
    request.session[NEXT_KEY] = pending if isinstance(pending, dict) else {}
    if not request.session[NEXT_KEY]:
        request.session.pop(NEXT_KEY, None)
    try:
        try:
            error = request.query_params.get("error")
            if error:
                request.session.pop(f"_state_{CLIENT}_{state}", None)
                description = request.query_params.get("error_description") or ""
                raise Refused(f"the identity provider answered {error[:100]}"
                              + (f" ({description[:200]})" if description else ""))
            metadata = await _metadata(client, settings)
            token = await client.authorize_access_token(
                request, leeway=LEEWAY_S,
                claims_options={"iss": {"essential": True, "value": metadata["issuer"]},
                                "aud": {"essential": True, "value": settings.oidc_client_id}})
            if not token.get("id_token") or token.get("userinfo") is None:
                raise Refused("the identity provider sent no ID token (is 'openid' in RUNYARD_OIDC_SCOPES?)")
            claims = dict(token["userinfo"])
            if not isinstance(claims.get("sub"), str) or not claims["sub"]:
                raise Refused("the ID token has no subject ('sub')")
            claims = await _with_userinfo(client, token, claims, metadata, settings)
        except Refused:
            raise
        except Exception as exc:  # every failure is a refusal, never a 500 with details
            reason = _reason(exc)
            log.warning("SSO login refused: %s (%s)", reason, type(exc).__name__)
            raise Refused(reason) from None
        response = await run_in_threadpool(_finish_login, request, claims, token["id_token"],
                                           safe_next(next_url) or "/")
        return response
    except Refused as exc:
        await run_in_threadpool(_audit_failure, request, exc)
        return _page(exc.reason, exc.status)


async def _with_userinfo(client: Any, token: dict[str, Any], claims: dict[str, Any], metadata: dict[str, Any],
                         settings: Any) -> dict[str, Any]:
    """The ID token's claims, completed from the userinfo endpoint when the groups or profile
    claims are not in the ID token (many providers put them only there). The ID token's
    claims win; userinfo must be about the same subject."""
    wanted = (settings.oidc_groups_claim, "email", "preferred_username", "name")
    if not metadata.get("userinfo_endpoint") or not token.get("access_token") or all(k in claims for k in wanted):
        return claims
    info = await client.userinfo(token=token)
    if info.get("sub") != claims["sub"]:
        raise Refused("the userinfo answer is about another subject than the ID token")
    return {**dict(info), **claims}


def _audit_failure(request: Request, exc: Refused) -> None:
    session: Session = request.app.state.sessionmaker()
    try:
        audit.record(session, "login_failed", request=request, user_id=exc.user_id, actor=exc.actor[:200],
                     target="sso", reason=exc.reason[:500])
    except Exception:  # the refusal is answered even when the database is down
        log.exception("could not write the login_failed audit event")
        session.rollback()
    finally:
        session.close()


def _finish_login(request: Request, claims: dict[str, Any], id_token: str, next_url: str) -> Response:
    from server.api.account import start_session
    from server.auth import clear_caches

    settings = request.app.state.settings
    session: Session = request.app.state.sessionmaker()
    actor = _claim_str(claims, "preferred_username") or _claim_str(claims, "email") or str(claims.get("sub"))
    try:
        issuer, subject = str(claims["iss"]), claims["sub"]
        user = session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
        if user is None:
            user = _create_user(session, claims, issuer, subject)
            audit.record(session, "user_created", request=request, user_id=user.id, actor=user.name,
                         target=f"user {user.name}", source="sso", email=user.email)
        else:
            _refresh_profile(session, user, claims)
        if user.disabled_at is not None:
            raise Refused("This account is disabled; ask an administrator.", actor=user.name, user_id=user.id)
        groups = groups_of(claims, settings.oidc_groups_claim)
        _sync_roles(request, session, user, groups)
        response = RedirectResponse(next_url, status_code=303)
        start_session(request, session, user, response, "oidc", id_token=id_token)
        clear_caches()
        return response
    except Refused as exc:
        if not exc.actor:
            exc.actor = actor
        session.rollback()
        raise
    finally:
        session.close()


def _claim_str(claims: dict[str, Any], name: str, limit: int = 320) -> str:
    value = claims.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _email(session: Session, claims: dict[str, Any], user_id: int | None) -> str | None:
    """The claim's email if it is verified (or the provider does not say) and no other account
    has it (accounts are never merged by email)."""
    email = _claim_str(claims, "email")
    if not email or "@" not in email or claims.get("email_verified") is False:
        return None
    other = session.scalar(select(User.id).where(func.lower(User.email) == email.lower()))
    if other is not None and other != user_id:
        return None
    return email


def _name_base(claims: dict[str, Any]) -> str:
    email = _claim_str(claims, "email")
    for raw in (_claim_str(claims, "preferred_username"), email.split("@")[0] if "@" in email else "",
                _claim_str(claims, "sub", 255)):
        ascii_ = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
        name = re.sub(r"[^A-Za-z0-9._@-]+", "-", ascii_)
        name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:90].rstrip("-")
        if name and users.NAME_RE.match(name):
            return name
    return "user"


def _create_user(session: Session, claims: dict[str, Any], issuer: str, subject: str) -> User:
    """A new account for this (issuer, subject): a name from preferred_username, the email's
    local part or the subject, with -2, -3, ... when taken."""
    base = _name_base(claims)
    display = _claim_str(claims, "name", 200)
    email = _email(session, claims, None)
    if email is None and _claim_str(claims, "email"):
        log.warning("SSO: the email of the new user %s is unverified or belongs to another account; "
                    "it is not stored", base)
    for attempt in range(20):
        name = base
        n = 1
        while users.user_by_name(session, name) is not None:
            n += 1
            name = f"{base}-{n}"
        try:
            return users.create_user(session, name, display_name=display or name, email=email,
                                     oidc_issuer=issuer, oidc_subject=subject)
        except Conflict:  # a concurrent login took the name (or the email): look again
            session.rollback()
            existing = session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
            if existing is not None:
                return existing
            if attempt >= 1:
                email = None
    raise Refused("no free user name could be found for this account; ask an administrator")


def _refresh_profile(session: Session, user: User, claims: dict[str, Any]) -> None:
    display = _claim_str(claims, "name", 200)
    if display and display != user.display_name:
        user.display_name = display
    email = _email(session, claims, user.id)
    if email and email != user.email:
        user.email = email
    session.commit()


def _sync_roles(request: Request, session: Session, user: User, groups: set[str]) -> None:
    """SSO roles (source ``oidc``) become exactly what the groups map to; roles set by hand
    stay. ``is_admin`` follows RUNYARD_OIDC_ADMIN_GROUPS when that is set."""
    mapping = request.app.state.oidc_group_roles
    wanted = roles_for_groups(groups, mapping)
    changes = users.sync_sso_roles(session, user, wanted)
    if changes:
        ids = dict(session.execute(select(Project.name, Project.id).where(Project.name.in_(list(changes)))).all())
        for project, (before, after) in sorted(changes.items()):
            audit.record(session, "role_changed", request=request, user_id=user.id, actor=user.name,
                         target=f"user {user.name}", project_id=ids.get(project), project=project, before=before,
                         after=after, source="sso", commit=False)
    admin_groups = request.app.state.oidc_admin_groups
    if admin_groups:
        is_admin = bool(groups & admin_groups)
        if is_admin != user.is_admin:
            audit.record(session, "role_changed", request=request, user_id=user.id, actor=user.name,
                         target=f"user {user.name}", is_admin=is_admin, before=user.is_admin, after=is_admin,
                         source="sso", commit=False)
            user.is_admin = is_admin
    session.commit()


# --------------------------------------------------------------------------- logout


def logout_url(request: Request, session: Session, session_id: int) -> str | None:
    """For a session that logged in by SSO: the provider's end-session URL (RP-Initiated
    Logout), with the ID token as hint; None when there is none."""
    oauth = getattr(request.app.state, "oidc", None)
    if oauth is None:
        return None
    row = session.get(BrowserSession, session_id)
    if row is None or row.method != "oidc":
        return None
    settings = request.app.state.settings
    metadata = _metadata_sync(oauth.create_client(CLIENT), settings)
    endpoint = (metadata or {}).get("end_session_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return None
    params = {"client_id": settings.oidc_client_id,
              "post_logout_redirect_uri": settings.public_url.rstrip("/") + LOGGED_OUT_PATH}
    if row.id_token:
        params["id_token_hint"] = row.id_token
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
