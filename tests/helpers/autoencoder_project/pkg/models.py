"""The Lightning tutorial's autoencoder, written against trainer_core."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import trainer_core as L

from .nets import Decoder, Encoder


class LitAutoEncoder(L.LightningModule):
    """Encode MNIST digits into a few numbers and decode them back."""

    def __init__(self, lr: float = 1e-3, hidden: int = 64, latent: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder: nn.Module = Encoder(hidden, latent)
        self.decoder: nn.Module = Decoder(hidden, latent)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, _ = batch
        x = x.view(x.size(0), -1)
        x_hat = self.decoder(self.encoder(x))
        return F.mse_loss(x_hat, x)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
