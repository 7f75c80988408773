"""The fit, training-epoch, evaluation and prediction loops.

The loop objects carry Lightning's progress counters under Lightning's attribute names, so
``state_dict()`` gives the exact ``checkpoint["loops"]`` layout (``epoch_loop.batch_progress`` ...).
The training batch loop is written for a short hot path: hooks nobody overrides are never called,
counters are plain ints, and nothing syncs the device.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from trainer_core.trainer.precision import Precision

# ---------------------------------------------------------------- progress counters (Lightning layout)


@dataclass
class _BaseProgress:
    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state_dict: dict) -> None:
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
    total: _ReadyCompletedTracker = field(default_factory=_ProcessedTracker)
    current: _ReadyCompletedTracker = field(default_factory=_ProcessedTracker)

    @classmethod
    def from_defaults(cls, tracker_cls: type) -> _Progress:
        return cls(total=tracker_cls(), current=tracker_cls())

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

    def load_state_dict(self, state_dict: dict) -> None:
        self.total.load_state_dict(state_dict["total"])
        self.current.load_state_dict(state_dict["current"])


@dataclass
class _BatchProgress(_Progress):
    is_last_batch: bool = False

    def reset_on_run(self) -> None:
        super().reset_on_run()
        self.is_last_batch = False

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.is_last_batch = state_dict.get("is_last_batch", False)


@dataclass
class _SchedulerProgress(_Progress):
    total: _ReadyCompletedTracker = field(default_factory=_ReadyCompletedTracker)
    current: _ReadyCompletedTracker = field(default_factory=_ReadyCompletedTracker)


@dataclass
class _OptimizerProgress(_BaseProgress):
    step: _Progress = field(default_factory=lambda: _Progress.from_defaults(_ReadyCompletedTracker))
    zero_grad: _Progress = field(default_factory=lambda: _Progress.from_defaults(_StartedTracker))

    def load_state_dict(self, state_dict: dict) -> None:
        self.step.load_state_dict(state_dict["step"])
        self.zero_grad.load_state_dict(state_dict["zero_grad"])


@dataclass
class _OptimizationProgress(_BaseProgress):
    optimizer: _OptimizerProgress = field(default_factory=_OptimizerProgress)

    @property
    def optimizer_steps(self) -> int:
        return self.optimizer.step.total.completed

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])


# ---------------------------------------------------------------- loop state machinery


class _Loop:
    """``state_dict`` over progress attributes and child loops, keyed like Lightning's loops."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_save_checkpoint(self) -> dict:
        return {}

    def on_load_checkpoint(self, state_dict: dict) -> None: ...

    def state_dict(self, destination: dict | None = None, prefix: str = "") -> dict:
        if destination is None:
            destination = {}
        destination[prefix + "state_dict"] = self.on_save_checkpoint()
        for k, v in self.__dict__.items():
            if isinstance(v, _BaseProgress):
                destination[prefix + k] = v.state_dict()
            elif isinstance(v, _Loop):
                v.state_dict(destination, prefix + k + ".")
        return destination

    def load_state_dict(self, state_dict: dict, prefix: str = "") -> None:
        for k, v in self.__dict__.items():
            key = prefix + k
            if isinstance(v, _BaseProgress) and key in state_dict:
                v.load_state_dict(state_dict[key])
            elif isinstance(v, _Loop):
                v.load_state_dict(state_dict, key + ".")
        if prefix + "state_dict" in state_dict:
            self.on_load_checkpoint(state_dict[prefix + "state_dict"])


class _AutomaticOptimization(_Loop):
    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        self.optim_progress = _OptimizationProgress()


class _ManualOptimization(_Loop):
    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        self.optim_step_progress = _Progress.from_defaults(_ReadyCompletedTracker)


# ---------------------------------------------------------------- helpers


def _input_converter(precision: Precision) -> Any:
    """``precision.convert_input`` when the precision casts batches (the ``*-true`` ones but 32), else None.

    Like Lightning, only the ``*_step`` methods get the cast batch; batch hooks and callbacks see it as loaded.
    """
    return precision.convert_input if precision.input_dtype is not None else None


def call_hooks(hooks: list, *args: Any) -> None:
    for hook in hooks:
        hook(*args)


def _num_batches(loader: Any) -> float:
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return float("inf")


