"""What checking a token or a session costs per request, side by side with auth off.

Two uvicorn processes serve the same SQLite home: one as shipped (accounts exist, so every
request needs a token or a session) and one with the access check replaced by a no-op
(``create_app_auth_off`` below: the baseline, what the same server costs with no auth at all).
The same requests go to both, interleaved round by round over keep-alive connections:

- ``GET /api/v1/runs/{id}`` with no credentials (off), a personal token, a session cookie;
- ``POST /api/v1/runs/{id}/metrics`` (1,000-point batches) with no credentials (off) and with
  the run's own run token (what a run process sends), as points/s.

Prints the medians and the differences; asserts nothing. Usage:
``python bench/auth_overhead.py [--requests 1500] [--rounds 7] [--batches 40]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import Request

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def create_app_auth_off():  # uvicorn factory
    """The app with the access check replaced by one that lets everything through (baseline)."""
    from server.app import create_app
    from server.auth import OPEN, authorize

    app = create_app()

    def no_auth(request: Request):
        request.state.principal = OPEN
        request.state.run_attempt = None
        return OPEN

    app.dependency_overrides[authorize] = no_auth
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(home: Path, factory: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_REAPER": "false", "RUNYARD_MIGRATE": "0",
           "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'bench'}"}
    cores = sorted(os.sched_getaffinity(0))
    pin = ["taskset", "-c", str(cores[-1])] if len(cores) > 1 and shutil.which("taskset") else []
    proc = subprocess.Popen([*pin, sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(port),
                             "--log-level", "warning", "--no-access-log"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{factory} did not start")


def check_us(app, headers: dict[str, str], path: str, template: str, n: int) -> float:
    """µs per call of the access check itself (``authorize``) on one request, in process."""
    from types import SimpleNamespace

    from starlette.requests import Request as StarletteRequest

    from server.auth import authorize

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "app": app,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "scheme": "http",
             "route": SimpleNamespace(path=template), "path_params": {"run_id": path.rsplit("/", 1)[1]}}
    authorize(StarletteRequest(dict(scope)))  # warm the caches
    start = time.perf_counter()
    for _ in range(n):
        authorize(StarletteRequest(dict(scope)))
    return (time.perf_counter() - start) / n * 1e6


def per_request_ms(client: httpx.Client, path: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        r = client.get(path)
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code} {r.text}")
    return (time.perf_counter() - start) / n * 1000


def ingest_points_per_s(client: httpx.Client, path: str, batches: int, step0: int) -> float:
    start = time.perf_counter()
    for b in range(batches):
        points = [{"key": "loss", "step": step0 + b * 1000 + i, "value": 1.0 / (i + 1)} for i in range(1000)]
        r = client.post(path, json={"points": points})
        if r.status_code != 202 and r.status_code != 200:
            raise SystemExit(f"POST {path}: {r.status_code} {r.text}")
    return batches * 1000 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()

    from server import users
    from server.auth import create_token
    from server.db import get_engine, session_factory, upgrade_database
    from server.settings import Settings
    from server.store import create_run

    home = Path(tempfile.mkdtemp(prefix="runyard-auth-bench-"))
    settings = Settings(home=home)
    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    session = session_factory(get_engine(settings.database_url))()
    user = users.create_user(session, "bench", password="bench-password", is_admin=False)
    project_run = create_run(session, recipe="external", project="bench", status="running", owner_id=user.id)
    users.set_role(session, project_run.project, user, "member")
    personal = create_token(session, "personal", name="bench", scope="read+write", user_id=user.id)[1]
    ingest = {}
    for mode in ("off", "on"):
        run = create_run(session, recipe="external", project="bench", status="running", owner_id=user.id)
        ingest[mode] = (run.id, create_token(session, "run", run_id=run.id, attempt=run.attempt)[1])
    run_id = project_run.id
    session.close()

    procs = []
    try:
        # both servers on the same (last) core, this client on another: each sees the same CPU
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            os.sched_setaffinity(0, set(cores[:-1]))
        off_proc, off_url = serve(home, "auth_overhead:create_app_auth_off")
        procs.append(off_proc)
        on_proc, on_url = serve(home, "server.app:create_app")
        procs.append(on_proc)
        off = httpx.Client(base_url=off_url, timeout=30)
        token = httpx.Client(base_url=on_url, timeout=30, headers={"Authorization": f"Bearer {personal}"})
        browser = httpx.Client(base_url=on_url, timeout=30)
        r = browser.post("/api/v1/auth/login", json={"login": "bench", "password": "bench-password"})
        assert r.status_code == 200, r.text
        anonymous = httpx.Client(base_url=on_url, timeout=30)
        assert anonymous.get(f"/api/v1/runs/{run_id}").status_code == 401  # auth really is on
        path = f"/api/v1/runs/{run_id}"
        for c in (off, token, browser):  # warm up: connections, caches, first queries
            per_request_ms(c, path, 200)
        results: dict[str, list[float]] = {"off": [], "token": [], "session": []}
        chunk = 100  # modes alternate every 100 requests, so drift in machine load hits all alike
        for _ in range(args.rounds):
            sums = {"off": 0.0, "token": 0.0, "session": 0.0}
            for _ in range(max(1, args.requests // chunk)):
                sums["off"] += per_request_ms(off, path, chunk)
                sums["token"] += per_request_ms(token, path, chunk)
                sums["session"] += per_request_ms(browser, path, chunk)
            for k, v in sums.items():
                results[k].append(v / max(1, args.requests // chunk))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"GET {path}: {args.rounds} rounds x {args.requests} requests, median ms/request")
        for k in ("off", "token", "session"):
            extra = "" if k == "off" else f"   (+{med[k] - med['off']:.3f} ms vs off)"
            print(f"  auth {k:8s} {med[k]:.3f}{extra}   rounds: {', '.join(f'{x:.3f}' for x in results[k])}")

        # the check alone, in process: the same GET, with a token and with a session cookie
        from server.app import create_app
        from server.settings import Settings as AppSettings

        app = create_app(AppSettings(home=home, reaper=False, migrate=False))
        cookie = browser.cookies.get("runyard_session")
        template = "/api/v1/runs/{run_id}"
        n = 20_000
        token_us = statistics.median(check_us(app, {"authorization": f"Bearer {personal}"}, path, template, n)
                                     for _ in range(5))
        session_us = statistics.median(check_us(app, {"cookie": f"runyard_session={cookie}"}, path, template, n)
                                       for _ in range(5))
        print(f"the access check alone (authorize, in process, {n:,} calls x 5, median): "
              f"token {token_us:.1f} µs, session {session_us:.1f} µs per request")

        run_off, _ = ingest["off"]
        run_on, run_token = ingest["on"]
        writer = httpx.Client(base_url=on_url, timeout=60, headers={"Authorization": f"Bearer {run_token}"})
        rates: dict[str, list[float]] = {"off": [], "run token": []}
        for i in range(args.rounds):
            rates["off"].append(ingest_points_per_s(off, f"/api/v1/runs/{run_off}/metrics", args.batches,
                                                    i * args.batches * 1000))
            rates["run token"].append(ingest_points_per_s(writer, f"/api/v1/runs/{run_on}/metrics", args.batches,
                                                          i * args.batches * 1000))
        print(f"POST metrics, {args.rounds} rounds x {args.batches} batches of 1,000 points, median points/s")
        base = statistics.median(rates["off"])
        for k, v in rates.items():
            m = statistics.median(v)
            extra = "" if k == "off" else f"   ({(m / base - 1) * 100:+.1f} % vs off)"
            print(f"  auth {k:9s} {m:,.0f}{extra}   rounds: {', '.join(f'{x:,.0f}' for x in v)}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


if __name__ == "__main__":
    main()
