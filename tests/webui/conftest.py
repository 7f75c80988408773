"""Browser tests: a real uvicorn server (and, where needed, a real Celery worker) in
subprocesses on a temp RUNYARD_HOME, driven by Debian's Chromium through Playwright."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.chromium import chromium_browser, need_chromium

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


class Server:
    """A uvicorn server subprocess plus a tiny JSON client for seeding data."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "RUNYARD_HOME": str(home),
            "RUNYARD_PORT": str(self.port),
            "RUNYARD_HOST": "127.0.0.1",
            "RUNYARD_DATA_DIR": str(home / "datasets"),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen | None = None
        self.log = home / "server.log"

    def start(self, timeout: float = 60) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if self.request("GET", "/healthz", timeout=2).get("status") == "ok":
                    self.publish_recipes()
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy: {self.log.read_text()[-3000:]}")

    def worker_token(self) -> str:
        """A worker token, made as ``runyard token create --worker`` makes it (in the server's database)."""
        if getattr(self, "_worker_token", None) is None:
            from sqlalchemy.orm import Session

            from server.auth import create_token
            from server.db import get_engine
            from server.settings import Settings

            with Session(get_engine(Settings(home=self.home).database_url)) as session:
                self._worker_token = create_token(session, "worker", name="webui tests")[1]
        return self._worker_token

    def publish_recipes(self) -> None:
        """What a worker publishes when it starts, so the new-run form has its schemas before one runs."""
        from worker.recipes import get_registry

        recipes = [r.describe() for r in get_registry("").values()]
        req = urllib.request.Request(self.url + "/api/v1/workers", method="POST", data=json.dumps(
            {"name": "webui-tests-publisher", "queues": ["runyard"], "recipes": recipes}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.worker_token()}"})
        with urllib.request.urlopen(req, timeout=30) as res:
            res.read()

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)

    def kill(self) -> None:
        """Stop at once, like a crash (SIGTERM would wait for open event streams)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body=None,
        timeout: float = 30,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(req, timeout=timeout) as res:
            payload = res.read()
        return json.loads(payload) if payload else None

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body=None):
        return self.request("POST", path, body if body is not None else {})

    def external_run(self, name: str, project: str = "default", params: dict | None = None) -> dict:
        return self.post(
            "/api/v1/runs", {"recipe": "external", "name": name, "project": project, "params": params or {}}
        )

    def log_points(self, run_id: int, points: list[dict]) -> None:
        for i in range(0, len(points), 10_000):
            self.post(f"/api/v1/runs/{run_id}/metrics", {"points": points[i : i + 10_000]})


class Worker:
    """One real Celery worker process (solo pool), as `runyard worker` starts it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.proc: subprocess.Popen | None = None
        self.log = server.home / "worker.log"

    def start(self) -> Worker:
        from server.cli import celery_worker_command

        env = {
            **self.server.env,
            "CUDA_VISIBLE_DEVICES": "",
            "RUNYARD_WORKER_SLOT": "cpu0",
            "RUNYARD_WORKER_NAME": "webui-test/cpu0",
            "RUNYARD_URL": self.server.url,
            "RUNYARD_TOKEN": self.server.worker_token(),
        }
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            celery_worker_command("runyard", "webui-cpu0", "WARNING"),
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, timeout=20)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return need_chromium()


@pytest.fixture(scope="session")
def browser(chromium_path):
    with chromium_browser(chromium_path) as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("runyard-home")).start()
    yield s
    s.stop()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1440, "height": 900}, accept_downloads=True
    )
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# Every drawn plotly chart is as wide as its box (they follow a reflow through a ResizeObserver
# with a 50 ms debounce), and its drawing is done.
CHARTS_SETTLED = """() => [...document.querySelectorAll('.js-plotly-plot')].every((el) => el.offsetParent === null
  || !el._fullLayout || Math.abs(el._fullLayout.width - el.clientWidth) <= 1)"""


def settle(page) -> None:
    """Wait for the charts to follow the layout and for two painted frames (a condition, not a
    fixed time): what a screenshot or a look at the layout needs."""
    page.wait_for_function(CHARTS_SETTLED)
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def screenshot(page, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.mouse.move(0, 0)  # no hover labels or plotly mode bars in the picture
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar belongs at the top of a full-page shot
    settle(page)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_status(page, status: str, timeout: float = 60_000) -> None:
    page.locator(f".run-title .badge[data-status='{status}']").wait_for(timeout=timeout)
