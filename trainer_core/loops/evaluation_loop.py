"""The validation and test loop, and Lightning's plain-text results table."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import torch
from torch import Tensor

from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _BatchProgress
from trainer_core.loops.utilities import (
    _input_converter,
    _LoopContext,
    _step_callable,
    _verify_dataloader_idx_requirement,
)
from trainer_core.trainer.results import ResultCollection


class _EvaluationLoop(_Loop):
    """``validation_step`` or ``test_step`` over each loader, with Lightning's hooks and logging calls around them."""

    def __init__(self, stage: str) -> None:
        self.stage = stage  # "validate" | "test"
        self.batch_progress = _BatchProgress()
        # Lightning's per-loop result collection: entries stay registered across runs, values are reset after each
        self._results = ResultCollection(training=False)
        # batches seen per dataloader: the step of the step values sent; kept across the validation runs of a fit
        # (Lightning resets it when the dataloaders are set up again)
        self._seen_batches: dict[int, int] = {}
        self._seen_loaders: list[Any] = []

    def _verify_dataloader_idx(self, module: Any, prefix: str, multi: bool) -> None:
        p = "val" if prefix == "validation" else prefix
        _verify_dataloader_idx_requirement((f"{prefix}_step",), multi, p, module)
        _verify_dataloader_idx_requirement((f"on_{prefix}_batch_start", f"on_{prefix}_batch_end"), multi, p, module)

    def run(
        self,
        ctx: _LoopContext,
        loaders: list[Any],
        limits: list[int | float],
        sanity: bool = False,
        verbose: bool = False,
    ) -> list[dict[str, Any]]:
        trainer, module, hooks, metrics = ctx.trainer, ctx.module, ctx.hooks, ctx.metrics
        testing = self.stage == "test"
        prefix = "test" if testing else "validation"
        multi = len(loaders) > 1
        self._verify_dataloader_idx(module, prefix, multi)
        in_fit = trainer.state.fn == "fit"
        seen_loaders = self._seen_loaders
        same_loaders = len(seen_loaders) == len(loaders) and all(
            a is b for a, b in zip(seen_loaders, loaders, strict=True)
        )
        if not (in_fit and same_loaders):
            self._seen_batches = {}
            self._seen_loaders = list(loaders) if in_fit else []
        seen = self._seen_batches
        metrics.logged_outputs = []  # a run that failed may have left some (Lightning's loop reset)
        results = self._results
        prev_results, prev_first_loop_iter = metrics.results, metrics.first_loop_iter
        metrics.results = results
        on_batch_start = hooks.caller(f"on_{prefix}_batch_start", results)
        on_batch_end = hooks.caller(f"on_{prefix}_batch_end", results)
        step_name = f"{prefix}_step"
        step_fn = trainer.strategy.wrap_step(_step_callable(getattr(module, step_name)))  # DDP in fit: its wrapper
        transfer = ctx.batch_transfer
        forward_context = ctx.precision.forward_context
        convert = _input_converter(ctx.precision)
        bp = self.batch_progress
        bp.reset_on_run()
        # remember each submodule's mode, so a backbone the user put in eval mode stays there afterwards
        modes = [(m, m.training) for m in module.modules()]

        try:
            hooks.call(f"on_{prefix}_model_eval", module_only=True)
            grad_context = torch.no_grad() if in_fit or not trainer.inference_mode else torch.inference_mode()
            with grad_context:
                hooks.call(f"on_{prefix}_start")
                hooks.call(f"on_{prefix}_epoch_start")
                previous_dl_idx = 0
                for dl_idx, loader in enumerate(loaders):
                    limit = limits[dl_idx]
                    if limit == 0:
                        continue
                    log_dl_idx = dl_idx if multi else None
                    extra = (dl_idx,) if multi else ()
                    for batch_idx, batch in enumerate(loader):
                        if previous_dl_idx != dl_idx:
                            # the dataloader has changed: keep the previous one's epoch values
                            metrics.store_dataloader_outputs(sanity)
                        previous_dl_idx = dl_idx
                        if transfer is not None:
                            batch = transfer(batch, dl_idx)
                        bp.increment_ready()
                        metrics.on_batch_start(batch, log_dl_idx)
                        if on_batch_start is not None:
                            on_batch_start(batch, batch_idx, *extra)
                        bp.increment_started()
                        results.fx = step_name
                        step_batch = batch if convert is None else convert(batch)
                        with forward_context():
                            output = step_fn(step_batch, batch_idx, *extra)
                        bp.increment_processed()
                        if on_batch_end is not None:
                            on_batch_end(output, batch, batch_idx, *extra)
                        metrics.on_batch_end()
                        bp.increment_completed()
                        if not sanity:
                            metrics.update_eval_step_metrics(seen.get(dl_idx, 0))
                            seen[dl_idx] = seen.get(dl_idx, 0) + 1
                        if batch_idx + 1 >= limit:
                            bp.is_last_batch = True
                            break
                metrics.store_dataloader_outputs(sanity)
                metrics.epoch_end_reached()
                metrics.evaluation_epoch_end()
                hooks.call(f"on_{prefix}_epoch_end")
                metrics.on_epoch_end()
                outputs = metrics.eval_run_outputs(sanity)
                hooks.call(f"on_{prefix}_end")
                metrics.reset_results()
            results.fx = None
            if hooks.module_hook(f"on_{prefix}_model_train") is not None:
                hooks.call(f"on_{prefix}_model_train", module_only=True)
            else:
                for m, mode in modes:
                    m.training = mode
        finally:
            results.fx = None
            metrics.results = prev_results
            metrics.first_loop_iter = prev_first_loop_iter
        if sanity:
            return []
        # as Lightning's ``Trainer.validate`` / ``test``: the returned values are floats
        returned = [{k: (v.item() if isinstance(v, Tensor) else v) for k, v in out.items()} for out in outputs]
        if verbose:
            print_results(returned, self.stage)
        return returned


def print_results(results: list[dict[str, Any]], stage: str) -> None:
    """Lightning's plain-text results table (its fallback when ``rich`` is not installed)."""
    # as Lightning: the rows are named without the ``/dataloader_idx_N`` suffix
    results = [{k.split("/dataloader_idx_")[0]: v for k, v in r.items()} for r in results]
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

