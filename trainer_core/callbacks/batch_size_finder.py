"""``BatchSizeFinder``: the largest batch size that fits, found at the start of a run (Lightning's
``callbacks/batch_size_finder.py``)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.callback import Callback
from trainer_core.utilities.exceptions import MisconfigurationException, _TunerExitException

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer


class BatchSizeFinder(Callback):
    """Tries ``steps_per_trial`` steps at growing batch sizes until one runs out of memory, at the start of fit,
    validate, test or predict; ``optimal_batch_size`` holds the result, also written to ``batch_arg_name`` on the
    model, ``model.hparams`` or the datamodule.

    Args:
        mode: ``"power"`` (double until an OOM) or ``"binsearch"`` (double, then bisect after the first OOM)
        steps_per_trial: steps (batches) run at each batch size
        init_val: the batch size to start from
        max_trials: the most batch sizes tried
        batch_arg_name: the attribute holding the batch size
        margin: the share taken off the ``binsearch`` result, in [0, 1)
        max_val: the largest batch size tried
    """

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
        self.optimal_batch_size: int | None = init_val
        self._mode = mode
        self._steps_per_trial = steps_per_trial
        self._init_val = init_val
        self._max_trials = max_trials
        self._batch_arg_name = batch_arg_name
        self._margin = margin
        self._max_val = max_val
        self._early_exit = False
        self._spawn_key = uuid.uuid4().hex  # finds this callback again in the main process of ddp_spawn

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from trainer_core.tuner._support import _has_own_attr, lightning_hasattr, run_dataloaders

        if run_dataloaders(trainer).get("train") is not None:
            raise MisconfigurationException(
                "The Batch size finder cannot be used with dataloaders passed directly to `.fit()`. Please disable"
                " the feature or incorporate the dataloader into your LightningModule or LightningDataModule."
            )
        if stage != "fit":
            from trainer_core.tuner._support import eval_stage, setup_eval_data

            source, _, _ = setup_eval_data(trainer)
            if isinstance(source, Mapping | Sequence) and len(source) > 1:
                prefix, _ = eval_stage(trainer)
                raise MisconfigurationException(
                    f"The Batch size finder cannot be used with multiple {prefix} dataloaders."
                )
        if not lightning_hasattr(pl_module, self._batch_arg_name):
            raise MisconfigurationException(
                f"Field {self._batch_arg_name} not found in `model`, `datamodule`, nor their `hparams` attributes."
            )
        hparams = getattr(pl_module, "hparams", None)
        name = self._batch_arg_name
        if _has_own_attr(pl_module, name) and isinstance(hparams, Mapping) and name in hparams:
            warnings.warn(
                f"Field `model.{self._batch_arg_name}` and `model.hparams.{self._batch_arg_name}` are mutually"
                f" exclusive! `model.{self._batch_arg_name}` will be used as the initial batch size for scaling."
                " If this is not the intended behavior, please remove either one.",
                UserWarning,
                stacklevel=2,
            )

    def scale_batch_size(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from trainer_core.tuner.batch_size_scaling import _scale_batch_size

        self.optimal_batch_size = _scale_batch_size(
            trainer,
            self._mode,
            self._steps_per_trial,
            self._init_val,
            self._max_trials,
            self._batch_arg_name,
            self._margin,
            self._max_val,
        )
        if self._early_exit:
            raise _TunerExitException()

    def _spawn_result(self, trainer: Trainer) -> dict[str, Any]:
        """What rank 0 found, for the main process of ``ddp_spawn`` (see ``_recover_spawn_result``)."""
        from trainer_core.tuner._support import lightning_getattr

        module = trainer.lightning_module
        value = None
        if self.optimal_batch_size is not None and module is not None:
            value = lightning_getattr(module, self._batch_arg_name)
        return {"optimal_batch_size": self.optimal_batch_size, "value": value}

    def _recover_spawn_result(self, trainer: Trainer, datamodule: Any, result: dict[str, Any]) -> None:
        """In the main process of ``ddp_spawn``: rank 0's ``optimal_batch_size``, also on the main process's
        module / hparams / datamodule."""
        from trainer_core.tuner._support import lightning_setattr

        self.optimal_batch_size = result["optimal_batch_size"]
        module = trainer.lightning_module
        if result["value"] is not None and module is not None:
            lightning_setattr(module, self._batch_arg_name, result["value"], datamodule)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "validate":
            return
        self.scale_batch_size(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)
