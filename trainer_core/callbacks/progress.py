"""Progress bars: ``ProgressBar`` base and ``TQDMProgressBar`` in Lightning's form.

    Epoch 3:  33%|███▉        | 307/938 [00:01<00:02, 289.04it/s, v_num=51, train_loss=0.198]

Cost per step matters (the bar runs on every batch), so the counter moves every step but the
bar is redrawn, and the postfix metrics (whose read syncs the device) computed, only when
``refresh_rate`` steps have passed *and* at least ``min_interval`` seconds went by since the
last draw, plus always at the end of an epoch. tqdm itself is imported on first use.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from trainer_core.callbacks.callback import Callback

_PAD_SIZE = 5
_TQDM_CLASS: Any = None


def _tqdm_class() -> Any:
    """Lightning's ``Tqdm``: floats in the postfix padded to 3 significant digits (``0.200``)."""
    global _TQDM_CLASS
    if _TQDM_CLASS is None:
        from tqdm.std import tqdm as _tqdm

        class Tqdm(_tqdm):  # type: ignore[type-arg]
            @staticmethod
            def format_num(n: Any) -> str:
                should_be_padded = isinstance(n, (float, str))
                if not isinstance(n, str):
                    n = str(_tqdm.format_num(n))
                if should_be_padded and "e" not in n:
                    if "." not in n and len(n) < _PAD_SIZE:
                        try:
                            float(n)
                        except ValueError:
                            return str(n)
                        n += "."
                    n += "0" * (_PAD_SIZE - len(n))
                return str(n)

        _TQDM_CLASS = Tqdm
    return _TQDM_CLASS


def _convert_inf(x: int | float | None) -> int | float | None:
    """tqdm shows no total for ``None``; trainer uses ``float("inf")`` for unsized loaders."""
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return None
    return x


def _logger_version(trainer: Any) -> Any:
    loggers = list(getattr(trainer, "loggers", None) or [])
    if not loggers:
        return None
    if len(loggers) == 1:
        return loggers[0].version
    return "_".join(dict.fromkeys(str(lg.version) for lg in loggers))


def get_standard_metrics(trainer: Any) -> dict[str, int | str]:
    """``{"v_num": version}`` when a logger has a version (last 4 characters of a string one)."""
    items: dict[str, int | str] = {}
    version = _logger_version(trainer)
    if version not in ("", None):
        if isinstance(version, str):
            version = version[-4:]
        items["v_num"] = version
    return items


class ProgressBar(Callback):
    """Base class for progress bars; the trainer keeps one as ``trainer.progress_bar_callback``."""

    def __init__(self) -> None:
        self._trainer: Any = None
        self._current_eval_dataloader_idx: int | None = None

    @property
    def trainer(self) -> Any:
        if self._trainer is None:
            raise RuntimeError(f"The `{type(self).__name__}` is not attached to a Trainer yet.")
        return self._trainer

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> int | float:
        total: int | float = self.trainer.num_training_batches
        return total

    def _eval_total(self, batches: Any) -> int | float:
        if not batches:
            return 0
        idx = self._current_eval_dataloader_idx or 0
        return batches[idx] if idx < len(batches) else 0

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        trainer = self.trainer
        if getattr(trainer, "sanity_checking", False):
            sanity = getattr(trainer, "num_sanity_val_batches", None)
            if sanity is not None:
                return self._eval_total(sanity)
            steps = getattr(trainer, "num_sanity_val_steps", 0)
            steps = float("inf") if steps == -1 else steps
            return min(steps, self._eval_total(trainer.num_val_batches))
        return self._eval_total(trainer.num_val_batches)

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        return self._eval_total(self.trainer.num_test_batches)

    @property
    def total_predict_batches_current_dataloader(self) -> int | float:
        return self._eval_total(self.trainer.num_predict_batches)

    @property
    def total_val_batches(self) -> int | float:
        total: int | float = sum(getattr(self.trainer, "num_val_batches", None) or [])
        return total

    def has_dataloader_changed(self, dataloader_idx: int) -> bool:
        old = self._current_eval_dataloader_idx
        self._current_eval_dataloader_idx = dataloader_idx
        return old != dataloader_idx

    def reset_dataloader_idx_tracker(self) -> None:
        self._current_eval_dataloader_idx = None

    @property
    def is_enabled(self) -> bool:
        return True

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        raise NotImplementedError

    def enable(self) -> None:
        raise NotImplementedError

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, **kwargs)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._trainer = trainer
        if not getattr(trainer, "is_global_zero", True):  # as Lightning: only global rank 0 draws
            self.disable()

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, int | str | float | dict[str, float]]:
        """``v_num`` plus ``trainer.progress_bar_metrics`` (reading the latter syncs the device)."""
        standard = get_standard_metrics(trainer)
        pbar = trainer.progress_bar_metrics
        return {**standard, **pbar}


