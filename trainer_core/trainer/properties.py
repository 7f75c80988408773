"""``_TrainerProperties``: the Trainer's views (progress, loggers, callbacks, ranks, stage flags, metrics).

A base class of ``Trainer``, kept apart so that ``trainer.py`` reads as the run itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from trainer_core.trainer.states import RunningStage, TrainerStatus, _StageFlag

if TYPE_CHECKING:
    from trainer_core.callbacks.callback import Callback
    from trainer_core.loops import _FitLoop
    from trainer_core.strategies.strategy import Strategy
    from trainer_core.trainer.config import TrainerConfig
    from trainer_core.trainer.data import _DataConnector
    from trainer_core.trainer.logger_connector import _LoggerConnector
    from trainer_core.trainer.results import ResultCollection
    from trainer_core.trainer.states import TrainerState


class _TrainerProperties:
    if TYPE_CHECKING:
        _config: TrainerConfig
        _logger_connector: _LoggerConnector
        _data_connector: _DataConnector
        loggers: list[Any]
        callbacks: list[Callback]
        state: TrainerState
        strategy: Strategy
        fit_loop: _FitLoop
        lightning_module: Any
        accumulate_grad_batches: int
        train_dataloader: Any

    # ------------------------------------------------------------------ progress
    @property
    def current_epoch(self) -> int:
        return self.fit_loop.epoch_progress.current.completed

    @property
    def global_step(self) -> int:
        return self.fit_loop.epoch_loop.global_step

    @property
    def max_epochs(self) -> int:
        return self.fit_loop.max_epochs

    @property
    def num_training_batches(self) -> int | float:
        # Lightning: the fit loop's max_batches (StochasticWeightAveraging adds one for its batch-norm epoch)
        return self.fit_loop.max_batches

    @num_training_batches.setter
    def num_training_batches(self, value: int | float) -> None:
        self.fit_loop.max_batches = value

    @property
    def min_epochs(self) -> int | None:
        return self.fit_loop.min_epochs

    @property
    def max_steps(self) -> int:
        return self.fit_loop.max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self.fit_loop.max_steps = value

    @property
    def min_steps(self) -> int | None:
        return self.fit_loop.min_steps

    @min_steps.setter
    def min_steps(self, value: int | None) -> None:
        self.fit_loop.min_steps = value

    # ------------------------------------------------------------------ public attributes
    @property
    def default_root_dir(self) -> str:
        return self._config.default_root_dir

    @property
    def logger(self) -> Any:
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger: Any) -> None:
        self.loggers = [] if logger is None else [logger]

    @property
    def log_dir(self) -> str:
        dirpath = self.default_root_dir
        if self.loggers:
            first = self.loggers[0]
            dirpath = str(getattr(first, "log_dir", None) or getattr(first, "save_dir", None) or dirpath)
        # Lightning's: rank 0's directory on every rank (a logger's next version may differ per rank)
        return self.strategy.broadcast(dirpath) if self.strategy.is_distributed else dirpath

    @property
    def model(self) -> Any:
        """Lightning's: the model as the strategy runs it (the DistributedDataParallel wrapper while DDP fits)."""
        model = self.strategy.model
        return model if model is not None else self.lightning_module

    is_global_zero = property(lambda self: self.strategy.is_global_zero)
    global_rank = property(lambda self: self.strategy.global_rank)
    local_rank = property(lambda self: self.strategy.local_rank)
    node_rank = property(lambda self: self.strategy.node_rank)
    world_size = property(lambda self: self.strategy.world_size)
    num_devices = property(lambda self: len(self.strategy.parallel_devices))
    num_nodes = property(lambda self: self.strategy.num_nodes)
    received_sigterm = property(lambda self: False)

    @property
    def device_ids(self) -> list[int]:
        return [d.index or 0 for d in self.strategy.parallel_devices]

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def enable_validation(self) -> bool:
        return self._data_connector.val_enabled

    training = _StageFlag(RunningStage.TRAINING)
    validating = _StageFlag(RunningStage.VALIDATING)
    testing = _StageFlag(RunningStage.TESTING)
    predicting = _StageFlag(RunningStage.PREDICTING)
    sanity_checking = _StageFlag(RunningStage.SANITY_CHECKING)

    @property
    def evaluating(self) -> bool:
        return self.state.stage in (RunningStage.VALIDATING, RunningStage.TESTING)

    @property
    def checkpoint_callbacks(self) -> list[Any]:
        """Every ``Checkpoint`` callback (``ModelCheckpoint``, ``OnExceptionCheckpoint`` ...), as Lightning's."""
        from trainer_core.callbacks.checkpoint import Checkpoint

        return [cb for cb in self.callbacks if isinstance(cb, Checkpoint)]

    @property
    def checkpoint_callback(self) -> Any:
        """The first ``Checkpoint`` callback (Lightning's; usually the ``ModelCheckpoint``), or None."""
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callbacks(self) -> list[Any]:
        from trainer_core.callbacks.early_stopping import EarlyStopping

        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> Any:
        cbs = self.early_stopping_callbacks
        return cbs[0] if cbs else None

    @property
    def progress_bar_callback(self) -> Any:
        from trainer_core.callbacks.progress import ProgressBar

        return next((cb for cb in self.callbacks if isinstance(cb, ProgressBar)), None)

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Lightning's estimate of the optimizer steps in the fit: ``min(max_steps, max_epochs * ceil(batches /
        accumulate_grad_batches))``; inside ``configure_optimizers`` it requests the train loader first."""
        if self.max_epochs == -1:
            return float("inf") if self.max_steps == -1 else self.max_steps
        if self.train_dataloader is None and self.lightning_module is not None:
            from trainer_core.utilities.rank_zero import rank_zero_info

            rank_zero_info("Loading `train_dataloader` to estimate number of stepping batches.")
            self._data_connector.setup_train_data()  # once per fit: the fit loop's own request is then a no-op
        total_batches = self.num_training_batches
        if total_batches == float("inf"):  # iterable dataset
            return self.max_steps
        estimate = math.ceil(total_batches / self.accumulate_grad_batches) * max(self.max_epochs, 1)
        return min(estimate, self.max_steps) if self.max_steps != -1 else estimate

    # ------------------------------------------------------------------ metrics
    @property
    def callback_metrics(self) -> dict[str, Any]:
        return self._logger_connector.callback_metrics

    @property
    def logged_metrics(self) -> dict[str, Any]:
        return self._logger_connector.logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        return self._logger_connector.progress_bar_metrics

    @property
    def _results(self) -> ResultCollection | None:
        """The collection ``LightningModule.log`` writes into (the training one, or the running evaluation's)."""
        return self._logger_connector.results

    @property
    def _train_results(self) -> ResultCollection:
        return self._logger_connector.train_results

