"""The ``runyard`` command.

    runyard up [--demo]            server + one local worker, embedded defaults; Ctrl-C stops both
    runyard server                 the API and dashboard (uvicorn)
    runyard worker [--gpus 0,1] [--concurrency N] [--queues runyard]   (RUNYARD_URL, RUNYARD_TOKEN, broker)
    runyard submit RECIPE --param k=v --trainer k=v [--queue runyard] [--wait]
    runyard token create --worker [--name N] | --user NAME [--scope read|read+write] [--project P]
    runyard token list | token revoke ID
    runyard user create NAME [--admin] | list | disable NAME | enable NAME | reset-password NAME
    runyard user login-link NAME | role NAME PROJECT viewer|member|admin|none
    runyard sync DIR               upload what a RunyardLogger spooled while the server was unreachable
    runyard db upgrade

Child processes run in their own process groups and die with their parent (PR_SET_PDEATHSIG),
so stopping ``runyard up`` or ``runyard worker`` never leaves an orphan behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    from server.queue import DEFAULT_QUEUE
    from server.settings import Settings, get_settings
except ModuleNotFoundError as exc:  # `pip install runyard` is trainer_core alone: no server extra
    _MISSING_EXTRA: ModuleNotFoundError | None = exc
else:
    _MISSING_EXTRA = None

#: the packages of the server and worker extras (import names): a command that misses one says
#: which extra brings it instead of a traceback
_EXTRA_PACKAGES = {
    "server": ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "pydantic_settings",
               "celery", "kombu", "psycopg", "numpy", "plotly", "jsonschema", "pwdlib", "authlib", "joserfc",
               "httpx", "itsdangerous", "pathspec"),
    "worker": ("torchvision", "sklearn", "psutil"),
}

STOP_TIMEOUT_S = 30.0
EXIT_CONFIG = 78  # a worker that cannot start as configured (bad token, no server): not restarted


# --------------------------------------------------------------------------- process supervision


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        list(args),
        env={**os.environ, **(env or {})},
        start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(procs: Sequence[subprocess.Popen], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every child, wait, then SIGKILL what is left of each child's process group.

    SIGTERM goes to the child alone, not its group: a Celery worker's DataLoader workers share
    its group, and killing them under a running run would fail it instead of letting the worker
    checkpoint and requeue it. Whatever the child leaves behind dies with the group afterwards."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        # The group too: a child's own children (DataLoader workers) go with it.
        _signal_group(proc, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=10)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def supervise(procs: dict[str, subprocess.Popen], restart: dict[str, Any] | None = None,
              in_order: bool = False) -> int:
    """Wait until a signal arrives (stop all, return 0) or a child exits (restarted when
    ``restart`` knows how, else stop all and return 1). Under ``runyard up`` the inner
    ``runyard worker`` (RUNYARD_WORKER_QUIET=1) says nothing when it is stopped. ``in_order``:
    stop the children one by one, the last started first."""
    old = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for name, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                if restart and name in restart and code != EXIT_CONFIG:
                    print(f"runyard: {name} exited with {code}; starting it again", file=sys.stderr)
                    time.sleep(1.0)
                    procs[name] = restart[name]()
                    continue
                print(f"runyard: {name} exited with {code}; stopping the rest", file=sys.stderr)
                stop_all(list(procs.values()))
                return 1
            time.sleep(0.2)
    except _Stop:
        if not os.environ.get("RUNYARD_WORKER_QUIET"):
            print("runyard: stopping (a running run is saved and requeued)…", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if in_order:
            # last started first: the worker saves its run to the server, then the server stops
            for proc in reversed(list(procs.values())):
                stop_all([proc])
        else:
            stop_all(list(procs.values()))
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- commands


def cmd_db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    from server.db import upgrade_database

    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    print(f"database at {_safe_url(settings.database_url)} is up to date")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _active_admin(session: Any) -> Any:
    """The first enabled server admin, or None."""
    from sqlalchemy import select

    from server.models import User

    return session.scalar(select(User).where(User.is_admin.is_(True), User.disabled_at.is_(None))
                          .order_by(User.id).limit(1))


def bootstrap_admin(settings: Settings) -> None:
    """RUNYARD_ADMIN_USER + RUNYARD_ADMIN_PASSWORD: create that admin once, if no user has the name."""
    if not (settings.admin_user and settings.admin_password):
        return
    from sqlalchemy.orm import Session

    from server import audit, store, users
    from server.db import get_engine

    with Session(get_engine(settings.database_url)) as session:
        if users.user_by_name(session, settings.admin_user) is not None:
            return
        try:
            user = users.create_user(session, settings.admin_user, is_admin=True, password=settings.admin_password)
        except store.StoreError as exc:
            raise SystemExit(f"runyard: RUNYARD_ADMIN_USER/RUNYARD_ADMIN_PASSWORD: {exc.message}") from None
        audit.record(session, "user_created", actor=CLI_ACTOR, target=f"user {user.name}", is_admin=True,
                     reason="RUNYARD_ADMIN_USER")
        print(f"runyard: created the server admin {user.name!r} (RUNYARD_ADMIN_USER)", flush=True)


def refuse_open_bind(settings: Settings, host: str, command: str) -> str | None:
    """Why serving on ``host`` must not start: a non-loopback address and no admin account
    (anyone who reaches the port would have the whole server); None if it may."""
    if is_loopback(host):
        return None
    from sqlalchemy.orm import Session

    from server.db import get_engine

    with Session(get_engine(settings.database_url)) as session:
        if _active_admin(session) is not None:
            return None
    return (f"runyard {command}: refusing to serve on {host} with no admin account: anyone who reaches the port "
            "would control every run. Create one first with `runyard user create NAME --admin` (it prints a "
            "one-time login link), or set RUNYARD_ADMIN_USER and RUNYARD_ADMIN_PASSWORD, then start again; or "
            "bind to 127.0.0.1.")


def cmd_server(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    settings.ensure_dirs()
    host = args.host or settings.host
    port = args.port or settings.port
    settings.host = host  # the bind address is one of the default RUNYARD_ALLOWED_HOSTS (server/webguard.py)
    if settings.migrate:
        cmd_db_upgrade(settings, args)
    bootstrap_admin(settings)
    refusal = refuse_open_bind(settings, host, "server")
    if refusal:
        print(refusal, file=sys.stderr)
        return EXIT_CONFIG
    # create_app's startup brings the database to the latest migration (unless RUNYARD_MIGRATE=0).
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level, access_log=False)
    return 0


def create_worker_token(settings: Settings, name: str, replace: bool = False) -> str:
    """A new worker token's secret (stored hashed); ``replace`` revokes earlier ones of that name."""
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from server.auth import create_token
    from server.db import get_engine
    from server.models import Token, utcnow

    with Session(get_engine(settings.database_url)) as session:
        if replace:
            session.execute(update(Token).where(Token.kind == "worker", Token.name == name,
                                                Token.revoked_at.is_(None)).values(revoked_at=utcnow()))
        _, secret = create_token(session, "worker", name=name)
        from server import audit

        audit.record(session, "token_created", actor=CLI_ACTOR, target=f"worker token {name}", kind="worker")
    return secret


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from server.auth import revoke_token
    from server.db import get_engine, upgrade_database
    from server.models import Token, User

    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    if args.token_command == "create":
        if args.worker == bool(args.user):
            print("runyard token create: pass --worker (a worker's token) or --user NAME (a personal API token)",
                  file=sys.stderr)
            return 2
        if args.worker:
            secret = create_worker_token(settings, args.name or "worker")
            print(secret)
            print("runyard: a worker token (shown once); start a worker with RUNYARD_TOKEN set to it",
                  file=sys.stderr)
            return 0
        return _personal_token(settings, args)
    with Session(get_engine(settings.database_url)) as session:
        if args.token_command == "revoke":
            if not revoke_token(session, args.id):
                print(f"runyard token revoke: no active token {args.id}", file=sys.stderr)
                return 1
            from server import audit

            audit.record(session, "token_revoked", actor=CLI_ACTOR, target=f"token {args.id}")
            print(f"token {args.id} revoked")
            return 0
        rows = session.scalars(select(Token).where(Token.kind.in_(("worker", "personal"))).order_by(Token.id)).all()
        names = {u.id: u.name for u in session.scalars(select(User))}
        for t in rows:
            state = "revoked" if t.revoked_at else "active"
            used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
            user_name = names.get(t.user_id, "?") if t.user_id is not None else "?"
            owner = f"user {user_name}, {t.scope}" if t.kind == "personal" else "worker"
            print(f"{t.id}\t{t.kind}\t{t.name}\t{t.prefix}…\t{owner}\t{state}\tlast used {used}")
    return 0


