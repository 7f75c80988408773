"""Lightning's ``PossibleUserWarning`` and the checks that emit it (called by the trainer).

``_worker_check`` and ``_max_epochs_default`` hold Lightning's conditions and messages, so the trainer emits
the same warnings under the same conditions.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Iterable
from typing import Any

from trainer_core.utilities.rank_zero import rank_zero_warn


class PossibleUserWarning(UserWarning):
    """Warnings that could be false positives (Lightning's category; filter it to silence them all)."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Ignore every ``PossibleUserWarning`` (from ``module`` only, when given)."""
    warnings.filterwarnings("ignore", module=module, category=PossibleUserWarning)


def _num_cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    cpu_count = os.cpu_count()
    return 1 if cpu_count is None else cpu_count


def suggested_max_num_workers(local_world_size: int) -> int:
    """Lightning's upper bound for ``num_workers``: CPUs per local process, minus one for the main process."""
    if local_world_size < 1:
        raise ValueError(f"`local_world_size` should be >= 1, got {local_world_size}.")
    return max(1, _num_cpus_available() // local_world_size - 1)


def _worker_check(
    dataloader: object, name: str, num_devices: int = 1, reload_dataloaders_every_n_epochs: int = 0
) -> None:
    """The warnings Lightning emits when it prepares a dataloader ``name`` (``"train_dataloader"``, ...)."""
    from torch.utils.data import DataLoader

    if not isinstance(dataloader, DataLoader):
        return
    upper_bound = suggested_max_num_workers(num_devices)
    context: Any = dataloader.multiprocessing_context
    start_method = context.get_start_method() if context is not None else mp.get_start_method()
    if dataloader.num_workers > 0 and start_method == "spawn" and not dataloader.persistent_workers:
        rank_zero_warn(
            f"Consider setting `persistent_workers=True` in '{name}' to speed up the dataloader worker initialization."
        )
    elif dataloader.num_workers < 2 and upper_bound > 1:
        rank_zero_warn(
            f"The '{name}' does not have many workers which may be a bottleneck. Consider increasing the value of the"
            f" `num_workers` argument` to `num_workers={upper_bound}` in the `DataLoader` to improve performance.",
            category=PossibleUserWarning,
        )
    if dataloader.persistent_workers and dataloader.pin_memory and reload_dataloaders_every_n_epochs > 0:
        rank_zero_warn(
            "The combination of `DataLoader(`pin_memory=True`, `persistent_workers=True`) and `Trainer("
            "reload_dataloaders_every_n_epochs > 0)` can lead to instability due to limitations in PyTorch"
            " (https://github.com/pytorch/pytorch/issues/91252). We recommend setting `pin_memory=False` in this case.",
            category=PossibleUserWarning,
        )


def _shuffled_eval_loader_check(dataloader: object, prefix: str) -> None:
    """Lightning warns when a val/test/predict loader shuffles (``prefix``: ``"val"``, ``"test"``, ``"predict"``)."""
    from torch.utils.data import DataLoader, RandomSampler

    if not isinstance(dataloader, DataLoader):
        return
    sampler = getattr(dataloader.batch_sampler, "sampler", None) or dataloader.sampler
    if isinstance(sampler, RandomSampler):
        rank_zero_warn(
            f"Your `{prefix}_dataloader`'s sampler has shuffling enabled,"
            " it is strongly recommended that you turn shuffling off for val/test dataloaders.",
            category=PossibleUserWarning,
        )


def _max_epochs_default(max_epochs: int | None, max_steps: int, callbacks: Iterable[object]) -> int:
    """Lightning's ``max_epochs`` default: 1000 with a warning when neither limit is set (no ``Timer``), else -1."""
    if max_epochs is not None:
        return max_epochs
    from trainer_core.callbacks.timer import Timer

    if max_steps == -1 and not any(isinstance(cb, Timer) for cb in callbacks):
        rank_zero_warn(
            "`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch limit,"
            " set `max_epochs=-1`.",
            category=PossibleUserWarning,
        )
        return 1000
    return -1


def _few_batches_check(max_batches: int | float, log_every_n_steps: int, has_loggers: bool, fast_dev_run: Any) -> None:
    """Lightning warns when an epoch has fewer batches than ``log_every_n_steps`` (with a logger)."""
    if has_loggers and max_batches < log_every_n_steps and not fast_dev_run:
        rank_zero_warn(
            f"The number of training batches ({max_batches}) is smaller than the logging interval"
            f" Trainer(log_every_n_steps={log_every_n_steps}). Set a lower value for log_every_n_steps if"
            " you want to see logs for the training epoch.",
            category=PossibleUserWarning,
        )


def _unused_gpu_check(device_type: str) -> None:
    """Lightning's ``_log_device_info`` warning: a GPU (CUDA or MPS) is there but the run uses another device."""
    from trainer_core.trainer.accelerator import _cuda_count, _mps_available

    if (_cuda_count() and device_type != "cuda") or (_mps_available() and device_type != "mps"):
        rank_zero_warn(
            "GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
            category=PossibleUserWarning,
        )


__all__ = ["PossibleUserWarning", "disable_possible_user_warnings", "suggested_max_num_workers"]
