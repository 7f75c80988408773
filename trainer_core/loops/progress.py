"""Lightning's progress counters, under Lightning's names, so ``state_dict()`` has the checkpoint layout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class _BaseProgress:
    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)


@dataclass
class _ReadyCompletedTracker(_BaseProgress):
    ready: int = 0
    completed: int = 0

    def reset(self) -> None:
        self.ready = self.completed = 0

    def reset_on_restart(self) -> None:
        self.ready = self.completed


@dataclass
class _StartedTracker(_ReadyCompletedTracker):
    started: int = 0

    def reset(self) -> None:
        super().reset()
        self.started = 0

    def reset_on_restart(self) -> None:
        super().reset_on_restart()
        self.started = self.completed


@dataclass
class _ProcessedTracker(_StartedTracker):
    processed: int = 0

    def reset(self) -> None:
        super().reset()
        self.processed = 0

    def reset_on_restart(self) -> None:
        super().reset_on_restart()
        self.processed = self.completed


@dataclass
class _Progress(_BaseProgress):
    """Typed with the default tracker (``_ProcessedTracker``); the optimizer-step and scheduler progress hold
    narrower trackers (only ``ready``/``completed``, as in Lightning), and only those counters are used on them."""

    total: _ProcessedTracker = field(default_factory=_ProcessedTracker)
    current: _ProcessedTracker = field(default_factory=_ProcessedTracker)

    @classmethod
    def from_defaults(cls, tracker_cls: type[_ReadyCompletedTracker]) -> _Progress:
        return cls(total=tracker_cls(), current=tracker_cls())  # type: ignore[arg-type]

    def increment_ready(self) -> None:
        self.total.ready += 1
        self.current.ready += 1

    def increment_started(self) -> None:
        self.total.started += 1
        self.current.started += 1

    def increment_processed(self) -> None:
        self.total.processed += 1
        self.current.processed += 1

    def increment_completed(self) -> None:
        self.total.completed += 1
        self.current.completed += 1

    def reset(self) -> None:
        self.total.reset()
        self.current.reset()

    def reset_on_run(self) -> None:
        self.current.reset()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total.load_state_dict(state_dict["total"])
        self.current.load_state_dict(state_dict["current"])


@dataclass
class _BatchProgress(_Progress):
    is_last_batch: bool = False

    def reset_on_run(self) -> None:
        super().reset_on_run()
        self.is_last_batch = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.is_last_batch = state_dict.get("is_last_batch", False)


@dataclass
class _SchedulerProgress(_Progress):
    total: _ReadyCompletedTracker = field(default_factory=_ReadyCompletedTracker)  # type: ignore[assignment]
    current: _ReadyCompletedTracker = field(default_factory=_ReadyCompletedTracker)  # type: ignore[assignment]


@dataclass
class _OptimizerProgress(_BaseProgress):
    step: _Progress = field(default_factory=lambda: _Progress.from_defaults(_ReadyCompletedTracker))
    zero_grad: _Progress = field(default_factory=lambda: _Progress.from_defaults(_StartedTracker))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step.load_state_dict(state_dict["step"])
        self.zero_grad.load_state_dict(state_dict["zero_grad"])


@dataclass
class _OptimizationProgress(_BaseProgress):
    optimizer: _OptimizerProgress = field(default_factory=_OptimizerProgress)

    @property
    def optimizer_steps(self) -> int:
        return self.optimizer.step.total.completed

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])

