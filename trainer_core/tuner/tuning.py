"""``Tuner``: the learning rate finder and the batch size finder on a Trainer (Lightning's ``tuner/tuning.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from trainer_core.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from trainer_core.callbacks.batch_size_finder import BatchSizeFinder
    from trainer_core.callbacks.lr_finder import LearningRateFinder
    from trainer_core.core.datamodule import LightningDataModule
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer
    from trainer_core.tuner.lr_finder import _LRFinder

_Method = Literal["fit", "validate", "test", "predict"]


class Tuner:
    """Tunes a model's learning rate or batch size with ``trainer``; the model and the trainer are restored after
    each search (weights, optimizer states, ``global_step``, ``current_epoch``, callbacks and loggers)."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def scale_batch_size(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: _Method = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> int | None:
        """The largest batch size that runs without an out-of-memory error, set on ``batch_arg_name``
        (found on the model, ``model.hparams`` or the datamodule).

        ``mode``: ``"power"`` doubles the batch size until an OOM; ``"binsearch"`` doubles, then bisects between
        the last success and the failure and takes ``margin`` off the result. ``steps_per_trial`` steps run at
        each size, at most ``max_trials`` sizes from ``init_val``, none above ``max_val``. ``method``: the entry
        point whose loop is tried (``fit``, ``validate``, ``test`` or ``predict``).
        """
        from trainer_core.callbacks.batch_size_finder import BatchSizeFinder

        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        trainer = self._trainer
        if any(isinstance(cb, BatchSizeFinder) for cb in trainer.callbacks):
            raise ValueError(
                "Trainer is already configured with a `BatchSizeFinder` callback."
                "Please remove it if you want to use the Tuner."
            )
        assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
        finder = BatchSizeFinder(
            mode=mode,
            steps_per_trial=steps_per_trial,
            init_val=init_val,
            max_trials=max_trials,
            batch_arg_name=batch_arg_name,
            margin=margin,
            max_val=max_val,
        )
        self._run_with(finder, method, model, train_dataloaders, val_dataloaders, dataloaders, datamodule)
        return finder.optimal_batch_size

    def lr_find(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: _Method = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> _LRFinder | None:
        """A learning rate range test: ``num_training`` steps with the lr growing from ``min_lr`` to ``max_lr``
        (``mode`` ``"exponential"`` or ``"linear"``), stopped early once the smoothed loss exceeds
        ``early_stop_threshold`` times the best one (``None``: never). Returns the ``_LRFinder`` (``results``,
        ``suggestion()``, ``plot()``); with ``update_attr`` the suggestion is set on ``attr_name`` (``lr`` or
        ``learning_rate`` when empty) of the model or ``model.hparams``.

        Raises:
            MisconfigurationException: ``method`` is not ``"fit"``, or the model has more than one optimizer.
            AttributeError: ``update_attr`` and the model has no such attribute.
        """
        from trainer_core.callbacks.lr_finder import LearningRateFinder

        if method != "fit":
            raise MisconfigurationException("method='fit' is the only valid configuration to run lr finder.")
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        trainer = self._trainer
        if any(isinstance(cb, LearningRateFinder) for cb in trainer.callbacks):
            raise ValueError(
                "Trainer is already configured with a `LearningRateFinder` callback."
                "Please remove it if you want to use the Tuner."
            )
        finder = LearningRateFinder(
            min_lr=min_lr,
            max_lr=max_lr,
            num_training_steps=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=update_attr,
            attr_name=attr_name,
        )
        self._run_with(finder, "fit", model, train_dataloaders, val_dataloaders, dataloaders, datamodule)
        return finder.optimal_lr

    def _run_with(
        self,
        finder: BatchSizeFinder | LearningRateFinder,
        method: _Method,
        model: LightningModule,
        train_dataloaders: Any,
        val_dataloaders: Any,
        dataloaders: Any,
        datamodule: LightningDataModule | None,
    ) -> None:
        """Run ``method`` with ``finder`` first among the callbacks; the search ends the run, and the finder is
        taken out again whatever happens."""
        trainer = self._trainer
        finder._early_exit = True
        trainer.callbacks = [finder, *trainer.callbacks]
        try:
            if method == "fit":
                trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
            elif method == "validate":
                trainer.validate(model, dataloaders, datamodule=datamodule)
            elif method == "test":
                trainer.test(model, dataloaders, datamodule=datamodule)
            else:
                trainer.predict(model, dataloaders, datamodule=datamodule)
        finally:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not finder]


def _check_tuner_configuration(
    train_dataloaders: Any = None, val_dataloaders: Any = None, dataloaders: Any = None, method: str = "fit"
) -> None:
    supported_methods = ("fit", "validate", "test", "predict")
    if method not in supported_methods:
        raise ValueError(f"method {method!r} is invalid. Should be one of {supported_methods}.")
    if method == "fit":
        if dataloaders is not None:
            raise MisconfigurationException(
                f"In tuner with method={method!r}, `dataloaders` argument should be None,"
                " please consider setting `train_dataloaders` and `val_dataloaders` instead."
            )
    elif train_dataloaders is not None or val_dataloaders is not None:
        raise MisconfigurationException(
            f"In tuner with `method`={method!r}, `train_dataloaders` and `val_dataloaders`"
            " arguments should be None, please consider setting `dataloaders` instead."
        )
