"""``Trainer``: the public object. It validates its arguments (``TrainerConfig``), wires module, data,
callbacks and loggers through its connectors, and runs the loops (``trainer_core.loops``) with a context."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import torch

from trainer_core.callbacks.callback import Callback
from trainer_core.checkpoint_io import load_checkpoint
from trainer_core.core.datamodule import LightningDataModule
from trainer_core.core.module import LightningModule
from trainer_core.loops import _EvaluationLoop, _FitLoop, _PredictionLoop
from trainer_core.loops.utilities import _LoopContext
from trainer_core.trainer.call import handle_keyboard_interrupt, interrupt
from trainer_core.trainer.callback_connector import (
    attach_model_callbacks,
    configure_callbacks,
    configure_loggers,
)
from trainer_core.trainer.checkpoint_connector import _CheckpointConnector
from trainer_core.trainer.compile import _maybe_unwrap_optimized
from trainer_core.trainer.config import TrainerConfig, check_unknown
from trainer_core.trainer.data import _DataConnector
from trainer_core.trainer.hooks import HookDispatcher, is_overridden, verify_no_removed_hooks
from trainer_core.trainer.logger_connector import _LoggerConnector
from trainer_core.trainer.optim import LightningOptimizer, setup_optimizers
from trainer_core.trainer.precision import Precision
from trainer_core.trainer.properties import _TrainerProperties
from trainer_core.trainer.results import ResultCollection
from trainer_core.trainer.states import TrainerFn, TrainerState, TrainerStatus
from trainer_core.utilities.exceptions import (
    MisconfigurationException,
    _MisconfigurationRuntimeError,
    _TunerExitException,
)
from trainer_core.utilities.model_helpers import is_overridden as _instance_overridden
from trainer_core.utilities.warnings import _max_epochs_default, _unused_gpu_check

log = logging.getLogger(__name__)


class Trainer(_TrainerProperties):
    """Lightning's ``Trainer``: ``fit``, ``validate``, ``test`` and ``predict`` on one device."""

    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Any = None,
        logger: Any = None,
        callbacks: Any = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: Any = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | timedelta | dict[str, int] | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Any = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | os.PathLike[str] | None = None,
        enable_autolog_hparams: bool = True,
        model_registry: str | None = None,
        **unknown: Any,
    ) -> None:
        check_unknown(unknown)
        args = dict(locals())  # every argument by name (TRAINER_ARGS), validated together
        del args["self"], args["unknown"]
        cfg = TrainerConfig.from_arguments(args)
        self._config = cfg
        self.fast_dev_run: int | bool = cfg.fast_dev_run
        self.max_time = cfg.max_time
        self.limit_train_batches = cfg.limit_train_batches
        self.limit_val_batches = cfg.limit_val_batches
        self.limit_test_batches = cfg.limit_test_batches
        self.limit_predict_batches = cfg.limit_predict_batches
        self.val_check_interval = cfg.val_check_interval
        self.overfit_batches = cfg.overfit_batches
        self.check_val_every_n_epoch = cfg.check_val_every_n_epoch
        self.log_every_n_steps = cfg.log_every_n_steps
        self.accumulate_grad_batches = cfg.accumulate_grad_batches
        self.gradient_clip_val = cfg.gradient_clip_val
        self.gradient_clip_algorithm = cfg.gradient_clip_algorithm
        self.deterministic = cfg.deterministic
        self.reload_dataloaders_every_n_epochs = cfg.reload_dataloaders_every_n_epochs
        self.inference_mode = cfg.inference_mode
        self.detect_anomaly = cfg.detect_anomaly
        self.barebones = cfg.barebones
        self.enable_autolog_hparams = cfg.enable_autolog_hparams
        self.precision = cfg.precision
        self.strategy = cfg.strategy
        self._precision: Precision = cfg.precision_plugin
        self.accelerator = self.strategy.accelerator
        _unused_gpu_check(cfg.device.type)
        self.num_sanity_val_steps = cfg.num_sanity_val_steps

        self.loggers: list[Any] = configure_loggers(cfg.logger, cfg.fast_dev_run_batches, cfg.default_root_dir)
        enable_checkpointing = True if cfg.enable_checkpointing is None else cfg.enable_checkpointing
        enable_model_summary = True if cfg.enable_model_summary is None else cfg.enable_model_summary
        self.callbacks: list[Callback] = configure_callbacks(
            callbacks, enable_checkpointing, cfg.enable_progress_bar, enable_model_summary, max_time=cfg.max_time
        )

        # loops and state
        self.state = TrainerState()
        self.fit_loop = _FitLoop(
            cfg.min_epochs, cfg.max_epochs, cfg.min_steps, cfg.max_steps, train_dataloader=self._current_train_loader
        )
        self.validate_loop = _EvaluationLoop("validate")
        self.test_loop = _EvaluationLoop("test")
        self.predict_loop = _PredictionLoop()
        self.should_stop = False
        self.lightning_module: Any = None
        self.datamodule: Any = None
        self.optimizers: list[Any] = []
        self.lr_scheduler_configs: list[Any] = []
        self._lightning_optimizers: list[LightningOptimizer] = []
        self._logger_connector = _LoggerConnector(self)
        self._data_connector = _DataConnector(self)
        self._checkpoint_connector = _CheckpointConnector(self)
        self._hooks = HookDispatcher(self, [], None)
        self.val_check_batch: float = float("inf")
        self.train_dataloader: Any = None
        self.val_dataloaders: Any = None
        self.test_dataloaders: Any = None
        self.predict_dataloaders: Any = None
        self.num_val_batches: list[int | float] = []
        self.num_test_batches: list[int | float] = []
        self.num_predict_batches: list[int | float] = []
        self.num_sanity_val_batches: list[int | float] = []
        self.ckpt_path: str | None = None

    def _current_train_loader(self) -> Any:
        return self._data_connector.train_loader

    # ------------------------------------------------------------------ entry points
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
    ) -> None:
        model = _maybe_unwrap_optimized(model)
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise ValueError(
                "You cannot pass `train_dataloader` or `val_dataloaders` to `trainer.fit(datamodule=...)`"
            )
        self._run(TrainerFn.FITTING, model, datamodule, ckpt_path, train=train_dataloaders, val=val_dataloaders)

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        model = _maybe_unwrap_optimized(model)
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        out: list[dict[str, float]] = self._run(TrainerFn.VALIDATING, model, datamodule, ckpt_path, val=dataloaders, verbose=verbose)
        return out

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        model = _maybe_unwrap_optimized(model)
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        out: list[dict[str, float]] = self._run(TrainerFn.TESTING, model, datamodule, ckpt_path, test=dataloaders, verbose=verbose)
        return out

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
    ) -> Any:
        model = _maybe_unwrap_optimized(model)
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        # Lightning's rule: strategies that spawn or fork return no predictions to the main process
        from trainer_core.strategies.launchers import _MultiProcessingLauncher

        supported = not isinstance(self.strategy.launcher, _MultiProcessingLauncher)
        if return_predictions and not supported:
            raise MisconfigurationException(
                "`return_predictions` should be set to `False` when using the strategies that spawn or fork."
                f" Found {return_predictions} with strategy {type(self.strategy)}."
            )
        return self._run(
            TrainerFn.PREDICTING, model, datamodule, ckpt_path, predict=dataloaders,
            return_predictions=supported if return_predictions is None else return_predictions,
        )

    # ------------------------------------------------------------------ checkpoints
    def dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        return self._checkpoint_connector.dump_checkpoint(weights_only)

    def save_checkpoint(
        self, filepath: str | os.PathLike[str], weights_only: bool = False, storage_options: Any = None
    ) -> None:
        if self.lightning_module is None:
            raise RuntimeError(
                "Saving a checkpoint is only possible if a model is attached to the Trainer. Did you call "
                "`Trainer.save_checkpoint()` before calling `Trainer.{fit,validate,test,predict}`?"
            )
        checkpoint = self.dump_checkpoint(weights_only)
        # Lightning's: every rank builds it, global rank 0 writes it, and the others wait for the file
        self.strategy.save_checkpoint(checkpoint, os.fspath(filepath), storage_options)
        self.strategy.barrier("Trainer.save_checkpoint")

    # ------------------------------------------------------------------ the run
    def _loop_context(self) -> _LoopContext:
        return _LoopContext(
            trainer=self, module=self.lightning_module, hooks=self._hooks, precision=self._precision,
            metrics=self._logger_connector, data=self._data_connector, lightning_optimizers=self._lightning_optimizers,
        )

    def _run(self, fn: TrainerFn, model: Any, datamodule: Any, ckpt_path: Any, **kw: Any) -> Any:
        launcher = self.strategy.launcher
        if launcher is not None:  # DDP: start the other ranks (or, in a started rank, just run)
            if isinstance(model, LightningModule):
                # Lightning's: the main process knows the module (ddp_spawn loads rank 0's weights back into it)
                self.lightning_module = model
            return launcher.launch(self._run_in_process, fn, model, datamodule, ckpt_path, trainer=self, **kw)
        return self._run_in_process(fn, model, datamodule, ckpt_path, **kw)

    def _run_in_process(self, fn: TrainerFn, model: Any, datamodule: Any, ckpt_path: Any, **kw: Any) -> Any:
        if model is None:
            model = self.lightning_module
            if model is None:
                raise ValueError(
                    f"`Trainer.{fn.value}()` requires a `LightningModule` when it hasn't been passed in a previous run."
                )
            if ckpt_path is None and fn != TrainerFn.FITTING:
                cb = self.checkpoint_callback
                if cb is not None and getattr(cb, "best_model_path", None):
                    ckpt_path = "best"
        if not isinstance(model, LightningModule):
            raise TypeError(f"`Trainer.{fn.value}()` requires a `LightningModule`, got: {type(model).__qualname__}")
        if datamodule is not None and not isinstance(datamodule, LightningDataModule):
            raise TypeError(f"`datamodule` must be a LightningDataModule, got {type(datamodule).__qualname__}.")
        self.state = TrainerState(status=TrainerStatus.RUNNING, fn=fn)
        self.lightning_module = model
        self.strategy.connect(model)
        model.trainer = self
        self.datamodule = datamodule
        if datamodule is not None:
            datamodule.trainer = self
        self.should_stop = False
        self._run_dataloaders: dict[str, Any] = kw  # what this run was given (the tuner callbacks read it)
        stage = fn.value
        try:
            self.callbacks = attach_model_callbacks(self.callbacks, model.configure_callbacks())
            self._hooks = HookDispatcher(self, self.callbacks, model, self._logger_connector)
            verify_no_removed_hooks(model, stage)
            strategy = self.strategy
            strategy.setup_environment()  # DDP: join the process group
            self._prepare_data(model, datamodule)
            strategy.barrier("pre_setup")
            if datamodule is not None:
                datamodule.setup(stage)
            self._hooks.call_callbacks("setup", stage)
            model.setup(stage)
            strategy.barrier("post_setup")
            model.configure_model()
            ckpt_path = self._checkpoint_connector.resolve_ckpt_path(fn, ckpt_path)
            self.ckpt_path = ckpt_path
            checkpoint = load_checkpoint(ckpt_path, map_location="cpu") if ckpt_path else None
            if checkpoint is not None:
                self._checkpoint_connector.restore_modules_and_callbacks(checkpoint)
            self._logger_connector.reset_metrics()
            model.to(self.strategy.root_device)
            self._precision.convert_module(model)
            self._setup_module(model, fn)
            self._data_connector.setup_batch_transfer()
            out: Any = None
            if fn == TrainerFn.FITTING:
                self._run_fit(model, checkpoint, kw["train"], kw["val"])
            elif fn == TrainerFn.PREDICTING:
                out = self._run_predict(kw["predict"], kw["return_predictions"])
            else:
                out = self._run_eval(fn, kw.get("val") if fn == TrainerFn.VALIDATING else kw.get("test"), kw["verbose"])
            self.state.status = TrainerStatus.FINISHED
            self.state.stage = None
            self._teardown(model, stage, "success")
            return out
        except _TunerExitException:  # a tuner callback ended the run after its search (Lightning's handling)
            self.state.status = TrainerStatus.FINISHED
            self.state.stage = None
            self._teardown(model, stage, "success")
            return None
        except KeyboardInterrupt as exc:
            handle_keyboard_interrupt(self, model, exc)  # Lightning's: on_exception, no teardown, SystemExit(1)
        except BaseException as exc:
            interrupt(self, model, exc, "failed")
            raise
        finally:
            self._logger_connector.results = None

    def _prepare_data(self, model: LightningModule, datamodule: Any) -> None:
        """Lightning's: ``prepare_data`` on local rank 0 of each node (``prepare_data_per_node=True``, the default)
        or on global rank 0 only; the other ranks wait for it at the setup barrier."""
        local_zero, global_zero = self.local_rank == 0, self.is_global_zero
        for owner in (datamodule, model):
            if owner is None:
                continue
            per_node = getattr(owner, "prepare_data_per_node", True)
            if (per_node and local_zero) or (not per_node and global_zero):
                owner.prepare_data()

    def _setup_module(self, model: LightningModule, fn: TrainerFn) -> None:
        fitting = fn == TrainerFn.FITTING
        if fitting and self._config.sync_batchnorm and self.strategy.is_distributed:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]  # swaps the BatchNorm children in place
        self.strategy.setup_module(model, fitting)

    def _teardown(self, model: LightningModule, stage: str, status: str) -> None:
        self.strategy.teardown()
        if self.datamodule is not None:
            self.datamodule.teardown(stage)
        for hook in self._hooks.callbacks.get("teardown", ()):  # the previous run's, if this one failed early
            hook(self, model, stage)
        model.teardown(stage)
        self._logger_connector.teardown()  # the metrics dicts move to the CPU (Lightning's)
        # like Lightning, after every entry point (fit, validate, test, predict)
        for logger in self.loggers:
            logger.finalize(status)

    def _run_fit(self, model: LightningModule, checkpoint: dict[str, Any] | None, train: Any, val: Any) -> None:
        if not is_overridden("training_step", model, LightningModule):
            raise _MisconfigurationRuntimeError(
                "No `training_step()` method defined. The `Trainer` expects as minimum a `training_step()`, "
                "`train_dataloader()` and `configure_optimizers()` to be defined."
            )
        if self._config.warn_max_epochs_default and not self.fast_dev_run and not self.__dict__.get("_max_epochs_set"):
            # Lightning's _parse_loop_limits, at the first fit: 1000 epochs with a PossibleUserWarning, or no epoch
            # limit when a Timer callback bounds the run; fit_loop.max_epochs set by hand before counts as given
            self._max_epochs_set = True
            if self.fit_loop.max_epochs == 1000:
                self.fit_loop.max_epochs = _max_epochs_default(None, self.max_steps, self.callbacks)
        # the fit's loader sources (no loader is requested yet), before configure_optimizers: the train loader is
        # requested there if it reads trainer.estimated_stepping_batches, as in Lightning
        data = self._data_connector
        data.setup_fit_data(model, train, val)
        setup_optimizers(self, model)

        metrics = self._logger_connector
        metrics.train_results = ResultCollection(training=True)
        metrics.results = metrics.train_results
        self._hooks.call("on_fit_start")
        metrics.log_hyperparams_and_summary(model)
        restarting = False
        if checkpoint is not None:
            restarting = self._checkpoint_connector.restore_training_state(checkpoint)
        # max_time is enforced by the Timer callback configure_callbacks added (Lightning's)

        ctx = self._loop_context()
        if data.val_enabled and self.num_sanity_val_steps > 0 and not restarting:
            self.fit_loop.run_sanity_check(ctx, self.num_sanity_val_steps)  # requests the val loaders
            # as Lightning: what was logged while sanity checking is not kept
            metrics.reset_results()
            metrics.reset_metrics()
        metrics.results = metrics.train_results
        with torch.autograd.set_detect_anomaly(self.detect_anomaly):
            self.fit_loop.run(ctx, restarting=restarting)
        self.training = False
        metrics.results = metrics.train_results
        self._hooks.call("on_fit_end")

    def _run_eval(self, fn: TrainerFn, loaders: Any, verbose: bool) -> list[dict[str, float]]:
        testing = fn == TrainerFn.TESTING
        step_name = "test_step" if testing else "validation_step"
        if not _instance_overridden(step_name, self.lightning_module, LightningModule):
            raise _MisconfigurationRuntimeError(f"No `{step_name}()` method defined to run `Trainer.{fn.value}`.")
        stage = "test" if testing else "val"
        source, loader_list, limits = self._data_connector.setup_eval_data(stage, fn.value, loaders)
        if testing:
            self.test_dataloaders, self.num_test_batches = source, limits
            loop = self.test_loop
            self.testing = True
        else:
            self.val_dataloaders, self.num_val_batches = source, limits
            loop = self.validate_loop
            self.validating = True
        return loop.run(self._loop_context(), loader_list, limits, verbose=verbose)

    def _run_predict(self, loaders: Any, return_predictions: bool) -> Any:
        source, loader_list, limits = self._data_connector.setup_eval_data("predict", "predict", loaders)
        self.predict_dataloaders, self.num_predict_batches = source, limits
        self.predicting = True
        return self.predict_loop.run(self._loop_context(), loader_list, limits, return_predictions)
