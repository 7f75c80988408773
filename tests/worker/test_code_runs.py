"""Code runs on a real server and a real Celery worker: the tutorial's autoencoder
(tests/helpers/autoencoder_project) uploaded as a snapshot and run the three ways (a
LightningModule + DataModule, a LightningCLI script, a plain command); a failing and a cancelled
command; requirements installed offline from a wheel the test builds, reused, and refused; and the
worker's own path checks when it unpacks a snapshot (tar-slip)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.worker.stack import Stack

PROJECT = Path(__file__).resolve().parents[1] / "helpers" / "autoencoder_project"
TRAINER = {"max_steps": 6, "limit_val_batches": 2, "limit_test_batches": 2, "log_every_n_steps": 1}
MODULE = {"kind": "module", "model": "pkg/models.py:LitAutoEncoder", "data": "pkg/data.py:MNISTData"}
CLI = {"kind": "cli", "script": "cli_train.py", "subcommand": "fit"}
COMMAND = {"kind": "command", "command": ["python", "train.py"]}


# --------------------------------------------------------------------------- helpers


def copy_project(tmp_path: Path, name: str = "proj") -> Path:
    folder = tmp_path / name
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder


def upload(stack: Stack, folder: Path, project: str) -> dict[str, Any]:
    from server import snapshots

    packed = snapshots.pack(folder)
    response = stack.client.put(
        f"/api/v1/snapshots/{packed.sha256}",
        params={"project": project},
        content=packed.data,
        headers={"Content-Type": "application/gzip"},
    )
    assert response.status_code in (200, 201), response.text
    snapshot = response.json()
    assert snapshot["sha256"] == packed.sha256
    return snapshot


def submit_code(
    stack: Stack,
    snapshot: dict[str, Any],
    entry: dict[str, Any],
    params: dict | None = None,
    trainer: dict | None = None,
    project: str | None = None,
) -> dict[str, Any]:
    return stack.submit(
        "code",
        params or {},
        trainer or {},
        project=project or snapshot["project"],
        code={"snapshot_id": snapshot["id"], "entry": entry},
    )


def logs(stack: Stack, run_id: int) -> list[dict[str, Any]]:
    return stack.client.get(f"/api/v1/runs/{run_id}/logs?tail=2000").json()["lines"]


def log_text(stack: Stack, run_id: int) -> str:
    return "\n".join(line["text"] for line in logs(stack, run_id))


def code_schema(stack: Stack, run_id: int) -> dict[str, Any]:
    response = stack.client.get(f"/api/v1/runs/{run_id}/code-schema")
    assert response.status_code == 200, response.text
    return response.json()


def wait_log(stack: Stack, run_id: int, pattern: str, timeout: float = 60) -> re.Match:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log_text(stack, run_id))
        if match:
            return match
        assert stack.run(run_id)["status"] in ("queued", "running"), (
            stack.run(run_id),
            log_text(stack, run_id),
        )
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never logged {pattern!r}: {log_text(stack, run_id)[-3000:]}")


def check_trained(stack: Stack, run_id: int, steps: int) -> None:
    series = stack.metrics(run_id, "train_loss")
    assert len(series["train_loss"]["steps"]) == steps, series
    checkpoints = stack.client.get(f"/api/v1/runs/{run_id}/checkpoints").json()
    assert checkpoints and all(c["size"] > 0 and len(c["sha256"]) == 64 for c in checkpoints), checkpoints


def living_in_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run (a zombie nobody has reaped yet does not:
    in a container the orphaned grandchild's new parent may never reap it)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def build_wheel(folder: Path, name: str, version: str = "0.1", body: str = "VALUE = 42\n") -> Path:
    """A pure-python wheel, made by hand (no network, no build backend): one module + dist-info."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": body.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: runyard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


# --------------------------------------------------------------------------- pure helpers


