"""What ``self.log`` records, and how it becomes step and epoch metrics (Lightning's ``_ResultCollection``).

Values stay tensors on their device. A step value is kept as logged; an epoch value is accumulated
with one in-place tensor op per call (weighted by batch size for means), and reduced only when
someone reads it. Nothing here calls ``.item()``: reading ``trainer.progress_bar_metrics`` or
sending to a logger is where values become floats.

A ``torchmetrics.Metric`` can be logged as well: its ``forward`` result (``_forward_cache``) is the
step value, ``compute()`` the epoch value, and ``reset()`` is called when the collection is reset
(at the end of the training epoch and of each evaluation run), as in Lightning. torchmetrics is
never imported here: a value is a Metric only when torchmetrics is already loaded (the user made one).

Which hooks may log (Lightning's ``_FxValidator`` table) is in ``fx_validator``; what reaches
``callback_metrics`` / ``logged_metrics`` / ``progress_bar_metrics`` and the loggers, and when, is
``logger_connector.LoggerConnector`` (also importable from here).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from trainer_core.trainer.fx_validator import FX_OPTIONS, check_logging
from trainer_core.utilities.exceptions import MisconfigurationException
from trainer_core.utilities.rank_zero import WarningCache
from trainer_core.utilities.warnings import PossibleUserWarning

warning_cache = WarningCache()

# ``sync_dist_fn(tensor, group=, reduce_op=)``: ``trainer.strategy.reduce``
SyncFn = Callable[..., Tensor]

__all__ = [
    "FX_OPTIONS", "MetricsSplit", "ResultCollection", "check_dataloader_idx_name", "check_logging",
    "extract_batch_size", "find_metric_attribute", "is_metric", "is_metric_collection", "to_scalars",
]

DATALOADER_SUFFIX = "/dataloader_idx_{}"

_REDUCE_NAMES = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_REDUCE_FUNCS: dict[Any, str] = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min",
                                 sum: "sum", max: "max", min: "min"}


def is_metric(value: Any) -> bool:
    """``isinstance(value, torchmetrics.Metric)`` without importing torchmetrics (a Metric implies it is loaded)."""
    tm = sys.modules.get("torchmetrics")
    return tm is not None and isinstance(value, tm.Metric)


def is_metric_collection(value: Any) -> bool:
    tm = sys.modules.get("torchmetrics")
    return tm is not None and isinstance(value, tm.MetricCollection)


def _reduce_name(reduce_fx: Any) -> str:
    name = _REDUCE_NAMES.get(reduce_fx.lower()) if isinstance(reduce_fx, str) else _REDUCE_FUNCS.get(reduce_fx)
    if name is None:
        raise MisconfigurationException(
            "Only `self.log(..., reduce_fx={min,max,mean,sum})` are supported."
            " If you need a custom reduction, please log a `torchmetrics.Metric` instance instead."
            f" Found: {reduce_fx}"
        )
    return name


def find_metric_attribute(module: Any, value: Any, name: str, cache: dict[int, str] | None) -> tuple[str, dict[int, str]]:
    """The attribute path of the Metric ``value`` in ``module`` (Lightning's lookup and its errors).

    ``cache`` is the ``{id(metric): attribute}`` map computed on the first call (pass back what was returned).
    """
    if cache is None:
        tm = sys.modules["torchmetrics"]
        cache = {id(m): n for n, m in module.named_modules() if isinstance(m, tm.Metric)}
        if not cache:
            raise MisconfigurationException(
                "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged."
                " You can fix this by setting an attribute for the metric in your `LightningModule`."
            )
    attribute = cache.get(id(value))
    if attribute is None:
        raise MisconfigurationException(
            "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged."
            f" You can fix this by calling `self.log({name}, ..., metric_attribute=name)` where `name` is one"
            f" of {list(cache.values())}"
        )
    return attribute, cache


def check_dataloader_idx_name(name: str, add_dataloader_idx: bool) -> None:
    if add_dataloader_idx and "/dataloader_idx_" in name:
        raise MisconfigurationException(
            f"You called `self.log` with the key `{name}`"
            " but it should not contain information about `dataloader_idx` when `add_dataloader_idx=True`"
        )


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
    raise MisconfigurationException(
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
    """One logged key: Lightning's ``_ResultMetric`` with its ``_Metadata``."""

    __slots__ = (
        "name", "fx", "forked", "sig", "on_step", "on_epoch", "prog_bar", "logger", "reduce", "enable_graph",
        "add_dataloader_idx", "dataloader_idx", "metric_attribute", "metric",
        "step_value", "acc", "count", "computed", "has_reset", "raw", "step_names", "epoch_names",
        "sync_fn", "sync_group",
    )

    def __init__(self, fx: str, name: str, sig: tuple[Any, ...], on_step: bool, on_epoch: bool, prog_bar: bool,
                 logger: bool, reduce: str, enable_graph: bool, add_dataloader_idx: bool,
                 dataloader_idx: int | None, metric_attribute: str | None, sync_fn: SyncFn | None = None,
                 sync_group: Any = None) -> None:
        self.fx = fx
        self.name = name
        self.forked = on_step and on_epoch
        self.sig = sig
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.prog_bar = prog_bar
        self.logger = logger
        self.reduce = reduce
        self.enable_graph = enable_graph
        self.add_dataloader_idx = add_dataloader_idx
        self.dataloader_idx = dataloader_idx
        self.metric_attribute = metric_attribute
        # Lightning's ``_Sync``: the reduction across processes (None: not synced)
        self.sync_fn = sync_fn
        self.sync_group = sync_group
        self.metric: Any = None  # the torchmetrics.Metric logged, when one was
        self.step_value: Tensor | None = None
        self.acc: Tensor | None = None
        self.count = 0.0
        self.computed: Tensor | None = None
        self.has_reset = False
        # the ``log`` arguments as given the last time: the same again needs no checks
        self.raw: tuple[Any, ...] | None = None
        self.step_names = self._names(True)
        self.epoch_names = self._names(False)

    @property
    def is_tensor(self) -> bool:
        return self.metric is None

    def names(self, on_step: bool) -> tuple[str, str]:
        """(name, forked name), with the dataloader suffix when there is one."""
        return self.step_names if on_step else self.epoch_names

    def _names(self, on_step: bool) -> tuple[str, str]:
        name = self.name
        forked = f"{name}_{'step' if on_step else 'epoch'}" if self.forked else name
        if self.add_dataloader_idx and self.dataloader_idx is not None:
            suffix = DATALOADER_SUFFIX.format(self.dataloader_idx)
            name += suffix
            forked += suffix
        return name, forked

    def epoch_value(self) -> Tensor | None:
        if self.computed is None:
            if self.metric is not None:
                value = self.metric.compute()
                if not isinstance(value, Tensor):
                    raise ValueError(
                        f"The `.compute()` return of the metric logged as {self.name!r} must be a tensor."
                        f" Found {value}"
                    )
                self.computed = value if self.enable_graph else value.detach()
            elif self.acc is None:
                return None
            elif self.sync_fn is not None:
                self.computed = self._synced_epoch_value(self.acc, self.sync_fn)
            else:
                if _distributed_initialized():
                    warning_cache.warn(
                        f"It is recommended to use `self.log({self.name!r}, ..., sync_dist=True)`"
                        " when logging on epoch level in distributed setting to accumulate the metric across"
                        " devices.",
                        category=PossibleUserWarning,
                    )
                self.computed = self.acc / self.count if self.reduce == "mean" else self.acc
        return self.computed

    def _synced_epoch_value(self, acc: Tensor, sync_fn: SyncFn) -> Tensor:
        """Lightning's ``_ResultMetric.compute`` with sync: for a mean, the weighted sum and the summed batch sizes
        are reduced with ``sum`` and divided; ``sum``/``max``/``min`` are reduced with their own op."""
        if self.reduce == "mean":
            total = sync_fn(acc.clone(), group=self.sync_group, reduce_op="sum")
            count = torch.tensor(self.count, dtype=acc.dtype, device=acc.device)
            count = sync_fn(count, group=self.sync_group, reduce_op="sum")
            return total / count
        reduced: Tensor = sync_fn(acc.clone(), group=self.sync_group, reduce_op=self.reduce)
        return reduced

    def reset(self) -> None:
        if self.metric is not None:
            self.metric.reset()
        self.step_value = None
        self.acc = None
        self.count = 0.0
        self.computed = None
        self.has_reset = True


class MetricsSplit(NamedTuple):
    """Lightning's ``_METRICS``: what goes to callbacks, to loggers and to the progress bar."""

    callback: dict[str, Tensor]
    log: dict[str, Tensor]
    pbar: dict[str, Tensor]


class ResultCollection:
    """The values logged during one loop (training epoch, or one evaluation run)."""

    def __init__(self, training: bool) -> None:
        self.training = training
        self.entries: dict[tuple[str, str, int | None], _Entry] = {}
        self.fx: str | None = None
        self.dataloader_idx: int | None = None
        self.batch: Any = None
        self.batch_size: int | None = None
        self.dirty = False
        self.epoch_end_reached = False

    def reset(self, metrics: bool | None = None, fx: str | None = None) -> None:
        """Reset the values (Lightning's semantics): ``metrics=True`` only the ``torchmetrics.Metric`` ones,
        ``False`` only tensors, ``None`` both; ``fx`` only those logged from that hook.

        A reset entry is left out of the metrics until it is logged again; its arguments stay registered.
        With no argument the loop state (batch, dataloader index, flags) is cleared as well.
        """
        for entry in self.entries.values():
            if (metrics is None or metrics != entry.is_tensor) and (fx is None or fx == entry.fx):
                entry.reset()
        if metrics is None and fx is None:
            self.dirty = False
            self.epoch_end_reached = False
            self.batch = None
            self.batch_size = None
            self.dataloader_idx = None

    def log(self, name: str, value: Any, prog_bar: bool = False, logger: bool | None = True,
            on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
            add_dataloader_idx: bool = True, batch_size: int | None = None, metric_attribute: str | None = None,
            enable_graph: bool = False, fx: str | None = None, sync_dist: bool = False,
            sync_dist_fn: SyncFn | None = None, sync_dist_group: Any = None, rank_zero_only: bool = False) -> None:
        """Record ``value`` (a one-element tensor, or a ``torchmetrics.Metric``) logged from ``fx`` (default: ``self.fx``).

        ``sync_dist`` (with ``sync_dist_fn``, ``trainer.strategy.reduce``): the step value is reduced across the
        processes when logged, the epoch value when computed (Lightning's ``_Sync``; not with ``rank_zero_only``).
        A ``torchmetrics.Metric`` syncs itself.
        """
        fx = self.fx if fx is None else fx
        if fx is None:
            check_logging(fx, on_step, on_epoch)  # raises Lightning's "Logging inside `None`" RuntimeError
            raise AssertionError("unreachable")
        if isinstance(value, Tensor):
            metric = False
        elif is_metric(value):
            metric = True
        else:
            check_logging(fx, on_step, on_epoch)
            raise ValueError(f"`self.log({name}, {value!r})`: log a one-element tensor or a torchmetrics Metric.")
        dl_idx = self.dataloader_idx
        key_fx = fx
        if add_dataloader_idx and dl_idx is not None:
            key_fx = f"{fx}.{dl_idx}"
        key = (key_fx, name, dl_idx if add_dataloader_idx else None)
        entry = self.entries.get(key)
        sync_fn = sync_dist_fn if sync_dist and sync_dist_fn is not None and not rank_zero_only else None
        raw = (prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, add_dataloader_idx, dl_idx,
               metric_attribute, sync_fn is not None, bool(rank_zero_only), sync_dist_group)
        if entry is None or entry.raw != raw:
            # first time with these arguments: Lightning's checks (the same arguments again passed them)
            on_step, on_epoch = check_logging(fx, on_step, on_epoch)
            if not on_step and not on_epoch:
                raise MisconfigurationException("`self.log(on_step=False, on_epoch=False)` is not useful.")
            logger = True if logger is None else bool(logger)
            reduce = _reduce_name(reduce_fx)
            sig = (bool(prog_bar), logger, on_step, on_epoch, reduce, bool(enable_graph), bool(add_dataloader_idx),
                   dl_idx, metric_attribute, sync_fn is not None, bool(rank_zero_only), sync_dist_group)
            if entry is None:
                entry = _Entry(key_fx, name, sig, on_step, on_epoch, bool(prog_bar), logger, reduce,
                               bool(enable_graph), bool(add_dataloader_idx), dl_idx, metric_attribute,
                               sync_fn if not metric else None, sync_dist_group)
                self.entries[key] = entry
            elif entry.sig != sig:
                raise MisconfigurationException(
                    f"You called `self.log({name}, ...)` twice in `{key_fx}` with different arguments. This is not"
                    " allowed"
                )
            entry.raw = raw
        on_step, on_epoch = entry.on_step, entry.on_epoch
        entry.has_reset = False
        entry.computed = None
        self.dirty = True
        if metric:
            entry.metric = value
            if on_step:
                cache = getattr(value, "_forward_cache", None)
                if isinstance(cache, Tensor) and not enable_graph:
                    cache = cache.detach()
                entry.step_value = cache if isinstance(cache, Tensor) else None
            return
        if on_step:
            step_fn = entry.sync_fn
            if step_fn is not None:
                value_fp = value if torch.is_floating_point(value) else _accumulator(value)
                entry.step_value = step_fn(value_fp.clone(), group=entry.sync_group, reduce_op=entry.reduce)
            else:
                entry.step_value = value
        if on_epoch:
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

    def valid_entries(self, strict: bool = True) -> Iterator[_Entry]:
        """Entries logged since their last reset, of the current dataloader (Lightning's ``valid_items``).

        ``strict=False`` keeps every dataloader's entries while no dataloader is current.
        """
        dl_idx = self.dataloader_idx
        every = not strict and dl_idx is None
        for entry in self.entries.values():
            if not entry.has_reset and (every or entry.dataloader_idx == dl_idx):
                yield entry

    def metrics(self, on_step: bool, strict: bool = False) -> MetricsSplit:
        """(callback, logger, progress bar) metrics for the step or the epoch, as Lightning splits them.

        ``strict=True`` is Lightning's rule (only the current dataloader's entries, which at the end of an
        evaluation epoch are those logged with no dataloader); ``strict=False`` returns every dataloader's
        epoch values at the end of the epoch.
        """
        callback: dict[str, Tensor] = {}
        log: dict[str, Tensor] = {}
        pbar: dict[str, Tensor] = {}
        training = self.training
        dl_idx = self.dataloader_idx
        every = not strict and dl_idx is None
        for entry in self.entries.values():  # valid_entries(strict), inlined: this runs after every batch
            if entry.has_reset or not (every or entry.dataloader_idx == dl_idx):
                continue
            if on_step:
                if not entry.on_step:
                    continue
                value = entry.step_value
                name, forked = entry.step_names
            else:
                if not entry.on_epoch:
                    continue
                value = entry.epoch_value()
                name, forked = entry.epoch_names
            if value is None:
                continue
            if entry.logger:
                log[forked] = value
            if training or (entry.on_epoch and not on_step):
                callback[name] = value
                callback[forked] = value
            if entry.prog_bar:
                pbar[forked] = value
        return MetricsSplit(callback, log, pbar)


def _distributed_initialized() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, Tensor) else v) for k, v in metrics.items()}


def __getattr__(name: str) -> Any:
    # ``LoggerConnector`` lives in ``logger_connector`` (which imports this module), re-exported lazily
    if name == "LoggerConnector":
        from trainer_core.trainer.logger_connector import LoggerConnector

        return LoggerConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
