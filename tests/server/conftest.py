"""Server test fixtures: a database per backend (SQLite always, PostgreSQL when reachable),
an app client per backend, and a real uvicorn process."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need_service, port_open

warnings.filterwarnings("ignore", category=DeprecationWarning)
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[2]


def _pg_available() -> bool:
    return bool(os.environ.get("RUNYARD_TEST_DATABASE_URL")) or port_open("127.0.0.1", 5432)


@pytest.fixture(scope="session")
def pg_url():
    need_service("PostgreSQL", _pg_available(), "set RUNYARD_TEST_DATABASE_URL or start one on 127.0.0.1:5432")
    import psycopg

    admin = os.environ.get("RUNYARD_TEST_DATABASE_URL") or PG_ADMIN_URL
    name = f"runyard_test_{secrets.token_hex(4)}"
    admin_conninfo = admin.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = admin_conninfo.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    yield url
    from server.db import dispose_engine

    dispose_engine(url)
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request, tmp_path_factory):
    if request.param == "sqlite":
        home = tmp_path_factory.mktemp("sqlite-home")
        return request.param, f"sqlite:///{home / 'runyard.db'}", home
    url = request.getfixturevalue("pg_url")
    return request.param, url, tmp_path_factory.mktemp("pg-home")


@pytest.fixture(scope="module")
def app_settings(backend):
    from server.settings import Settings

    _, url, home = backend
    # Redis as the broker: queued runs are sent to a real queue (db 15, no worker consumes it).
    broker = "redis://127.0.0.1:6379/15" if port_open("127.0.0.1", 6379) else ""
    return Settings(home=home, database_url=url, broker_url=broker, reaper=False, sse_poll_interval=0.05)


@pytest.fixture(scope="module")
def client(app_settings):
    from fastapi.testclient import TestClient

    from server.app import create_app

    with TestClient(create_app(app_settings), raise_server_exceptions=False) as c:
        publish_builtin_recipes(c)
        yield c


def worker_token(app) -> str:
    """A worker token made the way ``runyard token create --worker`` makes it."""
    from server.auth import create_token

    session = app.state.sessionmaker()
    try:
        return create_token(session, "worker", name="tests")[1]
    finally:
        session.close()


def publish_builtin_recipes(client, name: str = "test-worker", queues: tuple[str, ...] = ("runyard",)) -> str:
    """Publish the built-in recipes as a worker does when it starts; returns the worker token."""
    from worker.recipes import get_registry

    token = worker_token(client.app)
    recipes = [r.describe() for r in get_registry("").values()]
    r = client.post("/api/v1/workers", json={"name": name, "queues": list(queues), "recipes": recipes},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, **env: str) -> subprocess.Popen:
    """``uvicorn server.app:create_app --factory`` on ``home`` (SQLite) and ``port``; returns at once."""
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_PORT": str(port), "RUNYARD_REAPER": "false",
           "RUNYARD_SSE_POLL_INTERVAL": "0.1", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {proc.stdout.read().decode(errors='replace')}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"uvicorn did not answer /healthz within {timeout:g} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving(home: Path, **env: str) -> Iterator[str]:
    """A real server process on ``home`` (SQLite there) while the block runs; yields its URL."""
    port = free_port()
    proc = start_server(home, port, **env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """A real ``uvicorn server.app:create_app --factory`` process on SQLite."""
    home = tmp_path_factory.mktemp("live-home")
    with serving(home) as url:
        yield url, home
