"""Each rank's share of the data: the ``DistributedSampler`` the Trainer puts into the loaders under DDP
(``use_distributed_sampler=True``, Lightning's default and rules).

- train, validate, test: ``DistributedSampler`` (train: always shuffled, as Lightning's; validate/test:
  shuffled when the loader was, a ``RandomSampler``; never with ``overfit_batches``), seeded
  with ``PL_GLOBAL_SEED`` (what ``seed_everything`` set, else 0), so every rank draws the same permutation
  and takes its own slice; a custom sampler is wrapped (its indices, then this rank's slice);
- predict: an *unrepeated* split (no sample is padded in twice, so predictions are each sample once);
- a loader that already has a ``DistributedSampler``, or an ``IterableDataset``, is left as it is.

The user's loader is not changed: a shallow copy gets the new sampler (so a DataLoader subclass keeps its
class and attributes).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from trainer_core.utilities.combined_loader import CombinedLoader
from trainer_core.utilities.exceptions import MisconfigurationException


class _UnrepeatedDistributedSampler(DistributedSampler[Any]):
    """Lightning's: rank r takes indices r, r + n, r + 2n ... of the dataset, no padding (ranks may differ by one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]
        self.total_size = len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        else:
            indices = list(range(len(self.dataset)))  # type: ignore[arg-type]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


class _IndexList:
    """A sampler's indices of one epoch, as a dataset of indices (``DistributedSampler`` needs ``len``)."""

    def __init__(self, sampler: Sampler[Any]) -> None:
        self.sampler = sampler
        self._indices: list[Any] | None = None

    def refresh(self) -> None:
        self._indices = list(iter(self.sampler))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        if self._indices is None:
            self.refresh()
        assert self._indices is not None
        return self._indices[i]


class _WrapsSampler(DistributedSampler[Any]):
    """A distributed split of a custom sampler's indices (drawn afresh each epoch) instead of the dataset's."""

    def __init__(self, sampler: Sampler[Any], **kwargs: Any) -> None:
        self._index_list = _IndexList(sampler)
        super().__init__(self._index_list, **kwargs)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        self._index_list.refresh()
        return (self._index_list[i] for i in super().__iter__())


class _DistributedSamplerWrapper(_WrapsSampler):
    """Lightning's ``DistributedSamplerWrapper``: a custom sampler's indices, this rank's slice of them."""


class _UnrepeatedDistributedSamplerWrapper(_WrapsSampler, _UnrepeatedDistributedSampler):
    """The same for predict: this rank's slice without padding."""


def _seed() -> int:
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def _sampler_of(loader: DataLoader[Any]) -> Any:
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        return getattr(batch_sampler, "sampler", loader.sampler)
    return loader.sampler


def distributed_loader(loader: Any, stage: str, kwargs: dict[str, int], overfit: bool = False) -> Any:
    """``loader`` with this rank's sampler (``kwargs``: ``num_replicas``, ``rank``), or ``loader`` itself."""
    if isinstance(loader, CombinedLoader):
        loader.flattened = [distributed_loader(dl, stage, kwargs, overfit) for dl in loader.flattened]
        return loader
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    sampler = _sampler_of(loader)
    if isinstance(sampler, DistributedSampler):
        return loader
    predicting = stage == "predict"
    # Lightning's rule: the train loader's sampler always shuffles (each epoch a new permutation by
    # set_epoch), an eval loader's only when it did; never with overfit_batches or for predict
    shuffle = (stage == "train" or isinstance(sampler, RandomSampler)) and not overfit and not predicting
    options: dict[str, Any] = {"shuffle": shuffle, "seed": _seed(), **kwargs}
    new_sampler: DistributedSampler[Any]
    if predicting:
        if type(sampler) in (SequentialSampler, RandomSampler):
            new_sampler = _UnrepeatedDistributedSampler(loader.dataset, **options)
        else:
            new_sampler = _UnrepeatedDistributedSamplerWrapper(sampler, **options)
    elif isinstance(sampler, RandomSampler) or type(sampler) is SequentialSampler:
        new_sampler = DistributedSampler(loader.dataset, **options)
    else:
        new_sampler = _DistributedSamplerWrapper(sampler, **options)
    return _with_sampler(loader, new_sampler)


def _with_sampler(loader: DataLoader[Any], sampler: DistributedSampler[Any]) -> DataLoader[Any]:
    new = copy.copy(loader)
    batch_sampler = loader.batch_sampler
    # DataLoader refuses these assignments after __init__; the copy is ours, so set them underneath
    set_attr = object.__setattr__
    if batch_sampler is None:  # batch_size=None: one sample per step
        set_attr(new, "sampler", sampler)
    elif type(batch_sampler) is BatchSampler:
        set_attr(new, "sampler", sampler)
        set_attr(new, "batch_sampler", BatchSampler(sampler, batch_sampler.batch_size, batch_sampler.drop_last))
    elif hasattr(batch_sampler, "sampler"):
        custom = copy.copy(batch_sampler)
        try:
            custom.sampler = sampler
        except AttributeError:
            raise _cannot(loader) from None
        set_attr(new, "batch_sampler", custom)
    else:
        raise _cannot(loader)
    set_attr(new, "_iterator", None)
    return new


def _cannot(loader: DataLoader[Any]) -> MisconfigurationException:
    return MisconfigurationException(
        f"Trainer(use_distributed_sampler=True) cannot put a DistributedSampler into this DataLoader: its batch "
        f"sampler {type(loader.batch_sampler).__qualname__} has no `sampler` attribute to replace. Give each rank "
        "its share yourself (e.g. a DistributedSampler) and pass `Trainer(use_distributed_sampler=False)`."
    )

