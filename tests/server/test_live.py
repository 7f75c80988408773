"""Against a real uvicorn process: SSE (with Last-Event-ID), the run list stream, and a
script training with RunyardLogger."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def read_events(lines, want: int, timeout: float = 15.0) -> list[tuple[str, str | None, dict]]:
    events, event, event_id, deadline = [], None, None, time.monotonic() + timeout
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            events.append((event, event_id, json.loads(line[6:])))
            if len(events) >= want:
                break
        if time.monotonic() > deadline:
            break
    return events


def test_sse_metrics_status_and_resume(live_server):
    url, _ = live_server
    with httpx.Client(base_url=url, timeout=30) as c:
        rid = c.post("/api/v1/runs", json={"recipe": "external", "name": "sse"}).json()["id"]
        with c.stream("GET", f"/api/v1/runs/{rid}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            first = read_events(lines, 1)
            assert first[0][0] == "status" and first[0][2]["status"] == "running"

            def post_later():
                time.sleep(0.3)
                c.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "loss", "step": 1, "value": 0.5}]})

            threading.Thread(target=post_later).start()
            started = time.monotonic()
            got = read_events(lines, 1)
            assert got[0][0] == "metrics" and got[0][2]["points"][0]["value"] == 0.5
            assert time.monotonic() - started < 5
            cursor = got[0][1]
        # missed while disconnected: replayed after Last-Event-ID, nothing before it
        c.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "loss", "step": 2, "value": "NaN"}]})
        c.post(f"/api/v1/runs/{rid}/logs", json={"lines": [{"text": "hello"}]})
        c.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
        with c.stream("GET", f"/api/v1/runs/{rid}/events", headers={"Last-Event-ID": cursor}) as response:
            events = read_events(response.iter_lines(), 3)
        kinds = {e[0]: e[2] for e in events}
        assert kinds["metrics"]["points"] == [{**kinds["metrics"]["points"][0], "step": 2, "value": "NaN"}]
        assert kinds["log"]["lines"][0]["text"] == "hello"
        assert kinds["status"]["status"] == "succeeded"
        bad = c.get(f"/api/v1/runs/{rid}/events", headers={"Last-Event-ID": "garbage"})
        assert bad.status_code == 422
        assert c.get("/api/v1/runs/999999/events").status_code == 404


def test_run_list_stream(live_server):
    url, _ = live_server
    with httpx.Client(base_url=url, timeout=30) as c, c.stream("GET", "/api/v1/events") as response:
        def create_later():
            time.sleep(0.5)  # after the stream's first poll
            c.post("/api/v1/runs", json={"recipe": "external", "name": "listed"})

        threading.Thread(target=create_later).start()
        lines = response.iter_lines()
        events = read_events(lines, 1)
        rid = events[0][2]["run"]["id"]
        c.patch(f"/api/v1/runs/{rid}", json={"status": "failed", "error": "boom"})
        events += read_events(lines, 1)
        c.delete(f"/api/v1/runs/{rid}")
        events += read_events(lines, 1)
        assert [(e[0], e[2]["action"]) for e in events] == [("run", "created"), ("run", "updated"), ("run", "deleted")]
        assert events[0][2]["run"]["name"] == "listed"
        assert events[1][2]["run"]["status"] == "failed" and events[1][2]["run"]["error"] == "boom"
        assert events[2][2]["run"]["id"] == events[0][2]["run"]["id"]


SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import trainer_core as L
    from trainer_core.loggers import RunyardLogger

    class Tiny(L.LightningModule):
        def __init__(self, lr=0.05, hidden=4):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    x = torch.randn(64, 2)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    logger = RunyardLogger(url=sys.argv[1], project="scripts", name="tiny", upload_checkpoints=True)
    checkpoint = L.callbacks.ModelCheckpoint(dirpath="ckpts", monitor="train_loss", save_last=True)
    trainer = L.Trainer(max_epochs=3, logger=logger, log_every_n_steps=1, callbacks=[checkpoint],
                        enable_progress_bar=False)
    trainer.fit(Tiny(), data)
    print("RUN", logger.run_id)
''')


def test_runyard_logger_script_shows_up_complete(live_server, tmp_path):
    url, _ = live_server
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rid = int(done.stdout.split("RUN")[-1].strip())
    with httpx.Client(base_url=url, timeout=30) as c:
        run = c.get(f"/api/v1/runs/{rid}").json()
        assert run["status"] == "succeeded" and run["project"] == "scripts" and run["name"] == "tiny"
        assert run["hyperparameters"]["lr"] == 0.05 and run["hyperparameters"]["hidden"] == 4
        summary = c.get(f"/api/v1/runs/{rid}/summary")
        assert summary.status_code == 200 and summary.json()
        series = c.get(f"/api/v1/runs/{rid}/metrics?keys=train_loss").json()["series"]["train_loss"]
        assert series["total_points"] == 24  # 3 epochs x 8 batches, logged every step
        assert len(set(series["steps"])) == 24
        checkpoints = c.get(f"/api/v1/runs/{rid}/checkpoints").json()
        assert checkpoints, "after_save_checkpoint uploaded nothing"
        local = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "ckpts").glob("*.ckpt")}
        newest = checkpoints[-1]
        assert newest["sha256"] in local.values() and newest["is_last"]
        download = c.get(newest["download_url"])
        assert hashlib.sha256(download.content).hexdigest() == newest["sha256"]


def test_runyard_logger_batches_everything(live_server):
    """Direct use of the Logger API: hyperparameters (with NaN), thousands of points in
    batches, summary, final status."""
    url, _ = live_server
    from trainer_core.loggers.runyard import RunyardLogger

    logger = RunyardLogger(url=url, name="direct", flush_interval=0.05)
    logger.log_hyperparams({"a": 1, "nan": float("nan")})
    for step in range(2500):
        logger.log_metrics({"m": step * 0.5, "epoch": 0}, step=step)
    logger.log_model_summary({"total_params": 3})
    logger.finalize("success")
    with httpx.Client(base_url=url, timeout=30) as c:
        rid = logger.run_id
        run = c.get(f"/api/v1/runs/{rid}").json()
        assert run["status"] == "succeeded" and run["hyperparameters"] == {"a": 1, "nan": "NaN"}
        keys = {k["key"]: k for k in c.get(f"/api/v1/runs/{rid}/metric-keys").json()}
        assert keys["m"]["count"] == 2500 and keys["m"]["last_value"] == 2499 * 0.5
        assert c.get(f"/api/v1/runs/{rid}/summary").json() == {"total_params": 3}


def test_runyard_logger_retries_while_server_unreachable(live_server, tmp_path):
    from tests.server.conftest import free_port
    from trainer_core.loggers.runyard import RunyardLogger

    url, _ = live_server
    # save_dir: what cannot be sent meanwhile is spooled in the run's local folder
    logger = RunyardLogger(url=url, name="flaky", flush_interval=0.05, retry_for=30, save_dir=tmp_path)
    rid = logger.run_id
    logger.url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: sends fail and are retried
    for step in range(100):
        logger.log_metrics({"m": float(step)}, step=step)
    time.sleep(1.0)
    logger.url = url  # the server is back
    logger.finalize("success")
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "succeeded"
        assert c.get(f"/api/v1/runs/{rid}/metric-keys").json()[0]["count"] == 100


def test_sigterm_stops_the_server_with_an_open_event_stream(tmp_path):
    import signal

    from tests.server.conftest import free_port

    port = free_port()
    env = {**os.environ, "RUNYARD_HOME": str(tmp_path), "RUNYARD_REAPER": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--port",
                             str(port), "--log-level", "warning"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as c:
            rid = c.post("/api/v1/runs", json={"recipe": "external"}).json()["id"]
            with c.stream("GET", f"/api/v1/runs/{rid}/events") as response:
                assert read_events(response.iter_lines(), 1)[0][0] == "status"
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)  # an open dashboard must not keep the server alive
                assert proc.returncode is not None
    finally:
        if proc.poll() is None:
            proc.kill()


def test_runyard_logger_encoding_matches_the_generic_encoder():
    """The sender's text encoder gives the same points as the dict + json.dumps one, for NaN,
    ±inf, -0.0, tiny/huge floats, ints, bools, tensors, float epochs and values it must skip."""
    import json

    import torch

    from trainer_core.loggers.runyard import _encode_entries, _encode_points, _points_of

    entries = [
        (0, 1.5, {"loss": float("nan"), "up": float("inf"), "down": -float("inf"), "epoch": 0}),
        (1, 2.25, {"loss": -0.0, "tiny": 1e-300, "huge": 1.7e308, "int": 3, "flag": True, "epoch": 1.0}),
        (2, 3.0, {"t": torch.tensor(0.125), "skip": "text", "none": None, 'q"uote': 0.1}),
    ]
    fast = json.loads(_encode_entries(entries))
    generic = json.loads(_encode_points(_points_of(entries)))
    assert fast == generic and len(fast["points"]) == 12
    # a non-string key is sent as its string (the generic encoder sent a number: a 422 for the batch)
    assert json.loads(_encode_entries([(0, 0.0, {7: 2.0})]))["points"][0]["key"] == "7"
    assert fast["points"][0] == {"key": "loss", "value": "NaN", "step": 0, "epoch": 0, "wall_time": 1.5}


def test_runyard_logger_outlives_a_late_start_and_a_restart_of_the_server(tmp_path):
    """The server is started after the logger begins (the run is created once it answers), then
    stopped mid-run and started again on the same port: every point arrives exactly once."""
    import pytest

    from tests.server.conftest import free_port, start_server, stop_server, wait_healthy
    from trainer_core.loggers.runyard import RunyardLogger

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logger = RunyardLogger(url=url, project="flaky", name="restarts", flush_interval=0.05, retry_for=60,
                           save_dir=tmp_path / "logs")
    proc = start_server(tmp_path, port)
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=0.5)  # not up yet: the first sends fail and are retried
        for step in range(50):
            logger.log_metrics({"m": float(step)}, step=step)  # queued; the run is created once the server answers
        assert logger.flush(timeout=30)
        stop_server(proc)
        for step in range(50, 100):  # logged while the server is down
            logger.log_metrics({"m": float(step)}, step=step)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=0.5)
        proc = start_server(tmp_path, port)
        for step in range(100, 150):
            logger.log_metrics({"m": float(step)}, step=step)
        wait_healthy(proc, url)
        logger.finalize("success")
        with httpx.Client(base_url=url, timeout=30) as c:
            rid = logger.run_id
            run = c.get(f"/api/v1/runs/{rid}").json()
            assert run["status"] == "succeeded" and run["project"] == "flaky"
            series = c.get(f"/api/v1/runs/{rid}/metrics?keys=m&max_points=1000").json()["series"]["m"]
            assert series["steps"] == list(range(150)) and series["values"] == [float(s) for s in range(150)]
    finally:
        stop_server(proc)


def test_runyard_logger_flushes_everything_at_finalize(live_server):
    """With a send interval longer than the run, nothing goes out until finalize, which sends it all."""
    from trainer_core.loggers.runyard import RunyardLogger

    url, _ = live_server
    logger = RunyardLogger(url=url, name="flush-at-end", flush_interval=3600)
    for step in range(300):
        logger.log_metrics({"a": step * 1.0, "b": -step * 1.0}, step=step)
    rid = logger.run_id
    with httpx.Client(base_url=url, timeout=30) as c:
        time.sleep(0.2)
        assert c.get(f"/api/v1/runs/{rid}/metric-keys").json() == []  # still buffered
        logger.finalize("success")
        keys = {k["key"]: k for k in c.get(f"/api/v1/runs/{rid}/metric-keys").json()}
        assert keys["a"]["count"] == keys["b"]["count"] == 300 and keys["b"]["last_value"] == -299.0
        assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "succeeded"


def test_runyard_logger_adapts_to_a_lower_server_limit(tmp_path):
    """A server run with RUNYARD_MAX_METRIC_POINTS below the logger's 10,000 answers 413: the
    logger splits its batches instead of dropping them."""
    from tests.server.conftest import free_port, start_server, stop_server, wait_healthy
    from trainer_core.loggers.runyard import RunyardLogger

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(tmp_path, port, RUNYARD_MAX_METRIC_POINTS="50")
    try:
        wait_healthy(proc, url)
        logger = RunyardLogger(url=url, name="small-batches", flush_interval=3600)
        for step in range(300):
            logger.log_metrics({"a": float(step), "b": 1.0}, step=step)
        logger.log_metrics({f"k{i}": float(i) for i in range(120)}, step=300)  # one step over the limit
        logger.finalize("success")
        with httpx.Client(base_url=url, timeout=30) as c:
            keys = {k["key"]: k["count"] for k in c.get(f"/api/v1/runs/{logger.run_id}/metric-keys").json()}
            assert keys["a"] == keys["b"] == 300 and len(keys) == 122 and keys["k119"] == 1
    finally:
        stop_server(proc)