class TQDMProgressBar(ProgressBar):
    """tqdm bars in Lightning's layout: one per epoch for training, plus validation/test/predict bars.

    ``refresh_rate``: redraw at most every N batches (0 disables the bar); ``leave``: keep one
    finished training bar per epoch on screen. Extensions: ``min_interval`` (seconds between
    redraws; the postfix metrics are only read when drawing) and ``file`` (default stdout).
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        *,
        min_interval: float = 0.1,
        file: TextIO | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(refresh_rate, int) or refresh_rate < 0:
            raise ValueError(f"TQDMProgressBar(refresh_rate=) must be an integer >= 0, got {refresh_rate!r}")
        self._refresh_rate = refresh_rate
        self._process_position = process_position
        self._enabled = True
        self._leave = leave
        self._min_interval = float(min_interval)
        self._file = file
        self._train_progress_bar: Any = None
        self._val_progress_bar: Any = None
        self._test_progress_bar: Any = None
        self._predict_progress_bar: Any = None
        self._last_draw: dict[int, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        # tqdm bars hold locks and streams
        return {k: (None if k.endswith("_progress_bar") else v) for k, v in vars(self).items()}

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _bar_property(name: str) -> property:  # type: ignore[misc]  # helper used at class creation
        def getter(self: TQDMProgressBar) -> Any:
            bar = getattr(self, f"_{name}")
            if bar is None:
                raise TypeError(f"The `{type(self).__name__}._{name}` reference has not been set yet.")
            return bar

        def setter(self: TQDMProgressBar, bar: Any) -> None:
            setattr(self, f"_{name}", bar)

        return property(getter, setter)

    train_progress_bar = _bar_property("train_progress_bar")
    val_progress_bar = _bar_property("val_progress_bar")
    test_progress_bar = _bar_property("test_progress_bar")
    predict_progress_bar = _bar_property("predict_progress_bar")
    del _bar_property

    @property
    def train_description(self) -> str:
        return f"Epoch {self.trainer.current_epoch}" if self._trainer is not None else "Training"

    def _stream(self) -> TextIO:
        return self._file if self._file is not None else sys.stdout

    def _new_bar(self, desc: str, position: int, leave: bool, **kwargs: Any) -> Any:
        return _tqdm_class()(
            desc=desc,
            position=position,
            disable=self.is_disabled,
            leave=leave,
            dynamic_ncols=True,
            file=self._stream(),
            bar_format=self.BAR_FORMAT,
            **kwargs,
        )

    def _first_total(self, attr: str) -> int | float | None:
        """The first dataloader's batch count, so a new bar's first draw shows "0/8", not "0/?"."""
        try:
            return _convert_inf(getattr(self, attr))
        except (AttributeError, TypeError, IndexError):
            return None

    def init_sanity_tqdm(self) -> Any:
        total = self._first_total("total_val_batches_current_dataloader")
        return self._new_bar(
            self.sanity_check_description, 2 * self.process_position, leave=False, total=total
        )

    def init_train_tqdm(self) -> Any:
        total = self._first_total("total_train_batches") if self._trainer is not None else None
        return self._new_bar(
            self.train_description, 2 * self.process_position, leave=True, smoothing=0, total=total
        )

    def init_validation_tqdm(self) -> Any:
        has_main_bar = self.trainer.state.fn != "validate"
        return self._new_bar(
            self.validation_description,
            2 * self.process_position + has_main_bar,
            leave=not has_main_bar,
            total=self._first_total("total_val_batches_current_dataloader"),
        )

    def init_test_tqdm(self) -> Any:
        total = self._first_total("total_test_batches_current_dataloader")
        return self._new_bar(self.test_description, 2 * self.process_position, leave=True, total=total)

    def init_predict_tqdm(self) -> Any:
        total = self._first_total("total_predict_batches_current_dataloader")
        return self._new_bar(
            self.predict_description, 2 * self.process_position, leave=True, smoothing=0, total=total
        )

    # -- drawing -------------------------------------------------------------------------
    def _advance(self, bar: Any, n: int, metrics_for: tuple[Any, Any] | None = None) -> None:
        """Move ``bar`` to ``n``; redraw (and read metrics) only when it is due."""
        if bar is None or bar.disable:
            return
        bar.n = n
        total = bar.total
        last = total is not None and n >= total
        if not last and n % self._refresh_rate:
            return
        now = time.monotonic()
        key = id(bar)
        if not last and now - self._last_draw.get(key, -math.inf) < self._min_interval:
            return
        self._last_draw[key] = now
        if metrics_for is not None:
            bar.set_postfix(self.get_metrics(*metrics_for), refresh=False)
        bar.refresh()

    @staticmethod
    def _reset(bar: Any, total: int | float | None, desc: str) -> None:
        bar.set_description(desc, refresh=False)  # before reset(), which redraws: "Epoch 1: 0/938"
        bar.initial = 0
        bar.reset(_convert_inf(total))

    # -- sanity check --------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        self.val_progress_bar = self.init_sanity_tqdm()
        self.train_progress_bar = _tqdm_class()(disable=True)  # placeholder, as Lightning does

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()
        if self._val_progress_bar is not None:  # on_validation_end may have closed it already
            self._val_progress_bar.close()
        self._train_progress_bar = None
        self._val_progress_bar = None
        self.reset_dataloader_idx_tracker()

    # -- training ------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        if not self._leave:  # with leave=True each epoch opens its own bar
            self.train_progress_bar = self.init_train_tqdm()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self._reset(self.train_progress_bar, self.total_train_batches, self.train_description)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._advance(self._train_progress_bar, batch_idx + 1, (trainer, pl_module))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        bar = self._train_progress_bar
        if bar is None:
            return
        if not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
        if self._leave:
            bar.close()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._train_progress_bar is not None and not self._leave:
            self._train_progress_bar.close()
        self._train_progress_bar = None

    # -- validation ----------------------------------------------------------------------
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        if not trainer.sanity_checking:
            self.val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
        if len(trainer.num_val_batches or []) > 1:
            desc = f"{desc} DataLoader {dataloader_idx}"
        self._reset(self.val_progress_bar, self.total_val_batches_current_dataloader, desc)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._advance(self._val_progress_bar, batch_idx + 1)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # Lightning leaves the bar of `trainer.validate()` to the garbage collector; closing it here
        # ends its line before the results table is printed
        if self._val_progress_bar is not None:
            self._val_progress_bar.close()
            self._val_progress_bar = None
        self.reset_dataloader_idx_tracker()
        bar = self._train_progress_bar
        if bar is not None and not bar.disable and trainer.state.fn == "fit":
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    # -- test ----------------------------------------------------------------------------
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        self.test_progress_bar = self.init_test_tqdm()

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        desc = self.test_description
        if len(trainer.num_test_batches or []) > 1:
            desc = f"{desc} DataLoader {dataloader_idx}"
        self._reset(self.test_progress_bar, self.total_test_batches_current_dataloader, desc)

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._advance(self._test_progress_bar, batch_idx + 1)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        if self._test_progress_bar is not None:
            self._test_progress_bar.close()
            self._test_progress_bar = None
        self.reset_dataloader_idx_tracker()

    # -- predict -------------------------------------------------------------------------
    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        self.predict_progress_bar = self.init_predict_tqdm()

    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        desc = self.predict_description
        if len(trainer.num_predict_batches or []) > 1:
            desc = f"{desc} DataLoader {dataloader_idx}"
        self._reset(self.predict_progress_bar, self.total_predict_batches_current_dataloader, desc)

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._advance(self._predict_progress_bar, batch_idx + 1)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if self._predict_progress_bar is not None:
            self._predict_progress_bar.close()
            self._predict_progress_bar = None
        self.reset_dataloader_idx_tracker()

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        bar = next(
            (
                b
                for b in (
                    self._val_progress_bar,
                    self._test_progress_bar,
                    self._predict_progress_bar,
                    self._train_progress_bar,
                )
                if b is not None and not b.disable
            ),
            None,
        )
        if bar is None:
            print(*args, sep=sep, **kwargs)
        else:
            bar.write(sep.join(map(str, args)), file=kwargs.get("file", self._stream()))


__all__ = ["ProgressBar", "TQDMProgressBar", "get_standard_metrics"]
