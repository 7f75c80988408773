"""``CombinedLoader``: iterate several iterables together (Lightning's four modes).

Each iteration yields ``(batch, batch_idx, dataloader_idx)``. In ``max_size_cycle``, ``min_size`` and
``max_size`` the batch has the shape of the collection passed in (a dict of loaders gives a dict of
batches) and ``dataloader_idx`` is 0; ``sequential`` yields each iterable's batches in turn, with the
iterable's index as ``dataloader_idx``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

_ITERATOR_RETURN = tuple[Any, int, int]  # batch, batch_idx, dataloader_idx
_LITERAL_SUPPORTED_MODES = Literal["min_size", "max_size_cycle", "max_size", "sequential"]


def _sized_len(obj: object) -> int | None:
    try:
        return len(obj)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def _lengths(iterables: list[Iterable[Any]]) -> list[int | float]:
    return [float("inf") if (n := _sized_len(it)) is None else n for it in iterables]


class _ModeIterator(Iterator[_ITERATOR_RETURN]):
    def __init__(self, iterables: list[Iterable[Any]], limits: list[int | float] | None = None) -> None:
        if limits is not None and len(limits) != len(iterables):
            raise ValueError(f"Mismatch in number of limits ({len(limits)}) and number of iterables ({len(iterables)})")
        self.iterables = iterables
        self.iterators: list[Iterator[Any]] = []
        self._idx = 0
        self.limits = limits

    def __next__(self) -> _ITERATOR_RETURN:
        raise NotImplementedError

    def __iter__(self) -> _ModeIterator:
        self.iterators = [iter(it) for it in self.iterables]
        self._idx = 0
        return self

    def __len__(self) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        self.iterators = []
        self._idx = 0

    def _max_len(self) -> int:
        lengths = _lengths(self.iterables)
        if self.limits is not None:
            return int(max(min(n, lim) for n, lim in zip(lengths, self.limits, strict=True)))
        return int(max(lengths))


class _MaxSizeCycle(_ModeIterator):
    def __init__(self, iterables: list[Iterable[Any]], limits: list[int | float] | None = None) -> None:
        super().__init__(iterables, limits)
        self._consumed: list[bool] = []

    def __next__(self) -> _ITERATOR_RETURN:
        out: list[Any] = [None] * len(self.iterators)
        for i in range(len(self.iterators)):
            try:
                out[i] = next(self.iterators[i])
            except StopIteration:
                self._consumed[i] = True
                if all(self._consumed):
                    raise
                self.iterators[i] = iter(self.iterables[i])
                out[i] = next(self.iterators[i])
        index = self._idx
        self._idx += 1
        return out, index, 0

    def __iter__(self) -> _MaxSizeCycle:
        super().__iter__()
        self._consumed = [False] * len(self.iterables)
        return self

    def __len__(self) -> int:
        return self._max_len()

    def reset(self) -> None:
        super().reset()
        self._consumed = []


class _MinSize(_ModeIterator):
    def __next__(self) -> _ITERATOR_RETURN:
        out = [next(it) for it in self.iterators]
        index = self._idx
        self._idx += 1
        return out, index, 0

    def __len__(self) -> int:
        lengths = _lengths(self.iterables)
        return int(min(lengths + list(self.limits)) if self.limits is not None else min(lengths))


class _MaxSize(_ModeIterator):
    def __next__(self) -> _ITERATOR_RETURN:
        out: list[Any] = [None] * len(self.iterators)
        exhausted = True
        for i in range(len(self.iterators)):
            with contextlib.suppress(StopIteration):
                out[i] = next(self.iterators[i])
                exhausted = False
        if exhausted:
            raise StopIteration
        index = self._idx
        self._idx += 1
        return out, index, 0

    def __len__(self) -> int:
        return self._max_len()


class _Sequential(_ModeIterator):
    def __init__(self, iterables: list[Iterable[Any]], limits: list[int | float] | None = None) -> None:
        super().__init__(iterables, limits)
        self._iterator_idx = 0

    def __next__(self) -> _ITERATOR_RETURN:
        n = len(self.iterables)
        if n == 0 or self._iterator_idx >= n:
            raise StopIteration
        if self.limits is not None:
            while self.limits[self._iterator_idx] <= self._idx:
                self._use_next_iterator()
                if self._iterator_idx >= n:
                    raise StopIteration
        try:
            out = next(self.iterators[0])
        except StopIteration:
            self._use_next_iterator()
            return self.__next__()
        index = self._idx
        self._idx += 1
        return out, index, self._iterator_idx

    def __iter__(self) -> _Sequential:
        self._iterator_idx = 0
        self._idx = 0
        self._load_current_iterator()
        return self

    def __len__(self) -> int:
        lengths = _lengths(self.iterables)
        if self.limits is not None:
            return int(sum(min(n, lim) for n, lim in zip(lengths, self.limits, strict=True)))
        return int(sum(lengths))

    def reset(self) -> None:
        super().reset()
        self._iterator_idx = 0

    def _load_current_iterator(self) -> None:
        if self._iterator_idx < len(self.iterables):
            self.iterators = [iter(self.iterables[self._iterator_idx])]
        else:
            self.iterators = []

    def _use_next_iterator(self) -> None:
        self._iterator_idx += 1
        self._idx = 0
        self._load_current_iterator()


_SUPPORTED_MODES: dict[str, tuple[Callable[[list[int]], int], type[_ModeIterator]]] = {
    "min_size": (min, _MinSize),
    "max_size_cycle": (max, _MaxSizeCycle),
    "max_size": (max, _MaxSize),
    "sequential": (sum, _Sequential),
}


def _is_leaf(obj: Any) -> bool:
    # only plain containers are walked: a DataLoader, a range or a dataset is one iterable
    return not isinstance(obj, (list, tuple, dict))


class CombinedLoader(Iterable[_ITERATOR_RETURN]):
    """Combine iterables (a single one, or a list/tuple/dict of them) under one of four modes.

    * ``min_size``: stop after the shortest iterable.
    * ``max_size_cycle``: stop after the longest, restarting the shorter ones.
    * ``max_size``: stop after the longest, giving ``None`` for the exhausted ones.
    * ``sequential``: consume each iterable completely in turn.

    ``len()`` needs ``iter()`` first, as in Lightning.
    """

    def __init__(self, iterables: Any, mode: _LITERAL_SUPPORTED_MODES = "min_size") -> None:
        if mode not in _SUPPORTED_MODES:
            raise ValueError(f"Unsupported mode {mode!r}, please select one of: {list(_SUPPORTED_MODES)}.")
        self._iterables = iterables
        self._flattened, self._spec = tree_flatten(iterables, is_leaf=_is_leaf)
        self._mode = mode
        self._iterator: _ModeIterator | None = None
        self._limits: list[int | float] | None = None

    @property
    def iterables(self) -> Any:
        """The collection of iterables passed in."""
        return self._iterables

    @property
    def sampler(self) -> Any:
        return tree_unflatten([getattr(x, "sampler", None) for x in self.flattened], self._spec)

    @property
    def batch_sampler(self) -> Any:
        return tree_unflatten([getattr(x, "batch_sampler", None) for x in self.flattened], self._spec)

    @property
    def flattened(self) -> list[Any]:
        """The iterables as a flat list (settable, with the same length, e.g. to wrap each loader)."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: list[Any]) -> None:
        if len(flattened) != len(self._flattened):
            raise ValueError(
                f"Mismatch in flattened length ({len(flattened)}) and existing length ({len(self._flattened)})"
            )
        self._iterables = tree_unflatten(flattened, self._spec)
        self._flattened = flattened

    @property
    def limits(self) -> list[int | float] | None:
        """Optional limit on the number of batches taken from each iterable."""
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list[int | float] | None) -> None:
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self.flattened)
        elif isinstance(limits, list) and len(limits) != len(self.flattened):
            raise ValueError(
                f"Mismatch in number of limits ({len(limits)}) and number of iterables ({len(self.flattened)})"
            )
        self._limits = limits

    def __next__(self) -> _ITERATOR_RETURN:
        assert self._iterator is not None
        out = next(self._iterator)
        if isinstance(self._iterator, _Sequential):
            return out
        batch, batch_idx, dataloader_idx = out
        return tree_unflatten(batch, self._spec), batch_idx, dataloader_idx

    def __iter__(self) -> CombinedLoader:
        iterator = _SUPPORTED_MODES[self._mode][1](self.flattened, self._limits)
        iter(iterator)
        self._iterator = iterator
        return self

    def __len__(self) -> int:
        if self._iterator is None:
            raise RuntimeError("Please call `iter(combined_loader)` first.")
        return len(self._iterator)

    def reset(self) -> None:
        """Drop the iterator state and shut down any worker processes."""
        if self._iterator is not None:
            self._iterator.reset()
            self._iterator = None
        for iterable in self.flattened:
            if hasattr(iterable, "_iterator"):
                if isinstance(iterable._iterator, _MultiProcessingDataLoaderIter):
                    iterable._iterator._shutdown_workers()
                iterable._iterator = None

    def _dataset_length(self) -> int:
        lengths = [n for dl in self.flattened if (n := _sized_len(getattr(dl, "dataset", None))) is not None]
        if not lengths:
            raise NotImplementedError("All datasets are iterable-style datasets.")
        return _SUPPORTED_MODES[self._mode][0](lengths)

    def _state_dicts(self) -> list[dict[str, Any]]:
        return [dl.state_dict() for dl in self.flattened if callable(getattr(dl, "state_dict", None))]

    def _load_state_dicts(self, states: list[dict[str, Any]]) -> None:
        if not states:
            return
        stateful = [dl for dl in self.flattened if callable(getattr(dl, "state_dict", None))]
        if len(stateful) != len(states):
            raise RuntimeError(
                f"The CombinedLoader has {len(stateful)} stateful loaders, but found {len(states)} states"
                " in the checkpoint. Please make sure you define the same dataloaders that were used when saving"
                " the checkpoint."
            )
        for dl, state in zip(stateful, states, strict=True):
            dl.load_state_dict(state)


__all__ = ["CombinedLoader"]
