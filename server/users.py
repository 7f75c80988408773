"""Accounts, passwords, browser sessions, project roles and the login rate limit.

- Passwords are hashed with argon2id by ``pwdlib`` (its recommended parameters); a login for a
  name that does not exist still verifies against a dummy hash, so the answer takes as long and
  says the same thing ("wrong name or password") whether or not the account exists.
- A browser session is a random secret in an HttpOnly cookie; the ``sessions`` table keeps its
  SHA-256, its CSRF token, when it expires (absolute and idle) and whether it was revoked.
  Every login makes a new session (no fixation: a cookie the browser already had is never
  promoted), logout revokes it, and disabling a user or resetting their password revokes all
  of theirs.
- Roles per project: ``viewer`` < ``member`` < ``admin``; ``users.is_admin`` is the server-wide
  admin, who may do everything everywhere.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any, cast

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import CursorResult, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.models import BrowserSession, Project, ProjectMember, Token, User, utcnow
from server.store import Conflict, Invalid, NotFound, get_or_create_project

ROLES = ("viewer", "member", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
LOGIN_FAILED = "Wrong name or password."

_hasher = PasswordHash((Argon2Hasher(),))
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --------------------------------------------------------------------------- users


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise Invalid("A user name is 1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or "
                      "digit.", "name")
    return name


def check_password(password: str, field: str = "password") -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise Invalid(f"A password has at least {MIN_PASSWORD} characters.", field)
    if len(password.encode()) > MAX_PASSWORD:
        raise Invalid(f"A password has at most {MAX_PASSWORD} bytes.", field)
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def any_user(session: Session) -> bool:
    """Whether any account exists (until one does, the server is in single-user open mode).
    Once true for a database it stays true (accounts are disabled, never deleted)."""
    key = str(cast(Engine, session.get_bind()).url)
    if key in _users_exist:
        return True
    found = session.scalar(select(User.id).limit(1)) is not None
    if found:
        _users_exist.add(key)
    return found


_users_exist: set[str] = set()  # database URLs known to have accounts


def create_user(session: Session, name: str, *, display_name: str = "", email: str | None = None,
                password: str | None = None, is_admin: bool = False, oidc_issuer: str | None = None,
                oidc_subject: str | None = None, commit: bool = True) -> User:
    name = check_name(name)
    email = check_email(email)
    user = User(name=name, display_name=(display_name or name)[:200], email=email,
                password_hash=hash_password(password) if password else None, is_admin=is_admin,
                oidc_issuer=oidc_issuer, oidc_subject=oidc_subject, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        raise Conflict("A user with this name or email already exists.", "name") from None
    if commit:
        session.commit()
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, populate_existing=True)
    if user is None:
        raise NotFound(f"User {user_id} does not exist.")
    return user


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.name) == (name or "").strip().lower()))


def find_login(session: Session, login: str) -> User | None:
    """The account a login form names: its name, or its email."""
    login = (login or "").strip().lower()
    if not login:
        return None
    return session.scalar(select(User).where((func.lower(User.name) == login) | (func.lower(User.email) == login)))


def limit_key(session: Session, login: str) -> str:
    """What the per-account login limit counts: the account (by id) when the name or email names
    one, so its name and its email share one budget; else the name as typed."""
    user = find_login(session, login)
    return f"user:{user.id}" if user is not None else f"name:{(login or '').strip().lower()}"


def check_email(email: str | None) -> str | None:
    email = (email or "").strip() or None
    if email is not None and (len(email) > 320 or not re.match(r"^[^@\s]+@[^@\s]+$", email)):
        raise Invalid("An email looks like name@example.org.", "email")
    return email


def authenticate(session: Session, login: str, password: str) -> tuple[User | None, str | None]:
    """(user, None) on success, else (None, reason). Unknown names cost one argon2 verify too."""
    user = find_login(session, login)
    if user is None or not user.password_hash:
        _hasher.verify(password or "", _DUMMY_HASH)
        return None, LOGIN_FAILED
    valid, new_hash = _hasher.verify_and_update(password or "", user.password_hash)
    if not valid:
        return None, LOGIN_FAILED
    if user.disabled_at is not None:
        return None, "This account is disabled; ask an administrator."
    if new_hash is not None:  # pwdlib's parameters moved on: store the stronger hash
        user.password_hash = new_hash
        session.commit()
    return user, None


def set_password(session: Session, user: User, password: str, keep_session_id: int | None = None) -> None:
    """Set the password and end the user's sessions (all, or all but ``keep_session_id``: the
    browser that changed its own password stays logged in)."""
    user.password_hash = hash_password(password)
    revoke_sessions(session, user.id, keep=keep_session_id)
    session.commit()


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    user.disabled_at = utcnow() if disabled else None
    if disabled:
        revoke_sessions(session, user.id)
        session.execute(update(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))
                        .values(revoked_at=utcnow()))
    session.commit()
    from server.auth import clear_caches

    clear_caches()


# --------------------------------------------------------------------------- sessions


def create_session(session: Session, user: User, *, max_age_s: float, method: str, address: str | None = None,
                   user_agent: str | None = None, id_token: str | None = None) -> tuple[BrowserSession, str]:
    """A new session for ``user``; returns the row and the cookie's secret (never stored)."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    row = BrowserSession(secret_hash=sha256(secret), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                         method=method, address=(address or "")[:64] or None, user_agent=(user_agent or "")[:300],
                         created_at=now, last_seen_at=now, expires_at=now + timedelta(seconds=max_age_s),
                         id_token=id_token)
    session.add(row)
    user.last_login_at = now
    session.commit()
    return row, secret