def limit_batches(loader: Any, limit: int | float, stage: str) -> int | float:
    n = _num_batches(loader)
    if isinstance(limit, int):
        return min(n, limit)
    if limit == 1.0:
        return n
    if n == float("inf"):
        if limit == 0.0:
            return 0
        raise ValueError(
            f"Trainer(limit_{stage}_batches={limit}) is a fraction, but the {stage} dataloader has no length. "
            f"Pass an int number of batches to limit_{stage}_batches."
        )
    num = int(n * limit)
    if limit > 0 and num == 0 and n > 0:
        min_pct = 1.0 / n
        raise ValueError(
            f"You requested to check {limit} of the `{stage}_dataloader` but {limit} * {n} < 1. Please increase "
            f"the `limit_{stage}_batches` argument. Try at least `limit_{stage}_batches={min_pct}`"
        )
    return num


class _SkipBatchSampler:
    """A batch sampler that drops its first ``skip`` batches of indices (no data is loaded for them)."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self):
        it = iter(self.batch_sampler)
        for _ in range(self.skip):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


def iterate_from(loader: Any, skip: int, resumed: bool = False) -> Any:
    """An iterator over ``loader`` starting at batch ``skip``; map-style DataLoaders skip without loading.

    ``resumed``: continuing an epoch whose iterator was already created before the checkpoint, so the
    global RNG must not be drawn from again (a DataLoader iterator draws its worker base seed from it).
    """
    if skip <= 0 and not resumed:
        return iter(loader)
    from torch.utils.data import DataLoader, IterableDataset

    if (
        isinstance(loader, DataLoader)
        and loader.batch_sampler is not None
        and not isinstance(loader.dataset, IterableDataset)
    ):
        kwargs: dict[str, Any] = dict(
            batch_sampler=_SkipBatchSampler(loader.batch_sampler, skip),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            # its own generator: the worker base seed must not draw from the global RNG a second time
            generator=torch.Generator().manual_seed(0),
        )
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        return iter(DataLoader(loader.dataset, **kwargs))
    it = iter(loader)
    for _ in range(max(skip, 0)):
        if next(it, None) is None:
            break
    return it


# ---------------------------------------------------------------- sampler order (exact resume)


def _random_sampler(loader: Any) -> Any:
    from torch.utils.data import RandomSampler

    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, RandomSampler) else None


class SamplerState:
    """Makes a shuffling DataLoader's order reproducible across a resume.

    A ``RandomSampler`` without a generator draws a seed from the global RNG when its epoch starts.
    We draw that seed the same way, seed a generator of our own with it, and record the generator's
    state at the epoch start, so a mid-epoch resume replays the same permutation.
    """

    def __init__(self) -> None:
        self.epoch_start_state: Tensor | None = None
        self.owned = False

    def on_epoch_start(self, loader: Any, restore: dict | None) -> None:
        sampler = _random_sampler(loader)
        if sampler is None:
            self.epoch_start_state = None
            return
        if sampler.generator is None or getattr(sampler, "_trainer_core_owned", False):
            self.owned = True
            if sampler.generator is None:
                sampler.generator = torch.Generator()
                sampler._trainer_core_owned = True
            if restore is None:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                sampler.generator.manual_seed(seed)
        else:
            self.owned = False
        if restore is not None and restore.get("epoch_start_state") is not None:
            sampler.generator.set_state(restore["epoch_start_state"])
        self.epoch_start_state = sampler.generator.get_state()

    def on_boundary_restore(self, loader: Any, state: dict) -> None:
        """Resuming at an epoch boundary with a user-owned generator: continue from its saved state."""
        sampler = _random_sampler(loader)
        if sampler is None or state.get("owned", True) or state.get("current_state") is None:
            return
        if sampler.generator is not None:
            sampler.generator.set_state(state["current_state"])

    def state_dict(self, loader: Any) -> dict:
        sampler = _random_sampler(loader)
        current = sampler.generator.get_state() if sampler is not None and sampler.generator is not None else None
        return {"epoch_start_state": self.epoch_start_state, "current_state": current, "owned": self.owned}


# ---------------------------------------------------------------- evaluation


class _EvaluationLoop(_Loop):
    def __init__(self, trainer: Any, stage: str) -> None:
        super().__init__(trainer)
        self.stage = stage  # "validate" | "test"
        self.batch_progress = _BatchProgress()

    def run(self, loaders: list, limits: list, sanity: bool = False, verbose: bool = False) -> list[dict]:
        trainer = self.trainer
        module = trainer.lightning_module
        testing = self.stage == "test"
        prefix = "test" if testing else "validation"
        results = trainer._new_eval_results()
        in_fit = trainer.state.fn == "fit"
        hooks = trainer._hooks
        cb_batch_start = hooks[f"on_{prefix}_batch_start"]
        cb_batch_end = hooks[f"on_{prefix}_batch_end"]
        mod_batch_start = trainer._module_hook(f"on_{prefix}_batch_start")
        mod_batch_end = trainer._module_hook(f"on_{prefix}_batch_end")
        step_fn = getattr(module, f"{'test' if testing else 'validation'}_step")
        multi = len(loaders) > 1
        transfer = trainer._batch_transfer
        forward_context = trainer._precision.forward_context
        convert = _input_converter(trainer._precision)
        bp = self.batch_progress
        bp.reset_on_run()
        # remember each submodule's mode, so a backbone the user put in eval mode stays there afterwards
        modes = [(m, m.training) for m in module.modules()]

        trainer._call_hook(f"on_{prefix}_model_eval", module_only=True)
        grad_context = torch.no_grad() if in_fit or not trainer.inference_mode else torch.inference_mode()
        with grad_context:
            results.fx = f"on_{prefix}_start"
            trainer._call_hook(f"on_{prefix}_start")
            results.fx = f"on_{prefix}_epoch_start"
            trainer._call_hook(f"on_{prefix}_epoch_start")
            log_step = 0
            for dl_idx, loader in enumerate(loaders):
                limit = limits[dl_idx]
                if limit == 0:
                    continue
                results.dataloader_idx = dl_idx if multi else None
                extra = (dl_idx,) if multi else ()
                for batch_idx, batch in enumerate(loader):
                    if transfer is not None:
                        batch = transfer(batch, dl_idx)
                    bp.increment_ready()
                    results.batch = batch
                    results.batch_size = None
                    if cb_batch_start or mod_batch_start is not None:
                        results.fx = f"on_{prefix}_batch_start"
                        for hook in cb_batch_start:
                            hook(trainer, module, batch, batch_idx, *extra)
                        if mod_batch_start is not None:
                            mod_batch_start(batch, batch_idx, *extra)
                    bp.increment_started()
                    results.fx = f"{'test' if testing else 'validation'}_step"
                    step_batch = batch if convert is None else convert(batch)
                    with forward_context():
                        if multi:
                            output = step_fn(step_batch, batch_idx, dataloader_idx=dl_idx)
                        else:
                            output = step_fn(step_batch, batch_idx)
                    bp.increment_processed()
                    if cb_batch_end or mod_batch_end is not None:
                        results.fx = f"on_{prefix}_batch_end"
                        for hook in cb_batch_end:
                            hook(trainer, module, output, batch, batch_idx, *extra)
                        if mod_batch_end is not None:
                            mod_batch_end(output, batch, batch_idx, *extra)
                    bp.increment_completed()
                    if not sanity and results.dirty:
                        log_step = trainer._log_eval_step(results, log_step)
                    if batch_idx + 1 >= limit:
                        bp.is_last_batch = True
                        break
            results.dataloader_idx = None
            results.batch = None
            results.epoch_end_reached = True
            results.dirty = True
            results.fx = f"on_{prefix}_epoch_end"
            trainer._call_hook(f"on_{prefix}_epoch_end")
            logged: dict[str, Tensor] = {}
            if not sanity:
                logged = trainer._absorb_eval_epoch(results)
            results.fx = f"on_{prefix}_end"
            trainer._call_hook(f"on_{prefix}_end")
        results.fx = None
        if trainer._module_hook(f"on_{prefix}_model_train") is not None:
            trainer._call_hook(f"on_{prefix}_model_train", module_only=True)
        else:
            for m, mode in modes:
                m.training = mode
        if sanity:
            return []
        outputs = []
        for dl_idx in range(len(loaders)):
            outputs.append(
                {
                    k: (v.item() if isinstance(v, Tensor) else v)
                    for k, v in logged.items()
                    if "dataloader_idx" not in k or k.endswith(f"dataloader_idx_{dl_idx}")
                }
            )
        if verbose:
            print_results(outputs, self.stage)
        return outputs


def print_results(results: list[dict], stage: str) -> None:
    """Lightning's plain-text results table (its fallback when ``rich`` is not installed)."""
    import os
    import shutil
    import sys

    metrics_paths = {k for r in results for k in r}
    if not metrics_paths:
        return
    metrics_strs = sorted(metrics_paths)
    headers = [f"{stage.capitalize()} metric"] + [f"DataLoader {i}" for i in range(len(results))]
    rows = [[f"{r[m]}" if m in r else " " for r in results] for m in metrics_strs]
    term_size = shutil.get_terminal_size(fallback=(120, 30)).columns or 120
    max_length = int(min(max(len(max(metrics_strs, key=len)), len(max(headers, key=len)), 25), term_size / 2))
    row_format = f"{{:^{max_length}}}" * len(headers)
    half_term_size = int(term_size / 2)
    bar_character = "─"
    try:
        if sys.stdout.encoding is not None:
            bar_character.encode(sys.stdout.encoding)
    except UnicodeEncodeError:
        bar_character = "-"
    bar = bar_character * term_size
    lines = [bar, row_format.format(*headers).rstrip(), bar]
    for metric, row in zip(metrics_strs, rows, strict=False):
        if len(metric) > half_term_size:
            while len(metric) > half_term_size:
                lines.append(row_format.format(metric[:half_term_size], *row).rstrip())
                metric = metric[half_term_size:]
            lines.append(row_format.format(metric, *[" "] * len(row)).rstrip())
        else:
            lines.append(row_format.format(metric, *row).rstrip())
    lines.append(bar)
    print(os.linesep.join(lines))


