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
from trainer_core.loops.utilities import _input_converter, _LoopContext


class _EvaluationLoop(_Loop):
    """``validation_step`` or ``test_step`` over each loader, with Lightning's hooks around them."""

    def __init__(self, stage: str) -> None:
        self.stage = stage  # "validate" | "test"
        self.batch_progress = _BatchProgress()

    def run(  # noqa: C901
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
        results = metrics.new_eval_results()
        in_fit = trainer.state.fn == "fit"
        on_batch_start = hooks.caller(f"on_{prefix}_batch_start", results)
        on_batch_end = hooks.caller(f"on_{prefix}_batch_end", results)
        step_fn = getattr(module, f"{'test' if testing else 'validation'}_step")
        multi = len(loaders) > 1
        transfer = ctx.batch_transfer
        forward_context = ctx.precision.forward_context
        convert = _input_converter(ctx.precision)
        bp = self.batch_progress
        bp.reset_on_run()
        # remember each submodule's mode, so a backbone the user put in eval mode stays there afterwards
        modes = [(m, m.training) for m in module.modules()]

        hooks.call(f"on_{prefix}_model_eval", module_only=True)
        grad_context = torch.no_grad() if in_fit or not trainer.inference_mode else torch.inference_mode()
        with grad_context:
            results.fx = f"on_{prefix}_start"
            hooks.call(f"on_{prefix}_start")
            results.fx = f"on_{prefix}_epoch_start"
            hooks.call(f"on_{prefix}_epoch_start")
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
                    if on_batch_start is not None:
                        on_batch_start(batch, batch_idx, *extra)
                    bp.increment_started()
                    results.fx = f"{'test' if testing else 'validation'}_step"
                    step_batch = batch if convert is None else convert(batch)
                    with forward_context():
                        if multi:
                            output = step_fn(step_batch, batch_idx, dataloader_idx=dl_idx)
                        else:
                            output = step_fn(step_batch, batch_idx)
                    bp.increment_processed()
                    if on_batch_end is not None:
                        on_batch_end(output, batch, batch_idx, *extra)
                    bp.increment_completed()
                    if not sanity and results.dirty:
                        log_step = metrics.log_eval_step(results, log_step)
                    if batch_idx + 1 >= limit:
                        bp.is_last_batch = True
                        break
            results.dataloader_idx = None
            results.batch = None
            results.epoch_end_reached = True
            results.dirty = True
            results.fx = f"on_{prefix}_epoch_end"
            hooks.call(f"on_{prefix}_epoch_end")
            logged: dict[str, Any] = {}
            if not sanity:
                logged = metrics.absorb_eval_epoch(results)
            results.fx = f"on_{prefix}_end"
            hooks.call(f"on_{prefix}_end")
        results.fx = None
        if hooks.module_hook(f"on_{prefix}_model_train") is not None:
            hooks.call(f"on_{prefix}_model_train", module_only=True)
        else:
            for m, mode in modes:
                m.training = mode
        if sanity:
            return []
        outputs: list[dict[str, Any]] = []
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


def print_results(results: list[dict[str, Any]], stage: str) -> None:
    """Lightning's plain-text results table (its fallback when ``rich`` is not installed)."""
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