def test_command_options_and_schemas() -> None:
    from worker.code import command_argv, command_schema, config_schema, options_argv

    params = {"--lr": "0.01", "--fast": True, "--quiet": False, "--layers": ["1", "2"], "-n": 3}
    assert options_argv(params) == ["--lr", "0.01", "--fast", "--layers", "1", "2", "-n", "3"]
    import sys

    assert command_argv(["python", "train.py"], {"--lr": "0.01"}) == [
        sys.executable,
        "train.py",
        "--lr",
        "0.01",
    ]
    assert command_argv(["./run.sh"], {})[0] == "./run.sh"
    schema = command_schema({"--lr": "0.01", "--fast": True})
    assert schema["properties"] == {
        "--lr": {"type": "string", "default": "0.01"},
        "--fast": {"type": "boolean", "default": True},
    }
    schema = config_schema(
        {
            "seed_everything": True,
            "trainer": {"max_steps": -1, "precision": None},
            "model": {"lr": 0.001, "name": "x", "sizes": [1, 2]},
        }
    )
    assert schema["type"] == "object"
    assert schema["properties"]["seed_everything"] == {"type": "boolean", "default": True}
    trainer = schema["properties"]["trainer"]
    assert trainer["type"] == "object" and trainer["properties"]["max_steps"] == {
        "type": "integer",
        "default": -1,
    }
    assert trainer["properties"]["precision"] == {"default": None}  # any type
    model = schema["properties"]["model"]["properties"]
    assert model["lr"] == {"type": "number", "default": 0.001} and model["sizes"]["type"] == "array"


class _FakeClient:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def download(self, path: str, dest: Path, sha256: str | None = None) -> Path:
        Path(dest).write_bytes(self.data)
        return Path(dest)


class _FakeLogger:
    def __init__(self, data: bytes) -> None:
        self.client = _FakeClient(data)


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"pwned\n"


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    "members",
    [
        [_file("ok.py"), _file("../escaped.txt")],
        [_file("pkg/../../escaped.txt")],
        [_file("/tmp/runyard-tar-slip-absolute.txt")],
        [_link("out", ".."), _file("out/escaped.txt")],
        [_link("out", "/tmp")],
        [_link("hard", "../escaped.txt", tarfile.LNKTYPE)],
        [_file("a\\..\\..\\escaped.txt")],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-then-file", "symlink-out", "hardlink", "backslash"],
)
def test_the_worker_refuses_a_snapshot_that_writes_outside_its_folder(tmp_path: Path, members: list) -> None:
    """Point 7: whatever the server let through, the run's process unpacks only inside RUN_DIR/code."""
    from worker.code import CodeRunError, fetch_snapshot

    run_dir = tmp_path / "work" / "run-1-attempt-1"
    run_dir.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(CodeRunError, match="snapshot 7 was refused"):
        fetch_snapshot(_FakeLogger(_tar(*members)), {"snapshot_id": 7, "sha256": None}, run_dir)
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(p.is_relative_to(run_dir) for p in created), created
    assert not (tmp_path / "work" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/runyard-tar-slip-absolute.txt").exists()
    assert not (run_dir / "code").exists(), "a refused snapshot leaves no half-unpacked folder"
    assert not (run_dir / "snapshot.tar.gz").exists()


def test_a_snapshot_that_is_no_tar_gz_fails_with_a_clear_message(tmp_path: Path) -> None:
    from worker.code import CodeRunError, fetch_snapshot

    with pytest.raises(CodeRunError, match="snapshot 3 was refused"):
        fetch_snapshot(_FakeLogger(b"not a tarball"), {"snapshot_id": 3}, tmp_path)


class _RunLogger:
    """What supervise() reads of the run's RunyardLogger."""

    def __init__(self) -> None:
        import threading

        self.stop_requested = threading.Event()
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()


def _supervise_in_thread(argv: list[str], tmp_path: Path, logger: _RunLogger) -> dict[str, Any]:
    import threading

    from worker.code import supervise

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["status"] = supervise(argv, tmp_path, dict(os.environ), logger)
        except Exception as exc:  # the test reads it
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    result["thread"] = thread
    return result


def _wait_file(path: Path, timeout: float = 30) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_warm_shutdown_stops_a_command_for_a_requeue_and_sigkill_follows_a_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import time

    from worker.control import WORKER_SHUTDOWN

    monkeypatch.setenv("RUNYARD_STOP_GRACE", "0.5")
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "time.sleep(300)\n"
    )
    logger = _RunLogger()
    ready = tmp_path / "pid"
    result = _supervise_in_thread([sys.executable, str(stubborn), str(ready)], tmp_path, logger)
    pid = int(_wait_file(ready))
    started = time.monotonic()
    WORKER_SHUTDOWN.set()
    try:
        result["thread"].join(30)
    finally:
        WORKER_SHUTDOWN.clear()
    assert result.get("status") == "requeued", result
    assert time.monotonic() - started < 10
    assert living_in_group(pid) == []

    # a cancel ends it as cancelled; exit 0 on SIGTERM changes nothing
    polite = tmp_path / "polite.py"
    polite.write_text(
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "time.sleep(300)\n"
    )
    logger = _RunLogger()
    ready = tmp_path / "pid2"
    result = _supervise_in_thread([sys.executable, str(polite), str(ready)], tmp_path, logger)
    pid = int(_wait_file(ready))
    logger.cancel_requested.set()
    logger.stop_requested.set()
    result["thread"].join(30)
    assert result.get("status") == "cancelled", result
    assert living_in_group(pid) == []