# ---------------------------------------------------------------- prediction


class _PredictionLoop(_Loop):
    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        self.batch_progress = _Progress()

    def run(self, loaders: list, limits: list, return_predictions: bool) -> list | None:
        trainer = self.trainer
        module = trainer.lightning_module
        hooks = trainer._hooks
        cb_start, cb_end = hooks["on_predict_batch_start"], hooks["on_predict_batch_end"]
        mod_start = trainer._module_hook("on_predict_batch_start")
        mod_end = trainer._module_hook("on_predict_batch_end")
        multi = len(loaders) > 1
        transfer = trainer._batch_transfer
        forward_context = trainer._precision.forward_context
        convert = _input_converter(trainer._precision)
        self.batch_progress.reset_on_run()
        all_predictions: list[list] = []
        trainer._call_hook("on_predict_model_eval", module_only=True)
        grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
        with grad_context:
            trainer._call_hook("on_predict_start")
            trainer._call_hook("on_predict_epoch_start")
            for dl_idx, loader in enumerate(loaders):
                predictions: list = []
                limit = limits[dl_idx]
                extra = (dl_idx,) if multi else ()
                if limit:
                    for batch_idx, batch in enumerate(loader):
                        if transfer is not None:
                            batch = transfer(batch, dl_idx)
                        self.batch_progress.increment_ready()
                        for hook in cb_start:
                            hook(trainer, module, batch, batch_idx, *extra)
                        if mod_start is not None:
                            mod_start(batch, batch_idx, *extra)
                        self.batch_progress.increment_started()
                        step_batch = batch if convert is None else convert(batch)
                        with forward_context():
                            if multi:
                                output = module.predict_step(step_batch, batch_idx, dataloader_idx=dl_idx)
                            else:
                                output = module.predict_step(step_batch, batch_idx)
                        self.batch_progress.increment_processed()
                        for hook in cb_end:
                            hook(trainer, module, output, batch, batch_idx, *extra)
                        if mod_end is not None:
                            mod_end(output, batch, batch_idx, *extra)
                        self.batch_progress.increment_completed()
                        if return_predictions:
                            predictions.append(output)
                        if batch_idx + 1 >= limit:
                            break
                all_predictions.append(predictions)
            trainer._call_hook("on_predict_epoch_end")
            trainer._call_hook("on_predict_end")
        if not return_predictions:
            return None
        return all_predictions[0] if len(all_predictions) == 1 else all_predictions


