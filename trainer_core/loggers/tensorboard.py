"""``TensorBoardLogger``: event files under ``save_dir/name/version_N`` via torch's SummaryWriter.

``tensorboard --logdir=lightning_logs/`` then shows them. tensorboard is an optional extra:
the writer is imported when first used, and constructing the logger without the package
installed raises an ImportError that says how to install it.
"""

from __future__ import annotations

import importlib.util
import os
from argparse import Namespace
from typing import Any

from trainer_core.loggers.logger import (
    VersionedDirLogger,
    add_prefix,
    convert_params,
    flatten_dict,
    rank_zero_experiment,
    save_hparams_to_yaml,
    to_float,
)
from trainer_core.utilities.rank_zero import rank_zero_only


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(VersionedDirLogger):
    LOGGER_JOIN_CHAR = "-"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if not tensorboard_available():
            raise ImportError(
                "TensorBoardLogger needs the `tensorboard` package, which is not installed. "
                "Install it with `pip install runyard[tensorboard]` (or `pip install tensorboard`), "
                "or use CSVLogger instead."
            )
        self._init_dirs(save_dir, name, version)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._kwargs = kwargs
        self._experiment: Any = None
        self.hparams: dict[str, Any] = {}

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        log_dir = super().log_dir
        if self._sub_dir:
            log_dir = os.path.join(log_dir, self._sub_dir)
        return os.path.expandvars(os.path.expanduser(log_dir))

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``torch.utils.tensorboard.SummaryWriter`` (created, with its folder, on first use)."""
        if self._experiment is None:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace | None = None, metrics: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        params = convert_params(params)
        self.hparams.update(params)
        flat = {k: _sanitize(v) for k, v in flatten_dict(params).items()}
        if metrics is None:
            if self._default_hp_metric:
                metrics = {"hp_metric": -1}
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if metrics:
            self.log_metrics(metrics=metrics, step=0)
            from torch.utils.tensorboard.summary import hparams

            exp, ssi, sei = hparams(flat, {k: to_float(v) for k, v in metrics.items()})  # type: ignore[no-untyped-call]
            writer = self.experiment._get_file_writer()
            writer.add_summary(exp)
            writer.add_summary(ssi)
            writer.add_summary(sei)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        metrics = add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        writer = self.experiment
        for k, v in metrics.items():
            v = to_float(v)
            if isinstance(v, dict):
                writer.add_scalars(k, v, step)
            else:
                try:
                    writer.add_scalar(k, v, step)
                except Exception as e:  # rethrown with the key that failed
                    raise ValueError(
                        f"TensorBoardLogger could not log {k}={v!r}: a scalar number is needed."
                    ) from e

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            import warnings

            warnings.warn(
                "Could not log the computational graph: set `model.example_input_array` "
                "or pass `input_array` to `log_graph`.",
                stacklevel=2,
            )
            return
        self.experiment.add_graph(model, input_array)

    @rank_zero_only
    def save(self) -> None:
        if self._experiment is not None:
            self._experiment.flush()
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if os.path.isdir(self.log_dir) and not os.path.isfile(hparams_file):
            save_hparams_to_yaml(hparams_file, self.hparams)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
        if status == "success":
            self.save()


def _sanitize(value: Any) -> Any:
    """TensorBoard's hparams accept bool, str, int, float and tensors; others become strings."""
    value = to_float(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


__all__ = ["TensorBoardLogger", "tensorboard_available"]
