"""Write a small MNIST in its real IDX file format, so torchvision's loader reads it offline.

``torchvision.datasets.MNIST(root, train=..., download=False)`` looks for
``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``. The images are
deterministic blobs whose position depends on the label, so a classifier can learn them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _images_for(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 3 + 7 * (label // 4), 3 + 6 * (label % 4)
        images[i, row : row + 6, col : col + 5] = 255
    return images


def write_mnist(root: str | Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> Path:
    """Create ``root/MNIST/raw`` with ``n_train`` training and ``n_test`` test images."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for train, n in ((True, n_train), (False, n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = _images_for(labels, rng)
        img_name, lbl_name = FILES[train]
        with open(raw / img_name, "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28))
            f.write(images.tobytes())
        with open(raw / lbl_name, "wb") as f:
            f.write(struct.pack(">II", 2049, n))
            f.write(labels.tobytes())
    return Path(root)
