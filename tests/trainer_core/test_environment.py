"""The reproducibility record (trainer_core.environment.collect) and the seed it reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

import trainer_core as L
from trainer_core import environment, seed

REPO = Path(__file__).resolve().parents[2]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")


@pytest.fixture(autouse=True)
def _no_runyard_code_env(monkeypatch):
    for name in ("RUNYARD_CODE_DIR", "RUNYARD_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fresh_seed(monkeypatch):
    monkeypatch.setattr(seed, "_LAST_SEED", None)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def test_the_record_has_every_field_of_the_contract(tmp_path, monkeypatch, fresh_seed):
    monkeypatch.chdir(tmp_path)  # not a repository: no git record
    record = environment.collect()
    assert set(record) == {
        "command",
        "cwd",
        "python",
        "executable",
        "platform",
        "torch",
        "cuda",
        "cudnn",
        "hostname",
        "gpus",
        "seed",
        "packages",
        "time",
    }
    assert record["command"] == list(sys.orig_argv) and record["cwd"] == str(tmp_path)
    assert (
        record["python"] == ".".join(map(str, sys.version_info[:3]))
        and record["executable"] == sys.executable
    )
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["hostname"] and record["platform"]
    if torch.cuda.is_available():
        assert (
            record["cudnn"] == torch.backends.cudnn.version()
            and len(record["gpus"]) == torch.cuda.device_count()
        )
    else:
        assert record["cudnn"] is None and record["gpus"] == []
    assert record["seed"] is None
    packages = record["packages"]
    assert packages["torch"] == metadata.version("torch") and packages["psutil"] == metadata.version("psutil")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in packages.items())
    assert abs(time.time() - _epoch(record["time"])) < 60
    json.dumps(record, allow_nan=False)  # what the logger sends as it is


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_the_seed_is_the_last_seed_everything_value(fresh_seed):
    assert seed.last_seed() is None and environment.collect()["seed"] is None
    assert L.seed_everything(1234) == 1234
    assert environment.collect()["seed"] == 1234 and os.environ["PL_GLOBAL_SEED"] == "1234"
    L.seed_everything(99, workers=True)
    assert environment.collect()["seed"] == 99
    os.environ["PL_GLOBAL_SEED"] = "7"  # as Lightning: seed_everything() takes the environment's seed
    assert L.seed_everything() == 7 and environment.collect()["seed"] == 7


def test_an_inherited_PL_GLOBAL_SEED_alone_is_no_seed_this_process_applied(tmp_path):
    code = "from trainer_core import environment; print(environment.collect()['seed'])"
    env = {**os.environ, "PL_GLOBAL_SEED": "5", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "None"


def test_collect_reads_the_installed_packages_once_per_process(tmp_path, monkeypatch):
    """The package list (the slow part: every distribution's metadata) is read once and cached."""
    monkeypatch.chdir(tmp_path)
    environment.collect()
    reads = []
    monkeypatch.setattr(metadata, "distributions", lambda *a, **k: reads.append(1) or iter(()))
    for _ in range(10):
        record = environment.collect()
    assert reads == [] and record["packages"]
    assert environment.packages(refresh=True) == {} and reads == [1]
    monkeypatch.undo()
    assert environment.packages(refresh=True)  # the real list again for the tests after this one


@needs_git
def test_the_git_record_of_a_repository_in_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "proj"
    (repo / "src").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "trunk")
    (repo / "train.py").write_text("print('hi')\n")
    (repo / ".gitignore").write_text("logs/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", "https://alice:s3cret@git.example.com/team/proj.git")
    commit = git(repo, "rev-parse", "HEAD").strip()
    monkeypatch.chdir(repo / "src")
    record = environment.collect()["git"]
    assert record == {
        "commit": commit,
        "branch": "trunk",
        "remote": "https://git.example.com/team/proj.git",
        "dirty": False,
        "root": "src",
    }
    (repo / "logs").mkdir()
    (repo / "logs" / "ignored.txt").write_text("x")  # ignored: still clean
    assert environment.git_info()["dirty"] is False
    (repo / "train.py").write_text("print('changed')\n")
    assert environment.git_info()["dirty"] is True
    git(repo, "checkout", "-q", "--", "train.py")
    (repo / "new.py").write_text("x = 1\n")  # untracked, not ignored: dirty
    assert environment.git_info()["dirty"] is True
    git(repo, "checkout", "-q", "--detach")
    assert environment.git_info()["branch"] is None


@needs_git
def test_a_repository_without_commits_and_a_folder_outside_any(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q", "-b", "main")
    monkeypatch.chdir(fresh)
    assert environment.git_info() == {
        "commit": None,
        "branch": "main",
        "remote": None,
        "dirty": False,
        "root": "",
    }
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(plain)
    assert environment.git_info() is None and "git" not in environment.collect()


def test_no_git_binary_is_no_git_record(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # a repository, but git cannot be run
    monkeypatch.setenv("PATH", str(tmp_path))
    assert environment.git_info() is None
    record = environment.collect()
    assert "git" not in record and record["packages"]


def test_the_git_record_of_a_code_snapshot(tmp_path, monkeypatch):
    code = tmp_path / "run-7" / "code"
    (code / ".runyard").mkdir(parents=True)
    snap = {
        "commit": "a" * 40,
        "branch": "feature",
        "remote": "https://tok@github.com/me/x.git",
        "dirty": True,
        "diff_bytes": 120,
        "diff_truncated": False,
        "root": "examples",
    }
    (code / ".runyard" / "git.json").write_text(json.dumps(snap))
    monkeypatch.chdir(REPO)  # a repository of its own: the snapshot's record wins
    monkeypatch.setenv("RUNYARD_CODE_DIR", str(code))
    assert environment.collect()["git"] == {**snap, "remote": "https://github.com/me/x.git"}
    # a worker's run folder: RUN_DIR/code is the snapshot
    monkeypatch.delenv("RUNYARD_CODE_DIR")
    monkeypatch.setenv("RUNYARD_RUN_DIR", str(code.parent))
    assert environment.git_info()["commit"] == "a" * 40
    # a snapshot of a folder outside git: no record, not the cwd's repository
    (code / ".runyard" / "git.json").unlink()
    monkeypatch.setenv("RUNYARD_CODE_DIR", str(code))
    assert "git" not in environment.collect()
    (code / ".runyard" / "git.json").write_text("{not json")
    assert environment.git_info() is None


def test_collect_never_raises_a_working_directory_that_is_gone(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # os.getcwd() raises now, and git cannot run there
    record = environment.collect()
    assert record["cwd"] is None and "git" not in record
    assert record["command"] == list(sys.orig_argv) and record["packages"]
