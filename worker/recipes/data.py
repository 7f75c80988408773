"""Datasets the built-in recipes train on: MNIST (torchvision, from RUNYARD_DATA_DIR) and
scikit-learn's bundled 8x8 digits (no download, ever)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import torch
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset, random_split

import trainer_core as L

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetMissing(RuntimeError):
    """A dataset is not on disk and cannot be downloaded; the message says where to put it."""


def mnist_available(data_dir: str | Path) -> bool:
    raw = Path(data_dir) / "MNIST" / "raw"
    return all((raw / name).exists() or (raw / f"{name}.gz").exists() for name in MNIST_FILES)


def _can_reach_mnist_mirror(timeout: float = 3.0) -> bool:
    from torchvision.datasets import MNIST

    for mirror in MNIST.mirrors:
        host = urlparse(mirror).hostname
        if not host:
            continue
        try:
            with socket.create_connection((host, 443 if mirror.startswith("https") else 80), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def ensure_mnist(data_dir: str | Path, download: bool = True) -> None:
    """Make MNIST available under ``data_dir`` (downloading it when the network allows) or
    raise :class:`DatasetMissing` at once with the folder and file names to provide."""
    data_dir = Path(data_dir)
    if mnist_available(data_dir):
        return
    from torchvision.datasets import MNIST

    if not download:
        reason = "downloads are off (RUNYARD_DOWNLOAD_DATA=0)"
    elif _can_reach_mnist_mirror():
        try:
            MNIST(str(data_dir), train=True, download=True)
            MNIST(str(data_dir), train=False, download=True)
            return
        except Exception as exc:  # reported below with the manual alternative
            reason = f"the download failed ({exc})"
    else:
        reason = "no MNIST mirror is reachable from this machine"
    raw = (data_dir / "MNIST" / "raw").resolve()
    raise DatasetMissing(
        f"MNIST is not in {raw} and {reason}. Put the four MNIST files "
        f"({', '.join(MNIST_FILES)}, optionally .gz-compressed) in {raw}, "
        "or point RUNYARD_DATA_DIR at a folder that has MNIST/raw/ with them, then submit the run again."
    )


class MNISTDataModule(L.LightningDataModule):
    """MNIST with the tutorial's split: 80% train, 20% validation (seeded), the official test set."""

    def __init__(
        self,
        data_dir: str = "",
        download: bool = True,
        dataset: Annotated[Literal["mnist"], Field(description="The data this recipe trains on.")] = "mnist",
        batch_size: Annotated[int, Field(ge=1, le=4096, description="Samples per batch.")] = 64,
        val_fraction: Annotated[float, Field(gt=0, lt=1, description="Share of the training set kept for validation.")] = 0.2,
        num_workers: Annotated[int, Field(ge=0, le=32, description="DataLoader worker processes.")] = 0,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.download = download
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.num_workers = num_workers
        self.train_set: Any = None
        self.val_set: Any = None
        self.test_set: Any = None

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        from torchvision import datasets, transforms

        ensure_mnist(self.data_dir, self.download)
        transform = transforms.ToTensor()
        if stage in (None, "fit", "validate") and self.train_set is None:
            full = datasets.MNIST(self.data_dir, train=True, download=False, transform=transform)
            n_val = max(1, int(len(full) * self.val_fraction))
            seed = torch.Generator().manual_seed(42)
            self.train_set, self.val_set = random_split(full, [len(full) - n_val, n_val], generator=seed)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = datasets.MNIST(self.data_dir, train=False, download=False, transform=transform)

    def _loader(self, dataset: Any, shuffle: bool = False) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


def digits_dataloaders(
    dataset: Annotated[Literal["digits"], Field(description="The data this recipe trains on.")] = "digits",
    batch_size: Annotated[int, Field(ge=1, le=2048, description="Samples per batch.")] = 32,
    val_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15,
    test_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15,
    split_seed: int = 0,
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], split train/val/test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    data = TensorDataset(x, y)
    n_val = int(len(data) * val_fraction)
    n_test = int(len(data) * test_fraction)
    generator = torch.Generator().manual_seed(split_seed)
    train, val, test = random_split(data, [len(data) - n_val - n_test, n_val, n_test], generator=generator)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(val, batch_size=batch_size),
        DataLoader(test, batch_size=batch_size),
    )
