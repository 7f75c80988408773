"""RunyardLogger and trainer_core.client against a real uvicorn server process.

A small TCP proxy (tests/helpers/live_server.py) between the logger and the server records each
request and can drop an answer (the request reaches the server and is stored, the client sees the
connection close), hang (accept, never answer: a server that is down the slow way) or forward.
The server, ``api`` and ``proxy`` fixtures are tests/trainer_core/conftest.py's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from tests.helpers.live_server import script_env
from tests.server.conftest import free_port, start_server, stop_server, wait_healthy
from trainer_core.callbacks import ModelCheckpoint
from trainer_core.client import ApiError, Client, Unreachable
from trainer_core.loggers.runyard import RunyardLogger, sync_spool

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def project():
    return f"t-{uuid.uuid4().hex[:8]}"


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader() -> DataLoader:
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def trainer_for(logger, **kw) -> L.Trainer:
    kw.setdefault("max_epochs", 3)
    return L.Trainer(logger=logger, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                     **kw)


def runs_in(api: httpx.Client, project: str) -> list[dict]:
    return api.get("/runs", params={"project": project, "limit": 100}).json()["items"]


def metric_count(api: httpx.Client, run_id: int, key: str) -> int:
    keys = {k["key"]: k["count"] for k in api.get(f"/runs/{run_id}/metric-keys").json()}
    return keys.get(key, 0)


def log_texts(api: httpx.Client, run_id: int) -> list[tuple[str, str]]:
    lines = api.get(f"/runs/{run_id}/logs", params={"tail": 10000}).json()["lines"]
    return [(ln["stream"], ln["text"]) for ln in lines]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SCRIPT_HEAD = textwrap.dedent('''
    import sys, time
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import trainer_core as L
    from trainer_core.loggers import RunyardLogger

    class Tiny(L.LightningModule):
        def __init__(self, lr=0.05):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(2, 1)

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
''')


# --------------------------------------------------------------------------- the client


def test_client_errors_carry_the_servers_sentence_and_never_the_token(server):
    secret = "s3cr3t-token-value"
    with pytest.raises(ApiError) as info:
        Client(server, token=secret, timeout=5).request("GET", "/runs")
    assert info.value.status == 401 and info.value.detail.startswith("The token is unknown")
    assert secret not in str(info.value) and secret not in repr(Client(server, token=secret))
    client = Client(server, token="", timeout=5)
    with pytest.raises(ApiError) as info:
        client.request("GET", "/runs/987654321")
    assert info.value.status == 404 and "987654321" in info.value.detail and not info.value.route_missing
    with pytest.raises(ApiError) as info:
        client.request("POST", "/runs/1/no-such-endpoint", json={})
    assert info.value.route_missing
    dead = Client(f"http://127.0.0.1:{free_port()}", token=secret, timeout=1)
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        dead.request("GET", "/runs", retry_for=0.5)
    assert time.monotonic() - started < 5 and secret not in str(info.value)
    assert client.request("GET", "/healthz")["status"] == "ok"  # outside /api/v1
    run = client.request("POST", "/runs", json={"recipe": "external", "hyperparameters": {"x": float("nan")}})
    assert run["hyperparameters"] == {"x": "NaN"}


def test_client_upload_and_download_roundtrip(server, tmp_path):
    client = Client(server, timeout=10)
    run = client.request("POST", "/runs", json={"recipe": "external"})
    src = tmp_path / "big.ckpt"
    src.write_bytes(os.urandom((8 << 20) + 12345))  # two chunks
    checkpoint = client.upload_file(run["id"], src, {"epoch": 1, "step": 7, "is_last": True})
    assert checkpoint["sha256"] == sha(src) and checkpoint["size"] == src.stat().st_size
    assert checkpoint["path"] == f"{run['id']}/checkpoints/big.ckpt" and checkpoint["is_last"]
    # the same bytes again: the registered checkpoint, no second one
    again = client.upload_file(run["id"], src, {"epoch": 1, "step": 7})
    assert again["id"] == checkpoint["id"]
    dest = tmp_path / "down" / "copy.ckpt"
    client.download(checkpoint["download_url"], dest)
    assert sha(dest) == sha(src) and not list(dest.parent.glob(".*part"))
    from trainer_core.client import ChecksumMismatch

    with pytest.raises(ChecksumMismatch):
        client.download(checkpoint["download_url"], tmp_path / "bad.ckpt", sha256="0" * 64)
    assert not (tmp_path / "bad.ckpt").exists()


# --------------------------------------------------------------------------- lost answers


def test_a_retry_after_a_lost_answer_stores_nothing_twice(server, proxy, api, project, tmp_path):
    """Each kind of write loses its first answer once: the run, a metric batch, a log-line batch,
    a chunk of the checkpoint upload and the final status still arrive exactly once."""
    proxy.drop_answer("POST", r"^/api/v1/runs$")
    proxy.drop_answer("POST", r"/metrics$")
    proxy.drop_answer("POST", r"/logs$")
    proxy.drop_answer("PUT", r"^/api/v1/uploads/")
    proxy.drop_answer("POST", r"/finish$")
    logger = RunyardLogger(url=proxy.url, project=project, name="lost-answers", save_dir=tmp_path,
                           flush_interval=0.05, heartbeat_interval=0)
    logger.log_hyperparams({"lr": 0.1})
    for step in range(500):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    print("line-A from stdout")
    print("line-B from stderr", file=sys.stderr)
    ckpt = tmp_path / "epoch=0-step=500.ckpt"
    ckpt.write_bytes(os.urandom((8 << 20) + 999))  # two chunks: the first PUT's answer is lost
    logger.upload_checkpoint(ckpt, step=500, epoch=0, is_last=True)
    logger.finalize("success")
    assert set(proxy.dropped) == {r"^/api/v1/runs$", r"/metrics$", r"/logs$", r"^/api/v1/uploads/", r"/finish$"}
    runs = runs_in(api, project)
    assert len(runs) == 1 and runs[0]["id"] == logger.run_id
    run = runs[0]
    assert run["status"] == "succeeded" and run["hyperparameters"] == {"lr": 0.1}
    assert metric_count(api, run["id"], "loss") == 500
    texts = log_texts(api, run["id"])
    assert texts.count(("stdout", "line-A from stdout")) == 1
    assert texts.count(("stderr", "line-B from stderr")) == 1
    checkpoints = api.get(f"/runs/{run['id']}/checkpoints").json()
    assert [(c["filename"], c["sha256"], c["step"]) for c in checkpoints] == [(ckpt.name, sha(ckpt), 500)]
    assert not Path(logger.spool_path).exists()


# --------------------------------------------------------------------------- offline


def test_server_down_at_start_training_does_not_wait_then_everything_arrives_once(server, proxy, api, project,
                                                                                   tmp_path):
    proxy.set_mode("hang")  # connections are taken and never answered
    logger = RunyardLogger(url=proxy.url, project=project, name="offline-start", save_dir=tmp_path, timeout=2,
                           retry_for=1, flush_interval=0.05, heartbeat_interval=0.5)

    class Clock(L.Callback):
        def __init__(self):
            self.ends = []

        def on_train_batch_end(self, *args):
            self.ends.append(time.perf_counter())

    started = time.perf_counter()
    logger.log_metrics({"warmup": 1.0}, step=0)  # the first call starts the logger
    first_call = time.perf_counter() - started
    clock = Clock()
    trainer = trainer_for(logger, callbacks=[clock])
    started = time.perf_counter()
    trainer.fit(Tiny(), loader())
    fit_time = time.perf_counter() - started
    assert first_call < 0.1, first_call
    assert clock.ends[-1] - clock.ends[0] < 1.5  # 24 steps, none of them waiting on the network
    # only the end of fit waits: at most one request timeout plus retry_for, then the spool
    assert fit_time < 2 + 1 + 3, fit_time
    spool = Path(logger.spool_path)
    assert spool.parent == Path(logger.log_dir).resolve() and spool.is_file()
    records = [json.loads(line) for line in spool.read_text().splitlines()]
    kinds = Counter(r["op"] for r in records)
    assert records[0]["op"] == "spool" and records[1]["op"] == "create", kinds
    assert kinds["create"] == 1 and kinds["hparams"] == 1 and kinds["finish"] == 1 and kinds["metrics"] >= 1, kinds
    assert kinds["checkpoint"] >= 1
    assert runs_in(api, project) == []
    # the server answers again: the spool goes out in order, once
    proxy.set_mode("forward")
    assert logger.flush(timeout=60)
    runs = runs_in(api, project)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["hyperparameters"]["lr"] == 0.05
    rid = runs[0]["id"]
    assert metric_count(api, rid, "train_loss") == 24 and metric_count(api, rid, "warmup") == 1
    local = {p.name: sha(p) for p in (Path(logger.log_dir) / "checkpoints").glob("*.ckpt")}
    remote = {c["filename"]: c["sha256"] for c in api.get(f"/runs/{rid}/checkpoints").json()}
    assert remote == local and local
    assert not spool.exists()
    logger.close()


SYNC_SCRIPT = SCRIPT_HEAD + textwrap.dedent('''
    class Chatty(Tiny):
        def on_train_start(self):
            print("hello from an offline script")
            print("and from its stderr", file=sys.stderr)

    logger = RunyardLogger(url=sys.argv[1], project=sys.argv[2], name="offline-script", save_dir=sys.argv[3],
                           timeout=1, retry_for=0.5)
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Chatty(), data)
    print("FOLDER", logger.log_dir, flush=True)
''')


def test_sync_spool_uploads_a_run_that_ended_offline(server, api, project, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SYNC_SCRIPT)
    logs = tmp_path / "logs"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the whole run is spooled
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), dead, project, str(logs)], capture_output=True, text=True,
                          timeout=180, env=script_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 60
    folder = Path(done.stdout.split("FOLDER")[-1].strip())
    assert (folder / "spool.jsonl").is_file() and runs_in(api, project) == []
    kept = tmp_path / "spool-copy.jsonl"
    shutil.copy(folder / "spool.jsonl", kept)

    summary = sync_spool(logs, url=server)  # a folder above the run's folder works too
    assert len(summary["runs"]) == 1
    one = summary["runs"][0]
    assert one["created"] and one["finished"] == "succeeded" and one["points"] >= 16 and one["dropped"] == 0
    assert "synced 1 spool" in str(summary)
    runs = runs_in(api, project)
    assert len(runs) == 1 and runs[0]["id"] == one["run_id"] and runs[0]["status"] == "succeeded"
    rid = one["run_id"]
    assert metric_count(api, rid, "train_loss") == 16
    texts = log_texts(api, rid)
    assert ("stdout", "hello from an offline script") in texts and ("stderr", "and from its stderr") in texts
    local = {p.name: sha(p) for p in (folder / "checkpoints").glob("*.ckpt")}
    assert {c["filename"]: c["sha256"] for c in api.get(f"/runs/{rid}/checkpoints").json()} == local and local
    assert not (folder / "spool.jsonl").exists()
    assert str(sync_spool(logs, url=server)).startswith("nothing to sync")
    # the same through the CLI, which finds the server by RUNYARD_URL
    cli = subprocess.run([sys.executable, "-m", "server.cli", "sync", str(logs)], capture_output=True, text=True,
                         timeout=120, env=script_env(RUNYARD_URL=server), cwd=REPO)
    assert cli.returncode == 0 and "runyard sync: nothing to sync" in cli.stdout, cli.stdout + cli.stderr

    # the same spool sent again (e.g. a sync interrupted after its records reached the server): nothing twice
    shutil.copy(kept, folder / "spool.jsonl")
    again = sync_spool(folder, url=server)["runs"][0]
    assert again["run_id"] == rid and again["duplicates"] >= 2 and again["points"] == 0
    assert len(runs_in(api, project)) == 1 and metric_count(api, rid, "train_loss") == 16
    assert log_texts(api, rid).count(("stdout", "hello from an offline script")) == 1
    assert len(api.get(f"/runs/{rid}/checkpoints").json()) == len(local)


# --------------------------------------------------------------------------- capture, failure, heartbeats


def test_stdout_and_stderr_become_log_lines(server, api, project, tmp_path):
    class Chatty(Tiny):
        def training_step(self, batch, batch_idx):
            if batch_idx == 0:
                print(f"epoch {self.current_epoch} starts")
                print(f"a warning at epoch {self.current_epoch}", file=sys.stderr)
            return super().training_step(batch, batch_idx)

    before = sys.stdout, sys.stderr
    logger = RunyardLogger(url=server, project=project, save_dir=tmp_path, flush_interval=0.05)
    trainer_for(logger, max_epochs=2).fit(Chatty(), loader())
    assert (sys.stdout, sys.stderr) == before  # put back at the end
    texts = log_texts(api, logger.run_id)
    assert ("stdout", "epoch 0 starts") in texts and ("stdout", "epoch 1 starts") in texts
    assert ("stderr", "a warning at epoch 1") in texts


def test_an_exception_in_training_step_is_the_runs_error_with_its_traceback(server, api, project, tmp_path):
    class Boom(Tiny):
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise ValueError("boom at step 3")
            return super().training_step(batch, batch_idx)

    logger = RunyardLogger(url=server, project=project, save_dir=tmp_path, flush_interval=0.05)
    with pytest.raises(ValueError, match="boom at step 3"):
        trainer_for(logger).fit(Boom(), loader())
    run = api.get(f"/runs/{logger.run_id}").json()
    assert run["status"] == "failed"
    assert run["error"].startswith("ValueError: boom at step 3\n\nTraceback (most recent call last):")
    assert "in training_step" in run["error"] and 'raise ValueError("boom at step 3")' in run["error"]
    assert metric_count(api, run["id"], "train_loss") == 3  # what was logged before the failure


HEARTBEAT_SCRIPT = textwrap.dedent('''
    import sys, time
    from trainer_core.loggers.runyard import RunyardLogger

    logger = RunyardLogger(url=sys.argv[1], project=sys.argv[2], save_dir=sys.argv[3], heartbeat_interval=0.2,
                           flush_interval=0.1)
    print("RUN", logger.run_id, flush=True)
    step = 0
    while True:
        logger.log_metrics({"x": float(step)}, step=step)
        step += 1
        time.sleep(0.01)
''')


def test_a_script_killed_with_sigkill_stops_heartbeating(server, proxy, api, project, tmp_path):
    script = tmp_path / "beat.py"
    script.write_text(HEARTBEAT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), proxy.url, project, str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
                            cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("RUN "), line + proc.stderr.read()
        rid = int(line.split()[1])
        pattern = rf"^/api/v1/runs/{rid}/heartbeat$"
        deadline = time.monotonic() + 30
        while len(proxy.paths("POST", pattern)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        beats = proxy.paths("POST", pattern)
        assert len(beats) >= 5
        gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:], strict=False)]
        assert 0.1 < sorted(gaps)[len(gaps) // 2] < 0.6  # every ~0.2 s
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(1.5)  # seven heartbeat intervals
    assert [b for b in proxy.paths("POST", pattern) if b[0] > killed + 0.3] == []
    assert api.get(f"/runs/{rid}").json()["status"] == "running"  # the server's reaper decides (lead's tests)


def test_heartbeat_answers_set_cancel_and_a_409_sets_lost(server, api, project, tmp_path):
    logger = RunyardLogger(url=server, project=project, save_dir=tmp_path, heartbeat_interval=0.1, capture=False)
    rid = logger.run_id
    assert not logger.stop_requested.is_set()
    assert api.post(f"/runs/{rid}/cancel", json={}).status_code == 200
    assert logger.cancel_requested.wait(10) and logger.stop_requested.is_set() and not logger.lost.is_set()
    logger.finalize("interrupted")
    assert api.get(f"/runs/{rid}").json()["status"] == "cancelled"

    other = api.post("/runs", json={"recipe": "external", "project": project}).json()
    attached = RunyardLogger(url=server, run_id=other["id"], save_dir=tmp_path / "attached", heartbeat_interval=0.1,
                             capture=False)
    attached.log_metrics({"x": 1.0}, step=0)
    assert api.post(f"/runs/{other['id']}/finish", json={"status": "failed", "error": "taken away"}).status_code == 200
    assert attached.lost.wait(10) and attached.stop_requested.is_set()
    attached.close()


# --------------------------------------------------------------------------- checkpoints and folders


def test_checkpoints_are_uploaded_by_default_into_the_runs_folder_and_two_runs_get_two_folders(server, api, project,
                                                                                              tmp_path):
    def fit_one():
        logger = RunyardLogger(url=server, project=project, save_dir=tmp_path, flush_interval=0.05)
        checkpoint = ModelCheckpoint(monitor="train_loss", save_top_k=2, save_last=True)  # no dirpath
        trainer = trainer_for(logger, max_epochs=4, callbacks=[checkpoint])
        trainer.fit(Tiny(), loader())
        return logger, checkpoint, trainer

    first, second = fit_one(), fit_one()
    assert first[0].log_dir != second[0].log_dir and first[0].run_id != second[0].run_id
    for logger, checkpoint, trainer in (first, second):
        folder = Path(logger.log_dir)
        assert folder.parent == tmp_path / project and re.fullmatch(r"run-[0-9a-f]{8}", logger.version)
        assert trainer.log_dir == logger.log_dir
        assert Path(checkpoint.dirpath) == (folder / "checkpoints").resolve()
        local = {p.name: sha(p) for p in (folder / "checkpoints").glob("*.ckpt")}
        assert len(local) == 3  # top 2 + last: the others were rotated out ...
        remote = api.get(f"/runs/{logger.run_id}/checkpoints").json()
        assert {c["filename"]: c["sha256"] for c in remote} == local  # ... and deleted on the server too
        assert all(c["path"] == f"{logger.run_id}/checkpoints/{c['filename']}" for c in remote)
        assert [c["filename"] for c in remote if c["is_last"]] == ["last.ckpt"]
        assert [c["filename"] for c in remote if c["is_best"]] == [Path(checkpoint.best_model_path).name]
        named = {c["filename"]: c for c in remote}
        best = named[Path(checkpoint.best_model_path).name]
        assert best["monitor"] == "train_loss" and best["step"] == int(re.search(r"step=(\d+)", best["filename"])[1])
        assert best["epoch"] == int(re.search(r"epoch=(\d+)", best["filename"])[1])


def test_fit_then_test_on_a_run_the_logger_created(server, api, project, tmp_path):
    """The trainer finalizes after each entry point: fit sets the status, test's metrics still arrive."""

    class Tested(Tiny):
        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    before = sys.stdout
    logger = RunyardLogger(url=server, project=project, save_dir=tmp_path, flush_interval=0.05)
    trainer = trainer_for(logger, max_epochs=1)
    model = Tested()
    trainer.fit(model, loader())
    assert api.get(f"/runs/{logger.run_id}").json()["status"] == "succeeded"
    trainer.test(model, loader(), verbose=False)
    assert sys.stdout is before
    assert metric_count(api, logger.run_id, "test_loss") == 1
    assert api.get(f"/runs/{logger.run_id}").json()["status"] == "succeeded"