# ---------------------------------------------------------------- training


class _TrainingEpochLoop(_Loop):
    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        self.batch_progress = _BatchProgress()
        self.scheduler_progress = _SchedulerProgress()
        self.automatic_optimization = _AutomaticOptimization(trainer)
        self.manual_optimization = _ManualOptimization(trainer)
        self.val_loop = _EvaluationLoop(trainer, "validate")
        self._batches_that_stepped = 0
        self.batch_idx = 0
        self.total_batch_idx = 0

    @property
    def global_step(self) -> int:
        return (
            self.automatic_optimization.optim_progress.optimizer.step.total.completed
            + self.manual_optimization.optim_step_progress.total.completed
        )

    def on_save_checkpoint(self) -> dict:
        return {"_batches_that_stepped": self._batches_that_stepped}

    def on_load_checkpoint(self, state_dict: dict) -> None:
        self._batches_that_stepped = state_dict.get("_batches_that_stepped", 0)

    # -- schedulers
    def update_lr_schedulers(self, interval: str, plateau: bool) -> None:
        trainer = self.trainer
        if not trainer.lightning_module.automatic_optimization:
            return
        for config in trainer.lr_scheduler_configs:
            if config.reduce_on_plateau != plateau or config.interval != interval:
                continue
            idx = (self.batch_idx if interval == "step" else trainer.current_epoch) + 1
            if idx % config.frequency:
                continue
            metric = None
            if plateau:
                metrics = trainer.callback_metrics
                metric = metrics.get(config.monitor)
                if metric is None:
                    if config.strict:
                        raise RuntimeError(
                            f"ReduceLROnPlateau conditioned on metric {config.monitor} which is not available. "
                            f"Available metrics are: {list(metrics)}. Condition can be set using `monitor` key in "
                            "lr scheduler dict"
                        )
                    import warnings

                    warnings.warn(
                        f"ReduceLROnPlateau conditioned on metric {config.monitor} which is not available but "
                        "strict is set to `False`. Skipping learning rate update.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    continue
            self.scheduler_progress.increment_ready()
            trainer.lightning_module.lr_scheduler_step(config.scheduler, metric)
            self.scheduler_progress.increment_completed()

    # -- validation placement
    def _should_check_val(self, batch_idx: int, is_last: bool) -> bool:
        trainer = self.trainer
        if not trainer._val_enabled_this_epoch:
            return False
        if trainer.should_stop and trainer.fit_loop._can_stop_early:
            return True
        val_check_batch = trainer.val_check_batch
        if val_check_batch == float("inf"):
            return is_last
        current = self.total_batch_idx if trainer.check_val_every_n_epoch is None else batch_idx
        return (current + 1) % val_check_batch == 0

    def run_validation(self) -> None:
        trainer = self.trainer
        trainer._call_hook("on_validation_model_zero_grad", module_only=True)
        trainer._run_validation()
        trainer.training = True

    # -- the batch loop
    def run(self, loader: Any, start_batch: int, val_pending: bool, resumed: bool = False) -> None:  # noqa: C901
        trainer = self.trainer
        module = trainer.lightning_module
        fit_loop = trainer.fit_loop
        results = trainer._train_results
        hooks = trainer._hooks
        cb_batch_start = hooks["on_train_batch_start"]
        cb_batch_end = hooks["on_train_batch_end"]
        mod_batch_start = trainer._module_hook("on_train_batch_start")
        mod_batch_end = trainer._module_hook("on_train_batch_end")
        has_batch_end = bool(cb_batch_end) or mod_batch_end is not None
        transfer = trainer._batch_transfer
        automatic = module.automatic_optimization
        step = self._make_auto_step(has_batch_end) if automatic else self._manual_step
        limit = trainer.num_training_batches
        infinite = limit == float("inf")
        bp = self.batch_progress
        b_total, b_cur = bp.total, bp.current
        accumulate = trainer.accumulate_grad_batches
        log_every = trainer.log_every_n_steps
        has_loggers = bool(trainer.loggers)
        max_steps = trainer.max_steps
        deadline = trainer._deadline
        # set by the fit loop for the whole epoch: with validation off, no per-batch placement check
        val_this_epoch = trainer._val_enabled_this_epoch
        step_schedulers = any(c.interval == "step" for c in trainer.lr_scheduler_configs) and automatic
        epoch_schedulers = any(
            c.interval == "epoch" and not c.reduce_on_plateau for c in trainer.lr_scheduler_configs
        ) and automatic
        plateau_step = any(
            c.interval == "step" and c.reduce_on_plateau for c in trainer.lr_scheduler_configs
        ) and automatic

        if val_pending:
            # resumed from a checkpoint written in on_train_batch_end, before that batch's validation
            if self._should_check_val(start_batch - 1, bp.is_last_batch or start_batch >= limit):
                self.run_validation()
        if start_batch >= limit:
            return
        iterator = iterate_from(loader, start_batch, resumed)
        batch_idx = start_batch - 1
        nxt = next(iterator, _END) if infinite else None
        while True:
            batch_idx += 1
            if infinite:
                batch = nxt
                if batch is _END:
                    break
                nxt = next(iterator, _END)
                is_last = nxt is _END
            else:
                if batch_idx >= limit:
                    break
                batch = next(iterator, _END)
                if batch is _END:
                    break
                is_last = batch_idx + 1 >= limit
            self.batch_idx = batch_idx
            if transfer is not None:
                batch = transfer(batch, 0)
            b_total.ready += 1
            b_cur.ready += 1
            results.batch = batch
            results.batch_size = None
            if cb_batch_start or mod_batch_start is not None:
                results.fx = "on_train_batch_start"
                for hook in cb_batch_start:
                    hook(trainer, module, batch, batch_idx)
                if mod_batch_start is not None and mod_batch_start(batch, batch_idx) == -1:
                    b_total.processed += 1
                    b_cur.processed += 1
                    break
            b_total.started += 1
            b_cur.started += 1
            accumulating = automatic and (batch_idx + 1) % accumulate != 0 and not is_last
            outputs = step(batch, batch_idx, accumulating, is_last)
            b_total.processed += 1
            b_cur.processed += 1
            if step_schedulers and not accumulating:
                self.update_lr_schedulers("step", plateau=False)
            if is_last and epoch_schedulers:
                self.update_lr_schedulers("epoch", plateau=False)
            bp.is_last_batch = is_last
            if has_batch_end:
                results.fx = "on_train_batch_end"
                for hook in cb_batch_end:
                    hook(trainer, module, outputs, batch, batch_idx)
                if mod_batch_end is not None:
                    mod_batch_end(outputs, batch, batch_idx)
            b_total.completed += 1
            b_cur.completed += 1
            if has_loggers and not accumulating and (
                (self._batches_that_stepped + 1) % log_every == 0 or trainer.should_stop
            ):
                trainer._log_train_step()
            if val_this_epoch and self._should_check_val(batch_idx, is_last):
                self.run_validation()
            if plateau_step:
                self.update_lr_schedulers("step", plateau=True)
            if not accumulating:
                self._batches_that_stepped += 1
            self.total_batch_idx += 1
            if deadline is not None and time.monotonic() >= deadline:
                trainer.should_stop = True
            if max_steps != -1 and self.global_step >= max_steps:
                break
            if trainer.should_stop and fit_loop._can_stop_early:
                break
            if is_last:
                break
        results.fx = None

    def _make_auto_step(self, want_outputs: bool):
        """The automatic-optimization step; it returns the step's outputs (detached loss and extras) only
        when ``want_outputs`` (some ``on_train_batch_end`` reads them), else None."""
        trainer = self.trainer
        module = trainer.lightning_module
        results = trainer._train_results
        precision = trainer._precision
        forward_context = precision.forward_context
        convert = _input_converter(precision)
        plain_precision = type(precision) is Precision
        training_step = module.training_step
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        accumulate = trainer.accumulate_grad_batches
        hooks = trainer._hooks
        opt_progress = self.automatic_optimization.optim_progress.optimizer
        s_total, s_cur = opt_progress.step.total, opt_progress.step.current
        z_total, z_cur = opt_progress.zero_grad.total, opt_progress.zero_grad.current
        before_zero = hooks["on_before_zero_grad"]
        mod_before_zero = trainer._module_hook("on_before_zero_grad")
        before_backward = hooks["on_before_backward"]
        mod_before_backward = trainer._module_hook("on_before_backward")
        after_backward = hooks["on_after_backward"]
        mod_after_backward = trainer._module_hook("on_after_backward")
        before_opt = hooks["on_before_optimizer_step"]
        mod_before_opt = trainer._module_hook("on_before_optimizer_step")
        custom_zero = trainer._module_hook("optimizer_zero_grad")
        custom_step = trainer._module_hook("optimizer_step")
        custom_backward = trainer._module_hook("backward") is not None
        clip_val = trainer.gradient_clip_val
        clip_algo = trainer.gradient_clip_algorithm
        custom_clip = trainer._module_hook("configure_gradient_clipping")
        needs_clip = bool(clip_val) or custom_clip is not None
        # whether the optimizer needs step_closure, or can call the plain closure directly
        step_hooks = bool(before_opt) or mod_before_opt is not None or needs_clip
        lightning_optimizer = trainer._lightning_optimizers[0] if optimizer is not None else None
        state: dict[str, Any] = {}

        def zero_grad(batch_idx: int) -> None:
            z_total.ready += 1
            z_cur.ready += 1
            if before_zero or mod_before_zero is not None:
                results.fx = "on_before_zero_grad"
                for hook in before_zero:
                    hook(trainer, module, optimizer)
                if mod_before_zero is not None:
                    mod_before_zero(optimizer)
            z_total.started += 1
            z_cur.started += 1
            if custom_zero is not None:
                custom_zero(trainer.current_epoch, batch_idx, optimizer)
            else:
                optimizer.zero_grad(set_to_none=True)
            z_total.completed += 1
            z_cur.completed += 1

        def run_step(batch: Any, batch_idx: int, accumulating: bool, is_last: bool) -> Any:
            def closure() -> Tensor | None:
                results.fx = "training_step"
                step_batch = batch if convert is None else convert(batch)
                with forward_context():
                    output = training_step(step_batch, batch_idx)
                if isinstance(output, Tensor):
                    loss, extra = output, None
                elif output is None:
                    loss, extra = None, None
                elif isinstance(output, dict):
                    if "loss" not in output:
                        raise RuntimeError(
                            "In automatic_optimization, when `training_step` returns a dict, the 'loss' key needs "
                            "to be present"
                        )
                    loss = output["loss"]
                    extra = {k: v for k, v in output.items() if k != "loss"}
                else:
                    raise RuntimeError(
                        "In automatic optimization, `training_step` must return a Tensor, a dict, or None "
                        f"(where the step will be skipped); got {type(output).__name__}."
                    )
                if loss is not None and accumulate > 1:
                    loss = loss / accumulate
                state["loss"] = loss
                state["extra"] = extra
                if optimizer is not None and batch_idx % accumulate == 0:
                    zero_grad(batch_idx)
                if loss is not None:
                    if before_backward or mod_before_backward is not None:
                        results.fx = "on_before_backward"
                        for hook in before_backward:
                            hook(trainer, module, loss)
                        if mod_before_backward is not None:
                            mod_before_backward(loss)
                    if plain_precision and not custom_backward:
                        loss.backward()
                    else:
                        precision.backward(module, loss)
                    if after_backward or mod_after_backward is not None:
                        results.fx = "on_after_backward"
                        for hook in after_backward:
                            hook(trainer, module)
                        if mod_after_backward is not None:
                            mod_after_backward()
                return loss

            def step_closure() -> Tensor | None:
                loss = closure()
                if before_opt or mod_before_opt is not None:
                    results.fx = "on_before_optimizer_step"
                    for hook in before_opt:
                        hook(trainer, module, optimizer)
                    if mod_before_opt is not None:
                        mod_before_opt(optimizer)
                if needs_clip and loss is not None:
                    results.fx = "configure_gradient_clipping"
                    if custom_clip is not None:
                        custom_clip(optimizer, clip_val, clip_algo)
                    else:
                        module.clip_gradients(optimizer, clip_val, clip_algo)
                return loss

            if accumulating or optimizer is None:
                closure()
                if optimizer is None and not accumulating:
                    s_total.ready += 1
                    s_cur.ready += 1
                    s_total.completed += 1
                    s_cur.completed += 1
            elif custom_step is not None:
                results.fx = "optimizer_step"
                custom_step(trainer.current_epoch, batch_idx, lightning_optimizer, step_closure)
            else:
                s_total.ready += 1
                s_cur.ready += 1
                precision.optimizer_step(optimizer, step_closure if step_hooks else closure)
                s_total.completed += 1
                s_cur.completed += 1
            if not want_outputs:
                return None
            loss = state.get("loss")
            if loss is None:
                return {}
            extra = state.get("extra")
            out = {"loss": loss.detach()}
            if extra:
                out.update(extra)
            return out

        return run_step

    def _manual_step(self, batch: Any, batch_idx: int, accumulating: bool, is_last: bool) -> Any:
        trainer = self.trainer
        module = trainer.lightning_module
        trainer._train_results.fx = "training_step"
        precision = trainer._precision
        step_batch = precision.convert_input(batch)
        with precision.forward_context():
            output = module.training_step(step_batch, batch_idx)
        if output is not None and not isinstance(output, (Tensor, dict)):
            raise RuntimeError(
                "In manual optimization, `training_step` must either return a Tensor, a dict with extras to pass "
                f"to `training_epoch_end` or have no return; got {type(output).__name__}."
            )
        if isinstance(output, Tensor):
            return {"loss": output.detach()}
        if isinstance(output, dict):
            return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in output.items()}
        return {}