# --------------------------------------------------------------------------- real runs

slow = pytest.mark.slow


@slow
def test_module_entry_point_trains_with_its_own_schema(
    sqlite_stack: Stack, small_mnist: Path, tmp_path: Path
) -> None:
    project = f"code-module-{uuid.uuid4().hex[:6]}"
    snapshot = upload(sqlite_stack, copy_project(tmp_path), project)

    # A refused submission still records the schema (the server had none to check it against).
    bad = submit_code(sqlite_stack, snapshot, MODULE, {"lr": "fast", "data_dir": str(small_mnist)}, TRAINER)
    failed = sqlite_stack.wait_status(bad["id"], "failed", timeout=120)
    assert "do not fit pkg/models.py:LitAutoEncoder" in failed["error"] and "lr" in failed["error"], failed[
        "error"
    ]
    schema = code_schema(sqlite_stack, bad["id"])
    fields = schema["params_schema"]["properties"]
    assert {"lr", "hidden", "latent", "data_dir", "batch_size", "val_fraction"} <= set(fields), fields
    assert fields["lr"]["type"] == "number" and fields["lr"]["default"] == 1e-3
    assert fields["hidden"]["type"] == "integer" and fields["hidden"]["default"] == 64
    assert "max_steps" in schema["trainer_schema"]["properties"]

    params = {"lr": 0.01, "hidden": 16, "data_dir": str(small_mnist)}
    run = submit_code(sqlite_stack, snapshot, MODULE, params, TRAINER)
    done = sqlite_stack.wait_status(run["id"], "succeeded", timeout=120)
    assert done["code"]["snapshot_id"] == snapshot["id"] and done["code"]["entry"]["kind"] == "module"
    check_trained(sqlite_stack, run["id"], TRAINER["max_steps"])
    assert "test_loss" in sqlite_stack.metrics(run["id"])  # the datamodule has a test set: tested too
    text = log_text(sqlite_stack, run["id"])
    assert "code pkg/models.py:LitAutoEncoder" in text and "unpacked into" in text
    hparams = sqlite_stack.client.get(f"/api/v1/runs/{run['id']}/hyperparameters").json()
    assert hparams.get("hidden") == 16, hparams


@slow
def test_lightning_cli_entry_point(sqlite_stack: Stack, small_mnist: Path, tmp_path: Path) -> None:
    snapshot = upload(sqlite_stack, copy_project(tmp_path), f"code-cli-{uuid.uuid4().hex[:6]}")
    config = {
        "trainer": {**TRAINER, "enable_progress_bar": False},
        "model": {"lr": 0.01, "hidden": 16},
        "data": {"data_dir": str(small_mnist)},
    }
    run = submit_code(sqlite_stack, snapshot, CLI, config)
    sqlite_stack.wait_status(run["id"], "succeeded", timeout=120)
    check_trained(sqlite_stack, run["id"], TRAINER["max_steps"])

    schema = code_schema(sqlite_stack, run["id"])["params_schema"]
    model = schema["properties"]["model"]["properties"]
    assert model["lr"] == {"type": "number", "default": 0.001} and model["hidden"] == {
        "type": "integer",
        "default": 64,
    }
    assert schema["properties"]["data"]["properties"]["data_dir"]["default"] == "./data"
    assert "max_steps" in schema["properties"]["trainer"]["properties"]
    assert "runyard_config.yaml" in log_text(sqlite_stack, run["id"])


