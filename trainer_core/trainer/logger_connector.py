"""The logged values' way from the result collections to the Trainer's metrics dicts and the loggers.

``LoggerConnector`` is Lightning 2.6's ``_LoggerConnector``: the loops call it in Lightning's order
(``on_batch_start`` / ``on_batch_end`` per batch, ``epoch_end_reached`` / ``on_epoch_end`` around the epoch-end
hooks, ``update_*_metrics`` to send) and it decides what reaches ``callback_metrics``, ``logged_metrics``,
``progress_bar_metrics`` and ``Logger.log_metrics(metrics=..., step=...)``, and when. Values stay tensors until a
logger or a reader of ``progress_bar_metrics`` needs floats. ``_LoggerConnector`` binds it to a ``Trainer`` and
adds the fit-start hyperparameters and summary.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from trainer_core.trainer.fx_validator import check_logging
from trainer_core.trainer.results import MetricsSplit, ResultCollection, check_dataloader_idx_name, to_scalars
from trainer_core.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer

_NO_METRICS = MetricsSplit({}, {}, {})


class LoggerConnector:
    """Lightning's ``_LoggerConnector``.

    ``loggers``, ``current_epoch`` and ``default_step`` are read when metrics are sent (``default_step`` is the
    step used when none is given: Lightning's ``fit_loop.epoch_loop._batches_that_stepped``). The loops set
    ``results`` to the collection of the loop that runs (``None`` outside loops and in prediction).
    """

    def __init__(self, loggers: Callable[[], Sequence[Any]], current_epoch: Callable[[], int],
                 default_step: Callable[[], int]) -> None:
        self._loggers = loggers
        self._current_epoch = current_epoch
        self._default_step = default_step
        self.results: ResultCollection | None = None
        self.progress_bar: dict[str, Tensor] = {}
        self.logged: dict[str, Tensor] = {}
        self.callback: dict[str, Tensor] = {}
        self.current_fx: str | None = None
        # None: no loop iteration running, True: first iteration, False: later ones
        self.first_loop_iter: bool | None = None
        self.logged_outputs: list[dict[str, Tensor]] = []

    # -- logging from the module ----------------------------------------------------------------
    def should_reset_tensors(self, fx: str) -> bool:
        return self.current_fx != fx and self.first_loop_iter in (None, True)

    def log(self, name: str, value: Any, prog_bar: bool = False, logger: bool | None = None,
            on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
            add_dataloader_idx: bool = True, batch_size: int | None = None, metric_attribute: str | None = None,
            enable_graph: bool = False, fx: str | None = None, sync_dist: bool = False,
            sync_dist_fn: Callable[..., Tensor] | None = None, sync_dist_group: Any = None,
            rank_zero_only: bool = False) -> None:
        """What ``LightningModule.log`` does once the value is a tensor or a Metric (and its attribute known).

        ``sync_dist_fn`` is ``trainer.strategy.reduce`` (``sync_dist`` is only true when several processes run).
        """
        results = self.results
        if results is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but the loop's result collection is not registered"
                " yet. This is most likely because you are trying to log in a `predict` hook,"
                " but it doesn't support logging"
            )
        fx = results.fx if fx is None else fx
        check_logging(fx, on_step, on_epoch)
        assert fx is not None
        check_dataloader_idx_name(name, add_dataloader_idx)
        if self.should_reset_tensors(fx):
            results.reset(metrics=False, fx=fx)
        results.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, add_dataloader_idx, batch_size,
                    metric_attribute, enable_graph, fx, sync_dist=sync_dist, sync_dist_fn=sync_dist_fn,
                    sync_dist_group=sync_dist_group, rank_zero_only=rank_zero_only)
        self.current_fx = fx

    # -- sending to the loggers -----------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Send ``metrics`` to every logger as ``logger.log_metrics(metrics=..., step=...)`` (floats), then ``save()``.

        With no ``step``: a ``"step"`` entry is used and removed, else ``epoch`` is added and the default step used.
        """
        loggers = self._loggers()
        if not loggers or not metrics:
            return
        self.logged.update(metrics)
        scalars = to_scalars(metrics)
        if step is None:
            step_metric = scalars.pop("step", None)
            if step_metric is not None:
                step = int(step_metric)
            else:
                scalars.setdefault("epoch", self._current_epoch())
                step = self._default_step()
        for lg in loggers:
            lg.log_metrics(metrics=scalars, step=step)
            lg.save()

    # -- evaluation -----------------------------------------------------------------------------
    def evaluation_epoch_end(self) -> None:
        if self.results is not None:
            self.results.dataloader_idx = None

    def update_eval_step_metrics(self, step: int) -> None:
        """After each evaluation batch (not while sanity checking), ``step`` = batches seen on this dataloader."""
        if self._loggers():
            self.log_metrics(self.metrics().log, step=step)

    def update_eval_epoch_metrics(self, sanity_checking: bool = False) -> dict[str, Tensor]:
        if sanity_checking:
            return {}
        metrics = self.metrics()
        self.progress_bar.update(metrics.pbar)
        self.callback.update(metrics.callback)
        self.logged.update(metrics.log)
        return metrics.log

    def store_dataloader_outputs(self, sanity_checking: bool = False) -> None:
        """When the dataloader changes and after the last batch: that dataloader's epoch values."""
        self.epoch_end_reached()
        self.logged_outputs.append(self.update_eval_epoch_metrics(sanity_checking))

    def eval_run_outputs(self, sanity_checking: bool = False) -> list[dict[str, Tensor]]:
        """After ``on_{stage}_epoch_end`` and ``on_epoch_end()``: the per-dataloader results ``validate``/``test``
        return; also sends their union to the loggers (not while sanity checking)."""
        logged_outputs, self.logged_outputs = self.logged_outputs, []
        epoch_end = self.update_eval_epoch_metrics(sanity_checking)
        everything = dict(ChainMap(*logged_outputs))
        everything.update(epoch_end)
        for outputs in logged_outputs:
            outputs.update(epoch_end)
        if not sanity_checking:
            self.log_metrics(everything)
        return logged_outputs

    # -- training -------------------------------------------------------------------------------
    def update_train_step_metrics(self) -> None:
        """When the loop decided this step is logged (not accumulating, ``log_every_n_steps`` or ``should_stop``)."""
        if self._loggers():
            self.log_metrics(self.metrics().log)

    def update_train_epoch_metrics(self) -> None:
        """After ``on_train_epoch_end``: epoch values to the loggers (the loop makes ``default_step`` one less),
        then the collection is reset (Metric values too)."""
        self.log_metrics(self.metrics().log)
        self.reset_results()

    # -- loop bookkeeping -----------------------------------------------------------------------
    def on_batch_start(self, batch: Any, dataloader_idx: int | None = None) -> None:
        if self.first_loop_iter is None:
            self.first_loop_iter = True
        elif self.first_loop_iter is True:
            self.first_loop_iter = False
        results = self.results
        if results is not None:
            results.batch = batch
            results.batch_size = None
            results.dataloader_idx = dataloader_idx

    def on_batch_end(self) -> None:
        """After the batch's last hook: its step values into the metrics dicts (only when something was logged
        since the last batch: otherwise the dicts already hold exactly these values)."""
        results = self.results
        if results is None:
            return
        if results.dirty:
            metrics = results.metrics(self.first_loop_iter is not None, strict=True)
            if metrics.pbar:
                self.progress_bar.update(metrics.pbar)
            self.callback.update(metrics.callback)
            self.logged.update(metrics.log)
            results.dirty = False
        results.batch = None
        results.batch_size = None

    def epoch_end_reached(self) -> None:
        self.first_loop_iter = None

    def on_epoch_end(self) -> None:
        metrics = self.metrics()
        self.progress_bar.update(metrics.pbar)
        self.callback.update(metrics.callback)
        self.logged.update(metrics.log)
        self.current_fx = None

    def reset_results(self) -> None:
        if self.results is not None:
            self.results.reset()
        self.first_loop_iter = None
        self.current_fx = None

    def reset_metrics(self) -> None:
        self.progress_bar = {}
        self.logged = {}
        self.callback = {}

    def metrics(self) -> MetricsSplit:
        """Step values during a loop iteration, epoch values otherwise (Lightning's rule)."""
        results = self.results
        if results is None:
            return _NO_METRICS
        return results.metrics(self.first_loop_iter is not None, strict=True)

    @property
    def callback_metrics(self) -> dict[str, Tensor]:
        if self.results is not None:
            self.callback.update(self.metrics().callback)
        return self.callback

    @property
    def logged_metrics(self) -> dict[str, Tensor]:
        if self.results is not None:
            self.logged.update(self.metrics().log)
        return self.logged

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        if self.results is not None:
            self.progress_bar.update(self.metrics().pbar)
        return to_scalars(self.progress_bar)

    def teardown(self) -> None:
        """Move what is kept after the run to the CPU (Lightning's ``teardown``)."""
        self.logged = {k: v.cpu() for k, v in self.logged.items()}
        self.progress_bar = {k: v.cpu() for k, v in self.progress_bar.items()}
        self.callback = {k: v.cpu() for k, v in self.callback.items()}


class _LoggerConnector(LoggerConnector):
    """The Trainer's connector: its loggers, epoch and step; the training collection; fit-start logging."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(self._trainer_loggers, self._trainer_epoch, self._batches_that_stepped)
        self.trainer = trainer
        self.train_results = ResultCollection(training=True)

    def _trainer_loggers(self) -> Sequence[Any]:
        loggers: Sequence[Any] = self.trainer.loggers
        return loggers

    def _trainer_epoch(self) -> int:
        return self.trainer.current_epoch

    def _batches_that_stepped(self) -> int:
        return self.trainer.fit_loop.epoch_loop._batches_that_stepped

    # -- at fit start
    def log_hyperparams_and_summary(self, model: LightningModule) -> None:
        loggers = self.trainer.loggers
        if not loggers:
            return
        from trainer_core.loggers.logger import Logger, VersionedDirLogger

        strategy = self.trainer.strategy
        if strategy.is_distributed:
            # every rank names rank 0's version folder (a rank's own next free version may differ from it)
            for logger in loggers:
                if isinstance(logger, VersionedDirLogger):
                    logger._version = strategy.broadcast(logger.version)

        dm = self.trainer.datamodule
        params: dict[str, Any] | None = None
        dm_log = dm is not None and dm._log_hyperparams and bool(dm.hparams_initial)
        if model._log_hyperparams and dm_log:
            mine, theirs = dict(model.hparams_initial), dict(dm.hparams_initial)
            clash = [k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k]]
            if clash:
                raise ValueError(
                    f"Error while merging hparams: the keys {clash} are present in both the LightningModule's and "
                    "LightningDataModule's hparams but have different values."
                )
            params = {**mine, **theirs}
        elif model._log_hyperparams:
            params = dict(model.hparams_initial)
        elif dm_log:
            params = dict(dm.hparams_initial)
        summary_dict = None
        for logger in loggers:
            if params is not None:
                logger.log_hyperparams(params)
            if hasattr(logger, "log_graph"):
                logger.log_graph(model)
            if type(logger).log_model_summary is not Logger.log_model_summary if isinstance(logger, Logger) else hasattr(
                logger, "log_model_summary"
            ):
                if summary_dict is None:
                    from trainer_core.summary import summarize

                    summary_dict = summarize(model, max_depth=1).to_dict()
                logger.log_model_summary(summary_dict)
            logger.save()
