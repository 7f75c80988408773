"""MNIST from its IDX files in ``data_dir/MNIST/raw`` (no torchvision, no download)."""

from __future__ import annotations

import struct
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset, random_split

import trainer_core as L


def read_idx(path: Path) -> torch.Tensor:
    data = path.read_bytes()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def load(data_dir: str, train: bool) -> TensorDataset:
    raw = Path(data_dir) / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    images = read_idx(raw / f"{prefix}-images-idx3-ubyte").float().div(255).unsqueeze(1)
    labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte").long()
    return TensorDataset(images, labels)


class MNISTData(L.LightningDataModule):
    """MNIST: 80% of the training file to train on, 20% to validate, the test file to test."""

    def __init__(self, data_dir: str = "./data", batch_size: int = 32, val_fraction: float = 0.2) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_fraction = val_fraction

    def setup(self, stage: str | None = None) -> None:
        full = load(self.data_dir, train=True)
        n_val = max(1, int(len(full) * self.val_fraction))
        self.train_set, self.val_set = random_split(
            full, [len(full) - n_val, n_val], generator=torch.Generator().manual_seed(0)
        )
        self.test_set = load(self.data_dir, train=False)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)
