"""``MLFlowLogger``: a thin adapter over the MLflow tracking client (``pip install mlflow`` or ``mlflow-skinny``).

Importing this module without mlflow installed raises ``ModuleNotFoundError`` saying what to install.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import tempfile
from argparse import Namespace
from collections.abc import Callable, Mapping
from pathlib import Path
from time import time
from typing import TYPE_CHECKING, Any, Literal, cast

from torch import Tensor

from trainer_core.loggers.logger import Logger, add_prefix, convert_params, flatten_dict, rank_zero_experiment
from trainer_core.utilities.logger_helpers import _scan_checkpoints
from trainer_core.utilities.rank_zero import rank_zero_only, rank_zero_warn

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

if importlib.util.find_spec("mlflow") is None:
    raise ModuleNotFoundError(
        "MLFlowLogger needs the `mlflow` package, which is not installed. "
        "Install it with `pip install mlflow` (or the lighter `pip install mlflow-skinny`).",
        name="mlflow",
    )

log = logging.getLogger(__name__)
LOCAL_FILE_URI_PREFIX = "file:"


class MLFlowLogger(Logger):
    """Log to an MLflow tracking server, or to ``save_dir`` (``./mlruns``) through a ``file:`` URI.

    The run is created on first use of ``experiment`` (an ``MlflowClient``); ``name`` is the experiment id,
    ``version`` the run id. ``log_model=True`` uploads the best/last checkpoints at the end of fit,
    ``"all"`` each one as it is saved.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = os.getenv("MLFLOW_TRACKING_URI"),
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        super().__init__()
        if not tracking_uri:
            tracking_uri = f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        self._experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._tracking_uri = tracking_uri
        self._run_name = run_name
        self._run_id = run_id
        self.tags = tags
        self._log_model = log_model
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callback: Any = None
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._log_batch_kwargs: dict[str, Any] = {} if synchronous is None else {"synchronous": synchronous}
        self._initialized = False
        self._client: MlflowClient | None = None

    @property
    def _mlflow_client(self) -> MlflowClient:
        """Made on first use (a file store creates its folder), so ranks other than 0 never make one."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self._tracking_uri)
        return self._client

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        """The ``MlflowClient``; the experiment and run are looked up or created on first access."""
        import mlflow

        if self._initialized:
            return self._mlflow_client
        mlflow.set_tracking_uri(self._tracking_uri)
        if self._run_id is not None:
            run = self._mlflow_client.get_run(self._run_id)
            self._experiment_id = run.info.experiment_id
            self._initialized = True
            return self._mlflow_client
        if self._experiment_id is None:
            expt = self._mlflow_client.get_experiment_by_name(self._experiment_name)
            if expt is not None and expt.lifecycle_stage != "deleted":
                self._experiment_id = expt.experiment_id
            else:
                log.warning(f"Experiment with name {self._experiment_name} not found. Creating it.")
                self._experiment_id = self._mlflow_client.create_experiment(
                    name=self._experiment_name, artifact_location=self._artifact_location
                )
        if self._run_id is None:
            if self._run_name is not None:
                self.tags = self.tags or {}
                from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

                if MLFLOW_RUN_NAME in self.tags:
                    log.warning(
                        f"The tag {MLFLOW_RUN_NAME} is found in tags. The value will be overridden by {self._run_name}."
                    )
                self.tags[MLFLOW_RUN_NAME] = self._run_name
            run = self._mlflow_client.create_run(
                experiment_id=self._experiment_id, tags=_get_resolve_tags()(self.tags)
            )
            self._run_id = run.info.run_id
        self._initialized = True
        return self._mlflow_client

    @property
    def run_id(self) -> str | None:
        _ = self.experiment
        return self._run_id

    def _active_run_id(self) -> str:
        _ = self.experiment
        assert self._run_id is not None
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        _ = self.experiment
        return self._experiment_id

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        from mlflow.entities import Param

        flat = flatten_dict(convert_params(params))
        # MLflow keeps at most 250 characters of a value, and takes at most 100 params per batch
        params_list = [Param(key=k, value=str(v)[:250]) for k, v in flat.items()]
        for idx in range(0, len(params_list), 100):
            self.experiment.log_batch(
                run_id=self._active_run_id(), params=params_list[idx : idx + 100], **self._log_batch_kwargs
            )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        metrics = add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        metrics_list: list[Metric] = []
        timestamp_ms = int(time() * 1000)
        for k, v in metrics.items():
            if isinstance(v, str):
                log.warning(f"Discarding metric with string value {k}={v}.")
                continue
            new_k = re.sub("[^a-zA-Z0-9_/. -]+", "", k)
            if k != new_k:
                rank_zero_warn(
                    "MLFlow only allows '_', '/', '.' and ' ' special characters in metric name."
                    f" Replacing {k} with {new_k}.",
                    category=RuntimeWarning,
                )
                k = new_k
            value = v.item() if isinstance(v, Tensor) else v
            metrics_list.append(Metric(key=k, value=value, timestamp=timestamp_ms, step=step or 0))
        self.experiment.log_batch(run_id=self._active_run_id(), metrics=metrics_list, **self._log_batch_kwargs)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        if status in ("success", "finished"):
            status = "FINISHED"
        elif status == "failed":
            status = "FAILED"
        if self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        if self.experiment.get_run(self._active_run_id()):
            self.experiment.set_terminated(self._active_run_id(), status)

    @property
    def save_dir(self) -> str | None:
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX) :]
        return None

    @property
    def name(self) -> str | None:
        return self.experiment_id

    @property
    def version(self) -> str | None:
        return self.run_id

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._scan_and_log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        import yaml

        for t, p, s, _tag in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            keys = ["monitor", "mode", "save_last", "save_top_k", "save_weights_only", "_every_n_train_steps"]
            metadata = {
                "score": s.item() if isinstance(s, Tensor) else s,
                "original_filename": Path(p).name,
                "Checkpoint": {k: getattr(checkpoint_callback, k) for k in keys if hasattr(checkpoint_callback, k)},
            }
            aliases = ["latest", "best"] if p == checkpoint_callback.best_model_path else ["latest"]
            artifact_path = Path(p).stem
            self.experiment.log_artifact(self._active_run_id(), p, artifact_path)
            with tempfile.TemporaryDirectory() as tmp_dir:
                with open(f"{tmp_dir}/metadata.yaml", "w") as f:
                    yaml.dump(metadata, f, default_flow_style=False)
                with open(f"{tmp_dir}/aliases.txt", "w") as f:
                    f.write(str(aliases))
                self.experiment.log_artifacts(self._active_run_id(), tmp_dir, artifact_path)
            self._logged_model_time[p] = t


def _get_resolve_tags() -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    """MLflow's ``resolve_tags`` (adds the source/user tags), wherever this MLflow version keeps it."""
    import importlib

    context = importlib.import_module("mlflow.tracking.context")
    resolve = getattr(context, "resolve_tags", None)
    if resolve is None and hasattr(context, "registry"):
        resolve = getattr(importlib.import_module("mlflow.tracking.context.registry"), "resolve_tags", None)
    if resolve is None:

        def resolve(tags: dict[str, Any] | None = None) -> dict[str, Any]:
            return tags or {}

    return cast(Callable[[dict[str, Any] | None], dict[str, Any]], resolve)


__all__ = ["MLFlowLogger"]
