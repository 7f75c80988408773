"""What ``self.log`` records, and how it becomes step and epoch metrics (Lightning's ``_ResultCollection``).

Values stay tensors on their device. A step value is kept as logged; an epoch value is accumulated
with one in-place tensor op per call (weighted by batch size for means), and reduced only when
someone reads it. Nothing here calls ``.item()``: reading ``trainer.progress_bar_metrics`` or
sending to a logger is where values become floats.

A ``torchmetrics.Metric`` can be logged as well: its ``forward`` result (``_forward_cache``) is the
step value, ``compute()`` the epoch value, and ``reset()`` is called when the collection is reset
(at the end of the training epoch and of each evaluation run), as in Lightning. torchmetrics is
never imported here: a value is a Metric only when torchmetrics is already loaded (the user made one).

``LoggerConnector`` is Lightning's ``_LoggerConnector``: it decides what reaches
``callback_metrics`` / ``logged_metrics`` / ``progress_bar_metrics`` and the loggers, and when.
"""

from __future__ import annotations

import sys
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from trainer_core.utilities.exceptions import MisconfigurationException

# hook -> (allowed on_step, allowed on_epoch, default on_step, default on_epoch); Lightning 2.6's table.
# ``None``: logging is not allowed in that hook.
_LogOptions = tuple[tuple[bool, ...], tuple[bool, ...], bool, bool]
_STEP_HOOK: _LogOptions = ((False, True), (False, True), True, False)
_EVAL_STEP_HOOK: _LogOptions = ((False, True), (False, True), False, True)
_EPOCH_HOOK: _LogOptions = ((False,), (True,), False, True)
FX_OPTIONS: dict[str, _LogOptions | None] = {
    "on_before_backward": _STEP_HOOK,
    "backward": _STEP_HOOK,
    "on_after_backward": _STEP_HOOK,
    "on_before_optimizer_step": _STEP_HOOK,
    "optimizer_step": _STEP_HOOK,
    "lr_scheduler_step": None,
    "configure_gradient_clipping": _STEP_HOOK,
    "clip_gradients": _STEP_HOOK,
    "on_before_zero_grad": _STEP_HOOK,
    "optimizer_zero_grad": _STEP_HOOK,
    "on_fit_start": None,
    "on_fit_end": None,
    "on_sanity_check_start": None,
    "on_sanity_check_end": None,
    "on_train_start": _EPOCH_HOOK,
    "on_train_end": None,
    "on_validation_start": _EPOCH_HOOK,
    "on_validation_end": None,
    "on_test_start": _EPOCH_HOOK,
    "on_test_end": None,
    "on_predict_start": None,
    "on_predict_end": None,
    "on_train_epoch_start": _EPOCH_HOOK,
    "on_train_epoch_end": _EPOCH_HOOK,
    "on_validation_epoch_start": _EPOCH_HOOK,
    "on_validation_epoch_end": _EPOCH_HOOK,
    "on_test_epoch_start": _EPOCH_HOOK,
    "on_test_epoch_end": _EPOCH_HOOK,
    "on_predict_epoch_start": None,
    "on_predict_epoch_end": None,
    "on_before_batch_transfer": None,
    "transfer_batch_to_device": None,
    "on_after_batch_transfer": None,
    "on_train_batch_start": _STEP_HOOK,
    "on_train_batch_end": _STEP_HOOK,
    "on_validation_batch_start": _EVAL_STEP_HOOK,
    "on_validation_batch_end": _EVAL_STEP_HOOK,
    "on_test_batch_start": _EVAL_STEP_HOOK,
    "on_test_batch_end": _EVAL_STEP_HOOK,
    "on_predict_batch_start": None,
    "on_predict_batch_end": None,
    "on_exception": None,
    "state_dict": None,
    "on_save_checkpoint": None,
    "on_load_checkpoint": None,
    "load_state_dict": None,
    "setup": None,
    "teardown": None,
    "configure_sharded_model": None,
    "configure_model": None,
    "training_step": _STEP_HOOK,
    "validation_step": _EVAL_STEP_HOOK,
    "test_step": _EVAL_STEP_HOOK,
    "predict_step": None,
    "configure_optimizers": None,
    "train_dataloader": None,
    "val_dataloader": None,
    "test_dataloader": None,
    "prepare_data": None,
    "configure_callbacks": None,
    "on_validation_model_zero_grad": None,
    "on_validation_model_eval": None,
    "on_test_model_eval": None,
    "on_validation_model_train": None,
    "on_test_model_train": None,
}

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


