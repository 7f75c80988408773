"""A user recipe module, loaded by the test stacks through RUNYARD_RECIPES (as a team would
load theirs). Its training step can be slowed down, so a test can act while a run trains."""

from __future__ import annotations

import time
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from worker.recipes import Recipe


class SlowRegressor(L.LightningModule):
    """Linear regression whose every training step also sleeps ``step_delay`` seconds."""

    def __init__(self, step_delay: Annotated[float, Field(ge=0, le=5)] = 0.0, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.step_delay:
            time.sleep(self.hparams.step_delay)
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def regression_data(n: Annotated[int, Field(ge=8, le=100_000)] = 512, batch_size: int = 8, fail: bool = False,
                    num_workers: Annotated[int, Field(ge=0, le=4)] = 0):
    if fail:
        raise RuntimeError("this dataset was asked to fail")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, num_workers=num_workers)
    return train, DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16), None


RECIPES = [Recipe("slow_regression", SlowRegressor, regression_data, description="Test recipe: slow linear regression.")]


class Crasher(SlowRegressor):
    """Ends its run's process the way ``how`` says, at the first training step."""

    def __init__(self, how: str = "exception", lr: float = 0.05) -> None:
        super().__init__(0.0, lr)
        self.how = how

    def training_step(self, batch, batch_idx):
        import json
        import os
        import signal
        import sys

        if self.how == "exception":
            raise ValueError("the recipe broke on purpose")
        if self.how == "exit3":
            sys.exit(3)
        if self.how == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "env":
            print("ENV " + json.dumps(sorted(k for k in os.environ if "RUNYARD" in k or "BROKER" in k or "DATABASE" in k)))
            print("TOKEN-KIND " + os.environ.get("RUNYARD_TOKEN", "")[:4])
            self.how = "none"
        return super().training_step(batch, batch_idx)


def crash_data(n: int = 64, batch_size: int = 8):
    return regression_data(n=n, batch_size=batch_size)


RECIPES.append(Recipe("crash", Crasher, crash_data, description="Test recipe: ends its process in a chosen way."))
