"""The prediction loop."""

from __future__ import annotations

from typing import Any

import torch

from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _Progress
from trainer_core.loops.utilities import _input_converter, _LoopContext


class _PredictionLoop(_Loop):
    """``predict_step`` over each loader, collecting the predictions when asked to."""

    def __init__(self) -> None:
        self.batch_progress = _Progress()

    def run(
        self, ctx: _LoopContext, loaders: list[Any], limits: list[int | float], return_predictions: bool
    ) -> list[Any] | None:
        trainer, module, hooks = ctx.trainer, ctx.module, ctx.hooks
        on_batch_start = hooks.caller("on_predict_batch_start")
        on_batch_end = hooks.caller("on_predict_batch_end")
        multi = len(loaders) > 1
        transfer = ctx.batch_transfer
        forward_context = ctx.precision.forward_context
        convert = _input_converter(ctx.precision)
        self.batch_progress.reset_on_run()
        all_predictions: list[list[Any]] = []
        hooks.call("on_predict_model_eval", module_only=True)
        grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
        with grad_context:
            hooks.call("on_predict_start")
            hooks.call("on_predict_epoch_start")
            for dl_idx, loader in enumerate(loaders):
                predictions: list[Any] = []
                limit = limits[dl_idx]
                extra = (dl_idx,) if multi else ()
                if limit:
                    for batch_idx, batch in enumerate(loader):
                        if transfer is not None:
                            batch = transfer(batch, dl_idx)
                        self.batch_progress.increment_ready()
                        if on_batch_start is not None:
                            on_batch_start(batch, batch_idx, *extra)
                        self.batch_progress.increment_started()
                        step_batch = batch if convert is None else convert(batch)
                        with forward_context():
                            if multi:
                                output = module.predict_step(step_batch, batch_idx, dataloader_idx=dl_idx)
                            else:
                                output = module.predict_step(step_batch, batch_idx)
                        self.batch_progress.increment_processed()
                        if on_batch_end is not None:
                            on_batch_end(output, batch, batch_idx, *extra)
                        self.batch_progress.increment_completed()
                        if return_predictions:
                            predictions.append(output)
                        if batch_idx + 1 >= limit:
                            break
                all_predictions.append(predictions)
            hooks.call("on_predict_epoch_end")
            hooks.call("on_predict_end")
        if not return_predictions:
            return None
        return all_predictions[0] if len(all_predictions) == 1 else all_predictions

