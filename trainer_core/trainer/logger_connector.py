"""``_LoggerConnector``: the logged values' way from the result collections to the Trainer's metrics and loggers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from trainer_core.trainer.results import ResultCollection

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer


class _LoggerConnector:
    """Holds the collection being logged into (``results``: what ``self.log`` writes to), the training
    collection, and the Trainer's ``callback_metrics`` / ``logged_metrics`` / progress-bar metrics."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.train_results = ResultCollection(training=True)
        self.results: ResultCollection | None = None
        self.callback_metrics: dict[str, Any] = {}
        self.logged_metrics: dict[str, Any] = {}
        self.pbar_metrics: dict[str, Any] = {}

    def reset_metrics(self) -> None:
        self.callback_metrics = {}
        self.logged_metrics = {}
        self.pbar_metrics = {}

    def _batches_that_stepped(self) -> int:
        return self.trainer.fit_loop.epoch_loop._batches_that_stepped

    # -- training
    def sync_train_metrics(self) -> None:
        r = self.train_results
        if not r.dirty:
            return
        cb, _, pbar = r.metrics(on_step=True)
        self.callback_metrics.update(cb)
        self.pbar_metrics.update(pbar)
        if r.epoch_end_reached:
            cb, _, pbar = r.metrics(on_step=False)
            self.callback_metrics.update(cb)
            self.pbar_metrics.update(pbar)
        r.dirty = False

    def send_to_loggers(self, metrics: dict[str, Any], step: int) -> None:
        loggers = self.trainer.loggers
        if not loggers or not metrics:
            return
        scalars = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        scalars.setdefault("epoch", self.trainer.current_epoch)
        for logger in loggers:
            logger.log_metrics(scalars, step)
            logger.save()

    def log_train_step(self) -> None:
        r = self.train_results
        cb, log_metrics, pbar = r.metrics(on_step=True)
        self.callback_metrics.update(cb)
        self.pbar_metrics.update(pbar)
        r.dirty = False
        if log_metrics:
            self.logged_metrics.update(log_metrics)
            self.send_to_loggers(log_metrics, self._batches_that_stepped())

    def absorb_train_epoch(self) -> None:
        r = self.train_results
        r.dirty = True
        r.epoch_end_reached = True
        self.sync_train_metrics()
        _, log_metrics, _ = r.metrics(on_step=False)
        if log_metrics:
            self.logged_metrics.update(log_metrics)
            self.send_to_loggers(log_metrics, max(0, self._batches_that_stepped() - 1))

    # -- evaluation
    def new_eval_results(self) -> ResultCollection:
        results = ResultCollection(training=False)
        self.results = results
        return results

    def log_eval_step(self, results: ResultCollection, log_step: int) -> int:
        results.dirty = False
        if not self.trainer.loggers:
            return log_step
        _, log_metrics, _ = results.metrics(on_step=True)
        if log_metrics:
            self.logged_metrics.update(log_metrics)
            self.send_to_loggers(log_metrics, log_step)
        return log_step + 1

    def absorb_eval_epoch(self, results: ResultCollection) -> dict[str, Any]:
        cb, log_metrics, pbar = results.metrics(on_step=False)
        self.callback_metrics.update(cb)
        self.pbar_metrics.update(pbar)
        self.logged_metrics.update(log_metrics)
        self.send_to_loggers(log_metrics, self._batches_that_stepped())
        return log_metrics

    # -- at fit start
    def log_hyperparams_and_summary(self, model: LightningModule) -> None:
        loggers = self.trainer.loggers
        if not loggers:
            return
        from trainer_core.loggers.logger import Logger

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
