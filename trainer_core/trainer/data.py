"""Data helpers: batch limits, skipping into an epoch, and the shuffling sampler's state for exact resume."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.module import LightningModule, move_data_to_device
from trainer_core.trainer.hooks import is_overridden

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


def _num_batches(loader: Any) -> float:
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return float("inf")


def limit_batches(loader: Any, limit: int | float, stage: str) -> int | float:
    n = _num_batches(loader)
    if isinstance(limit, int):
        return min(n, limit)
    if limit == 1.0:
        return n
    if n == float("inf"):
        if limit == 0.0:
            return 0
        raise ValueError(
            f"Trainer(limit_{stage}_batches={limit}) is a fraction, but the {stage} dataloader has no length. "
            f"Pass an int number of batches to limit_{stage}_batches."
        )
    num = int(n * limit)
    if limit > 0 and num == 0 and n > 0:
        min_pct = 1.0 / n
        raise ValueError(
            f"You requested to check {limit} of the `{stage}_dataloader` but {limit} * {n} < 1. Please increase "
            f"the `limit_{stage}_batches` argument. Try at least `limit_{stage}_batches={min_pct}`"
        )
    return num


class _SkipBatchSampler:
    """A batch sampler that drops its first ``skip`` batches of indices (no data is loaded for them)."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.batch_sampler)
        for _ in range(self.skip):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


def iterate_from(loader: Any, skip: int, resumed: bool = False) -> Any:
    """An iterator over ``loader`` starting at batch ``skip``; map-style DataLoaders skip without loading.

    ``resumed``: continuing an epoch whose iterator was already created before the checkpoint, so the
    global RNG must not be drawn from again (a DataLoader iterator draws its worker base seed from it).
    """
    if skip <= 0 and not resumed:
        return iter(loader)
    from torch.utils.data import DataLoader, IterableDataset

    if (
        isinstance(loader, DataLoader)
        and loader.batch_sampler is not None
        and not isinstance(loader.dataset, IterableDataset)
    ):
        kwargs: dict[str, Any] = dict(
            batch_sampler=_SkipBatchSampler(loader.batch_sampler, skip),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            # its own generator: the worker base seed must not draw from the global RNG a second time
            generator=torch.Generator().manual_seed(0),
        )
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        return iter(DataLoader(loader.dataset, **kwargs))
    it = iter(loader)
    for _ in range(max(skip, 0)):
        if next(it, None) is None:
            break
    return it


# ---------------------------------------------------------------- sampler order (exact resume)


def _random_sampler(loader: Any) -> Any:
    from torch.utils.data import RandomSampler

    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, RandomSampler) else None


class SamplerState:
    """Makes a shuffling DataLoader's order reproducible across a resume.

    A ``RandomSampler`` without a generator draws a seed from the global RNG when its epoch starts.
    We draw that seed the same way, seed a generator of our own with it, and record the generator's
    state at the epoch start, so a mid-epoch resume replays the same permutation.
    """

    def __init__(self) -> None:
        self.epoch_start_state: Tensor | None = None
        self.owned = False

    def on_epoch_start(self, loader: Any, restore: dict[str, Any] | None) -> None:
        sampler = _random_sampler(loader)
        if sampler is None:
            self.epoch_start_state = None
            return
        if sampler.generator is None or getattr(sampler, "_trainer_core_owned", False):
            self.owned = True
            if sampler.generator is None:
                sampler.generator = torch.Generator()
                sampler._trainer_core_owned = True
            if restore is None:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                sampler.generator.manual_seed(seed)
        else:
            self.owned = False
        if restore is not None and restore.get("epoch_start_state") is not None:
            sampler.generator.set_state(restore["epoch_start_state"])
        self.epoch_start_state = sampler.generator.get_state()

    def on_boundary_restore(self, loader: Any, state: dict[str, Any]) -> None:
        """Resuming at an epoch boundary with a user-owned generator: continue from its saved state."""
        sampler = _random_sampler(loader)
        if sampler is None or state.get("owned", True) or state.get("current_state") is None:
            return
        if sampler.generator is not None:
            sampler.generator.set_state(state["current_state"])

    def state_dict(self, loader: Any) -> dict[str, Any]:
        sampler = _random_sampler(loader)
        current = sampler.generator.get_state() if sampler is not None and sampler.generator is not None else None
        return {"epoch_start_state": self.epoch_start_state, "current_state": current, "owned": self.owned}



# ---------------------------------------------------------------- finding and moving batches