def lookup_session(session: Session, secret: str, idle_s: float) -> BrowserSession | None:
    row = session.scalar(select(BrowserSession).where(BrowserSession.secret_hash == sha256(secret)))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if now - row.last_seen_at > timedelta(seconds=idle_s):
        return None
    return row


def touch_session(session: Session, session_id: int) -> None:
    session.execute(update(BrowserSession).where(BrowserSession.id == session_id).values(last_seen_at=utcnow()))
    session.commit()


def revoke_session(session: Session, session_id: int) -> None:
    session.execute(update(BrowserSession).where(BrowserSession.id == session_id,
                                                 BrowserSession.revoked_at.is_(None)).values(revoked_at=utcnow()))
    session.commit()
    from server.auth import clear_caches

    clear_caches()


def revoke_sessions(session: Session, user_id: int, keep: int | None = None) -> None:
    """End every session of ``user_id`` but ``keep`` (no commit)."""
    query = update(BrowserSession).where(BrowserSession.user_id == user_id, BrowserSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(BrowserSession.id != keep)
    session.execute(query.values(revoked_at=utcnow()))
    from server.auth import clear_caches

    clear_caches()


# --------------------------------------------------------------------------- roles


def roles_of(session: Session, user_id: int) -> dict[int, str]:
    """project id -> role for one user."""
    rows = session.execute(select(ProjectMember.project_id, ProjectMember.role)
                           .where(ProjectMember.user_id == user_id)).all()
    return {project_id: role for project_id, role in rows}


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise Invalid(f"A role is one of {', '.join(ROLES)}, not {role!r}.", "role")
    return role


def set_role(session: Session, project: Project, user: User, role: str | None, source: str = "manual",
             commit: bool = True) -> str | None:
    """Give ``user`` ``role`` in ``project`` (None removes them); returns the previous role."""
    row = session.get(ProjectMember, (project.id, user.id))
    previous = row.role if row is not None else None
    if role is None:
        if row is not None:
            session.delete(row)
    else:
        check_role(role)
        if row is None:
            session.add(ProjectMember(project_id=project.id, user_id=user.id, role=role, source=source,
                                      created_at=utcnow()))
        else:
            row.role, row.source = role, source
    if commit:
        session.commit()
    from server.auth import clear_caches

    clear_caches()
    return previous


def members(session: Session, project_id: int) -> list[tuple[User, ProjectMember]]:
    rows = session.execute(select(User, ProjectMember).join(ProjectMember, ProjectMember.user_id == User.id)
                           .where(ProjectMember.project_id == project_id).order_by(User.name)).all()
    return [(u, m) for u, m in rows]


def sync_sso_roles(session: Session, user: User, wanted: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """Make the user's SSO-granted roles exactly ``wanted`` (project name -> role); roles an
    admin set by hand are left alone. Returns the changes (project -> (before, after))."""
    changes: dict[str, tuple[str | None, str | None]] = {}
    current = session.execute(select(ProjectMember, Project.name).join(Project, Project.id == ProjectMember.project_id)
                              .where(ProjectMember.user_id == user.id)).all()
    by_name = {name: member for member, name in current}
    member: ProjectMember | None
    for name, member in by_name.items():
        if member.source == "oidc" and name not in wanted:
            changes[name] = (member.role, None)
            session.delete(member)
    for name, role in wanted.items():
        member = by_name.get(name)
        if member is not None and member.source != "oidc":
            continue
        if member is not None and member.role == role:
            continue
        project = get_or_create_project(session, name)
        previous = set_role(session, project, user, role, source="oidc", commit=False)
        changes[name] = (previous, role)
    session.commit()
    return changes


def delete_expired_sessions(session: Session) -> int:
    """Drop sessions that ended more than a day ago (kept a day for the audit trail)."""
    cutoff = utcnow() - timedelta(days=1)
    result = session.execute(delete(BrowserSession).where(
        (BrowserSession.expires_at < cutoff) | (BrowserSession.revoked_at < cutoff)))
    session.commit()
    return cast("CursorResult[Any]", result).rowcount or 0


# --------------------------------------------------------------------------- rate limit


class LoginLimiter:
    """Failed logins per account name and per client address in a sliding window (in memory:
    one server process; behind several, put the limit in the proxy too). A blocked key answers
    429 until its oldest failure leaves the window, whatever the password."""

    def __init__(self, per_account: int, per_address: int, window_s: float) -> None:
        self.per_account, self.per_address, self.window_s = per_account, per_address, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after(self, account: str, address: str) -> float | None:
        """Seconds until another try is allowed, or None if allowed now."""
        now = time.monotonic()
        with self._lock:
            waits = []
            for key, limit in ((f"a:{account.strip().lower()}", self.per_account), (f"i:{address}", self.per_address)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    waits.append(self.window_s - (now - q[0]))
            return max(waits) if waits else None

    def failed(self, account: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a flood of names
                self._failures.clear()
            for key in (f"a:{account.strip().lower()}", f"i:{address}"):
                self._recent(key, now).append(now)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(f"a:{account.strip().lower()}", None)
