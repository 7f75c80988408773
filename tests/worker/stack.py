"""A real Runyard on one machine for tests: a uvicorn server process and Celery worker
processes (``celery -A worker.celery_app worker --pool solo``), on SQLite + the SQLite broker
or on PostgreSQL + Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(home: Path, data_dir: Path, database_url: str = "", broker_url: str = "", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_") or k == "RUNYARD_REQUIRE_SERVICES"}
    env.update(
        RUNYARD_HOME=str(home),
        RUNYARD_DATA_DIR=str(data_dir),
        RUNYARD_DOWNLOAD_DATA="0",
        RUNYARD_HEARTBEAT_TIMEOUT="3",
        RUNYARD_RECIPES="tests.worker.recipes_for_tests",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["RUNYARD_DATABASE_URL"] = database_url
    if broker_url:
        env["RUNYARD_BROKER_URL"] = broker_url
    env.update(extra)
    return env


class Stack:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env["RUNYARD_PORT"] = str(self.port)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._worker_token: str | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=30)

    def _spawn(self, args: list[str], name: str, env: dict[str, str] | None = None,
               replace_env: bool = False) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")
        full = dict(env or {}) if replace_env else {**self.env, **(env or {})}
        return subprocess.Popen(args, env=full, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_server(self) -> None:
        self.server = self._spawn([sys.executable, "-m", "server.cli", "server", "--port", str(self.port),
                                   "--log-level", "warning"], "server")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"server exited: {self.read_log('server')}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer: {self.read_log('server')}")

    def worker_token(self) -> str:
        """A worker token made with the CLI on the server's side (``runyard token create --worker``)."""
        if self._worker_token is None:
            out = subprocess.run([sys.executable, "-m", "server.cli", "token", "create", "--worker", "--name", "tests"],
                                 env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
            self._worker_token = out.stdout.strip().splitlines()[-1]
        return self._worker_token

    def worker_env(self, home: Path | None = None) -> dict[str, str]:
        """What a worker gets: the server's URL, a worker token and the broker; with ``home`` a
        folder of its own and nothing else of the server's (no database URL)."""
        env = {"CUDA_VISIBLE_DEVICES": "", "RUNYARD_URL": self.base_url, "RUNYARD_TOKEN": self.worker_token()}
        if home is not None:
            env["RUNYARD_HOME"] = str(home)
            env["RUNYARD_BROKER_URL"] = self.broker_url
        return env

    @property
    def broker_url(self) -> str:
        home = Path(self.env["RUNYARD_HOME"]).resolve()
        return self.env.get("RUNYARD_BROKER_URL") or f"sqla+sqlite:///{home / 'broker.db'}"

    def start_worker(self, name: str = "worker", queues: str = "runyard", home: Path | None = None,
                     **extra_env: str) -> subprocess.Popen:
        from server.cli import celery_worker_command

        env = {**self.worker_env(home), **extra_env}
        if home is not None:  # share nothing but the broker and the HTTP port
            env = {k: v for k, v in {**self.env, **env}.items() if k != "RUNYARD_DATABASE_URL"}
        proc = self._spawn(celery_worker_command(queues, f"test-{uuid.uuid4().hex[:6]}", "INFO"), name, env,
                           replace_env=home is not None)
        self.workers.append(proc)
        self.wait_log(name, "runyard worker ready", timeout=120, proc=proc)
        return proc

    def ensure_worker(self) -> None:
        self.workers = [p for p in self.workers if p.poll() is None]
        if not self.workers:
            self.start_worker(f"worker-{uuid.uuid4().hex[:6]}")

    def read_log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.read_log(name):
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {self.read_log(name)[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} never logged {text!r}: {self.read_log(name)[-4000:]}")

    # -- API ----------------------------------------------------------------------------------------
    def submit(self, recipe: str, params: dict | None = None, trainer: dict | None = None, **extra: Any) -> dict:
        response = self.client.post("/api/v1/runs", json={"recipe": recipe, "params": params or {},
                                                          "trainer": trainer or {}, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def run(self, run_id: int) -> dict:
        response = self.client.get(f"/api/v1/runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_status(self, run_id: int, statuses: tuple[str, ...] | str, timeout: float = 60) -> dict:
        statuses = (statuses,) if isinstance(statuses, str) else statuses
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            if run["status"] in FINAL:
                break
            time.sleep(0.1)
        logs = {path.stem: path.read_text(errors="replace")[-3000:] for path in self.logs.glob("*.log")}
        raise AssertionError(f"run {run_id} is {run.get('status')}, expected {statuses}: {run}\n{logs}")

    def metrics(self, run_id: int, keys: str = "") -> dict:
        query = f"?keys={keys}&max_points=100000" if keys else "?max_points=100000"
        return self.client.get(f"/api/v1/runs/{run_id}/metrics{query}").json()["series"]

    def wait_metric(self, run_id: int, key: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            keys = {k["key"]: k for k in self.client.get(f"/api/v1/runs/{run_id}/metric-keys").json()}
            if key in keys and keys[key]["count"] >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} never logged {count} points of {key}: {self.run(run_id)}")

    def wait_last_checkpoint(self, run_id: int, min_step: int, timeout: float = 60) -> dict:
        """The run's checkpoint flagged last, once it is at ``min_step`` or later."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = [c for c in self.client.get(f"/api/v1/runs/{run_id}/checkpoints").json() if c["is_last"]]
            if last and last[0]["step"] >= min_step:
                return last[0]
            time.sleep(0.1)
        logs = {path.stem: path.read_text(errors="replace")[-3000:] for path in self.logs.glob("*.log")}
        raise AssertionError(f"run {run_id} has no checkpoint at step {min_step}: {self.run(run_id)}\n{logs}")

    # -- teardown -----------------------------------------------------------------------------------
    def kill_workers(self, sig: int = signal.SIGKILL) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=60)
        self.workers = []

    def close(self) -> None:
        from server.cli import stop_all

        procs = [p for p in [self.server, *self.workers] if p is not None]
        stop_all(procs, timeout=20)
        self.client.close()
