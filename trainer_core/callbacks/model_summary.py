"""``ModelSummary`` callback: prints the layer table when fit starts (Lightning's behaviour)."""

from __future__ import annotations

import sys
from typing import Any

from trainer_core.callbacks.callback import Callback
from trainer_core.summary import ModelSummaryData, format_summary, summarize


class ModelSummary(Callback):
    """Print the model's summary table at ``on_fit_start``; ``max_depth=0`` prints nothing."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"ModelSummary(max_depth=) must be an integer >= -1, got {max_depth!r}")
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs
        self.last_summary: ModelSummaryData | None = None

    @property
    def max_depth(self) -> int:
        return self._max_depth

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._max_depth:
            return
        data = summarize(pl_module, max_depth=self._max_depth)
        self.last_summary = data
        if getattr(trainer, "is_global_zero", True):
            self.summarize(data)

    @staticmethod
    def summarize(data: ModelSummaryData) -> None:
        print(format_summary(data), file=sys.stdout, flush=True)