CLI_ACTOR = "runyard CLI on the server"


def _personal_token(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from server import audit, store, users
    from server.auth import create_token
    from server.db import get_engine
    from server.models import utcnow

    with Session(get_engine(settings.database_url)) as session:
        user = users.user_by_name(session, args.user)
        if user is None or user.disabled_at is not None:
            print(f"runyard token create: no active user named {args.user!r} (runyard user list)", file=sys.stderr)
            return 1
        project_id = None
        if args.project:
            project = store.project_by_name(session, args.project)
            if project is None:
                print(f"runyard token create: no project {args.project!r}", file=sys.stderr)
                return 1
            project_id = project.id
        expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
        token, secret = create_token(session, "personal", name=args.name or "cli", scope=args.scope,
                                     user_id=user.id, expires_at=expires, project_id=project_id)
        audit.record(session, "token_created", user_id=user.id, actor=CLI_ACTOR, target=f"token {token.prefix}",
                     project_id=project_id, name=token.name, scope=args.scope)
        user_name = user.name
    print(secret)
    print(f"runyard: an API token for {user_name} (scope {args.scope}, shown once); send it as "
          "'Authorization: Bearer <token>' or set RUNYARD_TOKEN", file=sys.stderr)
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    import getpass

    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty():
        first = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("runyard: the passwords differ")
        return first
    return None


def cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    """Accounts, from the server's own machine (it opens the database directly)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from server import audit, store, users
    from server.api.account import login_link_for
    from server.db import get_engine, upgrade_database
    from server.models import User

    user: User | None

    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    with Session(get_engine(settings.database_url)) as session:
        if args.user_command == "list":
            for u in session.scalars(select(User).order_by(User.name)):
                flags = [f for f, on in (("admin", u.is_admin), ("disabled", u.disabled_at is not None),
                                         ("sso", bool(u.oidc_subject)), ("password", bool(u.password_hash))) if on]
                print(f"{u.id}\t{u.name}\t{u.email or '-'}\t{','.join(flags) or '-'}")
            return 0
        if args.user_command == "create":
            password = _read_password(args) if args.password_stdin else None
            try:
                user = users.create_user(session, args.name, display_name=args.display_name or "", email=args.email,
                                         password=password, is_admin=args.admin)
            except store.StoreError as exc:
                print(f"runyard user create: {exc.message}", file=sys.stderr)
                return 1
            audit.record(session, "user_created", actor=CLI_ACTOR, target=f"user {user.name}", is_admin=args.admin)
            print(f"user {user.name} created{' (server admin)' if args.admin else ''}")
            if not password:
                print(f"one-time login link (valid {settings.login_link_ttl / 3600:g} h): "
                      f"{login_link_for(session, user, settings)}")
            return 0
        user = users.user_by_name(session, args.name)
        if user is None:
            print(f"runyard user {args.user_command}: no user named {args.name!r} (runyard user list)",
                  file=sys.stderr)
            return 1
        if args.user_command in ("disable", "enable"):
            users.set_disabled(session, user, args.user_command == "disable")
            audit.record(session, f"user_{args.user_command}d", actor=CLI_ACTOR, target=f"user {user.name}")
            print(f"user {user.name} {args.user_command}d")
        elif args.user_command == "reset-password":
            password = _read_password(args)
            if password is None:
                print("runyard user reset-password: pass --password-stdin (or run it in a terminal), or use "
                      "`runyard user login-link NAME` and let the user set one", file=sys.stderr)
                return 2
            try:
                users.set_password(session, user, password)
            except store.StoreError as exc:
                print(f"runyard user reset-password: {exc.message}", file=sys.stderr)
                return 1
            audit.record(session, "password_reset", actor=CLI_ACTOR, target=f"user {user.name}")
            print(f"password of {user.name} set; their sessions were ended")
        elif args.user_command == "login-link":
            if user.disabled_at is not None:
                print(f"runyard user login-link: {user.name} is disabled", file=sys.stderr)
                return 1
            print(login_link_for(session, user, settings))
            audit.record(session, "login_link_created", actor=CLI_ACTOR, target=f"user {user.name}")
        elif args.user_command == "role":
            project = store.get_or_create_project(session, args.project)
            role = None if args.role == "none" else args.role
            before = users.set_role(session, project, user, role)
            audit.record(session, "role_changed", actor=CLI_ACTOR, target=f"user {user.name}", project_id=project.id,
                         project=project.name, before=before, after=role)
            print(f"{user.name} in {project.name}: {role or 'no role'} (was {before or 'no role'})")
    return 0


SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
              "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}
TIME_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``10G`` / ``10GiB`` (binary), ``10GB`` (decimal), ``500M``, ``1T``, plain bytes."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 10G, 500M, 2T or a number of bytes")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """``3d``, ``12h``, ``90m``, ``3600s`` or plain seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in TIME_UNITS:
        raise ValueError(f"{text!r} is not a duration; write e.g. 3d, 12h, 90m or seconds")
    return float(match.group(1)) * TIME_UNITS[unit]


QUOTA_PARSERS: dict[str, Callable[[str], float]] = {
    "checkpoint_bytes": parse_size, "keep_best": int, "keep_last": int, "keep_every": int,
    "metric_keys_per_run": int, "points_per_run": int, "max_run_seconds": parse_duration,
}


def cmd_project(settings: Settings, args: argparse.Namespace) -> int:
    """``runyard project quota PROJECT [--checkpoint-bytes 10G ...]``: show or set a project's quotas
    (on the server's machine: it opens the database directly, as a server admin)."""
    from pydantic import ValidationError
    from sqlalchemy.orm import Session

    from server import audit, quotas, store
    from server.api.quotas import QuotaValues
    from server.db import get_engine, upgrade_database
    from server.errors import ApiError

    changes: dict[str, Any] = {}
    for name in quotas.QUOTA_NAMES:
        raw = getattr(args, name, None)
        if raw is None:
            continue
        try:
            changes[name] = None if raw.strip().lower() == "default" else QUOTA_PARSERS[name](raw)
        except ValueError as exc:
            print(f"runyard project quota: --{name.replace('_', '-')}: {exc}", file=sys.stderr)
            return 2
    try:
        QuotaValues.model_validate(changes)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"runyard project quota: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", file=sys.stderr)
        return 2
    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    with Session(get_engine(settings.database_url), info={"settings": settings}) as session:
        project = store.project_by_name(session, args.project)
        if project is None:
            if not changes:
                print(f"runyard project quota: no project named {args.project!r} (it is made by its first run)",
                      file=sys.stderr)
                return 1
            project = store.get_or_create_project(session, args.project)
            session.commit()
        if changes:
            try:
                before, after = quotas.set_quotas(session, project.id, changes, None)
            except ApiError as exc:
                print(f"runyard project quota: {exc.message}", file=sys.stderr)
                return 1
            changed = {n: {"before": before[n], "after": after[n]} for n in changes if before[n] != after[n]}
            if changed:
                audit.record(session, "quotas_changed", actor=CLI_ACTOR, target=f"project {project.name}",
                             project_id=project.id, changes=changed)
        info = quotas.describe(session, project.id, settings)
    if args.json:
        print(json.dumps(info, default=str, indent=2))
        return 0
    print(f"quotas of project {info['project']} (id {info['project_id']}):")
    for name in quotas.QUOTA_NAMES:
        value = info["quotas"][name]
        shown = quotas.human_bytes(value) if name == "checkpoint_bytes" else f"{value:g}"
        origin = "set" if info["overrides"][name] is not None else "default"
        print(f"  {name:<20} {shown:>14}  ({origin})  {quotas.DESCRIPTION[name]}")
    used = info["usage"]
    print(f"  checkpoints now: {used['checkpoints']} holding {quotas.human_bytes(used['checkpoint_bytes'])}")
    return 0


