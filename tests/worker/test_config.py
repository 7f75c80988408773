"""What the worker really runs with: Celery's effective settings, the processes `runyard worker`
starts (GPU pinning, queues), the device a run reports, the demo submission, output capture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server import cli
from server.settings import Settings
from tests.worker.stack import ROOT, stack_env


def test_the_worker_process_runs_with_late_acks_reject_on_lost_and_prefetch_1(tmp_path: Path) -> None:
    script = """
import json
from worker.celery_app import app
from worker.tasks import execute_run
c = app.conf
print(json.dumps({k: c[k] for k in ("task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier",
                                    "worker_concurrency", "worker_pool", "task_serializer", "accept_content",
                                    "task_default_queue")}
                 | {"task.acks_late": execute_run.acks_late, "task.reject": execute_run.reject_on_worker_lost,
                    "task.name": execute_run.name}))
"""
    env = stack_env(tmp_path, tmp_path / "data")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert conf == {
        "task_acks_late": True, "task_reject_on_worker_lost": True, "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1, "worker_pool": "solo", "task_serializer": "json", "accept_content": ["json"],
        "task_default_queue": "runyard", "task.acks_late": True, "task.reject": True,
        "task.name": "runyard.execute_run",
    }


@pytest.fixture
def spawned(monkeypatch) -> list[tuple[list[str], dict[str, str]]]:
    """``runyard worker`` with the process start and supervision replaced by a record."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    class FakeProc:
        pid = 0

    def fake_spawn(args, env=None):
        calls.append((list(args), dict(env or {})))
        return FakeProc()

    monkeypatch.setattr(cli, "spawn", fake_spawn)
    monkeypatch.setattr(cli, "supervise", lambda procs, restart=None: 0)
    monkeypatch.setattr(Settings, "ensure_dirs", lambda self: None)
    return calls


def test_worker_gpus_pins_one_celery_process_per_gpu(spawned, capsys) -> None:
    args = cli.build_parser().parse_args(["worker", "--gpus", "0,1"])
    assert cli.cmd_worker(Settings(), args) == 0
    assert len(spawned) == 2
    for gpu, (argv, env) in zip(("0", "1"), spawned, strict=True):
        assert env["CUDA_VISIBLE_DEVICES"] == gpu and env["RUNYARD_WORKER_GPU"] == gpu
        assert argv[argv.index("--pool") + 1] == "solo" and argv[argv.index("--concurrency") + 1] == "1"
        assert argv[argv.index("--queues") + 1] == "runyard"
    hostnames = {argv[argv.index("--hostname") + 1] for argv, _ in spawned}
    assert len(hostnames) == 2
    assert "GPU 0" in capsys.readouterr().out


def test_worker_queues_and_cpu_concurrency(spawned, monkeypatch) -> None:
    monkeypatch.setenv("RUNYARD_WORKER_NAME", "gpu-box-7")
    args = cli.build_parser().parse_args(["worker", "--gpus", "none", "--concurrency", "3", "--queues", "big,runyard"])
    cli.cmd_worker(Settings(), args)
    assert len(spawned) == 3
    for argv, env in spawned:
        assert argv[argv.index("--queues") + 1] == "big,runyard"
        assert env["CUDA_VISIBLE_DEVICES"] == "" and "RUNYARD_WORKER_GPU" not in env
    # RUNYARD_WORKER_NAME names the machine in each process's worker_host
    assert [env["RUNYARD_WORKER_NAME"] for _, env in spawned] == ["gpu-box-7/cpu0", "gpu-box-7/cpu1", "gpu-box-7/cpu2"]


def test_the_run_device_names_the_pinned_gpu(monkeypatch) -> None:
    """No GPU on the test machine: torch.cuda is faked; what is checked is what a pinned worker
    process (RUNYARD_WORKER_GPU, set by `runyard worker --gpus`) writes into the run's device."""
    import torch

    from worker.agent import describe_device

    monkeypatch.delenv("RUNYARD_WORKER_GPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert describe_device({}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake H100")
    monkeypatch.setenv("RUNYARD_WORKER_GPU", "1")
    assert describe_device({}) == "cuda:1 (Fake H100)"
    assert describe_device({"accelerator": "gpu"}) == "cuda:1 (Fake H100)"
    assert describe_device({"accelerator": "cpu"}) == "cpu"


def test_demo_uses_mnist_when_available_else_digits_and_says_which(tmp_path: Path, small_mnist: Path) -> None:
    from worker.recipes import get_recipe

    for data_dir, recipe, dataset in ((small_mnist, "mnist_autoencoder", "mnist"),
                                      (tmp_path / "empty", "digits_classifier", "digits")):
        body = cli.demo_submission(Settings(data_dir=data_dir))
        assert body["recipe"] == recipe and body["params"]["dataset"] == dataset
        assert "/" not in body["name"]  # no absolute path crowding every title and legend
        # the submission is valid for its recipe, and the dataset stays in the stored params
        assert get_recipe(recipe).validate_params(body["params"])["dataset"] == dataset
        get_recipe(recipe).validate_trainer(body["trainer"])


def test_stdout_and_stderr_both_become_log_lines() -> None:
    from trainer_core.loggers.capture import capture_output

    lines: list[tuple[str, str, object]] = []
    with capture_output(lines.extend):
        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.stderr.write("partial ")
        sys.stderr.write("line\n")
        sys.stdout.write("no newline at the end")
    got = [(stream, text) for stream, text, _ in lines]
    assert ("stdout", "to stdout") in got and ("stderr", "to stderr") in got
    assert ("stderr", "partial line") in got and ("stdout", "no newline at the end") in got


def test_enqueue_retries_on_a_fresh_broker_connection(tmp_path: Path, monkeypatch) -> None:
    from server import queue

    settings = Settings(home=tmp_path, broker_url=f"sqla+sqlite:///{tmp_path}/broker.db")
    app = queue._client(settings.broker_url)
    real_send, connections = app.send_task, []

    def flaky_send(*args, connection=None, **kwargs):
        connections.append(connection)
        if len(connections) == 1:
            raise AttributeError("'NoneType' object has no attribute 'client'")
        return real_send(*args, connection=connection, **kwargs)

    monkeypatch.setattr(app, "send_task", flaky_send)
    queue.enqueue_run(7, "task-7", settings=settings)
    assert len(connections) == 2 and connections[0] is not connections[1]
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("runyard").get(timeout=5)
        assert message.headers["id"] == "task-7" and message.headers["argsrepr"] == "[7]"
        message.ack()

    monkeypatch.setattr(app, "send_task", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(ConnectionError):
        queue.enqueue_run(8, "task-8", settings=settings)
