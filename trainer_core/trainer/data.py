"""The Trainer's data: finding the loaders, (re)loading them, several train loaders, overfit_batches, and moving
batches; batch limits, skipping into an epoch and the sampler state live in ``trainer.sampling``."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sized
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import torch

from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.module import LightningModule, move_data_to_device
from trainer_core.trainer.hooks import is_overridden
from trainer_core.trainer.sampling import (
    SamplerState,
    _num_batches,
    _SkipBatchSampler,
    iterate_from,
    limit_batches,
)
from trainer_core.utilities.combined_loader import CombinedLoader
from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError
from trainer_core.utilities.model_helpers import is_overridden as _instance_overridden

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


# ---------------------------------------------------------------- finding and moving batches


__all__ = ["SamplerState", "_SkipBatchSampler", "_num_batches", "iterate_from", "limit_batches"]


def as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, CombinedLoader):
        return list(loaders.flattened)
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return [loaders]


def find_loader(stage: str, explicit: Any, module: Any, datamodule: Any) -> Any:
    """The ``stage`` dataloader(s): passed explicitly, else the datamodule's, else the module's hook."""
    if explicit is not None:
        return explicit
    hook = f"{stage}_dataloader"
    dm = datamodule
    if dm is not None and is_overridden(hook, dm, LightningDataModule) or (dm is not None and hook in vars(dm)):
        return getattr(dm, hook)()
    if module is not None and hasattr(type(module), hook) and callable(getattr(module, hook)):
        return getattr(module, hook)()
    return None


def loader_defined(stage: str, explicit: Any, module: Any, datamodule: Any) -> bool:
    """Whether ``find_loader`` would find a ``stage`` loader, without requesting it (Lightning's ``is_defined``)."""
    if explicit is not None:
        return True
    hook = f"{stage}_dataloader"
    dm = datamodule
    if dm is not None and (is_overridden(hook, dm, LightningDataModule) or hook in vars(dm)):
        return True
    return module is not None and hasattr(type(module), hook) and callable(getattr(module, hook))


def make_batch_transfer(module: Any, dm: Any, device: torch.device) -> Callable[[Any, int], Any] | None:
    """What moves a batch to ``device`` through the transfer hooks; None when nothing needs doing."""
    hooks = ("transfer_batch_to_device", "on_before_batch_transfer", "on_after_batch_transfer")
    custom_module = any(is_overridden(h, module, LightningModule) for h in hooks)
    custom_dm = dm is not None and any(is_overridden(h, dm, LightningDataModule) for h in hooks)
    if not custom_module and not custom_dm:
        if device.type == "cpu":
            return None  # batches from a DataLoader are already on the CPU

        def transfer(batch: Any, dataloader_idx: int) -> Any:
            return move_data_to_device(batch, device)

        return transfer

    def transfer_with_hooks(batch: Any, dataloader_idx: int) -> Any:
        if custom_dm:
            batch = dm.on_before_batch_transfer(batch, dataloader_idx)
        batch = module.on_before_batch_transfer(batch, dataloader_idx)
        if custom_dm and is_overridden("transfer_batch_to_device", dm, LightningDataModule):
            batch = dm.transfer_batch_to_device(batch, device, dataloader_idx)
        else:
            batch = module.transfer_batch_to_device(batch, device, dataloader_idx)
        batch = module.on_after_batch_transfer(batch, dataloader_idx)
        if custom_dm:
            batch = dm.on_after_batch_transfer(batch, dataloader_idx)
        return batch

    return transfer_with_hooks


def val_check_batch(interval: int | float, n: int | float, val_enabled: bool, every_n_epochs: int | None) -> int | float:
    """After how many training batches validation runs (``val_check_interval`` resolved against the loader)."""
    if isinstance(interval, int):
        if val_enabled and every_n_epochs is not None and interval > n:
            raise ValueError(  # Lightning 2.6: a ValueError here
                f"`val_check_interval` ({interval}) must be less than or equal to the number of the training "
                f"batches ({n}). If you want to disable validation set `limit_val_batches` to 0.0 instead. If you "
                "want to validate based on the total training batches, set `check_val_every_n_epoch=None`."
            )
        return interval
    if n == float("inf"):
        if interval != 1.0:
            raise MisconfigurationException(
                "When using an IterableDataset for `train_dataloader`, `Trainer(val_check_interval)` must be "
                "`1.0` or an int. An int k specifies checking validation every k training batches."
            )
        return float("inf")
    return max(1, int(n * interval))


def source_defined(stage: str, explicit: Any, module: Any, datamodule: Any) -> bool:
    """Whether ``stage``'s loaders are given or have a hook to ask (Lightning's ``_DataLoaderSource.is_defined``),
    without asking it."""
    if explicit is not None:
        return True
    hook = f"{stage}_dataloader"
    if datamodule is not None and (is_overridden(hook, datamodule, LightningDataModule) or hook in vars(datamodule)):
        return True
    return module is not None and is_overridden(hook, module, LightningModule)


def as_train_loader(loaders: Any) -> Any:
    """The train loader(s) as one iterable: a dict or list of DataLoaders becomes Lightning's
    ``CombinedLoader(mode="max_size_cycle")``; a ``CombinedLoader`` in ``sequential`` mode is refused."""
    from torch.utils.data import DataLoader

    if isinstance(loaders, Mapping) or (
        isinstance(loaders, (list, tuple))
        and loaders
        and all(isinstance(d, (DataLoader, CombinedLoader)) for d in loaders)
    ):
        loaders = CombinedLoader(loaders, "max_size_cycle")
    if isinstance(loaders, CombinedLoader) and loaders._mode == "sequential":
        raise ValueError(
            '`_FitLoop` does not support the `CombinedLoader(mode="sequential")` mode.'
            " The available modes are: ['min_size', 'max_size_cycle', 'max_size']"
        )
    return loaders


def _sequential(dl: Any) -> Any:
    """``dl`` rebuilt with a ``SequentialSampler`` (Lightning's ``_update_dataloader`` for overfit_batches)."""
    from torch.utils.data import DataLoader, SequentialSampler

    if type(dl) is not DataLoader or dl.batch_size is None:
        return dl
    kwargs: dict[str, Any] = dict(
        batch_size=dl.batch_size, sampler=SequentialSampler(cast("Sized", dl.dataset)), num_workers=dl.num_workers,
        collate_fn=dl.collate_fn, pin_memory=dl.pin_memory, drop_last=dl.drop_last, timeout=dl.timeout,
        worker_init_fn=dl.worker_init_fn, multiprocessing_context=dl.multiprocessing_context,
        generator=dl.generator, persistent_workers=dl.persistent_workers, pin_memory_device=dl.pin_memory_device,
    )
    if dl.num_workers > 0:
        kwargs["prefetch_factor"] = dl.prefetch_factor
    return DataLoader(dl.dataset, **kwargs)


def resolve_overfit_batches(loader: Any, prefix: str) -> Any:
    """Lightning's ``_resolve_overfit_batches``: shuffling loaders get a SequentialSampler, with its warning."""
    from torch.utils.data import SequentialSampler

    flat = list(loader.flattened) if isinstance(loader, CombinedLoader) else [loader]
    if all(isinstance(dl.sampler, SequentialSampler) for dl in flat if hasattr(dl, "sampler")):
        return loader
    warnings.warn(
        f"You requested to overfit but enabled {prefix} dataloader shuffling."
        f" We are turning off the {prefix} dataloader shuffling for you.",
        UserWarning,
        stacklevel=2,
    )
    updated = [_sequential(dl) if hasattr(dl, "dataset") else dl for dl in flat]
    if isinstance(loader, CombinedLoader):
        loader.flattened = updated
        return loader
    return updated[0]


class _DataConnector:
    """The Trainer's dataloaders: found, limited and (re)loaded; it sets the Trainer's public data attributes
    (``train_dataloader``, ``num_training_batches``, ``val_check_batch`` ...).

    As in Lightning, ``setup_fit_data`` only records where the loaders come from; the train loader is requested
    when training starts (or when ``estimated_stepping_batches`` needs it), the val loaders when the sanity check
    or the first validation starts, and both again every ``reload_dataloaders_every_n_epochs`` epochs.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.val_loaders: list[Any] = []
        self.val_enabled = False
        self.train_source: Any = None
        self.val_source: Any = None
        self.train_loader: Any = None  # what the fit loop iterates (a CombinedLoader for several loaders)
        self.batch_transfer: Callable[[Any, int], Any] | None = None
        self._train_reload_epoch: float | None = None  # epoch of the last request; None: not requested yet
        self._val_reload_epoch: float | None = None
        # a time-based val_check_interval (seconds) and when validation last ran (time.monotonic())
        self.val_time_interval: float | None = trainer._config.val_check_time_interval
        self.last_val_time = 0.0

    def loader_from(self, stage: str, explicit: Any, process: bool = True) -> Any:
        """``stage``'s loaders; ``process=False``: without Lightning's per-loader warnings (``process_loaders``
        after overfit_batches changed the samplers, as Lightning's ``_process_dataloader`` comes after that)."""
        trainer = self.trainer
        loaders = find_loader(stage, explicit, trainer.lightning_module, trainer.datamodule)
        if process:
            self.process_loaders(loaders, stage)
        if os.environ.get("PL_SEED_WORKERS") == "1":
            from torch.utils.data import DataLoader

            from trainer_core.seed import pl_worker_init_function

            for dl in as_list(loaders):
                # seed_everything(workers=True): each worker gets its own seed, derived from the global one
                if isinstance(dl, DataLoader) and dl.worker_init_fn is None and dl.num_workers > 0:
                    dl.worker_init_fn = partial(pl_worker_init_function, rank=trainer.global_rank)
        return loaders

    def distribute(self, loader: Any, stage: str) -> Any:
        """Under DDP with ``use_distributed_sampler``: this rank's share of ``loader`` (distributed_data)."""
        trainer = self.trainer
        kwargs = trainer.strategy.distributed_sampler_kwargs
        if kwargs is None or not trainer._config.use_distributed_sampler:
            return loader
        from trainer_core.trainer.distributed_data import distributed_loader

        return distributed_loader(loader, stage, kwargs, overfit=bool(trainer._config.overfit_batches))

    def process_loaders(self, loaders: Any, stage: str) -> None:
        from trainer_core.utilities.warnings import _shuffled_eval_loader_check, _worker_check

        for dl in as_list(loaders):  # Lightning's _process_dataloader warnings
            if stage != "train":
                _shuffled_eval_loader_check(dl, stage)
            _worker_check(
                dl, f"{stage}_dataloader", self.trainer.strategy.num_processes,
                self.trainer.reload_dataloaders_every_n_epochs,
            )

    def setup_batch_transfer(self) -> None:
        trainer = self.trainer
        self.batch_transfer = make_batch_transfer(trainer.lightning_module, trainer.datamodule, trainer.strategy.root_device)

    def setup_fit_data(self, model: Any, train: Any, val: Any) -> None:
        """Where fit's loaders come from; whether validation runs (Lightning's configuration checks)."""
        trainer = self.trainer
        self.train_source, self.val_source = train, val
        self._train_reload_epoch = self._val_reload_epoch = None
        self.train_loader = trainer.train_dataloader = None
        self.val_loaders, trainer.val_dataloaders = [], None
        has_val = source_defined("val", val, model, trainer.datamodule)
        # Lightning's is_overridden: a step assigned None on the instance does not count
        has_step = _instance_overridden("validation_step", model, LightningModule)
        self.val_enabled = has_val and has_step and trainer.limit_val_batches > 0
        if has_val and not has_step:
            warnings.warn(
                "You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.", stacklevel=3
            )
        if has_step and not has_val:
            from trainer_core.utilities.warnings import PossibleUserWarning

            warnings.warn(
                "You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.",
                PossibleUserWarning,
                stacklevel=3,
            )

    def _due(self, last: float | None, epoch: int) -> bool:
        n = self.trainer.reload_dataloaders_every_n_epochs
        return last is None or bool(n and epoch - last >= n)

    def setup_train_data(self, epoch: int | None = None) -> None:
        """Request the train loader(s) the first time, and again when a reload is due at ``epoch``."""
        trainer = self.trainer
        epoch = trainer.current_epoch if epoch is None else epoch
        if not self._due(self._train_reload_epoch, epoch):
            return
        loaders = self.loader_from("train", self.train_source, process=False)
        if loaders is None:
            raise _MisconfigurationRuntimeError(
                "No `train_dataloader()` found: pass `train_dataloaders=` to `Trainer.fit`, a datamodule, or define "
                "`train_dataloader()` on the LightningModule."
            )
        loader = as_train_loader(loaders)
        if trainer._config.overfit_batches:
            loader = resolve_overfit_batches(loader, "train")
        loader = self.distribute(loader, "train")
        self.process_loaders(loader, "train")
        self._train_reload_epoch = epoch
        self.last_val_time = time.monotonic()  # Lightning's _last_val_time: the time interval starts here
        self.train_loader = loader
        trainer.train_dataloader = loader.iterables if isinstance(loader, CombinedLoader) else loader
        trainer.num_training_batches = limit_batches(loader, trainer.limit_train_batches, "train")
        trainer.val_check_batch = val_check_batch(
            trainer.val_check_interval, trainer.num_training_batches, self.val_enabled, trainer.check_val_every_n_epoch
        )
        from trainer_core.utilities.warnings import _few_batches_check

        _few_batches_check(
            trainer.num_training_batches, trainer.log_every_n_steps, bool(trainer.loggers), trainer.fast_dev_run
        )

    def maybe_reload_train_dataloader(self, epoch: int) -> None:
        self.setup_train_data(epoch)

    def setup_val_data(self, epoch: int | None = None) -> None:
        """Request fit's val loaders the first time (sanity check or first validation), and again when due."""
        trainer = self.trainer
        epoch = trainer.current_epoch if epoch is None else epoch
        if not self._due(self._val_reload_epoch, epoch):
            return
        source = self.loader_from("val", self.val_source, process=False)
        self._val_reload_epoch = epoch
        loaders = as_list(source)
        if trainer._config.overfit_batches:
            loaders = [resolve_overfit_batches(dl, "val") for dl in loaders]
        loaders = [self.distribute(dl, "val") for dl in loaders]
        self.process_loaders(loaders, "val")
        trainer.val_dataloaders = source
        self.val_loaders = loaders
        trainer.num_val_batches = [limit_batches(dl, trainer.limit_val_batches, "val") for dl in loaders]

    def setup_eval_data(self, stage: str, fn_name: str, loaders: Any) -> tuple[Any, list[Any], list[int | float]]:
        """(the loaders as given or found, as a list, each one's batch limit) for ``stage`` "val"/"test"/"predict"."""
        trainer = self.trainer
        source = self.loader_from(stage, loaders)
        if source is None:
            raise RuntimeError(
                f"No `{stage}_dataloader()` found: pass `dataloaders=` to `Trainer.{fn_name}`, a datamodule, or "
                f"define `{stage}_dataloader()` on the LightningModule."
            )
        loader_list = [self.distribute(dl, stage) for dl in as_list(source)]
        limit = getattr(trainer, f"limit_{stage}_batches")
        return source, loader_list, [limit_batches(dl, limit, stage) for dl in loader_list]
