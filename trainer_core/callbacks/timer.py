"""``Timer``: track time spent in training, validation and testing; stop fit after ``duration``."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import Callback
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer

# the RunningStage values (trainer_core.trainer.states.RunningStage compares equal to them)
_STAGES = ("train", "sanity_check", "validate", "test", "predict")


class Interval(StrEnum):
    step = "step"
    epoch = "epoch"


def _stage(stage: Any) -> str:
    value = str(getattr(stage, "value", stage))
    if value not in _STAGES:
        raise ValueError(f"{stage!r} is not a valid RunningStage")
    return value


class Timer(Callback):
    """``Timer(duration="00:12:00:00")`` (or a ``timedelta``, or a dict of its arguments) stops fit when the
    training time reaches it, checked after every batch (``interval="step"``) or epoch (``"epoch"``).

    ``time_elapsed(stage)``, ``time_remaining(stage)``, ``start_time(stage)`` and ``end_time(stage)`` take a
    stage (``"train"``, ``"validate"``, ``"test"``); the training time survives a checkpoint resume.
    """

    def __init__(
        self,
        duration: str | timedelta | dict[str, int] | None = None,
        interval: str = Interval.step,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(duration, str):
            match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", duration.strip())
            if not match:
                raise MisconfigurationException(
                    f"`Timer(duration={duration!r})` is not a valid duration. Expected a string in the format DD:HH:MM:SS."
                )
            duration = timedelta(
                days=int(match.group(1)), hours=int(match.group(2)), minutes=int(match.group(3)),
                seconds=int(match.group(4)),
            )
        elif isinstance(duration, dict):
            duration = timedelta(**duration)
        if interval not in {i.value for i in Interval}:
            raise MisconfigurationException(
                f"Unsupported parameter value `Timer(interval={interval})`. Possible choices are:"
                f" {', '.join(i.value for i in Interval)}"
            )
        self._duration = duration.total_seconds() if duration is not None else None
        self._interval = Interval(interval)
        self._verbose = verbose
        self._start_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._end_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._offset: float = 0

    def start_time(self, stage: str = "train") -> float | None:
        return self._start_time[_stage(stage)]

    def end_time(self, stage: str = "train") -> float | None:
        return self._end_time[_stage(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in ``stage`` (for training, including the time before a resume)."""
        key = _stage(stage)
        start, end = self._start_time[key], self._end_time[key]
        offset = self._offset if key == "train" else 0
        if start is None:
            return offset
        if end is None:
            return time.monotonic() - start + offset
        return end - start + offset

    def time_remaining(self, stage: str = "train") -> float | None:
        if self._duration is not None:
            return self._duration - self.time_elapsed(stage)
        return None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["train"] = time.monotonic()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["train"] = time.monotonic()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["validate"] = time.monotonic()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["validate"] = time.monotonic()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["test"] = time.monotonic()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["test"] = time.monotonic()

    def on_fit_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self._duration is None:
            return
        self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self._interval != Interval.step or self._duration is None:
            return
        self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self._interval != Interval.epoch or self._duration is None:
            return
        self._check_time_remaining(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = state_dict.get("time_elapsed", {}).get("train", 0)

    def _check_time_remaining(self, trainer: Trainer) -> None:
        assert self._duration is not None
        should_stop = self.time_elapsed() >= self._duration
        # as Lightning: rank 0's clock decides for every process
        should_stop = bool(trainer.strategy.broadcast(should_stop))
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop and self._verbose:
            elapsed = timedelta(seconds=int(self.time_elapsed("train")))
            rank_zero_info(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")


__all__ = ["Interval", "Timer"]
