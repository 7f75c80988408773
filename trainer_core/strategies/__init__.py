"""Strategies: one device (``SingleDeviceStrategy``) or several processes (``DDPStrategy``), Lightning's names.

``Trainer(strategy="ddp" | "ddp_spawn" | "ddp_fork" | "ddp_notebook" | "auto" | "single_device")`` or an instance.
FSDP, DeepSpeed and the other sharded strategies are not supported and raise naming ``strategy``.
"""

from trainer_core.strategies.ddp import DDPStrategy
from trainer_core.strategies.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from trainer_core.strategies.strategy import SingleDeviceStrategy, Strategy

ParallelStrategy = DDPStrategy  # Lightning's base of the multi-process strategies (DDP is the one here)

__all__ = [
    "ClusterEnvironment",
    "DDPStrategy",
    "LightningEnvironment",
    "ParallelStrategy",
    "SLURMEnvironment",
    "SingleDeviceStrategy",
    "Strategy",
    "TorchElasticEnvironment",
]