@slow
def test_command_entry_point_gets_a_logger_without_code_changes(
    sqlite_stack: Stack, small_mnist: Path, tmp_path: Path
) -> None:
    snapshot = upload(sqlite_stack, copy_project(tmp_path), f"code-cmd-{uuid.uuid4().hex[:6]}")
    params = {"--lr": "0.01", "--hidden": "16", "--max-steps": "6", "--data-dir": str(small_mnist)}
    run = submit_code(sqlite_stack, snapshot, COMMAND, params)
    sqlite_stack.wait_status(run["id"], "succeeded", timeout=120)
    check_trained(sqlite_stack, run["id"], 6)
    lines = logs(sqlite_stack, run["id"])
    texts = [line["text"] for line in lines]
    assert "train.py: lr=0.01 max_steps=6" in texts and "train.py: done" in texts, texts[-30:]
    schema = code_schema(sqlite_stack, run["id"])["params_schema"]
    assert schema["properties"]["--lr"] == {"type": "string", "default": "0.01"}

    # exit 3: failed, with the exit code and the end of stderr
    failing = submit_code(sqlite_stack, snapshot, COMMAND, {"--fail-with": "3"})
    failed = sqlite_stack.wait_status(failing["id"], "failed", timeout=120)
    assert "exited with code 3" in failed["error"] and "train.py: failing on purpose" in failed["error"], (
        failed
    )
    stderr = [line for line in logs(sqlite_stack, failing["id"]) if line["stream"] == "stderr"]
    assert any("failing on purpose" in line["text"] for line in stderr), stderr


@slow
def test_cancel_stops_the_command_and_its_process_group(sqlite_stack: Stack, tmp_path: Path) -> None:
    folder = copy_project(tmp_path)
    # a command that starts a grandchild in its group: both must go
    (folder / "sleeper.py").write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        "print(f'sleeper: grandchild {child.pid}', flush=True)\n"
        "time.sleep(300)\n"
    )
    snapshot = upload(sqlite_stack, folder, f"code-cancel-{uuid.uuid4().hex[:6]}")
    run = submit_code(sqlite_stack, snapshot, {"kind": "command", "command": ["python", "sleeper.py"]})
    pid = int(wait_log(sqlite_stack, run["id"], r"\(pid (\d+), its own process group\)").group(1))
    grandchild = int(wait_log(sqlite_stack, run["id"], r"sleeper: grandchild (\d+)").group(1))
    assert os.getpgid(pid) == pid and os.getpgid(grandchild) == pid
    response = sqlite_stack.client.post(f"/api/v1/runs/{run['id']}/cancel", json={})
    assert response.status_code == 200, response.text
    cancelled = sqlite_stack.wait_status(run["id"], "cancelled", timeout=30)
    assert cancelled["error"] is None
    assert living_in_group(pid) == [], "the command's process group outlived the cancel"
    for gone in (pid, grandchild):
        assert gone not in living_in_group(pid)


@slow
def test_requirements_are_installed_offline_reused_and_refused(sqlite_stack: Stack, tmp_path: Path) -> None:
    name = f"runyard_tinydep_{uuid.uuid4().hex[:8]}"
    folder = copy_project(tmp_path)
    build_wheel(folder / "wheels", name, body="VALUE = 42\n")
    (folder / "requirements.txt").write_text(f"--no-index\n--find-links wheels\n{name}==0.1\ntorch\n")
    (folder / "uses_dep.py").write_text(f"import {name}, sys\nprint('dep says', {name}.VALUE, sys.prefix)\n")
    project = f"code-req-{uuid.uuid4().hex[:6]}"
    snapshot = upload(sqlite_stack, folder, project)
    entry = {"kind": "command", "command": ["python", "uses_dep.py"]}

    first = submit_code(sqlite_stack, snapshot, entry)
    sqlite_stack.wait_status(first["id"], "succeeded", timeout=180)
    text = log_text(sqlite_stack, first["id"])
    assert re.search(r"\[runyard\] requirements: installed in [\d.]+ s", text), text[-3000:]
    assert "Requirement already satisfied: torch" in text  # the worker's torch, not installed again
    env_prefix = re.search(r"dep says 42 (\S+)", text).group(1)
    assert Path(env_prefix).parent.name == "envs"

    # the same requirements: the env is reused (here by a module run, which imports it in-process)
    (folder / "pkg" / "dep_model.py").write_text(
        f"import {name}\nfrom .models import LitAutoEncoder\n\n\n"
        f"class DepModel(LitAutoEncoder):\n    VALUE = {name}.VALUE\n"
    )
    snapshot2 = upload(sqlite_stack, folder, project)
    assert snapshot2["id"] != snapshot["id"]
    module = {"kind": "module", "model": "pkg/dep_model.py:DepModel", "data": "pkg/data.py:MNISTData"}
    params = {"data_dir": sqlite_stack.env["RUNYARD_DATA_DIR"], "hidden": 8}
    second = submit_code(sqlite_stack, snapshot2, module, params, {**TRAINER, "max_steps": 2})
    sqlite_stack.wait_status(second["id"], "succeeded", timeout=180)
    text = log_text(sqlite_stack, second["id"])
    assert f"[runyard] requirements: reusing env {Path(env_prefix).name}" in text, text[-3000:]

    # an unsatisfiable requirement fails the run with pip's own message
    (folder / "requirements.txt").write_text("--no-index\nrunyard-no-such-package==9.9.9\n")
    snapshot3 = upload(sqlite_stack, folder, project)
    third = submit_code(sqlite_stack, snapshot3, entry)
    failed = sqlite_stack.wait_status(third["id"], "failed", timeout=180)
    assert "Installing requirements.txt failed" in failed["error"], failed["error"]
    assert "runyard-no-such-package==9.9.9" in failed["error"], failed["error"]
    assert "No matching distribution" in failed["error"] or "Could not find a version" in failed["error"], (
        failed
    )


