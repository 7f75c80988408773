"""Issue 10 in RunyardLogger, against a real uvicorn server: the reproducibility record
(``PUT /runs/{id}/environment``), the ``system/*`` series, ``RUNYARD_CAPTURE=0`` and the
auto-attached logger of a worker's code run (``RUNYARD_AUTO_LOGGER=1``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest
import torch

import trainer_core as L
from tests.helpers.live_server import Proxy, script_env
from tests.server.conftest import free_port
from tests.trainer_core.test_runyard_logger import SCRIPT_HEAD, Tiny, loader, metric_count, trainer_for
from trainer_core import seed as seed_module
from trainer_core.loggers.runyard import RunyardLogger, sync_spool

REPO = Path(__file__).resolve().parents[2]
SYSTEM_KEYS = {"system/cpu_percent", "system/ram_percent", "system/ram_used_gb", "system/process_rss_mb"}


# --------------------------------------------------------------------------- fixtures and helpers


# server_home, server, api and proxy: tests/trainer_core/conftest.py


@pytest.fixture
def project():
    return f"env-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RUNYARD_") or name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(seed_module, "_LAST_SEED", None)


def quick_logger(url: str, project: str, save_dir: Path, **kw) -> RunyardLogger:
    """A RunyardLogger of a new run that sends at once (every 0.05 s) and does not heartbeat."""
    return RunyardLogger(url=url, project=project, save_dir=save_dir, flush_interval=0.05, heartbeat_interval=0, **kw)


def wait_for(predicate, timeout: float = 60.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def environment_of(api: httpx.Client, run_id: int) -> dict:
    r = api.get(f"/runs/{run_id}/environment")
    assert r.status_code == 200, (
        f"GET /runs/{run_id}/environment answered {r.status_code}: {r.text[:300]} (is the route of "
        "docs/code-runs.md in the server yet?)"
    )
    return r.json()


def keys_of(api: httpx.Client, run_id: int) -> dict[str, int]:
    return {k["key"]: k["count"] for k in api.get(f"/runs/{run_id}/metric-keys").json()}


def series(api: httpx.Client, run_id: int, key: str) -> dict:
    body = api.get(f"/runs/{run_id}/metrics", params={"keys": key, "max_points": 100000}).json()
    return body["series"][key]


class OlderServer(Proxy):
    """The proxy, answering ``PUT /runs/{id}/environment`` as a server from before issue 10 does
    (its JSON 404 for a path it has no route for); everything else goes to the real server."""

    def __init__(self, target_url: str) -> None:
        super().__init__(target_url)
        self.refused = 0

    def _serve(self, conn):
        conn.settimeout(30)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    conn.close()
                    return
                data += chunk
        except OSError:
            conn.close()
            return
        method, target = data.split(b"\r\n", 1)[0].decode().split(" ")[:2]
        if method == "PUT" and target.split("?")[0].endswith("/environment"):
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(1 << 20)
            path = target.split("?")[0]
            answer = json.dumps({"detail": f"There is no {path}; see /docs for the API."}).encode()
            self.requests.append((time.time(), method, path))
            self.refused += 1
            conn.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(answer)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + answer
            )
            conn.close()
            return
        # everything else: as the plain proxy does, from the bytes read so far
        Proxy._serve(self, _Replay(conn, data))


class _Replay:
    """A socket whose first recv() gives back what was read already."""

    def __init__(self, conn, first: bytes) -> None:
        self._conn, self._first = conn, first

    def recv(self, n: int) -> bytes:
        if self._first:
            out, self._first = self._first, b""
            return out
        return self._conn.recv(n)

    def __getattr__(self, name):
        return getattr(self._conn, name)


# --------------------------------------------------------------------------- the environment record


def test_the_environment_record_reaches_the_run(server, api, project, tmp_path):
    L.seed_everything(1234)
    logger = quick_logger(server, project, tmp_path, system_metrics=False)
    trainer_for(logger, max_epochs=1).fit(Tiny(), loader())
    run_id = logger.run_id
    assert api.get(f"/runs/{run_id}").json()["status"] == "succeeded"
    got = environment_of(api, run_id)
    record = got["record"]
    assert got["updated_at"]
    assert record["seed"] == 1234 and record["command"] == list(sys.orig_argv)
    assert (
        record["python"] == ".".join(map(str, sys.version_info[:3]))
        and record["executable"] == sys.executable
    )
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["packages"]["torch"] and record["packages"]["psutil"]
    assert record["cwd"] == os.getcwd() and record["hostname"] and "time" in record
    assert record.get("git", {}).get("commit") is None or len(record["git"]["commit"]) == 40
    assert logger._sender.stats["environment"] == 1  # the seed did not change: sent once


def test_a_changed_seed_sends_the_record_again(server, proxy, api, project, tmp_path, monkeypatch):
    logger = quick_logger(proxy.url, project, tmp_path, system_metrics=False, capture=False)
    logger.log_metrics({"x": 1.0}, step=0)  # starts it: create, then the record (no seed yet)
    assert logger.flush(timeout=30)
    assert environment_of(api, logger.run_id)["record"]["seed"] is None
    L.seed_everything(77)
    logger.log_hyperparams({"lr": 0.1})  # the trainer's fit start: the seed changed, the record goes again
    logger.log_hyperparams({"lr": 0.1})  # unchanged since: not again
    logger.log_model_summary({"layers": []})
    assert logger.flush(timeout=30)
    assert environment_of(api, logger.run_id)["record"]["seed"] == 77
    assert len(proxy.paths("PUT", r"/environment$")) == 2
    # a worker unpacked the run's code meanwhile: its git record goes too, at the next fit start
    code = tmp_path / "code"
    (code / ".runyard").mkdir(parents=True)
    (code / ".runyard" / "git.json").write_text(
        json.dumps({"commit": "c" * 40, "branch": "b", "remote": None, "dirty": False})
    )
    monkeypatch.setenv("RUNYARD_CODE_DIR", str(code))
    logger.log_hyperparams({"lr": 0.1})
    assert logger.flush(timeout=30)
    record = environment_of(api, logger.run_id)["record"]
    assert record["git"]["commit"] == "c" * 40 and record["seed"] == 77
    logger.finalize("success")
    assert len(proxy.paths("PUT", r"/environment$")) == 3


def test_an_older_server_without_the_route_is_warned_about_once(server, api, project, tmp_path, caplog):
    older = OlderServer(server)
    try:
        logger = quick_logger(older.url, project, tmp_path, system_metrics=False, capture=False)
        with caplog.at_level(logging.WARNING, logger="trainer_core.loggers.runyard"):
            logger.log_metrics({"x": 1.0}, step=0)
            assert logger.flush(timeout=30)
            L.seed_everything(5)
            logger.log_hyperparams({"lr": 0.5})
            logger.log_metrics({"x": 2.0}, step=1)
            logger.finalize("success")
        assert older.refused == 2
        warnings = [r.getMessage() for r in caplog.records if "environment" in r.getMessage()]
        assert len(warnings) == 1 and "keeps no environment records" in warnings[0], warnings
        run = api.get(f"/runs/{logger.run_id}").json()
        assert run["status"] == "succeeded" and run["hyperparameters"] == {"lr": 0.5}
        assert metric_count(api, logger.run_id, "x") == 2 and logger._sender.dead is None
    finally:
        older.close()


def test_the_record_and_system_samples_are_spooled_offline_and_synced(server, api, project, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    L.seed_everything(9)
    logger = quick_logger(dead, project, tmp_path, retry_for=0.5, system_metrics=0.05, capture=False)
    for step in range(20):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    wait_for(
        lambda: logger._sampler is not None and logger._sampler.samples >= 3, what="three system samples"
    )
    logger.finalize("success")
    spool = Path(logger.spool_path)
    ops = [json.loads(line).get("op") for line in spool.read_text().splitlines()]
    assert ops[:3] == ["spool", "create", "environment"] and ops[-1] == "finish"
    env_rec = next(
        json.loads(line) for line in spool.read_text().splitlines() if '"op":"environment"' in line
    )
    assert env_rec["body"]["seed"] == 9 and env_rec["body"]["packages"]
    summary = sync_spool(logger.log_dir, url=server)
    run_id = summary["runs"][0]["run_id"]
    assert summary["runs"][0]["finished"] == "succeeded" and summary["runs"][0]["dropped"] == 0, summary
    assert environment_of(api, run_id)["record"]["seed"] == 9
    keys = keys_of(api, run_id)
    assert keys["loss"] == 20 and SYSTEM_KEYS <= set(keys) and keys["system/ram_percent"] >= 3


# --------------------------------------------------------------------------- system metrics


def test_system_metrics_are_series_of_their_own(server, api, project, tmp_path):
    """Sampled while a fit runs: ``system/*`` keys, step = sample number 0..n-1, wall time = when
    sampled; the trainer's own steps are untouched."""
    logger = quick_logger(server, project, tmp_path, system_metrics=0.05)

    class WaitForSamples(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:  # the sampler runs beside training
                wait_for(lambda: logger._sampler.samples >= 4, what="four system samples during the fit")

    started = time.time()
    trainer_for(logger, max_epochs=2, callbacks=[WaitForSamples()]).fit(Tiny(), loader())
    run_id = logger.run_id
    keys = keys_of(api, run_id)
    assert SYSTEM_KEYS <= set(keys), keys
    assert not any(k.startswith("system/gpu") for k in keys)  # no GPU here: absent, not faked
    n = keys["system/ram_percent"]
    assert n >= 4 and all(keys[k] == n for k in SYSTEM_KEYS - {"system/cpu_percent"})
    ram = series(api, run_id, "system/ram_percent")
    assert ram["steps"] == list(range(n))
    assert all(0 < v < 100 for v in ram["values"])
    rss = series(api, run_id, "system/process_rss_mb")
    assert all(50 < v < 100_000 for v in rss["values"])
    assert all(started - 1 <= t <= time.time() + 1 for t in ram["wall_times"])
    assert ram["wall_times"] == sorted(ram["wall_times"])
    loss = series(api, run_id, "train_loss")
    assert loss["steps"] == list(range(16))  # 8 batches x 2 epochs, log_every_n_steps=1
    assert logger._sampler is None  # stopped at the end of the run


def test_the_environment_turns_off_capture_and_system_metrics(server, api, project, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNYARD_CAPTURE", "0")
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS", "0")
    before = sys.stdout
    logger = quick_logger(server, project, tmp_path, capture=True, system_metrics=0.05)
    assert not logger.capture and logger.system_metrics_interval == 0
    logger.log_metrics({"x": 1.0}, step=0)
    assert sys.stdout is before and logger._sampler is None
    print("not captured")
    logger.finalize("success")
    assert api.get(f"/runs/{logger.run_id}/logs", params={"tail": 100}).json()["lines"] == []
    assert set(keys_of(api, logger.run_id)) == {"x"}
    monkeypatch.delenv("RUNYARD_SYSTEM_METRICS")
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS_INTERVAL", "0")
    assert RunyardLogger(url=server, save_dir=tmp_path, heartbeat_interval=0).system_metrics_interval == 0
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS_INTERVAL", "2.5")
    assert RunyardLogger(url=server, save_dir=tmp_path, heartbeat_interval=0).system_metrics_interval == 2.5


# --------------------------------------------------------------------------- auto-attach


@pytest.fixture(scope="module")
def worker_token(server, server_home):
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "token", "create", "--worker", "--name", "env-tests"],
        cwd=REPO,
        env={**os.environ, "RUNYARD_HOME": str(server_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    recipe = {"name": "env_tests_recipe", "description": "", "params_schema": {}, "trainer_schema": {}}
    r = httpx.post(
        f"{server}/api/v1/workers",
        json={"name": "env-tests", "queues": ["runyard"], "recipes": [recipe]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return token


def claimed_run(server: str, worker_token: str) -> tuple[int, str]:
    """A queued run claimed as a worker claims it: its id and its run token."""
    with httpx.Client(base_url=server + "/api/v1", timeout=30) as c:
        run = c.post("/runs", json={"recipe": "env_tests_recipe"}).json()
        r = c.post(
            f"/runs/{run['id']}/claim",
            json={"worker": "env-tests", "device": "cpu"},
            headers={"Authorization": f"Bearer {worker_token}"},
        )
        assert r.status_code == 200, r.text
        return run["id"], r.json()["token"]


def run_script_env(url: str, run_id: int, run_token: str, run_dir: Path, **extra: str) -> dict[str, str]:
    """A script's environment as a code run's process gives it to its child (worker/code.py
    child_env): the run's URL, token, id and folder, the auto-attached logger, no capture."""
    return script_env(
        RUNYARD_URL=url,
        RUNYARD_TOKEN=run_token,
        RUNYARD_RUN_ID=str(run_id),
        RUNYARD_RUN_DIR=str(run_dir),
        RUNYARD_AUTO_LOGGER="1",
        RUNYARD_CAPTURE="0",
        **extra,
    )


AUTO_SCRIPT = SCRIPT_HEAD + textwrap.dedent("""
    import json
    from trainer_core.loggers import CSVLogger

    class Tested(Tiny):
        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    L.seed_everything(31)
    kinds = {}
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=1, enable_progress_bar=False)
    kinds["default"] = [type(lg).__name__ for lg in trainer.loggers]
    trainer.fit(Tested(), data)
    csv = CSVLogger(sys.argv[1], name="csv")
    second = L.Trainer(logger=csv, enable_progress_bar=False)
    kinds["explicit"] = [type(lg).__name__ for lg in second.loggers]
    kinds["shared"] = second.loggers[1] is trainer.loggers[0] is RunyardLogger.auto()
    second.test(trainer.lightning_module, data)
    kinds["off"] = [type(lg).__name__ for lg in L.Trainer(logger=False).loggers]
    kinds["fast_dev_run"] = [type(lg).__name__ for lg in L.Trainer(fast_dev_run=True).loggers]
    mine = RunyardLogger()  # attached to the same run, given by the script itself: not doubled
    kinds["own"] = [type(lg).__name__ for lg in L.Trainer(logger=[mine]).loggers]
    mine.close()
    print("KINDS " + json.dumps(kinds), flush=True)
""")


def test_a_script_s_trainer_reports_into_the_run_without_code_changes(server, api, worker_token, tmp_path):
    run_id, run_token = claimed_run(server, worker_token)
    script = tmp_path / "train.py"
    script.write_text(AUTO_SCRIPT)
    run_dir = tmp_path / f"run-{run_id}"
    env = run_script_env(server, run_id, run_token, run_dir, RUNYARD_SYSTEM_METRICS_INTERVAL="0.05")
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "csv")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    kinds = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("KINDS "))[6:])
    assert kinds == {
        "default": ["RunyardLogger"],
        "explicit": ["CSVLogger", "RunyardLogger"],
        "shared": True,
        "off": [],
        "fast_dev_run": ["DummyLogger"],
        "own": ["RunyardLogger"],
    }
    keys = keys_of(api, run_id)
    assert keys["train_loss"] == 16 and keys["test_loss"] == 1, keys
    assert SYSTEM_KEYS <= set(keys)
    assert list((tmp_path / "csv" / "csv").glob("version_*/metrics.csv"))  # the explicit logger got its share
    run = api.get(f"/runs/{run_id}").json()
    assert run["status"] == "running"  # attached: the run process finishes it, not the script
    assert run["hyperparameters"] == {"lr": 0.05}
    assert api.get(f"/runs/{run_id}/logs", params={"tail": 100}).json()["lines"] == []  # RUNYARD_CAPTURE=0
    record = environment_of(api, run_id)["record"]
    assert record["seed"] == 31 and record["command"][-2:] == [str(script), str(tmp_path / "csv")]
    assert record["cwd"] == str(tmp_path)