_END = object()


class _FitLoop(_Loop):
    def __init__(self, trainer: Any, min_epochs: int | None, max_epochs: int) -> None:
        super().__init__(trainer)
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.epoch_progress = _Progress()
        self.epoch_loop = _TrainingEpochLoop(trainer)
        self.sampler_state = SamplerState()
        self._restore: dict | None = None  # our extra resume state from the checkpoint

    @property
    def max_steps(self) -> int:
        return self.trainer.max_steps

    @property
    def min_steps(self) -> int | None:
        return self.trainer.min_steps

    @property
    def _can_stop_early(self) -> bool:
        met_min_epochs = self.epoch_progress.current.processed >= self.min_epochs if self.min_epochs else True
        met_min_steps = self.epoch_loop.global_step >= self.min_steps if self.min_steps else True
        return met_min_epochs and met_min_steps

    @property
    def done(self) -> bool:
        trainer = self.trainer
        if trainer.num_training_batches == 0:
            return True
        if self.max_steps != -1 and self.epoch_loop.global_step >= self.max_steps:
            return True
        if self.max_epochs != -1 and self.epoch_progress.current.processed >= self.max_epochs:
            self.epoch_progress.current.completed = self.epoch_progress.current.processed
            return True
        if trainer.should_stop and self._can_stop_early:
            return True
        return False

    def on_save_checkpoint(self) -> dict:
        from trainer_core.seed import capture_rng_state

        loader = self.trainer.train_dataloader
        return {
            "trainer_core": {
                "sampler": self.sampler_state.state_dict(loader),
                "rng": capture_rng_state(),
            }
        }

    def on_load_checkpoint(self, state_dict: dict) -> None:
        self._restore = state_dict.get("trainer_core")

    def _resume_point(self) -> tuple[int, bool, bool]:
        """(batches already done in the epoch, whether that batch's validation is pending, mid-epoch?)."""
        ep = self.epoch_progress.current
        bp = self.epoch_loop.batch_progress
        if ep.processed > ep.completed:
            # saved in on_train_epoch_end: that epoch is over
            ep.completed = ep.processed
            ep.ready = ep.started = ep.processed
            return 0, False, False
        if ep.started > ep.completed:
            # saved inside an epoch (batch start/end, or after a validation): continue that epoch
            done = bp.current.processed
            pending = bp.current.completed < done
            for tracker in (bp.current, bp.total):
                tracker.ready = tracker.started = tracker.processed
                tracker.completed = tracker.processed
            return done, pending, True
        return 0, False, False

    def run(self) -> None:
        trainer = self.trainer
        start_batch, val_pending, mid_epoch = 0, False, False
        restore = self._restore
        if restore is not None or trainer._restarting:
            start_batch, val_pending, mid_epoch = self._resume_point()
            if restore is not None and "rng" in restore:
                from trainer_core.seed import restore_rng_state

                restore_rng_state(restore["rng"])
        if self.done:
            self._restore = None
            return
        trainer.training = True
        trainer._call_hook("on_train_start")
        mid_restore = None
        if restore is not None and restore.get("sampler"):
            if mid_epoch:
                mid_restore = restore["sampler"]
            else:
                self.sampler_state.on_boundary_restore(trainer.train_dataloader, restore["sampler"])
        self._restore = None
        while not self.done:
            self._run_epoch(start_batch, val_pending, mid_epoch, mid_restore)
            start_batch, val_pending, mid_epoch, mid_restore = 0, False, False, None
        trainer._call_hook("on_train_end")

    def _run_epoch(self, start_batch: int, val_pending: bool, resumed_mid_epoch: bool, sampler_restore: dict | None) -> None:
        trainer = self.trainer
        epoch = self.epoch_progress.current.completed
        trainer._maybe_reload_train_dataloader(epoch)
        loader = trainer.train_dataloader
        if not resumed_mid_epoch:
            self.epoch_loop.batch_progress.reset_on_run()
            self.epoch_progress.increment_ready()
        self.sampler_state.on_epoch_start(loader, sampler_restore)
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        trainer._train_results.reset()
        trainer._val_enabled_this_epoch = trainer._val_enabled and (
            trainer.check_val_every_n_epoch is None or (epoch + 1) % trainer.check_val_every_n_epoch == 0
        )
        trainer._train_results.fx = "on_train_epoch_start"
        trainer._call_hook("on_train_epoch_start")
        if not resumed_mid_epoch:
            self.epoch_progress.increment_started()
        self.epoch_loop.run(loader, start_batch, val_pending, resumed_mid_epoch)
        self.epoch_progress.increment_processed()
        results = trainer._train_results
        results.epoch_end_reached = True
        results.dirty = True
        results.fx = "on_train_epoch_end"
        module = trainer.lightning_module
        for hook in trainer._hooks_non_monitoring["on_train_epoch_end"]:
            hook(trainer, module)
        mod_hook = trainer._module_hook("on_train_epoch_end")
        if mod_hook is not None:
            mod_hook()
        for hook in trainer._hooks_monitoring["on_train_epoch_end"]:
            hook(trainer, module)
        results.fx = None
        if self.epoch_loop.batch_progress.is_last_batch:
            self.epoch_loop.update_lr_schedulers("epoch", plateau=True)
        trainer._absorb_train_epoch()
        if trainer._deadline is not None and time.monotonic() >= trainer._deadline:
            trainer.should_stop = True
        self.epoch_progress.increment_completed()


__all__ = ["_EvaluationLoop", "_FitLoop", "_PredictionLoop", "limit_batches"]
