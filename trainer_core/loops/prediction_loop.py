"""The prediction loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from trainer_core.loops.loop import _Loop
from trainer_core.loops.progress import _Progress
from trainer_core.loops.utilities import (
    _call_step,
    _input_converter,
    _LoopContext,
    _verify_dataloader_idx_requirement,
)
from trainer_core.utilities.rank_zero import WarningCache


class _IndexBatchSamplerWrapper:
    """Lightning's wrapper of a predict loader's batch sampler: it records the dataset indices of each batch
    (``seen_batch_indices``, reset on ``__iter__``) for ``BasePredictionWriter``."""

    def __init__(self, batch_sampler: Any) -> None:
        self.__dict__ = {
            k: v for k, v in batch_sampler.__dict__.items() if k not in ("__next__", "__iter__", "__len__", "__getstate__")
        }
        self.seen_batch_indices: list[list[int]] = []
        self._batch_sampler = batch_sampler
        self._iterator: Iterator[list[int]] | None = None

    def __next__(self) -> list[int]:
        assert self._iterator is not None
        batch = next(self._iterator)
        self.seen_batch_indices.append(batch)
        return batch

    def __iter__(self) -> _IndexBatchSamplerWrapper:
        self.seen_batch_indices = []
        self._iterator = iter(self._batch_sampler)
        return self

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_iterator"] = None  # a generator does not pickle
        return state


class _PredictionLoop(_Loop):
    """``predict_step`` over each loader, collecting the predictions when asked to.

    With a ``BasePredictionWriter`` among the callbacks (Lightning's ``_store_data_for_prediction_writer``):
    ``current_batch_indices`` holds the dataset indices of the current batch (set before
    ``on_predict_batch_start``), ``epoch_batch_indices`` those of every batch per loader, and ``predictions``
    is kept even with ``return_predictions=False`` when a writer writes on epoch end.
    """

    def __init__(self) -> None:
        self.batch_progress = _Progress()
        self.epoch_batch_indices: list[list[list[int]]] = []
        self.current_batch_indices: list[int] = []
        self._predictions: list[list[Any]] = []
        self._warning_cache = WarningCache()

    @property
    def predictions(self) -> list[Any]:
        """The predictions kept (per batch; per loader, then batch, with several loaders)."""
        if self._predictions == []:
            return self._predictions
        return self._predictions[0] if len(self._predictions) == 1 else self._predictions

    def _index_recorder(self, loader: Any) -> _IndexBatchSamplerWrapper | None:
        batch_sampler = getattr(loader, "batch_sampler", None)
        if not isinstance(batch_sampler, _IndexBatchSamplerWrapper):
            self._warning_cache.warn(
                f"Couldn't infer the batch indices fetched from your dataloader: `{type(loader).__name__}`"
            )
            return None
        return batch_sampler

    def run(
        self, ctx: _LoopContext, loaders: list[Any], limits: list[int | float], return_predictions: bool
    ) -> list[Any] | None:
        from trainer_core.callbacks.prediction_writer import BasePredictionWriter

        writers = [cb for cb in ctx.trainer.callbacks if isinstance(cb, BasePredictionWriter)]
        any_on_epoch = any(cb.interval.on_epoch for cb in writers)
        any_on_batch = any(cb.interval.on_batch for cb in writers)
        wrapped: list[tuple[Any, Any]] = []
        if writers:
            # Lightning rebuilds each predict DataLoader around the wrapped batch sampler; here the wrapper is set
            # on the loader for this run only and the loader's own batch sampler put back afterwards
            for loader in loaders:
                batch_sampler = getattr(loader, "batch_sampler", None)
                if batch_sampler is not None and not isinstance(batch_sampler, _IndexBatchSamplerWrapper):
                    object.__setattr__(loader, "batch_sampler", _IndexBatchSamplerWrapper(batch_sampler))
                    wrapped.append((loader, batch_sampler))
        try:
            return self._run(ctx, loaders, limits, return_predictions, any_on_epoch, any_on_batch)
        finally:
            for loader, batch_sampler in wrapped:
                object.__setattr__(loader, "batch_sampler", batch_sampler)

    def _run(
        self,
        ctx: _LoopContext,
        loaders: list[Any],
        limits: list[int | float],
        return_predictions: bool,
        any_on_epoch: bool,
        any_on_batch: bool,
    ) -> list[Any] | None:
        trainer, module, hooks = ctx.trainer, ctx.module, ctx.hooks
        on_batch_start = hooks.caller("on_predict_batch_start")
        on_batch_end = hooks.caller("on_predict_batch_end")
        multi = len(loaders) > 1
        transfer = ctx.batch_transfer
        forward_context = ctx.precision.forward_context
        convert = _input_converter(ctx.precision)
        keep = return_predictions or any_on_epoch
        track_indices = any_on_epoch or any_on_batch
        self.batch_progress.reset_on_run()
        self.epoch_batch_indices = [[] for _ in loaders]
        self._predictions = [[] for _ in loaders]
        cpu = torch.device("cpu")
        from trainer_core.core.module import move_data_to_device

        # Lightning's check of the dataloader_idx arguments, before any hook
        _verify_dataloader_idx_requirement(("predict_step",), multi, "predict", module)
        _verify_dataloader_idx_requirement(("on_predict_batch_start", "on_predict_batch_end"), multi, "predict", module)
        hooks.call("on_predict_model_eval", module_only=True)
        grad_context = torch.inference_mode() if trainer.inference_mode else torch.no_grad()
        with grad_context:
            hooks.call("on_predict_start")
            hooks.call("on_predict_epoch_start")
            for dl_idx, loader in enumerate(loaders):
                predictions = self._predictions[dl_idx]
                limit = limits[dl_idx]
                extra = (dl_idx,) if multi else ()
                recorder = self._index_recorder(loader) if track_indices and limit else None
                if limit:
                    for batch_idx, batch in enumerate(loader):
                        if transfer is not None:
                            batch = transfer(batch, dl_idx)
                        self.batch_progress.increment_ready()
                        if recorder is not None:
                            indices = recorder.seen_batch_indices[batch_idx]
                            if any_on_epoch:
                                self.epoch_batch_indices[dl_idx].append(indices)
                            if any_on_batch:
                                self.current_batch_indices = indices
                        if on_batch_start is not None:
                            on_batch_start(batch, batch_idx, *extra)
                        self.batch_progress.increment_started()
                        step_batch = batch if convert is None else convert(batch)
                        with forward_context():
                            output = _call_step(module.predict_step, step_batch, batch_idx, *extra)
                        if output is None:
                            self._warning_cache.warn("predict returned None if it was on purpose, ignore this warning...")
                        self.batch_progress.increment_processed()
                        if on_batch_end is not None:
                            on_batch_end(output, batch, batch_idx, *extra)
                        self.batch_progress.increment_completed()
                        if keep:
                            predictions.append(move_data_to_device(output, cpu))
                        if batch_idx + 1 >= limit:
                            break
            hooks.call("on_predict_epoch_end")
            hooks.call("on_predict_end")
        result = self.predictions if return_predictions else None
        if not return_predictions:
            self._predictions = []
        self.epoch_batch_indices = []
        return result
