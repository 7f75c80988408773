"""Batches of an epoch: limits, skipping into an epoch, several loaders at once, and the shuffling sampler's
state for exact resume."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import RandomSampler

from trainer_core.utilities.combined_loader import CombinedLoader

# how CombinedLoader's mode combines its loaders' lengths (Lightning's _SUPPORTED_MODES "fn")
_MODE_LEN: dict[str, Callable[[list[float]], float]] = {
    "min_size": min, "max_size_cycle": max, "max_size": max, "sequential": sum,
}


def _num_batches(loader: Any) -> float:
    if isinstance(loader, CombinedLoader):
        return combined_len(loader)
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return float("inf")


def combined_len(loader: CombinedLoader) -> float:
    """``len(combined_loader)`` as Lightning computes it after ``iter()``, without creating any iterator."""
    lengths = [_num_batches(dl) for dl in loader.flattened]
    if loader.limits is not None:
        lengths = [min(n, lim) for n, lim in zip(lengths, loader.limits, strict=True)]
    if not lengths:
        return 0
    return float(_MODE_LEN[loader._mode](lengths))


def _fraction(n: float, limit: float, stage: str) -> int | float:
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


def limit_batches(loader: Any, limit: int | float, stage: str) -> int | float:
    """The number of batches ``limit_{stage}_batches`` allows; a CombinedLoader gets each of its loaders limited
    (``combined.limits``, Lightning's) and its mode's length of them."""
    if isinstance(loader, CombinedLoader):
        loader.limits = [
            (min(n, limit) if isinstance(limit, int) else _fraction(n, limit, stage))
            for n in (_num_batches(dl) for dl in loader.flattened)
        ]
        n = combined_len(loader)
        return int(n) if n != float("inf") else n
    n = _num_batches(loader)
    if isinstance(limit, int):
        return min(n, limit)
    return _fraction(n, limit, stage)


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


def _combined_batches(loader: CombinedLoader, skip: int, resumed: bool) -> Iterator[Any]:
    """The batches of a CombinedLoader (without its batch/dataloader indices), from batch ``skip``."""
    if resumed or skip > 0:
        # skipping loads the batches; the global RNG is left as the checkpoint had it (the iterators' draws were
        # made before it was written), the samplers replay their saved orders
        rng = torch.get_rng_state()
        it = iter(loader)
        for _ in range(skip):
            if next(it, None) is None:
                break
        torch.set_rng_state(rng)
    else:
        it = iter(loader)
    while True:  # next(), not a for loop: iter() of a CombinedLoader starts it over
        try:
            batch, _, _ = next(it)
        except StopIteration:
            return
        yield batch


def iterate_from(loader: Any, skip: int, resumed: bool = False) -> Any:
    """An iterator over ``loader`` starting at batch ``skip``; map-style DataLoaders skip without loading.

    ``resumed``: continuing an epoch whose iterator was already created before the checkpoint, so the
    global RNG must not be drawn from again (a DataLoader iterator draws its worker base seed from it).
    """
    if isinstance(loader, CombinedLoader):
        return _combined_batches(loader, skip, resumed)
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

_MAX_RECORDED = 1024  # generator states a replayable sampler keeps (one per iter(); reset every epoch)


class _ReplayableRandomSampler(RandomSampler):
    """A ``RandomSampler`` without a generator of its own, made replayable.

    Each ``iter()`` draws its seed from the global RNG exactly when and as ``RandomSampler`` does (so the order
    is a plain DataLoader's after the same ``seed_everything``), and records the generator state it seeded; a
    resumed run hands the recorded states back (``_tc_replay``) and the same permutations come out, with no draw.
    The trainer turns a loader's ``RandomSampler`` into one by setting its class (it stays a ``RandomSampler``).
    """

    _tc_states: list[Tensor]
    _tc_replay: list[Tensor]

    def __iter__(self) -> Iterator[int]:
        replay = getattr(self, "_tc_replay", None)
        if replay:
            state = replay.pop(0)
        else:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            state = torch.Generator().manual_seed(seed).get_state()
        states = self.__dict__.setdefault("_tc_states", [])
        if len(states) >= _MAX_RECORDED:
            del states[0]
        states.append(state)
        generator = torch.Generator()
        generator.set_state(state)
        plain = RandomSampler.__new__(RandomSampler)
        plain.__dict__.update(self.__dict__)
        plain.generator = generator
        yield from RandomSampler.__iter__(plain)


def _random_samplers(loader: Any) -> list[RandomSampler]:
    loaders = loader.flattened if isinstance(loader, CombinedLoader) else [loader]
    return [s for dl in loaders if isinstance(s := getattr(dl, "sampler", None), RandomSampler)]


def _owned(sampler: RandomSampler) -> bool:
    return sampler.generator is None or isinstance(sampler, _ReplayableRandomSampler)


class SamplerState:
    """Makes the shuffling DataLoaders' order reproducible across a resume.

    A ``RandomSampler`` without a generator becomes a ``_ReplayableRandomSampler`` (same draws from the global
    RNG at the same moment, recorded); one with the user's generator has that generator's state recorded at the
    epoch start. A checkpoint holds these per sampler (``samplers``; the first one's also at the top level, the
    layout of earlier checkpoints), so a mid-epoch resume replays the same permutation.
    """

    def __init__(self) -> None:
        self._user_start: dict[int, Tensor] = {}  # id(sampler) -> its generator's state at the epoch start

    def on_epoch_start(self, loader: Any, restore: dict[str, Any] | None) -> None:
        saved = _saved_samplers(restore)
        self._user_start = {}
        for i, sampler in enumerate(_random_samplers(loader)):
            state = saved[i] if i < len(saved) else None
            if _owned(sampler):
                if not isinstance(sampler, _ReplayableRandomSampler):
                    sampler.__class__ = _ReplayableRandomSampler
                assert isinstance(sampler, _ReplayableRandomSampler)
                sampler._tc_states = []
                replay: list[Tensor] = []
                if state is not None:
                    replay = list(state.get("iter_states") or [])
                    if not replay and state.get("epoch_start_state") is not None:
                        replay = [state["epoch_start_state"]]
                sampler._tc_replay = replay
            else:
                assert sampler.generator is not None
                if state is not None and state.get("epoch_start_state") is not None:
                    sampler.generator.set_state(state["epoch_start_state"])
                self._user_start[id(sampler)] = sampler.generator.get_state()

    def on_boundary_restore(self, loader: Any, state: dict[str, Any]) -> None:
        """Resuming at an epoch boundary with a user-owned generator: continue from its saved state."""
        saved = _saved_samplers(state)
        for sampler, s in zip(_random_samplers(loader), saved, strict=False):
            if not s.get("owned", True) and s.get("current_state") is not None and sampler.generator is not None:
                sampler.generator.set_state(s["current_state"])

    def state_dict(self, loader: Any) -> dict[str, Any]:
        samplers: list[dict[str, Any]] = []
        for sampler in _random_samplers(loader):
            if isinstance(sampler, _ReplayableRandomSampler):
                states = list(getattr(sampler, "_tc_states", []))
                samplers.append(
                    {
                        "owned": True,
                        "epoch_start_state": states[0] if states else None,
                        "iter_states": states,
                        "current_state": None,
                    }
                )
            else:
                gen = sampler.generator
                samplers.append(
                    {
                        "owned": False,
                        "epoch_start_state": self._user_start.get(id(sampler)),
                        "current_state": gen.get_state() if gen is not None else None,
                    }
                )
        first = samplers[0] if samplers else {"epoch_start_state": None, "current_state": None, "owned": False}
        return {**first, "samplers": samplers}


def _saved_samplers(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not state:
        return []
    if "samplers" in state:
        return list(state["samplers"])
    return [state]  # a checkpoint of an earlier version: the one sampler's state at the top level


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Lightning's ``_set_sampler_epoch``: ``set_epoch(epoch)`` on the loader's sampler and its batch sampler's
    sampler (each once), for every loader of a CombinedLoader."""
    loaders = loader.flattened if isinstance(loader, CombinedLoader) else [loader]
    for dl in loaders:
        objects: dict[int, Any] = {}
        sampler = getattr(dl, "sampler", None)
        if sampler is not None:
            objects[id(sampler)] = sampler
        batch_sampler = getattr(dl, "batch_sampler", None)
        inner = getattr(batch_sampler, "sampler", None) if batch_sampler is not None else None
        if inner is not None:
            objects[id(inner)] = inner
        for obj in objects.values():
            set_epoch = getattr(obj, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
