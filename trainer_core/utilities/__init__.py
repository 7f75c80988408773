"""Lightning's general utilities: rank-zero helpers, ``grad_norm``, ``is_overridden``, ``CombinedLoader``."""

from __future__ import annotations

from trainer_core.core.hparams import AttributeDict
from trainer_core.utilities.combined_loader import CombinedLoader
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.grads import grad_norm
from trainer_core.utilities.model_helpers import is_overridden
from trainer_core.utilities.rank_zero import (
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)

__all__ = [
    "AttributeDict",
    "CombinedLoader",
    "MisconfigurationException",
    "grad_norm",
    "is_overridden",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
]
