"""The learning rate finder and the batch size finder under DDP on 2 CPU processes (gloo), as Lightning 2.6 does.

Each 2-process case runs ``ddp_scripts/tuner.py`` (``strategy="ddp"`` re-runs the script for rank 1, which pytest's
own process cannot be); every rank prints JSON lines with its result, its module's lr / batch size, a hash of its
weights and the tuner files left in the root dir. The data makes a 2-rank run step exactly the weights one process
steps on rank 0's shard, and skews rank 1's reported loss (gradients unchanged) so that on its own rank 1 would
stop the range test at step 20 and suggest another lr: every rank must take rank 0's decisions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer_core.utilities.rank_zero import rank_zero_only

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "ddp_scripts" / "tuner.py"
_DIST_VARS = (
    "TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "NODE_RANK", "GROUP_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME",
)
_Records = dict[tuple[str, Any], dict[str, Any]]


def _run(framework: str, mode: str, tasks: str, root: Path) -> _Records:
    """Run the script; its records by (phase, rank)."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), framework, mode, tasks, str(root)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    records: _Records = {}
    decoder = json.JSONDecoder()
    for line in proc.stdout.splitlines():  # two ranks' lines can share one line of the captured stdout
        start = line.find('{"rank"')
        while start >= 0:
            record, end = decoder.raw_decode(line, start)
            records[(record["phase"], record["rank"])] = record
            start = line.find('{"rank"', end)
    return records


def _tuner_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".lr_find", ".scale_batch_size")))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> _Records:
    """The reference: one process on rank 0's shard."""
    return _run("core", "single", "lr,lrcb,bs", tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def ddp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def ddp(ddp_root: Path) -> _Records:
    return _run("core", "ddp", "lr,lrcb,fit,bs,bsfit", ddp_root)


@pytest.fixture(autouse=True)
def _keep_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)


def test_lr_find_under_ddp_takes_rank_zeros_suggestion_on_every_rank(
    ddp: _Records, single: _Records, ddp_root: Path
) -> None:
    start = ddp[("start", 0)]["weights"]
    assert ddp[("start", 1)]["weights"] == start
    ref = single[("lr", 0)]
    assert ref["suggestion"] is not None and ref["n_results"] == 30
    for rank in (0, 1):
        rec = ddp[("lr", rank)]
        # rank 0's results (30 steps: rank 1's divergence at step 20 did not stop the search) = the single run's
        assert rec["n_results"] == 30 and rec["lrs"] == ref["lrs"]
        assert rec["suggestion"] == ref["suggestion"]
        assert rec["lr"] == rec["optimizer_lr"] == ref["suggestion"]
        assert rec["weights"] == start  # restored from the temporary checkpoint, identically on both ranks
        assert rec["files"] == [] and rec["global_step"] == 0
    assert _tuner_files(ddp_root) == []


def test_learning_rate_finder_callback_under_ddp_then_the_fit_trains(ddp: _Records, single: _Records) -> None:
    ref = single[("lrcb", 0)]
    r0, r1 = ddp[("lrcb", 0)], ddp[("lrcb", 1)]
    for rec in (r0, r1):
        assert rec["suggestion"] == ref["suggestion"] and rec["n_results"] == 30
        assert rec["lr"] == rec["optimizer_lr"] == ref["suggestion"]
        assert rec["files"] == []
    # the fit after the search: the same weights on both ranks, the single run's (the same steps)
    assert r0["weights"] == r1["weights"] == ref["weights"] and r0["global_step"] == ref["global_step"] == 60
    for rank in (0, 1):
        fit = ddp[("fit", rank)]
        assert fit["global_step"] == 12 and fit["lr"] == ddp[("lr", 0)]["suggestion"]
        first, last = fit["losses_first_last"]
        assert last < first
    assert ddp[("fit", 0)]["weights"] == ddp[("fit", 1)]["weights"] != ddp[("lrcb", 0)]["weights"]


def test_scale_batch_size_under_ddp_agrees_on_the_size_every_rank_fits(
    ddp: _Records, single: _Records, ddp_root: Path
) -> None:
    # every rank runs out of memory above 24, rank 1 alone above 20: an OOM on any rank counts for all
    assert single[("bs", 0)]["returned"] == 24
    before = ddp[("fit", 0)]["weights"]
    for rank in (0, 1):
        rec = ddp[("bs", rank)]
        assert rec["returned"] == rec["batch_size"] == 20
        assert rec["weights"] == before and rec["files"] == []
        fit = ddp[("bsfit", rank)]
        assert fit["batch_size"] == 20 and fit["global_step"] == 10  # 2 epochs of ceil(96 / 20) steps
        first, last = fit["losses_first_last"]
        assert last < first
    assert ddp[("bsfit", 0)]["weights"] == ddp[("bsfit", 1)]["weights"] != before
    assert _tuner_files(ddp_root) == []


def test_ddp_spawn_tuner_results_reach_the_main_process(tmp_path: Path, ddp: _Records) -> None:
    res = _run("core", "spawn", "lr,bs", tmp_path)
    lr = ddp[("lr", 0)]["suggestion"]
    for rank in (0, 1):
        assert res[("lr", rank)]["suggestion"] == lr and res[("lr", rank)]["lr"] == lr
        assert res[("bs", rank)]["batch_size"] == res[("bs", rank)]["optimal_batch_size"] == 20
        assert res[("lr", rank)]["weights"] == res[("bs", rank)]["weights"] == res[("start", "main")]["weights"]
    # the main process gets rank 0's finder results, and its module the lr and batch size (Lightning 2.6: the
    # ranks end with an uncaught _TunerExitException, and the batch size finder refuses DDP)
    main_lr, main_bs = res[("lr", "main")], res[("bs", "main")]
    assert main_lr["suggestion"] == main_lr["lr"] == lr and main_lr["lrs"] == ddp[("lr", 0)]["lrs"]
    assert main_bs["returned"] == main_bs["batch_size"] == 20
    assert main_bs["weights"] == res[("start", "main")]["weights"] and main_bs["lr"] == lr
    assert _tuner_files(tmp_path) == []


def test_real_lightning_ddp_finds_the_same_lr_and_weights(tmp_path: Path, ddp: _Records) -> None:
    res = _run("lightning", "ddp", "lr,lrcb,fit", tmp_path)
    for rank in (0, 1):
        for phase in ("lr", "lrcb", "fit"):
            ours, theirs = ddp[(phase, rank)], res[(phase, rank)]
            for key in ("suggestion", "n_results", "lr", "optimizer_lr", "weights", "global_step", "files"):
                assert ours.get(key) == theirs.get(key), (phase, rank, key)
    assert _tuner_files(tmp_path) == []


def test_real_lightning_refuses_the_batch_size_finder_under_ddp() -> None:
    """The difference: Lightning 2.6 raises before starting any process; trainer_core tunes (tests above)."""
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.tuner import Tuner

    trainer = pl.Trainer(strategy="ddp", devices=2, accelerator="cpu", logger=False)
    with pytest.raises(ValueError, match="not supported with distributed strategies"):
        Tuner(trainer).scale_batch_size(BoringModel())