def test_attached_run_keeps_order_and_is_finished_by_its_owner(server, proxy, api, tmp_path):
    """A worker's run process: attached by run_id, finalize only flushes, finish sets the status;
    the points logged before a resume checkpoint are on the server before it is registered,
    even with a send interval longer than the run."""
    run = api.post("/runs", json={"recipe": "external"}).json()
    folder = tmp_path / f"run-{run['id']}"
    logger = RunyardLogger(url=proxy.url, run_id=run["id"], save_dir=folder, flush_interval=3600,
                           heartbeat_interval=0, capture=False)
    assert logger.log_dir == str(folder) and logger.run_id == run["id"]
    for step in range(100):
        logger.log_metrics({"loss": float(step)}, step=step)
    (folder / "checkpoints").mkdir(parents=True)
    resume = folder / "checkpoints" / "last-epoch=0-step=100.ckpt"
    resume.write_bytes(b"resume state")
    logger.upload_checkpoint(resume, step=100, epoch=0, resumable=True, is_last=True)
    for step in range(100, 150):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.finalize("success")
    assert api.get(f"/runs/{run['id']}").json()["status"] == "running"
    assert metric_count(api, run["id"], "loss") == 150
    order = [r[2].rsplit("/", 1)[-1] for r in proxy.requests if r[1] == "POST"]
    assert order == ["metrics", "uploads", "metrics"], order
    checkpoint = api.get(f"/runs/{run['id']}/checkpoints").json()[0]
    assert checkpoint["resumable"] and checkpoint["is_last"] and checkpoint["step"] == 100
    assert logger.finish("succeeded")
    assert api.get(f"/runs/{run['id']}").json()["status"] == "succeeded"