def as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
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
            raise ValueError(
                f"`val_check_interval` ({interval}) must be less than or equal to the number of the training "
                f"batches ({n}). If you want to disable validation set `limit_val_batches` to 0.0 instead. If you "
                "want to validate based on the total training batches, set `check_val_every_n_epoch=None`."
            )
        return interval
    if n == float("inf"):
        if interval != 1.0:
            raise ValueError(
                "When using an IterableDataset for `train_dataloader`, `Trainer(val_check_interval)` must be "
                "`1.0` or an int. An int k specifies checking validation every k training batches."
            )
        return float("inf")
    return max(1, int(n * interval))


class _DataConnector:
    """The Trainer's dataloaders: found, limited and (re)loaded; it sets the Trainer's public data attributes
    (``train_dataloader``, ``num_training_batches``, ``val_check_batch`` ...)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.val_loaders: list[Any] = []
        self.val_enabled = False
        self.train_source: Any = None
        self.batch_transfer: Callable[[Any, int], Any] | None = None

    def loader_from(self, stage: str, explicit: Any) -> Any:
        trainer = self.trainer
        loaders = find_loader(stage, explicit, trainer.lightning_module, trainer.datamodule)
        if os.environ.get("PL_SEED_WORKERS") == "1":
            from torch.utils.data import DataLoader

            from trainer_core.seed import pl_worker_init_function

            for dl in as_list(loaders):
                # seed_everything(workers=True): each worker gets its own seed, derived from the global one
                if isinstance(dl, DataLoader) and dl.worker_init_fn is None and dl.num_workers > 0:
                    dl.worker_init_fn = partial(pl_worker_init_function, rank=0)
        return loaders

    def setup_batch_transfer(self) -> None:
        trainer = self.trainer
        self.batch_transfer = make_batch_transfer(trainer.lightning_module, trainer.datamodule, trainer.strategy.root_device)

    def setup_fit_data(self, model: Any, train: Any, val: Any) -> None:
        trainer = self.trainer
        self.train_source = train
        trainer.train_dataloader = self.loader_from("train", train)
        if trainer.train_dataloader is None:
            raise RuntimeError(
                "No `train_dataloader()` found: pass `train_dataloaders=` to `Trainer.fit`, a datamodule, or define "
                "`train_dataloader()` on the LightningModule."
            )
        from torch.utils.data import DataLoader

        nested = trainer.train_dataloader
        if isinstance(nested, Mapping) or (
            isinstance(nested, (list, tuple)) and nested and all(isinstance(d, DataLoader) for d in nested)
        ):
            raise ValueError(
                "Several train dataloaders (a list or dict of DataLoaders, Lightning's CombinedLoader modes) are not "
                "supported yet; pass a single DataLoader (or any iterable of batches) as `train_dataloaders`."
            )
        trainer.val_dataloaders = self.loader_from("val", val)
        self.val_loaders = as_list(trainer.val_dataloaders)
        trainer.num_training_batches = limit_batches(trainer.train_dataloader, trainer.limit_train_batches, "train")
        trainer.num_val_batches = [limit_batches(dl, trainer.limit_val_batches, "val") for dl in self.val_loaders]
        has_step = is_overridden("validation_step", model, LightningModule)
        self.val_enabled = bool(self.val_loaders) and has_step and trainer.limit_val_batches > 0
        if self.val_loaders and not has_step:
            warnings.warn(
                "You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.", stacklevel=3
            )
        trainer.val_check_batch = val_check_batch(
            trainer.val_check_interval, trainer.num_training_batches, self.val_enabled, trainer.check_val_every_n_epoch
        )

    def maybe_reload_train_dataloader(self, epoch: int) -> None:
        trainer = self.trainer
        n = trainer.reload_dataloaders_every_n_epochs
        if n and epoch > 0 and epoch % n == 0 and self.train_source is None:
            trainer.train_dataloader = self.loader_from("train", None)
            trainer.num_training_batches = limit_batches(trainer.train_dataloader, trainer.limit_train_batches, "train")

    def setup_eval_data(self, stage: str, fn_name: str, loaders: Any) -> tuple[Any, list[Any], list[int | float]]:
        """(the loaders as given or found, as a list, each one's batch limit) for ``stage`` "val"/"test"/"predict"."""
        trainer = self.trainer
        source = self.loader_from(stage, loaders)
        if source is None:
            raise RuntimeError(
                f"No `{stage}_dataloader()` found: pass `dataloaders=` to `Trainer.{fn_name}`, a datamodule, or "
                f"define `{stage}_dataloader()` on the LightningModule."
            )
        loader_list = as_list(source)
        limit = getattr(trainer, f"limit_{stage}_batches")
        return source, loader_list, [limit_batches(dl, limit, stage) for dl in loader_list]
