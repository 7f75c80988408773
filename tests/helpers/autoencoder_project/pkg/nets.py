"""The tutorial's encoder and decoder (a relative import of pkg.models)."""

from __future__ import annotations

from torch import nn


class Encoder(nn.Module):
    def __init__(self, hidden: int = 64, latent: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, latent))

    def forward(self, x):
        return self.l1(x)


class Decoder(nn.Module):
    def __init__(self, hidden: int = 64, latent: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 28 * 28))

    def forward(self, x):
        return self.l1(x)