def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    from trainer_core.loggers.runyard import sync_spool

    try:
        summary = sync_spool(args.dir, url=args.url or settings.url, token=settings.token or None)
    except Exception as exc:  # one sentence for the user
        print(f"runyard sync: {exc}", file=sys.stderr)
        return 1
    print(f"runyard sync: {summary}")
    return 0


def detect_gpus() -> list[str]:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()][:count]
    return [str(i) for i in range(count)]


def worker_slots(gpus: str | None, concurrency: int | None) -> list[dict[str, str]]:
    """The environment of each worker process: one per GPU (times ``concurrency``), else
    ``concurrency`` (default 1) CPU processes with no GPU visible."""
    if gpus is None or gpus == "auto":
        gpu_ids = detect_gpus()
    elif gpus in ("", "none", "cpu"):
        gpu_ids = []
    else:
        gpu_ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if gpu_ids:
        # Every slot may reserve any of the host's GPUs for a run (worker/gpus.py): one 4-GPU run
        # or four 1-GPU runs on --gpus 0,1,2,3; a GPU takes `concurrency` runs at once.
        per_gpu = concurrency or 1
        pool = {"RUNYARD_WORKER_GPUS": ",".join(gpu_ids), "RUNYARD_GPU_SEATS": str(per_gpu)}
        return [
            {"CUDA_VISIBLE_DEVICES": gpu, "RUNYARD_WORKER_GPU": gpu, "RUNYARD_WORKER_SLOT": f"gpu{gpu}-{i}", **pool}
            for gpu in gpu_ids
            for i in range(per_gpu)
        ]
    n = concurrency or 1
    slots = [{"CUDA_VISIBLE_DEVICES": "", "RUNYARD_WORKER_SLOT": f"cpu{i}"} for i in range(n)]
    if "OMP_NUM_THREADS" not in os.environ:
        # N CPU runs side by side share the cores instead of each starting one thread per core.
        for slot in slots:
            slot["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    return slots


def celery_worker_command(queues: str, slot: str, loglevel: str = "INFO") -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--pool", "solo", "--concurrency", "1", "--queues", queues,
        "--hostname", f"runyard-{slot}@%h", "--without-gossip", "--without-mingle",
        "--loglevel", loglevel,
    ]


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from server.settings import forbid_peeking

    forbid_peeking()  # RUNYARD_TOKEN is in this supervisor's environment: not readable by runs' code
    settings.ensure_dirs()
    slots = worker_slots(args.gpus, args.concurrency)
    queues = args.queues or DEFAULT_QUEUE
    procs: dict[str, subprocess.Popen] = {}
    restart = {}
    for env in slots:
        slot = env["RUNYARD_WORKER_SLOT"]
        # The run's worker_host: RUNYARD_WORKER_NAME (a readable machine name) or the host name, plus the slot.
        machine = os.environ.get("RUNYARD_WORKER_NAME") or os.uname().nodename
        env = {**env, "RUNYARD_WORKER_NAME": f"{machine}/{slot}"}
        if "RUNYARD_WORKER_GPUS" in env:  # the slots of this command share one reservation file
            env["RUNYARD_GPU_POOL"] = str(Path(settings.home).resolve() / "gpu-reservations.json")

        def start(env: dict[str, str] = env, slot: str = slot) -> subprocess.Popen:
            return spawn(celery_worker_command(queues, slot, args.log_level.upper()), env)

        procs[f"worker {slot}"] = start()
        restart[f"worker {slot}"] = start
        where = f"GPU {env['CUDA_VISIBLE_DEVICES']}" if env["CUDA_VISIBLE_DEVICES"] else "CPU"
        print(f"runyard: worker {slot} on {where}, queues {queues}, pid {procs[f'worker {slot}'].pid}", flush=True)
    return supervise(procs, restart)


