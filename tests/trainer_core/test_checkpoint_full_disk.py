"""A checkpoint that does not fit (issue 11, point 6), on a small tmpfs (root; see need_service):
saving fails with ``OSError(ENOSPC, "no space left on device writing <path>")`` instead of
torch's opaque "PytorchStreamWriter failed writing file", leaves no temp file, keeps every
earlier checkpoint, and a fit under RunyardLogger fails its run with that message."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from tests.helpers.tmpfs import fill, mounted_tmpfs, remount
from trainer_core.callbacks import ModelCheckpoint
from trainer_core.checkpoint_io import load_checkpoint, save_checkpoint

KiB = 1024


@pytest.fixture
def disk(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "1m") as path:
        yield path


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_checkpoint_that_does_not_fit_names_its_path_and_leaves_the_older_files(disk):
    save_checkpoint({"w": torch.ones(16 * KiB)}, disk / "first.ckpt")  # 64 KiB
    save_checkpoint({"w": torch.ones(16 * KiB)}, disk / "last.ckpt")
    before = digests(disk)
    for target in (disk / "big.ckpt", disk / "last.ckpt"):  # a new name, and over an existing file
        with pytest.raises(OSError) as failed:
            save_checkpoint({"w": torch.zeros(512 * KiB)}, target)  # 2 MiB on a 1 MiB disk
        assert failed.value.errno == errno.ENOSPC
        assert str(failed.value) == f"[Errno 28] no space left on device writing {target}"
        assert failed.value.strerror == f"no space left on device writing {target}"
        assert digests(disk) == before  # no temp file, the older ones untouched
    assert torch.equal(load_checkpoint(disk / "last.ckpt")["w"], torch.ones(16 * KiB))


def test_a_copy_that_does_not_fit_leaves_the_older_file(disk, tmp_path):
    from trainer_core.checkpoint_io import copy_checkpoint

    save_checkpoint({"w": torch.ones(16 * KiB)}, disk / "last.ckpt")
    before = digests(disk)
    save_checkpoint({"w": torch.zeros(512 * KiB)}, tmp_path / "big.ckpt")  # on the ordinary disk
    with pytest.raises(OSError, match=r"^\[Errno 28\] no space left on device writing .*last\.ckpt$"):
        copy_checkpoint(tmp_path / "big.ckpt", disk / "last.ckpt")
    assert digests(disk) == before


def test_a_full_or_read_only_disk_before_the_first_byte(disk):
    filler = fill(disk)
    with pytest.raises(OSError, match=r"no space left on device writing .*tiny\.ckpt$") as failed:
        save_checkpoint({"step": 1}, disk / "tiny.ckpt")
    assert failed.value.errno == errno.ENOSPC and digests(disk) == {filler.name: digests(disk)[filler.name]}
    filler.unlink()
    remount(disk, "ro")
    try:
        with pytest.raises(OSError, match=r"read-only file system writing .*tiny\.ckpt$") as failed:
            save_checkpoint({"step": 1}, disk / "tiny.ckpt")
        assert failed.value.errno == errno.EROFS
    finally:
        remount(disk, "rw")


class Wide(L.LightningModule):
    """About 256 KiB of weights: a few checkpoints fill the 1 MiB disk."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(256, 256)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(64, 256, generator=g), torch.randn(64, 256, generator=g)),
                      batch_size=4)


def fit_until_full(disk: Path, tmp_path: Path, logger) -> tuple[OSError, dict[str, str]]:
    checkpoints = ModelCheckpoint(dirpath=disk, every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=16, logger=logger, callbacks=[checkpoints],
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(OSError) as failed:
        trainer.fit(Wide(), loader())
    assert failed.value.errno == errno.ENOSPC
    return failed.value, digests(disk)


def test_a_fit_whose_checkpoint_does_not_fit_fails_with_the_path_and_keeps_the_earlier_ones(disk, tmp_path):
    error, kept = fit_until_full(disk, tmp_path, logger=False)
    target = Path(error.strerror.removeprefix("no space left on device writing "))
    assert error.strerror == f"no space left on device writing {target}" and target.parent == disk
    assert not target.exists()
    assert 1 <= len(kept) < 16 and not [n for n in kept if n.endswith(".tmp")], kept
    steps = sorted(int(n.removeprefix("step=").removesuffix(".ckpt")) for n in kept)
    assert steps == list(range(1, len(kept) + 1)), kept  # every earlier one, each whole
    for name in kept:
        assert load_checkpoint(disk / name)["global_step"] == int(name.removeprefix("step=").removesuffix(".ckpt"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server.conftest import serving

    with serving(tmp_path_factory.mktemp("full-disk-home")) as url:
        yield url


def test_the_run_fails_with_the_message_and_its_uploaded_checkpoints_stay(disk, tmp_path, server):
    from trainer_core.loggers.runyard import RunyardLogger

    logger = RunyardLogger(url=server, project="full-disk", save_dir=tmp_path / "logger", flush_interval=0.05)
    error, kept = fit_until_full(disk, tmp_path, logger)
    with httpx.Client(base_url=server + "/api/v1", timeout=30) as api:
        run = api.get(f"/runs/{logger.run_id}").json()
        assert run["status"] == "failed", run
        assert run["error"].startswith(f"OSError: [Errno 28] {error.strerror}\n"), run["error"][:300]
        stored = {c["path"].rsplit("/", 1)[-1]: c["sha256"] for c in api.get(f"/runs/{run['id']}/checkpoints").json()}
    # what the server kept of them (its retention may have dropped older ones) is whole, the newest too
    newest = max(kept, key=lambda n: int(n.removeprefix("step=").removesuffix(".ckpt")))
    assert newest in stored and all(kept.get(name) == sha for name, sha in stored.items()), (stored, kept)
    assert os.path.basename(error.strerror) not in stored


def test_save_last_link_replaces_the_link_in_one_step(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, save_last="link",
                                  filename="{step}")
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=6, logger=False, callbacks=[checkpoints],
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Wide(), loader())
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "step=6.ckpt"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt", "step=2.ckpt", "step=4.ckpt",
                                                                      "step=6.ckpt"]  # no temp link left
    assert load_checkpoint(last)["global_step"] == 6
