"""What ``self.log`` records, and how it becomes step and epoch metrics.

Values stay tensors on their device. A step value is kept as logged; an epoch value is accumulated
with one in-place tensor op per call (weighted by batch size for means), and reduced only when
someone reads it. Nothing here calls ``.item()``: reading ``trainer.progress_bar_metrics`` or
sending to a logger is where values become floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

# hook -> (allowed on_step, allowed on_epoch, default on_step, default on_epoch); Lightning's table.
_STEP_HOOK = ((False, True), (False, True), True, False)
_EVAL_STEP_HOOK = ((False, True), (False, True), False, True)
_EPOCH_HOOK = ((False,), (True,), False, True)
FX_OPTIONS: dict[str, tuple] = {
    "training_step": _STEP_HOOK,
    "on_train_batch_start": _STEP_HOOK,
    "on_train_batch_end": _STEP_HOOK,
    "on_before_backward": _STEP_HOOK,
    "backward": _STEP_HOOK,
    "on_after_backward": _STEP_HOOK,
    "on_before_optimizer_step": _STEP_HOOK,
    "optimizer_step": _STEP_HOOK,
    "configure_gradient_clipping": _STEP_HOOK,
    "clip_gradients": _STEP_HOOK,
    "on_before_zero_grad": _STEP_HOOK,
    "optimizer_zero_grad": _STEP_HOOK,
    "lr_scheduler_step": _EPOCH_HOOK,
    "on_train_start": _EPOCH_HOOK,
    "on_train_epoch_start": ((False, True), (False, True), False, True),
    "on_train_epoch_end": _EPOCH_HOOK,
    "on_validation_start": _EPOCH_HOOK,
    "on_test_start": _EPOCH_HOOK,
    "on_validation_epoch_start": _EVAL_STEP_HOOK,
    "on_test_epoch_start": _EVAL_STEP_HOOK,
    "validation_step": _EVAL_STEP_HOOK,
    "test_step": _EVAL_STEP_HOOK,
    "on_validation_batch_start": _EVAL_STEP_HOOK,
    "on_validation_batch_end": _EVAL_STEP_HOOK,
    "on_test_batch_start": _EVAL_STEP_HOOK,
    "on_test_batch_end": _EVAL_STEP_HOOK,
    "on_validation_epoch_end": _EPOCH_HOOK,
    "on_test_epoch_end": _EPOCH_HOOK,
}

_REDUCE_NAMES = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_REDUCE_FUNCS = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min"}


def _reduce_name(reduce_fx: Any) -> str:
    name = _REDUCE_NAMES.get(reduce_fx.lower()) if isinstance(reduce_fx, str) else _REDUCE_FUNCS.get(reduce_fx)
    if name is None:
        raise ValueError(
            f"self.log(reduce_fx={reduce_fx!r}) is not supported. Allowed values: 'mean', 'sum', 'max', 'min' "
            "(or torch.mean, torch.sum, torch.max, torch.min)."
        )
    return name


def extract_batch_size(batch: Any) -> int:
    """Size of the first dimension of the first tensor found in the batch (Lightning's rule)."""
    if isinstance(batch, Tensor):
        return 1 if batch.ndim == 0 else batch.size(0)
    if isinstance(batch, (str, bytes)):
        return len(batch)
    if isinstance(batch, Mapping):
        for v in batch.values():
            size = _maybe_batch_size(v)
            if size is not None:
                return size
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            size = _maybe_batch_size(v)
            if size is not None:
                return size
    raise ValueError(
        "We could not infer the batch_size from the batch. Either simplify its structure or provide the "
        "batch_size as `self.log(..., batch_size=batch_size)`."
    )


def _maybe_batch_size(value: Any) -> int | None:
    try:
        return extract_batch_size(value)
    except ValueError:
        return None


def _accumulator(value: Tensor) -> Tensor:
    """``value`` in the dtype an epoch value accumulates in: float64 stays, anything else is float32."""
    return value if value.dtype is torch.float64 else value.float()


class _Entry:
    __slots__ = (
        "name", "forked", "sig", "on_step", "on_epoch", "prog_bar", "logger", "reduce",
        "step_value", "acc", "count", "computed",
    )

    def __init__(self, name: str, sig: tuple, on_step: bool, on_epoch: bool, prog_bar: bool, logger: bool,
                 reduce: str) -> None:
        self.name = name
        self.forked = on_step and on_epoch
        self.sig = sig
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.prog_bar = prog_bar
        self.logger = logger
        self.reduce = reduce
        self.step_value: Tensor | None = None
        self.acc: Tensor | None = None
        self.count = 0.0
        self.computed: Tensor | None = None

    def epoch_value(self) -> Tensor | None:
        if self.acc is None:
            return None
        if self.computed is None:
            self.computed = self.acc / self.count if self.reduce == "mean" else self.acc
        return self.computed


class ResultCollection:
    """The values logged during one loop (training epoch, or one evaluation run)."""

    def __init__(self, training: bool) -> None:
        self.training = training
        self.entries: dict[tuple, _Entry] = {}
        self.fx: str | None = None
        self.dataloader_idx: int | None = None
        self.batch: Any = None
        self.batch_size: int | None = None
        self.dirty = False
        self.epoch_end_reached = False

    def reset(self) -> None:
        self.entries = {}
        self.dirty = False
        self.epoch_end_reached = False
        self.batch = None
        self.batch_size = None
        self.dataloader_idx = None

    def log(self, name: str, value: Tensor, prog_bar: bool, logger: bool | None, on_step: bool | None,
            on_epoch: bool | None, reduce_fx: Any, add_dataloader_idx: bool, batch_size: int | None) -> None:
        fx = self.fx
        dl_idx = self.dataloader_idx if add_dataloader_idx else None
        key = (fx, name, dl_idx)
        entry = self.entries.get(key)
        sig = (prog_bar, logger, on_step, on_epoch, reduce_fx)
        if entry is None:
            entry = self._register(key, name, sig, prog_bar, logger, on_step, on_epoch, reduce_fx)
        elif entry.sig != sig:
            raise ValueError(
                f"You called `self.log({name}, ...)` twice in `{fx}` with different arguments. This is not allowed"
            )
        if entry.on_step:
            entry.step_value = value
        if entry.on_epoch:
            reduce = entry.reduce
            acc = entry.acc
            if reduce == "mean":
                if batch_size is None:
                    batch_size = self.batch_size
                    if batch_size is None:
                        batch_size = 1 if self.batch is None else extract_batch_size(self.batch)
                        self.batch_size = batch_size
                if acc is None:
                    entry.acc = _accumulator(value) * batch_size
                else:
                    acc.add_(value, alpha=batch_size)
                entry.count += batch_size
            elif acc is None:
                entry.acc = _accumulator(value).clone()
            elif reduce == "sum":
                acc.add_(value)
            elif reduce == "max":
                torch.maximum(acc, value, out=acc)
            else:
                torch.minimum(acc, value, out=acc)
            entry.computed = None
        self.dirty = True

    def _register(self, key: tuple, name: str, sig: tuple, prog_bar: bool, logger: bool | None,
                  on_step: bool | None, on_epoch: bool | None, reduce_fx: Any) -> _Entry:
        fx = key[0]
        options = FX_OPTIONS.get(fx)
        if options is None:
            raise ValueError(f"You can't `self.log({name!r}, ...)` inside `{fx}`: logging is not supported there.")
        allowed_step, allowed_epoch, default_step, default_epoch = options
        on_step = default_step if on_step is None else bool(on_step)
        on_epoch = default_epoch if on_epoch is None else bool(on_epoch)
        if on_step not in allowed_step:
            raise ValueError(
                f"You can't `self.log({name!r}, ..., on_step={on_step})` in `{fx}`. "
                f"Possible values: on_step in {list(allowed_step)}."
            )
        if on_epoch not in allowed_epoch:
            raise ValueError(
                f"You can't `self.log({name!r}, ..., on_epoch={on_epoch})` in `{fx}`. "
                f"Possible values: on_epoch in {list(allowed_epoch)}."
            )
        if not on_step and not on_epoch:
            raise ValueError(f"self.log({name!r}, ..., on_step=False, on_epoch=False) would record nothing.")
        reduce = _reduce_name(reduce_fx)
        full_name = name
        if key[2] is not None:
            full_name = f"{name}/dataloader_idx_{key[2]}"
        entry = _Entry(full_name, sig, on_step, on_epoch, bool(prog_bar), True if logger is None else bool(logger),
                       reduce)
        self.entries[key] = entry
        return entry

    def metrics(self, on_step: bool) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """(callback, logger, progress bar) metrics for the step or the epoch, as Lightning splits them."""
        callback: dict[str, Tensor] = {}
        log: dict[str, Tensor] = {}
        pbar: dict[str, Tensor] = {}
        training = self.training
        for entry in self.entries.values():
            if on_step:
                if not entry.on_step:
                    continue
                value = entry.step_value
            else:
                if not entry.on_epoch:
                    continue
                value = entry.epoch_value()
            if value is None:
                continue
            name = entry.name
            forked = f"{name}_step" if (entry.forked and on_step) else f"{name}_epoch" if entry.forked else name
            if entry.logger:
                log[forked] = value
            if training or (entry.on_epoch and not on_step):
                callback[name] = value
                callback[forked] = value
            if entry.prog_bar:
                pbar[forked] = value
        return callback, log, pbar


def to_float(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item()
    return value