@slow
def test_a_code_runs_command_holds_only_its_run_token(sqlite_stack: Stack, tmp_path: Path) -> None:
    # Point 7: the user's code sees no broker, database or worker credential, and its token is the
    # run's: it may write its own run, and nothing else (another project's run is invisible).
    folder = copy_project(tmp_path)
    (folder / "probe.py").write_text(
        "import json, os, sys, urllib.request, urllib.error\n"
        "env = dict(os.environ)\n"
        "def call(method, path, body=None):\n"
        "    req = urllib.request.Request(env['RUNYARD_URL'] + path, method=method,\n"
        "        data=None if body is None else json.dumps(body).encode(),\n"
        "        headers={'Authorization': 'Bearer ' + env['RUNYARD_TOKEN'], 'Content-Type': 'application/json'})\n"
        "    try:\n"
        "        with urllib.request.urlopen(req) as r:\n"
        "            return r.status\n"
        "    except urllib.error.HTTPError as e:\n"
        "        return e.code\n"
        "run = env['RUNYARD_RUN_ID']\n"
        "print('probe: ' + json.dumps({'names': sorted(k for k in env if k.startswith(('RUNYARD_', 'CELERY', 'AWS_'))),\n"
        "    'token': env['RUNYARD_TOKEN'][:4], 'values': list(env.values()),\n"
        "    'own': call('POST', f'/api/v1/runs/{run}/logs', {'lines': [{'stream': 'stdout', 'text': 'x'}]}),\n"
        "    'submit': call('POST', '/api/v1/runs', {'recipe': 'external'}),\n"
        "    'other': call('GET', '/api/v1/runs/' + sys.argv[2]),\n"
        "    'list': call('GET', '/api/v1/runs')}), flush=True)\n"
    )
    other = sqlite_stack.submit("external", project=f"other-{uuid.uuid4().hex[:6]}")
    snapshot = upload(sqlite_stack, folder, f"code-probe-{uuid.uuid4().hex[:6]}")
    run = submit_code(sqlite_stack, snapshot, {"kind": "command", "command": ["python", "probe.py"]},
                      {"--other": str(other["id"])})
    sqlite_stack.wait_status(run["id"], "succeeded", timeout=120)
    import json

    line = next(t for t in log_text(sqlite_stack, run["id"]).splitlines() if t.startswith("probe: "))
    seen = json.loads(line.removeprefix("probe: "))
    assert not {"RUNYARD_BROKER_URL", "RUNYARD_DATABASE_URL", "RUNYARD_ARTIFACT_URL"} & set(seen["names"]), seen
    assert not [n for n in seen["names"] if n.startswith(("CELERY_BROKER", "CELERY_RESULT", "AWS_"))], seen
    assert seen["token"] == "ryr_", seen  # the run token, not the worker's ryw_
    assert sqlite_stack.worker_token() not in seen["values"]
    assert sqlite_stack.env.get("RUNYARD_BROKER_URL", "\0") not in seen["values"]
    assert seen["own"] in (200, 201), seen
    assert seen["submit"] in (401, 403) and seen["list"] in (401, 403), seen
    assert seen["other"] in (403, 404), (seen, other["id"])