def test_log_metrics_stays_a_deque_append(server, api, tmp_path):
    """The hot path sends nothing from the training thread: every request goes out from the
    sender thread, and every point still arrives. (Its cost per call is measured by
    ``bench/tracking.py``, not asserted here: a timed assertion fails on a loaded machine.)"""
    logger = RunyardLogger(url=server, save_dir=tmp_path, flush_interval=3600, capture=False, heartbeat_interval=0)
    logger.log_metrics({"warm": 1.0}, step=0)
    sent_from: list[str] = []
    send = logger._sender.send

    def recording_send(rec):
        sent_from.append(threading.current_thread().name)
        return send(rec)

    logger._sender.send = recording_send
    caller = threading.current_thread().name
    metrics = {"train_loss": 0.5, "lr": 0.01}
    for step in range(20_000):
        logger.log_metrics(metrics, step=step)
    during = list(sent_from)  # 40,000 points: the sender was woken to send full requests meanwhile
    logger.finalize("success")
    assert caller not in during
    assert metric_count(api, logger.run_id, "train_loss") == 20_000


def test_the_servers_reaper_fails_a_killed_script_as_crashed(tmp_path):
    """Point 8: a script killed mid-run is marked failed (crashed) after the heartbeat timeout,
    instead of staying running forever (a server whose one reaper runs, timeout 1 s)."""
    port = free_port()
    proc = start_server(tmp_path / "home", port, RUNYARD_REAPER="true", RUNYARD_HEARTBEAT_TIMEOUT="1")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        script = tmp_path / "beat.py"
        script.write_text(HEARTBEAT_SCRIPT)
        child = subprocess.Popen([sys.executable, str(script), url, "crashes", str(tmp_path / "logs")],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=script_env(),
                                 cwd=tmp_path)
        rid = int(child.stdout.readline().split()[1])
        with httpx.Client(base_url=url + "/api/v1", timeout=30) as api:
            deadline = time.monotonic() + 30
            while metric_count(api, rid, "x") < 20:  # alive and reporting, past several heartbeat timeouts
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert api.get(f"/runs/{rid}").json()["status"] == "running"
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            deadline = time.monotonic() + 30
            while (run := api.get(f"/runs/{rid}").json())["status"] == "running":
                assert time.monotonic() < deadline, run
                time.sleep(0.1)
            assert run["status"] == "failed" and run["error"].startswith("crashed"), run
    finally:
        stop_server(proc)


def test_the_epoch_an_epoch_end_logs_again_is_stored_once(server, api, project, tmp_path):
    """Lightning adds ``epoch`` to every log_metrics call, so the last step of an epoch logs it
    with its step metrics and again with its epoch metrics: one point per (key, step) is stored."""

    class EpochLogged(Tiny):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss_epoch_mean", loss, on_step=False, on_epoch=True)
            return loss

    logger = RunyardLogger(url=server, project=project, save_dir=tmp_path, flush_interval=0.05)
    trainer_for(logger, max_epochs=3).fit(EpochLogged(), loader())
    series = api.get(f"/runs/{logger.run_id}/metrics", params={"keys": "epoch", "max_points": 10000}).json()
    steps = series["series"]["epoch"]["steps"]
    assert len(steps) == len(set(steps)) and len(steps) == 24  # 8 steps per epoch, 3 epochs
    assert series["series"]["epoch"]["values"][-1] == 2
    assert metric_count(api, logger.run_id, "loss_epoch_mean") == 3
