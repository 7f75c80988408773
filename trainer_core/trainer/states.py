"""What the trainer is doing: ``state.fn`` (the entry point) and ``state.stage`` (the running loop)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class _StrEnum(StrEnum):
    def __str__(self) -> str:
        return self.value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.value == other
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self.value)


class TrainerStatus(_StrEnum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class TrainerFn(_StrEnum):
    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(_StrEnum):
    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def dataloader_prefix(self) -> str | None:
        if self == RunningStage.SANITY_CHECKING:
            return "val"
        if self == RunningStage.VALIDATING:
            return "val"
        return self.value


@dataclass
class TrainerState:
    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        return self.status == TrainerStatus.INTERRUPTED


class _StageFlag:
    """``trainer.training`` and its siblings: True while ``state.stage`` is this stage; setting
    True enters the stage, setting False leaves it (only if it is the current one), as in Lightning."""

    def __init__(self, stage: RunningStage) -> None:
        self.stage = stage

    def __get__(self, trainer: Any, owner: type | None = None) -> Any:
        if trainer is None:
            return self
        return trainer.state.stage == self.stage

    def __set__(self, trainer: Any, value: bool) -> None:
        if value:
            trainer.state.stage = self.stage
        elif trainer.state.stage == self.stage:
            trainer.state.stage = None
