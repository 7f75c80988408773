"""The built-in recipes: the tutorial's models on MNIST, a classifier on scikit-learn's digits,
and transfer learning from an earlier run's autoencoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import trainer_core as L
from worker.recipes.data import MNISTDataModule, digits_dataloaders
from worker.recipes.registry import Recipe, RecipeContext

LearningRate = Annotated[float, Field(gt=0, le=10, description="Adam learning rate.")]


class Encoder(nn.Module):
    def __init__(self, hidden_dim: int = 64, latent_dim: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(28 * 28, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1(x)


class Decoder(nn.Module):
    def __init__(self, hidden_dim: int = 64, latent_dim: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 28 * 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1(x)


class LitAutoEncoder(L.LightningModule):
    """The tutorial's MNIST autoencoder (28x28 -> latent -> 28x28) with validation and test loops."""

    def __init__(
        self,
        hidden_dim: Annotated[int, Field(ge=1, le=4096, description="Width of the hidden layer.")] = 64,
        latent_dim: Annotated[int, Field(ge=1, le=512, description="Size of the code.")] = 3,
        lr: LearningRate = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = Encoder(hidden_dim, latent_dim)
        self.decoder = Decoder(hidden_dim, latent_dim)
        self.example_input_array = torch.zeros(1, 28 * 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The code of ``x`` (what transfer learning builds on)."""
        return self.encoder(x.view(x.size(0), -1))

    def _loss(self, batch: Any) -> torch.Tensor:
        x, _ = batch
        x = x.view(x.size(0), -1)
        x_hat = self.decoder(self.encoder(x))
        return F.mse_loss(x_hat, x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class _Classifier(L.LightningModule):
    """Shared steps of the classifiers: cross-entropy, accuracy on every split."""

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=-1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}_acc", acc, prog_bar=True, on_step=on_step, on_epoch=not on_step)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr)


class MNISTClassifier(_Classifier):
    """A two-layer perceptron that classifies MNIST digits."""

    def __init__(
        self,
        hidden_dim: Annotated[int, Field(ge=1, le=8192, description="Width of the hidden layer.")] = 128,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0,
        lr: LearningRate = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(28 * 28, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, 10)
        )
        self.example_input_array = torch.zeros(1, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsClassifier(_Classifier):
    """A small perceptron on scikit-learn's bundled 8x8 digits (trains offline in seconds)."""

    def __init__(
        self,
        hidden_dim: Annotated[int, Field(ge=1, le=4096, description="Width of the hidden layer.")] = 64,
        lr: LearningRate = 1e-2,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 10))
        self.example_input_array = torch.zeros(1, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransferLearningClassifier(_Classifier):
    """The tutorial's transfer learning: an earlier run's autoencoder, frozen, as the feature
    extractor under a linear head that classifies MNIST."""

    def __init__(
        self,
        source_run_id: Annotated[
            int | None, Field(ge=1, description="Run whose best (else last) checkpoint is the feature extractor.")
        ] = None,
        source_checkpoint_id: Annotated[
            int | None, Field(ge=1, description="A checkpoint id instead of a run id.")
        ] = None,
        lr: LearningRate = 1e-3,
        backbone: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if source_run_id is None and source_checkpoint_id is None:
            raise ValueError("transfer_learning needs source_run_id or source_checkpoint_id")
        self.save_hyperparameters()
        # ``backbone`` (the autoencoder's own hyperparameters) is filled in by the worker, so the
        # architecture is rebuilt the same way when this model is loaded from its own checkpoint.
        self.feature_extractor = LitAutoEncoder(**(backbone or {}))
        self.feature_extractor.freeze()
        self.classifier = nn.Linear(self.feature_extractor.hparams.latent_dim, 10)
        self.example_input_array = torch.zeros(1, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            representations = self.feature_extractor(x)
        return self.classifier(representations)

    def on_train_epoch_start(self) -> None:
        # frozen means eval mode too (the tutorial's feature_extractor.eval())
        self.feature_extractor.eval()


def _resolve_source_checkpoint(params: dict[str, Any], ctx: RecipeContext) -> Path:
    """The source run's checkpoint, downloaded from the server (the claim listed it as an input)."""
    wanted = params.get("source_checkpoint_id")
    inputs = list(ctx.inputs or [])
    if wanted is not None:
        match = [c for c in inputs if c.get("id") == wanted]
        if not match:
            raise ValueError(f"checkpoint {wanted} does not exist")
    else:
        match = [c for c in inputs if c.get("run_id") == params.get("source_run_id")]
        if not match:
            raise ValueError(f"run {params.get('source_run_id')} has no checkpoint to transfer from; train an "
                             "mnist_autoencoder run first")
    if ctx.fetch_input is None:
        raise RuntimeError("transfer_learning must run in a worker (it downloads another run's checkpoint)")
    return Path(ctx.fetch_input(match[0]))


def _prepare_transfer(
    params: dict[str, Any], ctx: RecipeContext
) -> tuple[dict[str, Any], Callable[[TransferLearningClassifier], None]]:
    from trainer_core.checkpoint_io import load_checkpoint

    path = _resolve_source_checkpoint(params, ctx)
    checkpoint = load_checkpoint(path, map_location="cpu")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    allowed = {"hidden_dim", "latent_dim", "lr"}
    backbone = {k: v for k, v in hparams.items() if k in allowed}
    state = dict(checkpoint["state_dict"])
    if not any(k.startswith("encoder.") for k in state):
        raise ValueError(f"checkpoint {path.name} holds no autoencoder (no encoder.* weights)")

    def load_weights(model: TransferLearningClassifier) -> None:
        model.feature_extractor.load_state_dict(state)
        model.feature_extractor.freeze()

    return {"backbone": backbone}, load_weights


def _one_source(params: Any) -> None:
    if (params.source_run_id is None) == (params.source_checkpoint_id is None):
        raise ValueError("give exactly one of source_run_id (an mnist_autoencoder run) or source_checkpoint_id")


BUILTIN_RECIPES = [
    Recipe(
        "mnist_autoencoder",
        LitAutoEncoder,
        MNISTDataModule,
        description="The tutorial's LitAutoEncoder on MNIST, with validation (20% split) and test loops.",
    ),
    Recipe("mnist_classifier", MNISTClassifier, MNISTDataModule, description="A perceptron that classifies MNIST digits."),
    Recipe(
        "digits_classifier",
        DigitsClassifier,
        digits_dataloaders,
        description="A perceptron on scikit-learn's bundled 8x8 digits: needs no download.",
    ),
    Recipe(
        "transfer_learning",
        TransferLearningClassifier,
        MNISTDataModule,
        description="An earlier mnist_autoencoder run's encoder, frozen, under a linear head classifying MNIST.",
        hidden=("backbone",),
        prepare=_prepare_transfer,
        check=_one_source,
    ),
]