OFFLINE_SCRIPT = textwrap.dedent("""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import trainer_core as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    x = torch.randn(32, 2)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    L.Trainer(max_epochs=1, log_every_n_steps=1, enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False).fit(Tiny(), data)
""")


def test_an_offline_script_and_its_run_process_spool_apart_and_sync_together(
    server, api, worker_token, tmp_path
):
    """The run process (attached, in this test) and its child script (auto-attached) both lose the
    server: each keeps its own spool in the run folder, and one ``runyard sync RUN_DIR`` sends both,
    the script's points before the run process's final status."""
    run_id, run_token = claimed_run(server, worker_token)
    dead = f"http://127.0.0.1:{free_port()}"
    run_dir = tmp_path / f"run-{run_id}"
    owner = RunyardLogger(
        url=dead,
        run_id=run_id,
        token=run_token,
        save_dir=run_dir,
        heartbeat_interval=0,
        capture=False,
        system_metrics=False,
        retry_for=0.5,
        environment=False,
    )
    owner.log_metrics({"owner": 1.0}, step=0)
    script = tmp_path / "train.py"
    script.write_text(OFFLINE_SCRIPT)
    env = run_script_env(
        dead, run_id, run_token, run_dir, RUNYARD_SYSTEM_METRICS="0", RUNYARD_HEARTBEAT_INTERVAL="0"
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not owner.finish("succeeded")  # offline: left in the spool
    spools = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("spool.jsonl"))
    assert len(spools) == 2 and spools[1] == "spool.jsonl" and spools[0].startswith("script-spool-"), spools
    summary = sync_spool(run_dir, url=server, token=run_token)
    assert [r["finished"] for r in summary["runs"]] == [None, "succeeded"], summary
    assert not list(run_dir.rglob("spool.jsonl"))
    keys = keys_of(api, run_id)
    assert keys["train_loss"] == 4 and keys["owner"] == 1
    assert api.get(f"/runs/{run_id}").json()["status"] == "succeeded"
    assert environment_of(api, run_id)["record"]["command"][-1] == str(script)


def test_without_the_switch_the_default_logger_is_lightnings(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNYARD_RUN_ID", "12345")  # a run id alone does not change the default
    trainer = L.Trainer(default_root_dir=tmp_path, enable_progress_bar=False)
    assert [type(lg).__name__ for lg in trainer.loggers] in (["TensorBoardLogger"], ["CSVLogger"])
    monkeypatch.setenv("RUNYARD_AUTO_LOGGER", "1")
    monkeypatch.delenv("RUNYARD_RUN_ID")
    trainer = L.Trainer(default_root_dir=tmp_path, enable_progress_bar=False)
    assert [type(lg).__name__ for lg in trainer.loggers] in (["TensorBoardLogger"], ["CSVLogger"])
    with pytest.raises(ValueError, match="RUNYARD_RUN_ID"):
        RunyardLogger.auto()
