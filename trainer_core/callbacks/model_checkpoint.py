"""``ModelCheckpoint``: save checkpoints periodically, keep the top-k by a monitored metric, and ``last``."""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from copy import deepcopy
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from trainer_core.callbacks.checkpoint import Checkpoint
from trainer_core.checkpoint_io import copy_checkpoint, remove_checkpoint
from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError
from trainer_core.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer

log = logging.getLogger(__name__)


class ModelCheckpoint(Checkpoint):
    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self._last_global_step_saved = 0
        self._last_time_checked: float | None = None
        self.current_score: Tensor | None = None
        self.best_k_models: dict[str, Tensor] = {}
        self.kth_best_model_path = ""
        self.best_model_score: Tensor | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        self._last_checkpoint_saved = ""
        self.kth_value: Tensor
        if save_last not in (None, True, False, "link"):
            raise ValueError(f"ModelCheckpoint(save_last={save_last!r}) is not valid. Allowed values: None, True, False, 'link'.")
        if save_top_k < -1:
            raise MisconfigurationException(f"Invalid value for save_top_k={save_top_k}. Must be >= -1")
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"`mode` can be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.kth_value = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None) is not a valid configuration. No quantity "
                "for top_k to track."
            )
        self._init_triggers(every_n_train_steps, every_n_epochs, train_time_interval)
        self.dirpath = os.path.realpath(os.path.expanduser(os.fspath(dirpath))) if dirpath else None
        self.filename = filename

    def _init_triggers(self, steps: int | None, epochs: int | None, interval: timedelta | None) -> None:
        if steps is None and epochs is None and interval is None:
            epochs, steps = 1, 0
        else:
            epochs = epochs or 0
            steps = steps or 0
        if steps < 0:
            raise MisconfigurationException(f"Invalid value for every_n_train_steps={steps}. Must be >= 0")
        if epochs < 0:
            raise MisconfigurationException(f"Invalid value for every_n_epochs={epochs}. Must be >= 0")
        if sum(bool(x) for x in (steps, epochs, interval)) > 1:
            raise MisconfigurationException(
                f"Combination of parameters every_n_train_steps={steps}, every_n_epochs={epochs} and "
                f"train_time_interval={interval} should be mutually exclusive."
            )
        self._every_n_train_steps = steps
        self._every_n_epochs = epochs
        self._train_time_interval = interval

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    @property
    def every_n_train_steps(self) -> int:
        return self._every_n_train_steps

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
        )

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # as Lightning: rank 0's directory on every rank (a logger's version may differ per rank before it is set)
        dirpath = trainer.strategy.broadcast(self._resolve_ckpt_dir(trainer))
        self.dirpath = dirpath
        if stage == "fit" and trainer.is_global_zero and os.path.isdir(dirpath) and os.listdir(dirpath):
            if self.save_top_k != 0:
                warnings.warn(f"Checkpoint directory {dirpath} exists and is not empty.", stacklevel=2)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        steps = self._every_n_train_steps
        interval = self._train_time_interval
        if steps < 1 and interval is None:
            return  # the common case, kept cheap: this runs on every batch
        if self._should_skip_saving_checkpoint(trainer):
            return
        skip_batch = steps < 1 or trainer.global_step % steps != 0
        skip_time = True
        if interval is not None:
            now = time.monotonic()
            prev = self._last_time_checked
            skip_time = prev is None or (now - prev) < interval.total_seconds()
            if not skip_time:
                self._last_time_checked = now
        if skip_batch and skip_time:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            candidates = self._monitor_candidates(trainer)
            if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
                self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            candidates = self._monitor_candidates(trainer)
            if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
                self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": self.best_k_models,
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)
        if self.dirpath == dirpath_from_ckpt:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = dict(state_dict.get("best_k_models", self.best_k_models))
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
        else:
            warnings.warn(
                f"The dirpath has changed from {dirpath_from_ckpt!r} to {self.dirpath!r}, therefore "
                "`best_model_score`, `kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models` "
                "won't be reloaded. Only `best_model_path` will be reloaded.",
                stacklevel=2,
            )
        self.best_model_path = state_dict["best_model_path"]

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """With ``save_on_exception=True``: save a checkpoint (and ``last``) when fit ends with an exception."""
        if not self._should_save_on_exception(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(candidates)
        self._save_checkpoint(trainer, filepath)
        self._save_last_checkpoint(trainer, candidates)
        rank_zero_info(
            f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint to {filepath}"
        )

    def _should_save_on_exception(self, trainer: Trainer) -> bool:
        return (
            self.save_on_exception
            and not bool(trainer.fast_dev_run)
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step
        )

    # ------------------------------------------------------------------ decisions
    def _should_skip_saving_checkpoint(self, trainer: Any) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer: Any) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        if sum(trainer.num_val_batches) == 0 or not trainer.enable_validation:
            return True
        return bool(trainer.val_check_interval == 1.0)

    def _monitor_candidates(self, trainer: Any) -> dict[str, Any]:
        candidates = dict(trainer.callback_metrics)
        epoch = candidates.get("epoch")
        candidates["epoch"] = epoch.int() if isinstance(epoch, Tensor) else torch.tensor(trainer.current_epoch)
        step = candidates.get("step")
        candidates["step"] = step.int() if isinstance(step, Tensor) else torch.tensor(trainer.global_step)
        return candidates

    def _save_topk_checkpoint(self, trainer: Any, candidates: dict[str, Any]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_none_monitor_checkpoint(trainer, candidates)
            return
        if self.monitor not in candidates:
            message = (
                f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned "
                f"metrics: {list(candidates)}. HINT: Did you call `log({self.monitor!r}, value)` in the "
                "`LightningModule`?"
            )
            if trainer.enable_validation and not trainer.sanity_checking and trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed:
                raise _MisconfigurationRuntimeError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return
        current = candidates[self.monitor]
        if self.check_monitor_top_k(trainer, current):
            self._update_best_and_save(current, trainer, candidates)
        elif self.verbose:
            epoch, step = candidates["epoch"], candidates["step"]
            log.info(f"Epoch {epoch:d}, global step {step:d}: {self.monitor!r} was not in top {self.save_top_k}")

    def check_monitor_top_k(self, trainer: Any, current: Tensor | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1:
            return True
        if len(self.best_k_models) < self.save_top_k:
            return True
        op = torch.lt if self.mode == "min" else torch.gt
        return bool(op(torch.as_tensor(current), self.best_k_models[self.kth_best_model_path]))

    def _save_none_monitor_checkpoint(self, trainer: Any, candidates: dict[str, Any]) -> None:
        filepath = self._get_metric_interpolated_filepath_name(candidates, trainer)
        previous, self.best_model_path = self.best_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        if self.save_top_k == 1 and previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _update_best_and_save(self, current: Tensor, trainer: Any, candidates: dict[str, Any]) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        del_filepath = None
        if len(self.best_k_models) == k and k > 0:
            del_filepath = self.kth_best_model_path
            self.best_k_models.pop(del_filepath)
        current = torch.as_tensor(current).detach().float().cpu()
        if torch.isnan(current):
            current = torch.tensor(float("inf") if self.mode == "min" else float("-inf"))
        filepath = self._get_metric_interpolated_filepath_name(candidates, trainer, del_filepath)
        self.current_score = current
        self.best_k_models[filepath] = current
        if len(self.best_k_models) == k:
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=lambda p: self.best_k_models[p])
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=lambda p: self.best_k_models[p])
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            epoch, step = candidates["epoch"], candidates["step"]
            log.info(
                f"Epoch {epoch:d}, global step {step:d}: {self.monitor!r} reached {current:0.5f} (best "
                f"{self.best_model_score:0.5f}), saving model to {filepath!r} as top {k}"
            )
        self._save_checkpoint(trainer, filepath)
        if del_filepath and self._should_remove_checkpoint(trainer, del_filepath, filepath):
            self._remove_checkpoint(trainer, del_filepath)

    def _save_last_checkpoint(self, trainer: Any, candidates: dict[str, Any]) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != self.last_model_path:
                filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST, ver=version)
                version += 1
        previous, self.last_model_path = self.last_model_path, filepath
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            if trainer.is_global_zero:
                self._link_checkpoint(self._last_checkpoint_saved, filepath)
            trainer.strategy.barrier()
        else:
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    @staticmethod
    def _link_checkpoint(target: str, linkpath: str) -> None:
        # a new link (or copy) renamed over ``linkpath``: the previous one stays until it is in place
        folder = os.path.dirname(linkpath)
        temp = os.path.join(folder, f".{os.path.basename(linkpath)}.{os.getpid()}-{time.monotonic_ns()}.tmp")
        try:
            os.symlink(os.path.relpath(target, folder), temp)
            os.replace(temp, linkpath)
        except OSError:
            if os.path.islink(temp):
                os.remove(temp)
            copy_checkpoint(target, linkpath)

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        trainer.save_checkpoint(filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        for logger in trainer.loggers:
            logger.after_save_checkpoint(self)

    def _should_remove_checkpoint(self, trainer: Any, previous: str, current: str) -> bool:
        if previous == current:
            return False
        if not os.path.isfile(previous) and not os.path.islink(previous):
            return False
        previous_abs = os.path.realpath(previous)
        resume = getattr(trainer, "ckpt_path", None)
        if resume is not None and previous_abs == os.path.realpath(resume):
            return False
        dirpath = os.path.realpath(self.dirpath) if self.dirpath else None
        return dirpath is not None and os.path.dirname(os.path.abspath(previous)) == dirpath

    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None:
        """Global rank 0 removes the file (``trainer.strategy.remove_checkpoint``), as Lightning."""
        strategy = getattr(trainer, "strategy", None)
        if strategy is None:
            remove_checkpoint(filepath)
        else:
            strategy.remove_checkpoint(filepath)

    @staticmethod
    def file_exists(filepath: str, trainer: Any) -> bool:
        """Whether ``filepath`` exists, as global rank 0 sees it (Lightning's: every rank picks the same name)."""
        exists = os.path.isfile(filepath)
        strategy = getattr(trainer, "strategy", None)
        return bool(strategy.broadcast(exists)) if strategy is not None else exists

    # ------------------------------------------------------------------ names and paths
    @classmethod
    def _format_checkpoint_name(
        cls, filename: str | None, metrics: dict[str, Any], prefix: str = "", auto_insert_metric_name: bool = True
    ) -> str:
        if not filename:
            filename = "{epoch}" + cls.CHECKPOINT_JOIN_CHAR + "{step}"
        groups = re.findall(r"(\{.*?)[:\}]", filename)
        groups = sorted(groups, key=len, reverse=True)
        for group in groups:
            name = group[1:]
            if auto_insert_metric_name:
                filename = filename.replace(group, name + cls.CHECKPOINT_EQUALS_CHAR + "{" + name)
            filename = filename.replace(group, f"{{0[{name}]")
            if name not in metrics:
                metrics[name] = torch.tensor(0)
        filename = filename.format(metrics)
        if prefix:
            filename = cls.CHECKPOINT_JOIN_CHAR.join([prefix, filename])
        return filename

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None
    ) -> str:
        filename = filename or self.filename
        filename = self._format_checkpoint_name(
            filename, dict(metrics), auto_insert_metric_name=self.auto_insert_metric_name
        )
        if ver is not None:
            filename = self.CHECKPOINT_JOIN_CHAR.join((filename, f"v{ver}"))
        name = f"{filename}{self.FILE_EXTENSION}"
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _get_metric_interpolated_filepath_name(
        self, candidates: dict[str, Any], trainer: Any, del_filepath: str | None = None
    ) -> str:
        filepath = self.format_checkpoint_name(candidates)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != del_filepath:
                filepath = self.format_checkpoint_name(candidates, ver=version)
                version += 1
        return filepath

    def _resolve_ckpt_dir(self, trainer: Any) -> str:
        if self.dirpath is not None:
            return self.dirpath
        if trainer.loggers:
            first = trainer.loggers[0]
            save_dir = first.save_dir or trainer.default_root_dir
            name = first.name
            version = first.version
            version = version if isinstance(version, str) else f"version_{version}"
            path = os.path.join(save_dir, str(name), version, "checkpoints") if name else os.path.join(
                save_dir, version, "checkpoints"
            )
        else:
            path = os.path.join(trainer.default_root_dir, "checkpoints")
        return os.path.realpath(os.path.expanduser(path))

    def _find_last_checkpoints(self, trainer: Any) -> set[str]:
        dirpath = self.dirpath or self._resolve_ckpt_dir(trainer)
        if not os.path.isdir(dirpath):
            return set()
        return {
            os.path.normpath(os.path.join(dirpath, p))
            for p in os.listdir(dirpath)
            if self.CHECKPOINT_NAME_LAST in os.path.basename(p) and p.endswith(self.FILE_EXTENSION)
        }

    def to_yaml(self, filepath: str | os.PathLike[str] | None = None) -> None:
        import yaml

        best_k = {k: v.item() for k, v in self.best_k_models.items()}
        if filepath is None:
            filepath = os.path.join(self.dirpath or ".", "best_k_models.yaml")
        with open(filepath, "w") as f:
            yaml.safe_dump(best_k, f)

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelCheckpoint:  # pragma: no cover - rarely used
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            setattr(new, k, deepcopy(v, memo))
        return new
