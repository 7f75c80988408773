"""``Logger``: the base class every logger implements (Lightning's API plus ``log_model_summary``)."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Callable, Mapping, MutableMapping
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

from trainer_core.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from torch import nn

    from trainer_core.callbacks.model_checkpoint import ModelCheckpoint

_T = TypeVar("_T")


def rank_zero_experiment(fn: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """Lightning's ``@rank_zero_experiment``: the logger's ``experiment`` on global rank 0, a ``DummyExperiment``
    (every call a no-op, nothing created on disk or on a server) on the other ranks."""

    @wraps(fn)
    def experiment(self: Any) -> _T:
        if (rank_zero_only.rank or 0) > 0:
            return cast(_T, DummyExperiment())
        return fn(self)

    return experiment


class Logger(ABC):
    """A sink for metrics and hyperparameters. The trainer calls, from the main process only:

    ``log_hyperparams(params)`` and ``log_model_summary(summary)`` at fit start,
    ``log_metrics(metrics=..., step=...)`` (keyword arguments, as Lightning calls it) every
    ``log_every_n_steps`` and at epoch ends,
    ``after_save_checkpoint(callback)`` after each checkpoint, ``save()`` and ``finalize(status)``.
    """

    @property
    @abstractmethod
    def name(self) -> str | None:
        """The experiment's name (the folder under ``save_dir`` for file loggers)."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """The run's version (``version_N`` folder, or an id)."""

    @property
    def root_dir(self) -> str | None:
        return None

    @property
    def log_dir(self) -> str | None:
        return None

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def group_separator(self) -> str:
        return "/"

    @property
    def experiment(self) -> Any:
        """The backend object (a writer, a client); ``None`` when there is none."""
        return None

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record ``metrics`` (floats) at ``step``.

        The trainer calls ``log_metrics(metrics=..., step=...)`` with keywords, so an override must keep
        these two parameter names (Lightning's contract).
        """

    @abstractmethod
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record the run's hyperparameters."""

    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:  # noqa: B027 - optional hook
        """Record the model's computational graph (no-op unless a logger supports it)."""

    def log_model_summary(self, summary: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Runyard extension: ``trainer_core.summary.ModelSummaryData.to_dict()`` at fit start.

        The trainer computes the summary only when some logger overrides this method.
        """

    def save(self) -> None:  # noqa: B027 - optional hook
        """Flush buffered data."""

    def finalize(self, status: str) -> None:
        """Called once at the end with ``"success"``, ``"failed"`` or ``"interrupted"``."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:  # noqa: B027 - optional hook
        """Called after a checkpoint callback saved a checkpoint."""


class DummyExperiment:
    """Stands in for a logger's backend object: every method call (``add_image``, ``log`` ...) does nothing."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # keep copy, pickle and friends on their normal paths
            raise AttributeError(name)
        return self.nop

    def __getitem__(self, idx: Any) -> DummyExperiment:
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class DummyLogger(Logger):
    """Accepts every call and records nothing: what ``fast_dev_run`` swaps the loggers for, as in Lightning.

    Like Lightning's, its ``experiment`` and any method a specific logger would have (``log_image``,
    ``log_table`` ...) are no-ops, so a module written for some logger runs unchanged under ``fast_dev_run``.
    """

    def __init__(self) -> None:
        self._experiment = DummyExperiment()

    @property
    def experiment(self) -> DummyExperiment:
        return self._experiment

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def __getitem__(self, idx: int) -> DummyLogger:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> None:
            return None

        return method


# -- helpers shared by the file loggers ---------------------------------------------------------


class VersionedDirLogger(Logger):
    """A logger that writes under ``save_dir/name/version_N`` (CSV and TensorBoard)."""

    _save_dir: str
    _name: str
    _version: int | str | None

    def _init_dirs(self, save_dir: str | os.PathLike[str], name: str | None, version: int | str | None) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)


def convert_params(params: Mapping[str, Any] | Namespace | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return dict(vars(params))
    return dict(params)


def flatten_dict(params: Mapping[str, Any], delimiter: str = "/", parent_key: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a/b": 1}`` (Namespaces count as mappings)."""
    result: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{parent_key}{delimiter}{k}" if parent_key else str(k)
        if isinstance(v, Namespace):
            v = vars(v)
        if isinstance(v, MutableMapping) or isinstance(v, Mapping):
            result.update(flatten_dict(v, delimiter, key))
        else:
            result[key] = v
    return result


def add_prefix(metrics: Mapping[str, Any], prefix: str, separator: str) -> dict[str, Any]:
    if not prefix:
        return dict(metrics)
    return {f"{prefix}{separator}{k}": v for k, v in metrics.items()}


def to_float(value: Any) -> Any:
    """Tensors and numpy scalars to Python numbers (``.item()`` syncs, so callers pass floats)."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "numel", lambda: 1)() == 1:
        return item()
    return value


_VERSION_DIR = re.compile(r"^version_(\d+)$")


def next_version(root_dir: str) -> int:
    """One more than the highest ``version_N`` folder under ``root_dir`` (0 when there is none)."""
    try:
        entries = os.listdir(root_dir)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    versions = [
        int(m.group(1))
        for d in entries
        if (m := _VERSION_DIR.match(d)) and os.path.isdir(os.path.join(root_dir, d))
    ]
    return max(versions) + 1 if versions else 0


def save_hparams_to_yaml(path: str, hparams: Mapping[str, Any]) -> None:
    """Write ``hparams`` as YAML; values YAML cannot represent plainly are written as their ``repr``."""
    import yaml

    plain: dict[str, Any] = {}
    for k, v in hparams.items():
        if isinstance(v, Namespace):
            v = vars(v)
        try:
            yaml.safe_dump(v)
            plain[str(k)] = v
        except yaml.representer.RepresenterError:
            plain[str(k)] = repr(v)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(plain, f, sort_keys=False)
    os.replace(tmp, path)


__all__ = ["DummyExperiment", "DummyLogger", "Logger"]
