"""API tokens and what each kind may do.

A token is ``ry<k>_<43 random url-safe characters>`` (``k``: ``w`` worker, ``r`` run, ``p``
personal), made by :func:`secrets.token_urlsafe`; the database keeps only its SHA-256 (a
random 256-bit secret needs no slow password hash: nothing can be guessed from the hash) and
a short prefix to show in lists. The secret is returned once, when the token is made.

Kinds (``tokens.kind``):

- ``worker``: made by ``runyard token create --worker`` (or by ``runyard up`` for its local
  worker). Registers the worker and its recipes, claims runs (which issues a run token),
  reports a run process that died, hands a run back on a warm shutdown. Nothing else.
- ``run``: made when a worker claims a run, bound to that run and attempt, given only to the
  run's own process. It reads the run and its resume checkpoint (and the checkpoints the
  claim named as inputs) and writes that run's metrics, logs, checkpoints, summary,
  hyperparameters, heartbeat and final status, while the run is running as its attempt.
  Revoked when the attempt ends.
- ``personal``: a user's (scope ``read`` or ``read+write``); the users issue builds on this.

Requests without a token keep full access to the user-facing API until users exist (the
next issue); the worker endpoints always need a worker token.

:func:`authorize` is one app-wide dependency: it looks at the route template and method of
every request and decides with the rules below, so no router can forget a check.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.errors import ApiError
from server.models import Checkpoint, Run, Token, Upload, utcnow

KIND_PREFIX = {"worker": "ryw", "run": "ryr", "personal": "ryp"}
SCOPES = {"worker": "worker", "run": "run"}
LAST_USED_EVERY_S = 60.0
CACHE_TTL_S = 2.0


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, kind: str, *, name: str = "", scope: str | None = None, run_id: int | None = None,
                 attempt: int | None = None, user_id: int | None = None, reads: list[int] | None = None,
                 expires_at: datetime | None = None, commit: bool = True) -> tuple[Token, str]:
    """A new token and its secret (shown once; only its hash is stored)."""
    if kind not in KIND_PREFIX:
        raise ValueError(f"kind must be one of {', '.join(KIND_PREFIX)}, not {kind!r}")
    secret = f"{KIND_PREFIX[kind]}_{secrets.token_urlsafe(32)}"
    token = Token(kind=kind, name=name[:200], secret_hash=hash_secret(secret), prefix=secret[:10],
                  scope=scope or SCOPES.get(kind, "read"), run_id=run_id, attempt=attempt, user_id=user_id,
                  reads=list(reads or []), created_at=utcnow(), expires_at=expires_at)
    session.add(token)
    session.flush()
    if commit:
        session.commit()
    return token, secret


def revoke_run_tokens(session: Session, run_id: int) -> None:
    """End every run token of ``run_id`` (its attempt ended or a new one starts). No commit."""
    session.execute(update(Token).where(Token.run_id == run_id, Token.kind == "run", Token.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    _cache.clear()


def revoke_token(session: Session, token_id: int) -> bool:
    result = session.execute(update(Token).where(Token.id == token_id, Token.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    session.commit()
    _cache.clear()
    return result.rowcount == 1


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``kind`` is ``anonymous``, ``worker``, ``run`` or ``personal``."""

    kind: str
    token_id: int | None = None
    run_id: int | None = None
    attempt: int | None = None
    user_id: int | None = None
    scope: str = "all"
    name: str = ""
    reads: frozenset[int] = field(default_factory=frozenset)  # checkpoint ids a run token may download


ANONYMOUS = Principal(kind="anonymous")

