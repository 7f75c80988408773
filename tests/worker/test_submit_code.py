"""`runyard submit FOLDER`: packing (ignore rules, git record, size limit), one upload per
content, the three entry points' submissions, and a real run followed with --wait."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import SubmitError, split_command
from tests.worker.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
RUNYARD = [sys.executable, "-m", "server.cli"]
PROJECT = ROOT / "tests" / "helpers" / "autoencoder_project"


def _cli(env: dict[str, str], *args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNYARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=folder,
                          check=True, capture_output=True, text=True).stdout


def _stack_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if k != "RUNYARD_PORT"}
    env.update(RUNYARD_URL=stack.base_url, RUNYARD_PUBLIC_URL=stack.base_url)
    return env


def test_split_command_takes_the_options_after_the_script() -> None:
    assert split_command(["python", "train.py", "--lr", "0.01", "--fast", "--steps=5", "-n", "-3"]) == (
        ["python", "train.py"], {"--lr": "0.01", "--fast": True, "--steps": "5", "-n": "-3"})
    assert split_command(["python", "-m", "pkg.train"]) == (["python"], {"-m": "pkg.train"})
    assert split_command(["./run.sh", "data.csv", "--x", "1"]) == (["./run.sh", "data.csv"], {"--x": "1"})
    with pytest.raises(SubmitError, match="positional"):
        split_command(["python", "train.py", "--fast", "--lr", "1", "stray", "more"])
    with pytest.raises(SubmitError, match="empty"):
        split_command([])


def test_the_worker_rebuilds_the_same_command_line() -> None:
    from worker.code import command_argv

    argv = ["python", "train.py", "--lr", "0.01", "--fast", "--steps", "5"]
    command, params = split_command(argv)
    assert command_argv(command, params)[1:] == argv[1:]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "models.py").write_text("X = 1\n")
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "data").mkdir()
    (folder / "data" / "big.bin").write_bytes(b"\0" * 4096)
    (folder / "run.log").write_text("noise\n")
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "scratch.ipynb").write_text("{}")
    (folder / ".gitignore").write_text("data/\n*.log\n")
    (folder / ".runyardignore").write_text("notebooks/\n")
    return folder


def test_dry_run_lists_what_is_packed_with_the_ignore_files_and_the_git_record(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "remote", "add", "origin", "https://git.example.com/team/proj.git")
    _git(folder, "add", "-A")
    _git(folder, "commit", "-qm", "first")
    (folder / "train.py").write_text("print('changed')\n")  # an uncommitted change
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUNYARD_HOME": str(tmp_path / "home")}
    out = _cli(env, "submit", str(folder), "--model", "pkg/models.py:X", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    listed = {line.split()[-1] for line in out.stdout.splitlines() if line.startswith("  ")}
    assert {"pkg/models.py", "pkg/__init__.py", "train.py", ".gitignore", ".runyardignore"} <= listed
    assert not {"data/big.bin", "run.log", "notebooks/scratch.ipynb"} & listed, listed
    assert any(p.startswith(".runyard/git") for p in listed), listed  # git.json and git.diff travel inside
    commit = _git(folder, "rev-parse", "HEAD").strip()
    assert f"git {commit[:10]} on main with uncommitted changes" in out.stdout
    assert "not sent (--dry-run)" in out.stdout


def test_refusals_say_what_to_change(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "weights.pt").write_bytes(b"\1" * (3 * 2**20))
    (folder / "pkg" / "table.csv").write_bytes(b"\2" * (2 * 2**20))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUNYARD_HOME": str(tmp_path / "home")}
    big = _cli(env, "submit", str(folder), "--model", "pkg/models.py:X", "--max-size", "1", "--dry-run")
    assert big.returncode == 2
    assert "weights.pt" in big.stderr and "pkg/table.csv" in big.stderr, big.stderr
    assert big.stderr.index("weights.pt") < big.stderr.index("pkg/table.csv")  # the largest first
    none = _cli(env, "submit", str(folder), "--dry-run")
    assert none.returncode == 2 and "name one entry point" in none.stderr
    two = _cli(env, "submit", str(folder), "--model", "pkg/models.py:X", "--cli", "train.py", "--dry-run")
    assert two.returncode == 2 and "module and cli" in two.stderr
    missing = _cli(env, "submit", str(folder), "--model", "pkg/nope.py:X", "--dry-run")
    assert missing.returncode == 2 and "no file pkg/nope.py" in missing.stderr
    malformed = _cli(env, "submit", str(folder), "--model", "pkg/models.py", "--dry-run")
    assert malformed.returncode == 2 and "FILE.py:Class" in malformed.stderr


@pytest.mark.slow
def test_submit_uploads_once_and_follows_a_code_run(sqlite_stack: Stack, small_mnist: Path, tmp_path: Path) -> None:
    env = _stack_env(sqlite_stack)
    project = "submit-code"
    args = ["submit", str(PROJECT), "--project", project, "--model", "pkg/models.py:LitAutoEncoder",
            "--data", "pkg/data.py:MNISTData", "--param", f"data_dir={small_mnist}", "--param", "lr=0.002",
            "--trainer", "max_steps=6", "--trainer", "limit_val_batches=2"]
    first = _cli(env, *args, "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "uploaded" in first.stdout and "succeeded" in first.stdout, first.stdout
    again = _cli(env, *args, "--name", "second")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already on the server" in again.stdout, again.stdout
    run_id = int(again.stdout.split("run ", 1)[1].split()[0])
    run = sqlite_stack.run(run_id)
    assert run["recipe"] == "code" and run["name"] == "second" and run["params"]["lr"] == 0.002
    assert run["code"]["entry"] == {"kind": "module", "model": "pkg/models.py:LitAutoEncoder",
                                    "data": "pkg/data.py:MNISTData"}
    found = sqlite_stack.client.get("/api/v1/snapshots", params={"project": project}).json()["items"]
    assert len(found) == 1 and found[0]["sha256"] == run["code"]["sha256"]
