"""Run code, log and warn on the global rank zero only (one process here: rank 0 unless the env says otherwise)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LightningDeprecationWarning(DeprecationWarning):
    """Deprecation warnings raised by trainer_core (Lightning's category name)."""


def _get_rank() -> int:
    # as Lightning: the launcher's rank variables, in this order; 0 when none is set
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        rank = os.environ.get(key)
        if rank is not None:
            return int(rank)
    return 0


class _RankZeroOnly:
    """``@rank_zero_only`` decorator; ``rank_zero_only.rank`` holds the process's global rank."""

    def __init__(self) -> None:
        self.rank: int | None = _get_rank()

    def __call__(self, fn: Callable[..., T], default: T | None = None) -> Callable[..., T | None]:
        @wraps(fn)
        def wrapped_fn(*args: Any, **kwargs: Any) -> T | None:
            rank = self.rank
            if rank is None:
                raise RuntimeError("The `rank_zero_only.rank` needs to be set before use")
            if rank == 0:
                return fn(*args, **kwargs)
            return default

        return wrapped_fn


rank_zero_only = _RankZeroOnly()


def _debug(*args: Any, stacklevel: int = 2, **kwargs: Any) -> None:
    kwargs["stacklevel"] = stacklevel
    log.debug(*args, **kwargs)


def _info(*args: Any, stacklevel: int = 2, **kwargs: Any) -> None:
    kwargs["stacklevel"] = stacklevel
    log.info(*args, **kwargs)


def _warn(message: str | Warning, stacklevel: int = 2, **kwargs: Any) -> None:
    warnings.warn(message, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.debug`` on rank zero."""
    _debug(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.info`` on rank zero (logger ``trainer_core.utilities.rank_zero``)."""
    _info(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, stacklevel: int = 4, **kwargs: Any) -> None:
    """``warnings.warn`` on rank zero (``category=`` is passed through)."""
    _warn(message, stacklevel=stacklevel, **kwargs)


def rank_zero_deprecation(message: str | Warning, stacklevel: int = 5, **kwargs: Any) -> None:
    category = kwargs.pop("category", LightningDeprecationWarning)
    rank_zero_warn(message, stacklevel=stacklevel, category=category, **kwargs)


def rank_prefixed_message(message: str, rank: int | None) -> str:
    return f"[rank: {rank}] {message}" if rank is not None else message


class WarningCache(set[str]):
    """Warn (or log) each distinct message once."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def deprecation(self, message: str, stacklevel: int = 6, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_deprecation(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_info(message, stacklevel=stacklevel, **kwargs)


__all__ = [
    "LightningDeprecationWarning",
    "WarningCache",
    "rank_prefixed_message",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
]
