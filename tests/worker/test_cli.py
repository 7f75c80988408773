"""The `runyard` command, run as a real process: up (and its clean stop), submit --wait, db upgrade."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.cli import parse_pairs, worker_slots
from tests.worker.stack import ROOT, Stack, free_port, stack_env

RUNYARD = [sys.executable, "-m", "server.cli"]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_slots_pin_one_process_per_gpu() -> None:
    slots = worker_slots("0,1", None)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1"]
    assert [s["RUNYARD_WORKER_GPU"] for s in slots] == ["0", "1"]
    assert len(worker_slots("2", 2)) == 2 and worker_slots("2", 2)[1]["CUDA_VISIBLE_DEVICES"] == "2"
    cpu = worker_slots("none", None)
    assert len(cpu) == 1 and cpu[0]["CUDA_VISIBLE_DEVICES"] == ""
    assert len(worker_slots("none", 3)) == 3


def test_cpu_slots_share_the_cores(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = worker_slots("none", 2)
    assert all(int(s["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2) for s in slots)


def test_parse_pairs() -> None:
    assert parse_pairs(["a=1", "b=0.5", "c=true", "d=hello", "e=[1, 2]", "f=null"], "--param") == {
        "a": 1, "b": 0.5, "c": True, "d": "hello", "e": [1, 2], "f": None}
    with pytest.raises(SystemExit):
        parse_pairs(["novalue"], "--param")


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    env = stack_env(tmp_path, tmp_path / "data")
    result = subprocess.run([*RUNYARD, "db", "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tables = {r[0] for r in sqlite3.connect(tmp_path / "runyard.db").execute("select name from sqlite_master")}
    assert {"runs", "metric_points", "checkpoints", "log_lines", "model_summaries"} <= tables


def depths(pid: int) -> dict[int, int]:
    """``descendant pid -> generations below pid`` (children 1, grandchildren 2, ...)."""
    out, todo = {}, [(pid, 0)]
    while todo:
        parent, depth = todo.pop()
        for child in children_of(parent):
            out[child] = depth + 1
            todo.append((child, depth + 1))
    return out


def wait_gone(pids, timeout: float = 15.0) -> None:
    """Every process in ``pids`` has exited (a forkserver leaves a moment after its worker)."""
    deadline = time.monotonic() + timeout
    while left := [pid for pid in pids if alive(pid)]:
        assert time.monotonic() < deadline, f"orphans left: {left} of {pids}"
        time.sleep(0.1)


@pytest.mark.slow
def test_up_serves_submits_a_demo_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = stack_env(tmp_path / "home", tmp_path / "no-mnist-here", RUNYARD_PORT=str(port))
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([*RUNYARD, "up", "--demo", "--concurrency", "2"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    loader_run = None
    browser = httpx.Client(base_url=base, timeout=10)
    try:
        deadline = time.monotonic() + 120
        runs: list = []
        link = None
        while time.monotonic() < deadline and not runs:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            if link is None:
                found = re.search(r"one-time link.*\n\s+(\S+)", (tmp_path / "up.log").read_text())
                if found:  # the first start created the admin and printed a login link: log in with it
                    link = found.group(1)
                    assert link.startswith(f"{base}/#/login?link="), link
                    r = browser.post("/api/v1/auth/link", json={"token": link.split("link=", 1)[1]})
                    assert r.status_code == 200 and r.json()["user"]["name"] == "admin", r.text
                    browser.headers["X-CSRF-Token"] = browser.get("/api/v1/me").json()["csrf"]
                    assert httpx.get(f"{base}/api/v1/runs").status_code == 401  # not without the login
            if link is not None:
                runs = browser.get("/api/v1/runs").json()["items"]
            time.sleep(0.3)
        assert runs, (tmp_path / "up.log").read_text()
        demo = runs[0]
        assert demo["recipe"] == "digits_classifier" and demo["params"]["dataset"] == "digits"
        # A second run whose DataLoader has worker processes: great-grandchildren of `runyard up`
        # (up -> worker supervisor -> celery worker -> DataLoader workers).
        loader_run = browser.post("/api/v1/runs", json={
            "recipe": "slow_regression", "params": {"step_delay": 0.05, "n": 100_000, "num_workers": 2},
            "trainer": {"max_epochs": 1, "log_every_n_steps": 1, "limit_val_batches": 0}}).json()["id"]
        deadline = time.monotonic() + 90
        while True:
            keys = browser.get(f"/api/v1/runs/{loader_run}/metric-keys").json()
            if keys and keys[0]["count"] >= 3:
                break
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.2)
        family = depths(proc.pid)
        assert len(family) >= 6, family  # server, supervisor, 2 celery workers, 2 DataLoader workers
        assert sum(d >= 3 for d in family.values()) >= 2, family
        # migrations run once: by `runyard up` itself; its server is told not to (RUNYARD_MIGRATE=0)
        server_pid = next(pid for pid in family if b"server.cli\x00server" in Path(f"/proc/{pid}/cmdline").read_bytes())
        assert b"RUNYARD_MIGRATE=0" in Path(f"/proc/{server_pid}/environ").read_bytes().split(b"\x00")
    finally:
        browser.close()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output
    assert "demo run" in output and base in output
    assert "created the server admin 'admin'" in output
    assert demo["owner"] == "admin"
    assert output.count("is up to date") == 1, output
    # Ctrl-C during a run: one line says the run was saved and requeued; no Celery traceback,
    # and "stopping" once
    assert "Traceback" not in output and output.count("stopping") == 1, output
    assert f"run {loader_run} saved and requeued" in output, output
    wait_gone(family)
    db = sqlite3.connect(tmp_path / "home" / "runyard.db")
    # A run stopped by the shutdown goes back to the queue (or had finished already) ...
    status = db.execute("select status from runs where id = ?", (demo["id"],)).fetchone()[0]
    assert status in ("queued", "succeeded"), status
    # ... also one whose DataLoader workers were running: they are not killed under it.
    status, attempt, error = db.execute("select status, attempt, error from runs where id = ?",
                                        (loader_run,)).fetchone()
    assert (status, attempt) == ("queued", 0), (status, error, output[-3000:])
    db.close()

    # A second `make run` on the same home submits no new demo run (the requeued runs go on).
    log2 = open(tmp_path / "up2.log", "wb")
    proc = subprocess.Popen([*RUNYARD, "up", "--demo"], env=env, cwd=ROOT, stdout=log2, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "has runs already" not in (tmp_path / "up2.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "up2.log").read_text()
            time.sleep(0.3)
        # the browser's login outlives the restart (sessions are in the database) ...
        with httpx.Client(base_url=base, timeout=10, cookies=browser.cookies) as again:
            assert again.get("/api/v1/runs").json()["total"] == 2
        # ... and the second start prints a new one-time link for the same admin, creates none
        second = (tmp_path / "up2.log").read_text()
        assert "created the server admin" not in second and "log in as admin" in second, second
        new_link = re.search(r"one-time link.*\n\s+(\S+)", second).group(1)
        assert new_link != link
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_submit_wait_follows_the_run_and_reports_failure(sqlite_stack: Stack) -> None:
    # RUNYARD_URL alone finds the server (no RUNYARD_PORT), as it does for workers and RunyardLogger
    env = {k: v for k, v in sqlite_stack.env.items() if k != "RUNYARD_PORT"}
    env.update(RUNYARD_URL=sqlite_stack.base_url, RUNYARD_PUBLIC_URL=sqlite_stack.base_url)
    ok = subprocess.run(
        [*RUNYARD, "submit", "slow_regression", "--param", "n=64", "--trainer", "max_epochs=2", "--wait"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    first = ok.stdout.splitlines()[0]
    assert first.startswith("run ") and "queued: http" in first and sqlite_stack.base_url in first
    assert "succeeded" in ok.stdout

    bad = subprocess.run(
        [*RUNYARD, "submit", "slow_regression", "--param", "fail=true", "--wait"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "failed" in bad.stdout and "this dataset was asked to fail" in bad.stderr

    refused = subprocess.run([*RUNYARD, "submit", "no_such_recipe"], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "422" in refused.stderr
    nowhere = subprocess.run([*RUNYARD, "submit", "slow_regression"], env={**env, "RUNYARD_URL": "http://127.0.0.1:9"},
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert nowhere.returncode == 2 and "RUNYARD_URL" in nowhere.stderr


@pytest.mark.slow
def test_worker_concurrency_runs_two_at_once_and_stops_cleanly(sqlite_stack: Stack) -> None:
    sqlite_stack.kill_workers(signal.SIGTERM)
    log = open(sqlite_stack.logs / "pool.log", "wb")
    proc = subprocess.Popen([*RUNYARD, "worker", "--gpus", "none", "--concurrency", "2"],
                            env={**sqlite_stack.env, **sqlite_stack.worker_env()}, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        sqlite_stack.wait_log("pool", "ready", timeout=90, proc=proc)
        ids = [sqlite_stack.submit("slow_regression", {"step_delay": 0.05, "n": 480}, {"max_epochs": 1})["id"]
               for _ in range(2)]
        deadline = time.monotonic() + 90
        while True:
            runs = [sqlite_stack.run(i) for i in ids]
            if all(r["status"] == "running" for r in runs):
                break
            assert time.monotonic() < deadline and not any(r["status"] in ("failed", "succeeded") for r in runs), runs
            time.sleep(0.1)
        assert runs[0]["worker_host"] != runs[1]["worker_host"]  # two processes, at the same time
        assert {r["device"] for r in runs} == {"cpu"}
        for run_id in ids:
            sqlite_stack.wait_status(run_id, "succeeded", timeout=90)
        children = set(children_of(proc.pid))
        assert len(children) == 2
        # a Celery process that dies is started again by the supervisor
        os.kill(min(children), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (set(children_of(proc.pid)) - children):
            assert time.monotonic() < deadline, "the supervisor did not restart the killed worker"
            time.sleep(0.2)
        family = descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    wait_gone(family)


def _cli(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "RUNYARD_HOME": str(home), **env}
    return subprocess.run([*RUNYARD, *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          input=stdin)


def test_user_and_token_commands(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    home = tmp_path / "home"
    made = _cli(home, "user", "create", "ana", "--admin", "--email", "ana@example.org")
    assert made.returncode == 0, made.stderr
    assert "user ana created (server admin)" in made.stdout and "#/login?link=ryl_" in made.stdout
    assert _cli(home, "user", "create", "ana").returncode == 1  # taken
    assert _cli(home, "user", "create", "ben", "--password-stdin", stdin="short\n").returncode == 1
    assert _cli(home, "user", "create", "ben", "--password-stdin", stdin="a long password\n").returncode == 0
    assert _cli(home, "user", "role", "ben", "vision", "viewer").stdout.startswith("ben in vision: viewer")
    token = _cli(home, "token", "create", "--user", "ben", "--scope", "read", "--name", "ci")
    assert token.returncode == 0 and token.stdout.startswith("ryp_"), token.stderr
    secret = token.stdout.strip()
    listed = _cli(home, "token", "list").stdout
    assert "user ben, read" in listed and secret not in listed
    users_out = _cli(home, "user", "list").stdout
    assert "ana" in users_out and "admin" in users_out and "password" in users_out
    app = create_app(Settings(home=home, reaper=False, broker_url="memory://"))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/api/v1/projects", headers={"Authorization": f"Bearer {secret}"}).json()[0]["role"] == "viewer"
        assert c.post("/api/v1/auth/login", json={"login": "ben", "password": "a long password"}).status_code == 200
        assert _cli(home, "user", "disable", "ben").returncode == 0
        from server.auth import clear_caches

        clear_caches()
        assert c.get("/api/v1/runs").status_code == 401  # the session ended
        assert c.get("/api/v1/runs", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
        assert _cli(home, "user", "enable", "ben").returncode == 0
        assert _cli(home, "user", "reset-password", "ben", "--password-stdin", stdin="another password\n").returncode == 0
        assert c.post("/api/v1/auth/login", json={"login": "ben", "password": "another password"}).status_code == 200
        link = _cli(home, "user", "login-link", "ana").stdout.strip()
        c.cookies.clear()
        assert c.post("/api/v1/auth/link", json={"token": link.split("link=")[1]}).json()["user"]["name"] == "ana"
        assert {"user_created", "user_disabled", "user_enabled", "password_reset", "token_created", "role_changed"} <= {
            e["action"] for e in c.get("/api/v1/audit?limit=1000").json()}


def test_a_server_on_a_public_address_needs_an_admin_first(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    refused = _cli(home, "server", "--host", "0.0.0.0", "--port", str(port))
    assert refused.returncode == 78
    assert "refusing to serve on 0.0.0.0 with no admin account" in refused.stderr
    assert "runyard user create NAME --admin" in refused.stderr and "RUNYARD_ADMIN_PASSWORD" in refused.stderr
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_ADMIN_USER": "root",
           "RUNYARD_ADMIN_PASSWORD": "first password", "RUNYARD_REAPER": "false"}
    proc = subprocess.Popen([*RUNYARD, "server", "--host", "0.0.0.0", "--port", str(port), "--log-level", "warning"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/login", json={"login": "root", "password": "first password"})
        assert r.status_code == 200 and r.json()["user"]["is_admin"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/runs").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_submit_sends_runyard_token(tmp_path: Path) -> None:
    from tests.server.conftest import start_server, stop_server, wait_healthy

    home, port = tmp_path / "home", free_port()
    assert _cli(home, "user", "create", "ana").returncode == 0
    assert _cli(home, "user", "role", "ana", "team", "member").returncode == 0
    secret = _cli(home, "token", "create", "--user", "ana", "--scope", "read+write").stdout.strip()
    proc = start_server(home, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        args = ("submit", "external", "--project", "team", "--name", "from-cli", "--url", base)
        refused = _cli(home, *args, RUNYARD_TOKEN="")
        assert refused.returncode == 2 and "401" in refused.stderr and "Log in" in refused.stderr
        ok = _cli(home, *args, RUNYARD_TOKEN=secret)
        assert ok.returncode == 0, ok.stderr
        run = httpx.get(f"{base}/api/v1/runs", headers={"Authorization": f"Bearer {secret}"}).json()["items"][0]
        assert (run["name"], run["owner"], run["project"]) == ("from-cli", "ana", "team")
    finally:
        stop_server(proc)