def wait_healthy(base_url: str, timeout: float, procs: Sequence[subprocess.Popen] = ()) -> bool:
    from trainer_core.client import Client, ClientError

    client = Client(base_url, token=None, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            if client.request("GET", "/healthz").get("status") in ("ok", "degraded"):  # degraded: up, storage full
                return True
        except (ClientError, OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


def wait_recipe(base_url: str, recipe: str, timeout: float, procs: Sequence[subprocess.Popen] = (),
                token: str | None = None) -> bool:
    """Wait until a live worker has published ``recipe``."""
    from trainer_core.client import Client, ClientError

    client = Client(base_url, token=token, timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            if any(r["name"] == recipe and r.get("available") for r in client.request("GET", "/api/v1/recipes")):
                return True
        except (ClientError, OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def mnist_present(data_dir: Path) -> bool:
    """MNIST's four IDX files (or .gz) under DATA_DIR/MNIST/raw, as torchvision lays them out."""
    raw = Path(data_dir) / "MNIST" / "raw"
    return all((raw / n).exists() or (raw / f"{n}.gz").exists() for n in MNIST_FILES)


def demo_submission(settings: Settings) -> dict[str, Any]:
    if mnist_present(settings.data_dir):
        return {
            "recipe": "mnist_autoencoder",
            "name": "demo: MNIST autoencoder",
            "params": {"dataset": "mnist", "batch_size": 64},
            "trainer": {"max_epochs": 3, "log_every_n_steps": 10, "limit_train_batches": 300, "limit_val_batches": 50,
                        "checkpoint_monitor": "val_loss", "checkpoint_save_top_k": 2},
        }
    return {
        "recipe": "digits_classifier",
        "name": "demo: digits classifier",
        # why not MNIST stays in the params, not in a name that every table and legend shows
        "params": {"dataset": "digits", "batch_size": 32},
        "hyperparameters": {"demo_note": f"MNIST was not found in {settings.data_dir}; training on "
                                         "scikit-learn's bundled digits instead"},
        "trainer": {"max_epochs": 30, "log_every_n_steps": 5, "checkpoint_monitor": "val_loss",
                    "checkpoint_save_top_k": 2},
    }


def first_admin(settings: Settings, print_link: bool) -> tuple[str, str | None]:
    """The admin ``runyard up`` logs in: on a fresh install it creates ``admin`` (no password:
    the one-time link logs in, the Account page sets one). Returns (name, a new one-time login
    link or None)."""
    from sqlalchemy.orm import Session

    from server import audit, users
    from server.api.account import login_link_for
    from server.db import get_engine

    with Session(get_engine(settings.database_url)) as session:
        admin = _active_admin(session)
        if admin is None:
            name = "admin"
            for i in range(2, 1000):  # a user named admin who is no (active) admin keeps the name
                if users.user_by_name(session, name) is None:
                    break
                name = f"admin{i}"
            admin = users.create_user(session, name, display_name="Admin", is_admin=True)
            audit.record(session, "user_created", actor=CLI_ACTOR, target=f"user {name}", is_admin=True,
                         reason="first start")
            print(f"runyard: created the server admin {name!r} (first start)", flush=True)
        link = login_link_for(session, admin, settings) if print_link else None
        return admin.name, link


@contextlib.contextmanager
def demo_token(settings: Settings, user_name: str) -> Any:
    """A short-lived read+write token of ``user_name`` to submit the demo run, revoked after."""
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from server import users
    from server.auth import create_token, revoke_token
    from server.db import get_engine
    from server.models import utcnow

    with Session(get_engine(settings.database_url)) as session:
        user = users.user_by_name(session, user_name)
        assert user is not None  # first_admin made it
        token, secret = create_token(session, "personal", name="runyard up: demo submission", scope="read+write",
                                     user_id=user.id, expires_at=utcnow() + timedelta(minutes=10))
        token_id = token.id
    try:
        yield secret
    finally:
        with Session(get_engine(settings.database_url)) as session:
            revoke_token(session, token_id)


def _has_runs(settings: Settings) -> bool:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from server.db import get_engine
    from server.models import Run

    with Session(get_engine(settings.database_url)) as session:
        return bool(session.scalar(select(func.count()).select_from(Run)))


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """The server and one local worker on the embedded defaults. Migrates the database once
    (the server it starts skips it), makes the local worker's token itself, and submits the
    demo run only on a fresh home (one with no runs yet)."""
    host = args.host or settings.host
    port = args.port or settings.port
    base_url = f"http://{host}:{port}"
    if not os.environ.get("RUNYARD_PUBLIC_URL"):  # links printed and served name the port really used
        settings.public_url = base_url
    settings.ensure_dirs()
    cmd_db_upgrade(settings, args)
    fresh = not _has_runs(settings)
    bootstrap_admin(settings)
    refusal = refuse_open_bind(settings, host, "up")
    if refusal:
        print(refusal, file=sys.stderr)
        return EXIT_CONFIG
    admin, login_link = first_admin(settings, print_link=is_loopback(host))
    token = create_worker_token(settings, "local worker (runyard up)", replace=True)
    me = [sys.executable, "-m", "server.cli"]
    procs = {"server": spawn([*me, "server", "--host", host, "--port", str(port), "--log-level", "warning"],
                             {"RUNYARD_MIGRATE": "0", "RUNYARD_PUBLIC_URL": settings.public_url})}
    worker_args = [*me, "worker", "--queues", args.queues or DEFAULT_QUEUE]
    if args.gpus:
        worker_args += ["--gpus", args.gpus]
    if args.concurrency:
        worker_args += ["--concurrency", str(args.concurrency)]
    procs["worker"] = spawn(worker_args, {"RUNYARD_URL": base_url, "RUNYARD_TOKEN": token,
                                          "RUNYARD_WORKER_QUIET": "1"})
    try:
        if not wait_healthy(base_url, 90, list(procs.values())):
            print(f"runyard: the server did not come up on {base_url}", file=sys.stderr)
            stop_all(list(procs.values()))
            return 1
        print(f"runyard: serving {base_url} — Ctrl-C stops server and worker", flush=True)
        if login_link:
            print(f"runyard: log in as {admin} with this one-time link (valid "
                  f"{settings.login_link_ttl / 3600:g} h):\n    {login_link}", flush=True)
        if args.demo and fresh:
            from trainer_core.client import Client

            body = demo_submission(settings)
            with demo_token(settings, admin) as secret:
                if not wait_recipe(base_url, body["recipe"], 120, list(procs.values()), token=secret):
                    print("runyard: the worker did not publish its recipes; no demo run", file=sys.stderr)
                else:
                    run = Client(base_url, token=secret).request("POST", "/api/v1/runs", json=body)
                    print(f"runyard: demo run {run['id']} ({body['recipe']}, dataset "
                          f"{body['params']['dataset']}): {run.get('url')}", flush=True)
        elif args.demo:
            print(f"runyard: {settings.home} has runs already; no new demo run (open {base_url})", flush=True)
    except BaseException:
        stop_all(list(procs.values()))
        raise
    return supervise(procs, in_order=True)


def parse_value(text: str) -> Any:
    """``3`` -> 3, ``0.5`` -> 0.5, ``true`` -> True, ``null`` -> None, ``[1,2]`` -> list; else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"runyard submit: {option} takes key=value, got {pair!r}")
        out[key.strip()] = parse_value(value)
    return out


FINAL = ("succeeded", "failed", "cancelled")


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    from trainer_core.client import ApiError, Client, Unreachable

    client = Client(args.url or settings.url, settings.token or None, timeout=60)
    code_argv = list(getattr(args, "command_argv", None) or [])
    is_folder = Path(args.target).is_dir() or bool(code_argv) or args.model or args.cli
    try:
        if is_folder:
            body = code_submission(client, args, code_argv)
            if body is None:
                return 0  # --dry-run
        else:
            body = {
                "recipe": args.target,
                "params": parse_pairs(args.param, "--param"),
                "trainer": parse_pairs(args.trainer, "--trainer"),
                "project": args.project,
                "queue": args.queue,
            }
        if args.name:
            body["name"] = args.name
        if args.tag:
            body["tags"] = list(args.tag)
        run = client.request("POST", "/api/v1/runs", json=body)
    except SubmitError as exc:
        print(f"runyard submit: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        field = f" [{exc.field}]" if getattr(exc, "field", None) else ""
        print(f"runyard submit: the server refused the run ({exc.status}){field}: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"runyard submit: cannot reach {client.url} ({exc}); is `runyard up` running? (RUNYARD_URL)",
              file=sys.stderr)
        return 2
    print(f"run {run['id']} queued: {run.get('url')}", flush=True)
    for warning in run.get("warnings") or []:
        print(f"runyard submit: warning: {warning}", file=sys.stderr)
    if not args.wait:
        return 0
    return follow(client, run["id"])


class SubmitError(Exception):
    """A submission refused before anything was sent, with a message saying what to change."""


def split_command(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``python train.py --lr 0.01 --fast`` -> (``["python", "train.py"]``, ``{"--lr": "0.01", "--fast": True}``).

    The command is everything up to the first option; after it, ``--name value``, ``--name=value``
    and ``-n value`` pairs, and flags (``--name`` followed by another option or nothing) as ``true``.
    The worker rebuilds the same argv from the two (``worker/code.py``)."""
    argv = list(argv)
    if not argv:
        raise SubmitError("the command after `--` is empty; e.g. `runyard submit . -- python train.py --lr 0.01`")

    def is_option(token: str) -> bool:
        if not token.startswith("-") or token == "-":
            return False
        try:
            float(token)  # a negative number is a value
        except ValueError:
            return True
        return False

    i = 1
    while i < len(argv) and not is_option(argv[i]):
        i += 1
    command, params = list(argv[:i]), dict[str, Any]()
    while i < len(argv):
        token = argv[i]
        if not is_option(token):
            raise SubmitError(f"{token!r} follows the options of the command: put positional arguments before "
                              "the first option, or give it as an option's value")
        name, eq, value = token.partition("=")
        if eq:
            params[name] = value
            i += 1
        elif i + 1 < len(argv) and not is_option(argv[i + 1]):
            params[name] = argv[i + 1]
            i += 2
        else:
            params[name] = True
            i += 1
    return command, params


def nest_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``model.lr=0.01`` -> ``{"model": {"lr": 0.01}}`` (a LightningCLI config)."""
    out: dict[str, Any] = {}
    for key, value in parse_pairs(pairs, option).items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SubmitError(f"{option} {key}: {part!r} is set to a value and used as a section")
        node[parts[-1]] = value
    return out


def _class_spec(text: str, folder: Path, option: str) -> str:
    path, sep, name = text.partition(":")
    if not sep or not name.isidentifier() or not path.endswith(".py"):
        raise SubmitError(f"{option} takes FILE.py:Class (e.g. pkg/models.py:LitClassifier), got {text!r}")
    if not (folder / path).is_file():
        raise SubmitError(f"{option}: there is no file {path} in {folder}")
    return f"{Path(path).as_posix()}:{name}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def code_submission(client: Any, args: argparse.Namespace, code_argv: list[str]) -> dict[str, Any] | None:
    """Pack the folder, upload it unless the project has it already, and make the run's body."""
    from server import snapshots

    folder = Path(args.target)
    if not folder.is_dir():
        raise SubmitError(f"{args.target} is not a folder (nor a recipe name with --model/--cli/--)")
    kinds = [k for k, given in (("module", args.model), ("cli", args.cli), ("command", code_argv)) if given]
    if len(kinds) != 1:
        raise SubmitError("name one entry point: --model FILE.py:Class [--data FILE.py:Class], --cli SCRIPT.py, "
                          "or a command after `--` (e.g. `-- python train.py --lr 0.01`)"
                          + (f"; got {' and '.join(kinds)}" if kinds else ""))
    kind = kinds[0]
    if args.data and kind != "module":
        raise SubmitError("--data goes with --model")
    trainer: dict[str, Any] = parse_pairs(args.trainer, "--trainer")
    if kind == "module":
        entry: dict[str, Any] = {"kind": "module", "model": _class_spec(args.model, folder, "--model"),
                 "data": _class_spec(args.data, folder, "--data") if args.data else None}
        params = parse_pairs(args.param, "--param")
    elif kind == "cli":
        script = Path(args.cli).as_posix()
        if not (folder / script).is_file():
            raise SubmitError(f"--cli: there is no file {script} in {folder}")
        entry = {"kind": "cli", "script": script, "subcommand": args.subcommand}
        params = nest_pairs(args.param, "--param")
        if trainer:
            params.setdefault("trainer", {}).update(trainer)  # the CLI's own trainer section
            trainer = {}
    else:
        if args.param:
            raise SubmitError("a command run takes its parameters on the command line after `--`, not --param")
        command, params = split_command(code_argv)
        entry = {"kind": "command", "command": command}
        if trainer:
            raise SubmitError("a command run sets its own Trainer arguments; --trainer goes with --model")
    max_bytes = int(args.max_size * 2**20) if args.max_size else snapshots.DEFAULT_MAX_BYTES
    try:
        packed = snapshots.pack(folder, max_bytes=max_bytes)
    except snapshots.SnapshotError as exc:
        raise SubmitError(str(exc)) from exc
    git = packed.git or {}
    described = f"{len(packed.files)} files, {_human(sum(f['size'] for f in packed.files))}"
    if git.get("commit"):
        described += f", git {git['commit'][:10]}" + (f" on {git['branch']}" if git.get("branch") else "")
        described += " with uncommitted changes" if git.get("dirty") else ""
    if args.dry_run:
        for f in packed.files:
            print(f"  {f['size']:>10}  {f['path']}")
        print(f"snapshot {packed.sha256[:12]} ({described}, {_human(len(packed.data))} packed): not sent (--dry-run)")
        return None
    found = client.request("GET", "/api/v1/snapshots", query={"project": args.project, "sha256": packed.sha256})
    items = (found or {}).get("items") or []
    if items:
        snapshot = items[0]
        how = "already on the server"
    else:
        snapshot = client.request("PUT", f"/api/v1/snapshots/{packed.sha256}", data=packed.data,
                                  query={"project": args.project},
                                  headers={"Content-Type": "application/gzip"}, retry_for=30)
        how = f"uploaded {_human(len(packed.data))}"
    print(f"snapshot {packed.sha256[:12]} ({described}): {how}", flush=True)
    return {"recipe": "code", "code": {"snapshot_id": snapshot["id"], "entry": entry}, "params": params,
            "trainer": trainer, "project": args.project, "queue": args.queue}


def follow(client: Any, run_id: int, poll: float = 1.0) -> int:
    """Print status changes and new log lines until the run ends; 0 only when it succeeded."""
    from trainer_core.client import ClientError

    status, cursor = None, 0
    while True:
        try:
            run = client.request("GET", f"/api/v1/runs/{run_id}")
            logs = client.request("GET", f"/api/v1/runs/{run_id}/logs", query={"after": cursor, "limit": 500})
        except (ClientError, OSError) as exc:
            print(f"runyard: lost the server ({exc}); retrying", file=sys.stderr)
            time.sleep(poll * 3)
            continue
        for line in logs.get("lines", []):
            print(f"  {line['text']}", flush=True)
        cursor = logs.get("cursor", cursor) or cursor
        if run["status"] != status:
            status = run["status"]
            extra = f" on {run.get('device')}, attempt {run.get('attempt')}" if status == "running" else ""
            print(f"run {run_id}: {status}{extra}", flush=True)
        if status in FINAL:
            if status != "succeeded" and run.get("error"):
                print(run["error"], file=sys.stderr)
            last = run.get("last_metrics")
            if last:
                print("last metrics: " + ", ".join(f"{k}={v}" for k, v in last.items()), flush=True)
            return 0 if status == "succeeded" else 1
        time.sleep(poll)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runyard", description="Experiment tracking and training jobs for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="server and one local worker (embedded defaults); Ctrl-C stops both")
    up.add_argument("--demo", action="store_true", help="submit a demo run once the server answers")
    up.add_argument("--host")
    up.add_argument("--port", type=int)
    up.add_argument("--gpus", help="GPU ids for the local worker (default: all visible)")
    up.add_argument("--concurrency", type=int)
    up.add_argument("--queues")
    up.set_defaults(func=cmd_up)

    server = sub.add_parser("server", help="the API and dashboard")
    server.add_argument("--host")
    server.add_argument("--port", type=int)
    server.add_argument("--log-level", default="info")
    server.set_defaults(func=cmd_server)

    worker = sub.add_parser("worker", help="Celery worker processes: one per GPU, or --concurrency on CPU")
    worker.add_argument("--gpus", help="comma-separated GPU ids (default: all visible; 'none' for CPU)")
    worker.add_argument("--concurrency", type=int, help="processes (CPU) or processes per GPU; default 1")
    worker.add_argument("--queues", help=f"comma-separated queues (default {DEFAULT_QUEUE})")
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(func=cmd_worker)

    submit = sub.add_parser(
        "submit", help="queue a run: of a registered recipe, or of your own code (a folder)",
        description="runyard submit RECIPE [--param k=v]...  |  runyard submit FOLDER --model FILE.py:Class "
                    "[--data FILE.py:Class]  |  runyard submit FOLDER --cli SCRIPT.py  |  runyard submit FOLDER -- "
                    "python train.py --lr 0.01   (the folder is packed respecting .gitignore and .runyardignore, "
                    "uploaded once, and run in its own process on a worker; see docs/your-code.md)")
    submit.add_argument("target", metavar="RECIPE|FOLDER")
    submit.add_argument("--model", metavar="FILE.py:Class", help="a LightningModule in the folder")
    submit.add_argument("--data", metavar="FILE.py:Class", help="its LightningDataModule (with --model)")
    submit.add_argument("--cli", metavar="SCRIPT.py", help="a script that runs trainer_core.cli.LightningCLI")
    submit.add_argument("--subcommand", default="fit", choices=("fit", "validate", "test", "predict"),
                        help="the LightningCLI subcommand (with --cli; default fit)")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter (with --cli: a config key such as model.lr=0.01)")
    submit.add_argument("--trainer", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--max-size", type=float, metavar="MB", help="refuse a folder larger than this "
                        "(default 100 MB unpacked)")
    submit.add_argument("--dry-run", action="store_true", help="list what would be packed, send nothing")
    submit.add_argument("--name")
    submit.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="a tag of the run (repeatable; letters, digits and _ . : -)")
    submit.add_argument("--project", default="default")
    submit.add_argument("--queue", default=DEFAULT_QUEUE,
                        help=f"the queue a worker takes it from (default {DEFAULT_QUEUE}; see runyard worker --queues)")
    submit.add_argument("--url", help="server URL (default RUNYARD_URL, else http://127.0.0.1:8000)")
    submit.add_argument("--wait", action="store_true", help="follow the run; exit non-zero unless it succeeds")
    submit.set_defaults(func=cmd_submit)

    token = sub.add_parser("token", help="API tokens (stored hashed; a secret is shown once)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token and print its secret")
    create.add_argument("--worker", action="store_true", help="a worker token (for runyard worker's RUNYARD_TOKEN)")
    create.add_argument("--user", help="a personal API token of this user")
    create.add_argument("--name", help="what the token is for, e.g. the worker's machine")
    create.add_argument("--scope", choices=("read", "read+write"), default="read", help="personal tokens: read only "
                        "(default), or read+write")
    create.add_argument("--expires-days", type=int, default=90, help="personal tokens: days until it expires "
                        "(default 90; 0: never)")
    create.add_argument("--project", help="personal tokens: limit it to this project")
    token_sub.add_parser("list", help="list tokens (never their secrets)")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    token.set_defaults(func=cmd_token)

    user = sub.add_parser("user", help="accounts (run on the server's machine: it opens the database)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    ucreate = user_sub.add_parser("create", help="create an account (prints a one-time login link without a password)")
    ucreate.add_argument("name")
    ucreate.add_argument("--admin", action="store_true", help="a server admin")
    ucreate.add_argument("--email")
    ucreate.add_argument("--display-name")
    ucreate.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user_sub.add_parser("list", help="list accounts")
    for verb, text in (("disable", "disable an account (ends its sessions and tokens)"),
                       ("enable", "enable a disabled account"),
                       ("reset-password", "set a new password (ends the user's sessions)"),
                       ("login-link", "print a one-time login link")):
        p = user_sub.add_parser(verb, help=text)
        p.add_argument("name")
        if verb == "reset-password":
            p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    urole = user_sub.add_parser("role", help="set a user's role in a project (viewer, member, admin, none)")
    urole.add_argument("name")
    urole.add_argument("project")
    urole.add_argument("role", choices=("viewer", "member", "admin", "none"))
    user.set_defaults(func=cmd_user)

    project = sub.add_parser("project", help="projects (run on the server's machine: it opens the database)")
    project_sub = project.add_subparsers(dest="project_command", required=True)
    pquota = project_sub.add_parser(
        "quota", help="show or set a project's quotas (a value sets one, 'default' resets it)",
        description="Show a project's quotas, or set some: e.g. runyard project quota vision --checkpoint-bytes "
                    "500G --keep-best 3 --max-run-seconds 7d. 'default' resets one to its RUNYARD_QUOTA_* default.")
    pquota.add_argument("project")
    for name, (metavar, text) in {
        "checkpoint_bytes": ("SIZE", "bytes all of the project's checkpoints may hold (10G, 500M, 2T, bytes)"),
        "keep_best": ("K", "retention: the k best checkpoints of each run by score"),
        "keep_last": ("N", "retention: the n newest checkpoints of each run (at least 1)"),
        "keep_every": ("STEPS", "retention: also the first checkpoint of every N training steps (0: off)"),
        "metric_keys_per_run": ("N", "metric keys one run may log"),
        "points_per_run": ("N", "metric points one run may hold"),
        "max_run_seconds": ("TIME", "the longest a run may run (3d, 12h, 90m, seconds)"),
    }.items():
        pquota.add_argument("--" + name.replace("_", "-"), dest=name, metavar=metavar, help=text)
    pquota.add_argument("--json", action="store_true", help="print the answer of GET /api/v1/projects/{id}/quotas")
    project.set_defaults(func=cmd_project)

    sync = sub.add_parser("sync", help="upload a run that a RunyardLogger spooled while the server was unreachable")
    sync.add_argument("dir", help="the run's local folder (it holds spool.jsonl)")
    sync.add_argument("--url", help="server URL (default RUNYARD_URL)")
    sync.set_defaults(func=cmd_sync)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    upgrade.set_defaults(func=cmd_db_upgrade)
    return parser


def missing_extra_message(exc: ModuleNotFoundError, command: str | None = None) -> str | None:
    """What to install when ``exc`` is a package of the server or worker extra missing, else None."""
    top = (exc.name or "").partition(".")[0]
    for extra, packages in _EXTRA_PACKAGES.items():
        if top in packages:
            what = "the runyard command" if command is None else f"runyard {command}"
            message = f"{what} needs the {extra} extra ({top} is not installed): pip install 'runyard[{extra}]'"
            if command in (None, "up"):
                message += "\n(`runyard up` runs a server and a worker: pip install 'runyard[all]')"
            return message
    return None


def main(argv: Sequence[str] | None = None) -> int:
    if _MISSING_EXTRA is not None:
        message = missing_extra_message(_MISSING_EXTRA)
        if message is None:
            raise _MISSING_EXTRA
        print(message, file=sys.stderr)
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    command_argv: list[str] = []
    if argv[:1] == ["submit"] and "--" in argv:  # runyard submit FOLDER [options] -- COMMAND...
        cut = argv.index("--")
        argv, command_argv = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.command == "submit":
        args.command_argv = command_argv
    try:
        return int(args.func(get_settings(), args) or 0)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, args.command)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