_cache: dict[str, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


def _lookup(session: Session, secret: str) -> Principal | None:
    digest = hash_secret(secret)
    now_m = time.monotonic()
    with _cache_lock:
        hit = _cache.get(digest)
    if hit is not None and now_m - hit[0] < CACHE_TTL_S:
        return hit[1]
    token = session.scalar(select(Token).where(Token.secret_hash == digest))
    principal = None
    now = utcnow()
    if token is not None and token.revoked_at is None and (token.expires_at is None or token.expires_at > now):
        reads: frozenset[int] = frozenset()
        if token.kind == "run" and token.run_id is not None:
            run = session.get(Run, token.run_id)
            ids = {int(i) for i in (token.reads or [])}
            if run is not None and run.resume_checkpoint_id is not None:
                ids.add(run.resume_checkpoint_id)
            reads = frozenset(ids)
        principal = Principal(kind=token.kind, token_id=token.id, run_id=token.run_id, attempt=token.attempt,
                              user_id=token.user_id, scope=token.scope, name=token.name, reads=reads)
        if token.last_used_at is None or (now - token.last_used_at) > timedelta(seconds=LAST_USED_EVERY_S):
            session.execute(update(Token).where(Token.id == token.id).values(last_used_at=now))
            session.commit()
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (now_m, principal)
    return principal


# --------------------------------------------------------------------------- rules

WORKER_ROUTES = {
    ("POST", "/api/v1/workers"),
    ("POST", "/api/v1/workers/{worker_id}/heartbeat"),
    ("POST", "/api/v1/runs/{run_id}/claim"),
    ("POST", "/api/v1/runs/{run_id}/requeue"),
}
# What a worker token may call besides its own routes.
WORKER_ALSO = {
    ("POST", "/api/v1/runs/{run_id}/finish"),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"),
    ("GET", "/api/v1/runs/{run_id}"),
    ("GET", "/api/v1/recipes"),
    ("GET", "/healthz"),
}
# A run token: routes on its own run ({run_id} must be its run).
RUN_READS = {
    ("GET", "/api/v1/runs/{run_id}"),
    ("GET", "/api/v1/runs/{run_id}/checkpoints"),
    ("GET", "/healthz"),
}
RUN_WRITES = {
    ("POST", "/api/v1/runs/{run_id}/metrics"),
    ("POST", "/api/v1/runs/{run_id}/logs"),
    ("PUT", "/api/v1/runs/{run_id}/summary"),
    ("PUT", "/api/v1/runs/{run_id}/hyperparameters"),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"),
    ("POST", "/api/v1/runs/{run_id}/finish"),
    ("POST", "/api/v1/runs/{run_id}/checkpoints/uploads"),
    ("PUT", "/api/v1/runs/{run_id}/checkpoints/upload"),
}
RUN_CHECKPOINT_ROUTES = {
    ("GET", "/api/v1/checkpoints/{checkpoint_id}/download"),
    ("PATCH", "/api/v1/checkpoints/{checkpoint_id}"),
    ("DELETE", "/api/v1/checkpoints/{checkpoint_id}"),
}
RUN_UPLOAD_ROUTES = {
    ("PUT", "/api/v1/uploads/{upload_id}"),
    ("GET", "/api/v1/uploads/{upload_id}"),
}
RUN_TOKEN_MAY = ("read its run (GET /api/v1/runs/{id}) and its resume checkpoint, and write its run's metrics, "
                 "logs, checkpoints, summary, hyperparameters, heartbeat and final status")


def _route(request: Request) -> tuple[str, str]:
    route = request.scope.get("route")
    return request.method, getattr(route, "path", request.url.path)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "The Authorization header must be 'Bearer <token>'.")
    return secret.strip()


def authorize(request: Request) -> Principal:
    """The app-wide dependency: who is calling, and may they call this route (401/403 if not)."""
    secret = _bearer(request)
    method, path = _route(request)
    if method == "HEAD":
        method = "GET"
    key = (method, path)
    if secret is None:
        if key in WORKER_ROUTES:
            raise ApiError(401, "This endpoint is for workers: send a worker token (runyard token create --worker) "
                                "as 'Authorization: Bearer <token>'.")
        request.state.principal = ANONYMOUS
        request.state.run_attempt = None
        return ANONYMOUS
    session: Session = request.app.state.sessionmaker()
    try:
        principal = _lookup(session, secret)
        if principal is None:
            raise ApiError(401, "The token is unknown, revoked or expired; create a new one.")
        request.state.principal = principal
        request.state.run_attempt = principal.attempt if principal.kind == "run" else None
        if principal.kind == "worker":
            if key not in WORKER_ROUTES and key not in WORKER_ALSO:
                raise ApiError(403, "A worker token may only register its worker and recipes, claim runs, report "
                                    "a run it ran and requeue it; use a personal token for anything else.")
        elif principal.kind == "run":
            _check_run_token(session, request, principal, key)
        elif key in WORKER_ROUTES:
            raise ApiError(403, "This endpoint is for workers: use a worker token.")
        elif principal.scope == "read" and method not in ("GET",):
            raise ApiError(403, "This token may only read (scope 'read'); use a read+write token to change things.")
        return principal
    finally:
        session.close()


def _check_run_token(session: Session, request: Request, principal: Principal, key: tuple[str, str]) -> None:
    params = request.path_params
    deny = ApiError(403, f"This run token belongs to run {principal.run_id}; it may only {RUN_TOKEN_MAY}.")
    if key in RUN_READS or key in RUN_WRITES:
        if key == ("GET", "/healthz"):
            return
        if int(params.get("run_id", 0)) != principal.run_id:
            raise deny
        if key in RUN_WRITES:
            _check_attempt(session, principal)
        return
    if key in RUN_CHECKPOINT_ROUTES:
        checkpoint = session.get(Checkpoint, int(params.get("checkpoint_id", 0)))
        if checkpoint is None:
            return  # the route answers 404
        if key[0] == "GET" and (checkpoint.run_id == principal.run_id or checkpoint.id in principal.reads):
            return
        if checkpoint.run_id != principal.run_id:
            raise deny
        if key[0] != "GET":
            _check_attempt(session, principal)
        return
    if key in RUN_UPLOAD_ROUTES:
        upload = session.get(Upload, str(params.get("upload_id", "")))
        if upload is None:
            return
        if upload.run_id != principal.run_id:
            raise deny
        if key[0] != "GET":
            _check_attempt(session, principal)
        return
    raise deny


def _check_attempt(session: Session, principal: Principal) -> None:
    """Writes of a run token count only while the run is running as the token's attempt."""
    row = session.execute(select(Run.status, Run.attempt).where(Run.id == principal.run_id)).first()
    if row is None:
        return  # the route answers 404
    if row.status != "running" or row.attempt != principal.attempt:
        raise ApiError(409, f"Run {principal.run_id} is no longer running as attempt {principal.attempt} "
                            f"(it is {row.status}, attempt {row.attempt}); this process must stop.", "attempt")
