from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
