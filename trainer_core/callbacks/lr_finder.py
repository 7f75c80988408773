"""``LearningRateFinder``: the learning rate range test at fit start (Lightning's ``callbacks/lr_finder.py``)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import Callback
from trainer_core.utilities.exceptions import _TunerExitException

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer
    from trainer_core.tuner.lr_finder import _LRFinder


class LearningRateFinder(Callback):
    """Runs a learning rate range test in ``on_fit_start`` (override it, or call ``lr_find`` from another hook, to
    run it at other times); ``optimal_lr`` holds the ``_LRFinder`` with the results.

    Args:
        min_lr: the smallest learning rate to try
        max_lr: the largest learning rate to try
        num_training_steps: how many learning rates to try (one per step)
        mode: ``"exponential"`` (default) or ``"linear"`` growth after each step
        early_stop_threshold: stop once the loss exceeds this times the best loss (``None``: never)
        update_attr: set the suggestion on the model's learning rate attribute
        attr_name: that attribute; ``lr`` or ``learning_rate`` are found when empty
    """

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        self._min_lr = min_lr
        self._max_lr = max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr = update_attr
        self._attr_name = attr_name
        self._early_exit = False
        self.optimal_lr: _LRFinder | None = None
        self._applied: tuple[str, Any] | None = None  # (attribute, value) the search left on the module
        self._spawn_key = uuid.uuid4().hex  # finds this callback again in the main process of ddp_spawn

    def lr_find(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from trainer_core.tuner._support import isolate_rng
        from trainer_core.tuner.lr_finder import _lr_find

        with isolate_rng():
            self.optimal_lr = _lr_find(
                trainer,
                pl_module,
                min_lr=self._min_lr,
                max_lr=self._max_lr,
                num_training=self._num_training_steps,
                mode=self._mode,
                early_stop_threshold=self._early_stop_threshold,
                update_attr=self._update_attr,
                attr_name=self._attr_name,
            )
        self._applied = None
        if self._update_attr and self.optimal_lr is not None:
            from trainer_core.tuner._support import lightning_getattr
            from trainer_core.tuner.lr_finder import _determine_lr_attr_name

            attr = _determine_lr_attr_name(pl_module, self._attr_name)
            self._applied = (attr, lightning_getattr(pl_module, attr))
        if self._early_exit:
            raise _TunerExitException()

    def _spawn_result(self, trainer: Trainer) -> dict[str, Any]:
        """What rank 0 found, for the main process of ``ddp_spawn`` (see ``_recover_spawn_result``)."""
        return {"optimal_lr": self.optimal_lr, "applied": self._applied}

    def _recover_spawn_result(self, trainer: Trainer, datamodule: Any, result: dict[str, Any]) -> None:
        """In the main process of ``ddp_spawn``: rank 0's ``optimal_lr``, and its lr on the main process's module."""
        from trainer_core.tuner._support import lightning_setattr

        self.optimal_lr = result["optimal_lr"]
        self._applied = result["applied"]
        module = trainer.lightning_module
        if self._applied is not None and module is not None:
            lightning_setattr(module, self._applied[0], self._applied[1], datamodule)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.lr_find(trainer, pl_module)