def check_logging(fx: str | None, on_step: bool | None, on_epoch: bool | None) -> tuple[bool, bool]:
    """Lightning's ``_FxValidator.check_logging_and_get_default_levels``: the resolved ``(on_step, on_epoch)``."""
    if fx is None or fx not in FX_OPTIONS:
        raise RuntimeError(
            f"Logging inside `{fx}` is not implemented."
            " Please, open an issue in `https://github.com/Lightning-AI/pytorch-lightning/issues`."
        )
    options = FX_OPTIONS[fx]
    if options is None:
        raise MisconfigurationException(
            f"You can't `self.log()` inside `{fx}`. HINT: You can still log directly to the logger by using"
            " `self.logger.experiment`."
        )
    allowed_step, allowed_epoch, default_step, default_epoch = options
    step = default_step if on_step is None else bool(on_step)
    epoch = default_epoch if on_epoch is None else bool(on_epoch)
    m = "You can't `self.log({}={})` inside `{}`, must be one of {}."
    if step not in allowed_step:
        raise MisconfigurationException(m.format("on_step", step, fx, allowed_step))
    if epoch not in allowed_epoch:
        raise MisconfigurationException(m.format("on_epoch", epoch, fx, allowed_epoch))
    return step, epoch


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
        "step_value", "acc", "count", "computed", "has_reset",
    )

    def __init__(self, fx: str, name: str, sig: tuple[Any, ...], on_step: bool, on_epoch: bool, prog_bar: bool,
                 logger: bool, reduce: str, enable_graph: bool, add_dataloader_idx: bool,
                 dataloader_idx: int | None, metric_attribute: str | None) -> None:
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
        self.metric: Any = None  # the torchmetrics.Metric logged, when one was
        self.step_value: Tensor | None = None
        self.acc: Tensor | None = None
        self.count = 0.0
        self.computed: Tensor | None = None
        self.has_reset = False

    @property
    def is_tensor(self) -> bool:
        return self.metric is None

    def names(self, on_step: bool) -> tuple[str, str]:
        """(name, forked name), with the dataloader suffix when there is one."""
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
            else:
                self.computed = self.acc / self.count if self.reduce == "mean" else self.acc
        return self.computed

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
            enable_graph: bool = False, fx: str | None = None) -> None:
        """Record ``value`` (a one-element tensor, or a ``torchmetrics.Metric``) logged from ``fx`` (default: ``self.fx``)."""
        fx = self.fx if fx is None else fx
        on_step, on_epoch = check_logging(fx, on_step, on_epoch)
        assert fx is not None
        if not on_step and not on_epoch:
            raise MisconfigurationException("`self.log(on_step=False, on_epoch=False)` is not useful.")
        metric = is_metric(value)
        if not metric and not isinstance(value, Tensor):
            raise ValueError(f"`self.log({name}, {value!r})`: log a one-element tensor or a torchmetrics Metric.")
        dl_idx = self.dataloader_idx
        key_fx = fx
        if add_dataloader_idx and dl_idx is not None:
            key_fx = f"{fx}.{dl_idx}"
        key = (key_fx, name, dl_idx if add_dataloader_idx else None)
        logger = True if logger is None else bool(logger)
        reduce = _reduce_name(reduce_fx)
        sig = (bool(prog_bar), logger, on_step, on_epoch, reduce, bool(enable_graph), bool(add_dataloader_idx),
               dl_idx, metric_attribute)
        entry = self.entries.get(key)
        if entry is None:
            entry = _Entry(key_fx, name, sig, on_step, on_epoch, bool(prog_bar), logger, reduce, bool(enable_graph),
                           bool(add_dataloader_idx), dl_idx, metric_attribute)
            self.entries[key] = entry
        elif entry.sig != sig:
            raise MisconfigurationException(
                f"You called `self.log({name}, ...)` twice in `{key_fx}` with different arguments. This is not allowed"
            )
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
        for entry in self.valid_entries(strict):
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
            name, forked = entry.names(on_step)
            if entry.logger:
                log[forked] = value
            if training or (entry.on_epoch and not on_step):
                callback[name] = value
                callback[forked] = value
            if entry.prog_bar:
                pbar[forked] = value
        return MetricsSplit(callback, log, pbar)


