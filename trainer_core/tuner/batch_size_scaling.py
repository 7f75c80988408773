"""The batch size search (Lightning's ``tuner/batch_size_scaling.py``): a few steps per trial at growing batch sizes
until an out-of-memory error, inside a running fit/validate/test/predict (from ``BatchSizeFinder``)."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch

from trainer_core.tuner import _support

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer

log = logging.getLogger(__name__)


def _is_fitting(trainer: Trainer) -> bool:
    return _support.running_fn(trainer) == "fit"


def _scale_batch_size(
    trainer: Trainer,
    mode: str = "power",
    steps_per_trial: int = 3,
    init_val: int = 2,
    max_trials: int = 25,
    batch_arg_name: str = "batch_size",
    margin: float = 0.05,
    max_val: int = 8192,
) -> int | None:
    """The largest batch size (``"power"``: doubling; ``"binsearch"``: doubling, then bisecting after the first
    OOM) that runs ``steps_per_trial`` steps; written to ``batch_arg_name`` on the model, its hparams or the
    datamodule. The model, optimizers and loop progress are restored from a temporary checkpoint afterwards."""
    assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
    if trainer.fast_dev_run:
        warnings.warn(
            "Skipping batch size scaler since `fast_dev_run` is enabled.", UserWarning, stacklevel=2
        )
        return None

    ckpt_path = _support.tuner_checkpoint_path(trainer, "scale_batch_size")
    trainer.save_checkpoint(ckpt_path)
    params = _dump_params(trainer)
    params["steps_per_trial"] = steps_per_trial
    progress_bar = trainer.progress_bar_callback
    if progress_bar is not None:
        progress_bar.disable()
    try:
        _reset_params(trainer, steps_per_trial)
        with _support.only_callbacks(trainer, []):
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, value=init_val)
            if mode == "power":
                new_size = _run_power_scaling(trainer, new_size, batch_arg_name, max_trials, params, max_val)
            elif mode == "binsearch":
                new_size = _run_binsearch_scaling(
                    trainer, new_size, batch_arg_name, max_trials, params, margin, max_val
                )
        if trainer.strategy.is_distributed:  # every rank continues with rank 0's result
            new_size = trainer.strategy.broadcast(new_size)
            _support.lightning_setattr(trainer.lightning_module, batch_arg_name, new_size)
        _support.garbage_collection_cuda()
        log.info(f"Finished batch size finder, will continue with full run using batch size {new_size}")
    finally:
        _restore_params(trainer, params)
        if progress_bar is not None:
            progress_bar.enable()
        _support.restore_checkpoint(trainer, ckpt_path, params["loop_state_dict"])
    return new_size


def _dump_params(trainer: Trainer) -> dict[str, Any]:
    params: dict[str, Any] = {"loggers": trainer.loggers}
    if _is_fitting(trainer):
        params["max_steps"] = trainer.fit_loop.max_steps
        params["limit_train_batches"] = trainer.limit_train_batches
        params["limit_val_batches"] = trainer.limit_val_batches
    params["loop_state_dict"] = _support.active_loop_state(trainer)
    return params


def _reset_params(trainer: Trainer, steps_per_trial: int) -> None:
    from trainer_core.loggers.logger import DummyLogger

    trainer.logger = DummyLogger() if trainer.logger is not None else None
    if _is_fitting(trainer):
        trainer.limit_train_batches = 1.0
        trainer.limit_val_batches = steps_per_trial
        trainer.fit_loop.max_steps = trainer.global_step + steps_per_trial


def _restore_params(trainer: Trainer, params: dict[str, Any]) -> None:
    trainer.loggers = params["loggers"]
    if _is_fitting(trainer):
        trainer.fit_loop.max_steps = params["max_steps"]
        trainer.limit_train_batches = params["limit_train_batches"]
        trainer.limit_val_batches = params["limit_val_batches"]
    trainer.should_stop = False


def _try_loop_run(trainer: Trainer, params: dict[str, Any]) -> None:
    """One trial. Under DDP the ranks then agree whether it ran out of memory
    (``strategy.reduce_boolean_decision(oom, all=False)``): an OOM on any rank is an OOM on every rank, so all
    take the same branch of the search and reach the same collectives. (The OOM must end the trial on every rank
    at the same step, as the same batch size on like devices does: a rank still stepping waits in the gradient
    all-reduce for one that stopped.)"""
    oom: RuntimeError | None = None
    try:
        if _is_fitting(trainer):
            _support.run_fit_loop(trainer, params["loop_state_dict"])
        else:
            _support.run_eval_loop(trainer, params["loop_state_dict"], params["steps_per_trial"])
    except RuntimeError as exc:
        if not _support.is_oom_error(exc):
            raise
        oom = exc
    strategy = trainer.strategy
    if strategy.is_distributed and strategy.reduce_boolean_decision(oom is not None, all=False) and oom is None:
        oom = torch.OutOfMemoryError("out of memory on another rank (batch size finder)")
    if oom is not None:
        raise oom


def _reset_dataloaders(trainer: Trainer) -> None:
    """The loaders again, with the batch size just set (fit: train and val; evaluation: when its loop runs)."""
    if _is_fitting(trainer):
        _support.setup_fit_data(trainer)


def _current_dataset_length(trainer: Trainer) -> int | None:
    if _is_fitting(trainer):
        _support.setup_fit_data(trainer)
        return _support.dataset_length(_support.train_dataloader(trainer))
    _, loaders, _ = _support.setup_eval_data(trainer)
    return _support.dataset_length(loaders)


def _run_power_scaling(
    trainer: Trainer,
    new_size: int,
    batch_arg_name: str,
    max_trials: int,
    params: dict[str, Any],
    max_val: int = 8192,
) -> int:
    """Double the batch size after each successful trial; after an OOM, halve it and stop (once one succeeded)."""
    any_success = False
    last_successful_size = new_size
    for i in range(max_trials):
        _support.garbage_collection_cuda()
        if new_size >= max_val:
            log.info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
            break
        try:
            _try_loop_run(trainer, params)
            last_successful_size = new_size
            if i + 1 >= max_trials:
                new_size = last_successful_size
                break
            new_size, changed = _adjust_batch_size(trainer, batch_arg_name, factor=2.0, desc="succeeded")
            if not changed:
                break
            _reset_dataloaders(trainer)
            any_success = True
        except RuntimeError as exception:
            if not _support.is_oom_error(exception):
                raise
            _support.garbage_collection_cuda(after_oom=True)
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, factor=0.5, desc="failed")
            _reset_dataloaders(trainer)
            if any_success:
                break
    return new_size


def _run_binsearch_scaling(
    trainer: Trainer,
    new_size: int,
    batch_arg_name: str,
    max_trials: int,
    params: dict[str, Any],
    margin: float,
    max_val: int = 8192,
) -> int:
    """Double until the first OOM, then bisect between the last success and the failure; ``margin`` takes a
    share off the result."""
    assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
    low = 1
    high: int | None = None
    count = 0
    last_successful_size = new_size
    while True:
        _support.garbage_collection_cuda()
        if new_size >= max_val:
            log.info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
            break
        try:
            _try_loop_run(trainer, params)
            last_successful_size = new_size
            count += 1
            if count >= max_trials:
                new_size = last_successful_size
                break
            low = new_size
            if high:
                if high - low <= 1:
                    break
                midval = (high + low) // 2
                new_size, changed = _adjust_batch_size(
                    trainer, batch_arg_name, value=midval, desc="succeeded", max_val=max_val
                )
            else:
                new_size, changed = _adjust_batch_size(
                    trainer, batch_arg_name, factor=2.0, desc="succeeded", max_val=max_val
                )
            if not changed:
                break
            _reset_dataloaders(trainer)
        except RuntimeError as exception:
            if not _support.is_oom_error(exception):
                raise
            _support.garbage_collection_cuda(after_oom=True)
            high = new_size
            midval = (high + low) // 2
            new_size, _ = _adjust_batch_size(trainer, batch_arg_name, value=midval, desc="failed")
            _reset_dataloaders(trainer)
            if high - low <= 1:
                break
    if margin > 0:
        reduced = max(1, int(new_size * (1 - margin)))
        if reduced != new_size:
            log.info(f"Applying margin of {margin:.1%}, reducing batch size from {new_size} to {reduced}")
            new_size = reduced
            _support.lightning_setattr(trainer.lightning_module, batch_arg_name, new_size)
    return new_size


def _adjust_batch_size(
    trainer: Trainer,
    batch_arg_name: str = "batch_size",
    factor: float = 1.0,
    value: int | None = None,
    desc: str | None = None,
    max_val: int = 8192,
) -> tuple[int, bool]:
    """Set the batch size to ``value`` (or ``factor`` times the current one, capped at ``max_val``); (new size,
    whether it changed). It stays when it already covers the whole dataset."""
    model = trainer.lightning_module
    batch_size = _support.lightning_getattr(model, batch_arg_name)
    assert batch_size is not None
    length = _current_dataset_length(trainer)
    if length is not None and batch_size >= length:
        log.info(
            f"The batch size {batch_size} is greater or equal than the length of your dataset: {length}."
        )
        return batch_size, False
    new_size = value if value is not None else int(batch_size * factor)
    if new_size > max_val:
        if desc:
            log.info(f"Batch size {new_size} exceeds max_val limit {max_val}, capping at {max_val}")
        new_size = max_val
    if desc:
        log.info(f"Batch size {batch_size} {desc}, trying batch size {new_size}")
    changed = new_size != batch_size
    _support.lightning_setattr(model, batch_arg_name, new_size)
    return new_size, changed
