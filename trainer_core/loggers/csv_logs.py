"""``CSVLogger``: ``save_dir/name/version_N/metrics.csv`` and ``hparams.yaml``, as Lightning writes them.

Rows are buffered in memory and appended every ``flush_logs_every_n_steps`` steps and on
``save()``; when a new metric key appears the file is rewritten once with the wider header.
Columns: ``epoch`` and ``step`` first, then the metric keys sorted (Lightning sorts all
columns alphabetically; putting the two counters first reads better and parses the same).
"""

from __future__ import annotations

import csv
import os
from argparse import Namespace
from typing import Any

from trainer_core.loggers.logger import (
    VersionedDirLogger,
    add_prefix,
    convert_params,
    rank_zero_experiment,
    save_hparams_to_yaml,
    to_float,
)
from trainer_core.utilities.rank_zero import rank_zero_only

_LEADING = ("epoch", "step")


class ExperimentWriter:
    """Buffers metric rows and writes ``metrics.csv`` / ``hparams.yaml`` in ``log_dir``."""

    NAME_HPARAMS_FILE = "hparams.yaml"
    NAME_METRICS_FILE = "metrics.csv"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        os.makedirs(log_dir, exist_ok=True)
        self._read_existing_header()

    def _read_existing_header(self) -> None:
        # resuming into the same version appends to the existing file with its columns
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header:
                self.metrics_keys = list(header)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if step is None:
            step = len(self.metrics)
        row = {k: to_float(v) for k, v in metrics.items()}
        row["step"] = step
        self.metrics.append(row)

    def _ordered(self, keys: set[str]) -> list[str]:
        return [k for k in _LEADING if k in keys] + sorted(k for k in keys if k not in _LEADING)

    def save(self) -> None:
        if not self.metrics:
            return
        current = set().union(*self.metrics)
        new_keys = current - set(self.metrics_keys)
        file_exists = os.path.isfile(self.metrics_file_path)
        if new_keys:
            self.metrics_keys = self._ordered(set(self.metrics_keys) | current)
            if file_exists:
                self._rewrite_with_new_header()
        with open(self.metrics_file_path, "a" if file_exists else "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            if not file_exists:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics = []

    def _rewrite_with_new_header(self) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


class CSVLogger(VersionedDirLogger):
    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        if not isinstance(flush_logs_every_n_steps, int) or flush_logs_every_n_steps < 1:
            raise ValueError(
                f"CSVLogger(flush_logs_every_n_steps=) must be a positive integer, got {flush_logs_every_n_steps!r}"
            )
        self._init_dirs(save_dir, name, version)
        self._prefix = prefix
        self._flush_every = flush_logs_every_n_steps
        self._experiment: ExperimentWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = ExperimentWriter(self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace | None = None, *args: Any, **kwargs: Any
    ) -> None:
        self.experiment.log_hparams(convert_params(params))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        metrics = add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if step is None:
            step = len(self.experiment.metrics)
        self.experiment.log_metrics(metrics=metrics, step=step)
        if (step + 1) % self._flush_every == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        self.experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is None:
            return  # nothing was logged: don't create folders
        self.save()


__all__ = ["CSVLogger", "ExperimentWriter"]