def to_float(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item()
    return value


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, Tensor) else v) for k, v in metrics.items()}


class LoggerConnector:
    """Lightning's ``_LoggerConnector``: which values reach ``callback_metrics``, ``logged_metrics``,
    ``progress_bar_metrics`` and the loggers, and when.

    ``loggers``, ``current_epoch`` and ``default_step`` are read when metrics are sent (``default_step`` is the
    step used when none is given: Lightning's ``fit_loop.epoch_loop._batches_that_stepped``). The loops set
    ``results`` to the collection of the loop that runs (``None`` outside loops and in prediction).
    """

    def __init__(self, loggers: Callable[[], Sequence[Any]], current_epoch: Callable[[], int],
                 default_step: Callable[[], int]) -> None:
        self._loggers = loggers
        self._current_epoch = current_epoch
        self._default_step = default_step
        self.results: ResultCollection | None = None
        self.progress_bar: dict[str, Tensor] = {}
        self.logged: dict[str, Tensor] = {}
        self.callback: dict[str, Tensor] = {}
        self.current_fx: str | None = None
        # None: no loop iteration running, True: first iteration, False: later ones
        self.first_loop_iter: bool | None = None
        self.logged_outputs: list[dict[str, Tensor]] = []

    # -- logging from the module ----------------------------------------------------------------
    def should_reset_tensors(self, fx: str) -> bool:
        return self.current_fx != fx and self.first_loop_iter in (None, True)

    def log(self, name: str, value: Any, prog_bar: bool = False, logger: bool | None = None,
            on_step: bool | None = None, on_epoch: bool | None = None, reduce_fx: Any = "mean",
            add_dataloader_idx: bool = True, batch_size: int | None = None, metric_attribute: str | None = None,
            enable_graph: bool = False, fx: str | None = None) -> None:
        """What ``LightningModule.log`` does once the value is a tensor or a Metric (and its attribute known)."""
        results = self.results
        if results is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but the loop's result collection is not registered"
                " yet. This is most likely because you are trying to log in a `predict` hook,"
                " but it doesn't support logging"
            )
        fx = results.fx if fx is None else fx
        check_logging(fx, on_step, on_epoch)
        assert fx is not None
        check_dataloader_idx_name(name, add_dataloader_idx)
        if self.should_reset_tensors(fx):
            results.reset(metrics=False, fx=fx)
        results.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, add_dataloader_idx, batch_size,
                    metric_attribute, enable_graph, fx)
        self.current_fx = fx

    # -- sending to the loggers -----------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Send ``metrics`` to every logger as ``logger.log_metrics(metrics=..., step=...)`` (floats), then ``save()``.

        With no ``step``: a ``"step"`` entry is used and removed, else ``epoch`` is added and the default step used.
        """
        loggers = self._loggers()
        if not loggers or not metrics:
            return
        self.logged.update(metrics)
        scalars = to_scalars(metrics)
        if step is None:
            step_metric = scalars.pop("step", None)
            if step_metric is not None:
                step = int(step_metric)
            else:
                scalars.setdefault("epoch", self._current_epoch())
                step = self._default_step()
        for lg in loggers:
            lg.log_metrics(metrics=scalars, step=step)
            lg.save()

    # -- evaluation -----------------------------------------------------------------------------
    def evaluation_epoch_end(self) -> None:
        if self.results is not None:
            self.results.dataloader_idx = None

    def update_eval_step_metrics(self, step: int) -> None:
        """After each evaluation batch (not while sanity checking), ``step`` = batches seen on this dataloader."""
        self.log_metrics(self.metrics().log, step=step)

    def update_eval_epoch_metrics(self, sanity_checking: bool = False) -> dict[str, Tensor]:
        if sanity_checking:
            return {}
        metrics = self.metrics()
        self.progress_bar.update(metrics.pbar)
        self.callback.update(metrics.callback)
        self.logged.update(metrics.log)
        return metrics.log

    def store_dataloader_outputs(self, sanity_checking: bool = False) -> None:
        """When the dataloader changes and after the last batch: that dataloader's epoch values."""
        self.epoch_end_reached()
        self.logged_outputs.append(self.update_eval_epoch_metrics(sanity_checking))

    def eval_run_outputs(self, sanity_checking: bool = False) -> list[dict[str, Tensor]]:
        """After ``on_{stage}_epoch_end`` and ``on_epoch_end()``: the per-dataloader results ``validate``/``test``
        return; also sends their union to the loggers (not while sanity checking)."""
        logged_outputs, self.logged_outputs = self.logged_outputs, []
        epoch_end = self.update_eval_epoch_metrics(sanity_checking)
        everything = dict(ChainMap(*logged_outputs))
        everything.update(epoch_end)
        for outputs in logged_outputs:
            outputs.update(epoch_end)
        if not sanity_checking:
            self.log_metrics(everything)
        return logged_outputs

    # -- training -------------------------------------------------------------------------------
    def update_train_step_metrics(self) -> None:
        """When the loop decided this step is logged (not accumulating, ``log_every_n_steps`` or ``should_stop``)."""
        self.log_metrics(self.metrics().log)

    def update_train_epoch_metrics(self) -> None:
        """After ``on_train_epoch_end``: epoch values to the loggers (the loop makes ``default_step`` one less),
        then the collection is reset (Metric values too)."""
        self.log_metrics(self.metrics().log)
        self.reset_results()

    # -- loop bookkeeping -----------------------------------------------------------------------
    def on_batch_start(self, batch: Any, dataloader_idx: int | None = None) -> None:
        if self.first_loop_iter is None:
            self.first_loop_iter = True
        elif self.first_loop_iter is True:
            self.first_loop_iter = False
        results = self.results
        if results is not None:
            results.batch = batch
            results.batch_size = None
            results.dataloader_idx = dataloader_idx

    def on_batch_end(self) -> None:
        metrics = self.metrics()
        self.progress_bar.update(metrics.pbar)
        self.callback.update(metrics.callback)
        self.logged.update(metrics.log)
        results = self.results
        if results is not None:
            results.batch = None
            results.batch_size = None

    def epoch_end_reached(self) -> None:
        self.first_loop_iter = None

    def on_epoch_end(self) -> None:
        metrics = self.metrics()
        self.progress_bar.update(metrics.pbar)
        self.callback.update(metrics.callback)
        self.logged.update(metrics.log)
        self.current_fx = None

    def reset_results(self) -> None:
        if self.results is not None:
            self.results.reset()
        self.first_loop_iter = None
        self.current_fx = None

    def reset_metrics(self) -> None:
        self.progress_bar = {}
        self.logged = {}
        self.callback = {}

    def metrics(self) -> MetricsSplit:
        """Step values during a loop iteration, epoch values otherwise (Lightning's rule)."""
        results = self.results
        if results is None:
            return MetricsSplit({}, {}, {})
        return results.metrics(self.first_loop_iter is not None, strict=True)

    @property
    def callback_metrics(self) -> dict[str, Tensor]:
        if self.results is not None:
            self.callback.update(self.metrics().callback)
        return self.callback

    @property
    def logged_metrics(self) -> dict[str, Tensor]:
        if self.results is not None:
            self.logged.update(self.metrics().log)
        return self.logged

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        if self.results is not None:
            self.progress_bar.update(self.metrics().pbar)
        return to_scalars(self.progress_bar)

    def teardown(self) -> None:
        """Move what is kept after the run to the CPU (Lightning's ``teardown``)."""
        self.logged = {k: v.cpu() for k, v in self.logged.items()}
        self.progress_bar = {k: v.cpu() for k, v in self.progress_bar.items()}
        self.callback = {k: v.cpu() for k, v in self.callback.items()}


def strip_dataloader_suffix(key: str) -> str:
    """``"v/dataloader_idx_0" -> "v"``: how Lightning's results table names a metric."""
    head, sep, tail = key.rpartition("/dataloader_idx_")
    return head if sep and tail.isdigit() else key
