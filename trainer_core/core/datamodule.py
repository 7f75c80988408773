"""``LightningDataModule``: the data side of a run (download, split, the four dataloaders)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

from trainer_core.core.hparams import AttributeDict, save_hyperparameters


class LightningDataModule:
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    name: str | None = None

    def __init__(self) -> None:
        self.trainer: Any = None
        self.prepare_data_per_node = True
        self._log_hyperparams = True
        self._hparams_name: str | None = None

    @property
    def hparams(self) -> AttributeDict:
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        return AttributeDict(getattr(self, "_hparams_initial", None) or {})

    def _set_hparams(self, hparams: Any) -> None:
        # as Lightning: a later save_hyperparameters() (a subclass's) adds to what an earlier one saved
        self.hparams.update(hparams)

    def save_hyperparameters(
        self, *args: Any, ignore: Sequence[str] | str | None = None, frame: Any = None, logger: bool = True
    ) -> None:
        self._log_hyperparams = logger
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        save_hyperparameters(self, *args, ignore=ignore, frame=frame)

    # hooks
    def prepare_data(self) -> None: ...
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...

    def on_exception(self, exception: BaseException) -> None:
        """Called when the trainer's run is interrupted by an exception (Lightning 2.x hook)."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.train_dataloader is not implemented.")

    def val_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.val_dataloader is not implemented.")

    def test_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.test_dataloader is not implemented.")

    def predict_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.predict_dataloader is not implemented.")

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        from trainer_core.core.module import move_data_to_device

        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints under the class's qualified name (when not empty)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Any = None,
        val_dataset: Any = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> LightningDataModule:
        from torch.utils.data import DataLoader

        def loader(ds: Any, shuffle: bool) -> Any:
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)

        dm = cls(**datamodule_kwargs)
        if train_dataset is not None:
            dm.train_dataloader = lambda: loader(train_dataset, True)  # type: ignore[method-assign]
        if val_dataset is not None:
            dm.val_dataloader = lambda: loader(val_dataset, False)  # type: ignore[method-assign]
        if test_dataset is not None:
            dm.test_dataloader = lambda: loader(test_dataset, False)  # type: ignore[method-assign]
        if predict_dataset is not None:
            dm.predict_dataloader = lambda: loader(predict_dataset, False)  # type: ignore[method-assign]
        return dm

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str | os.PathLike[str], map_location: Any = None, **kwargs: Any
    ) -> LightningDataModule:
        from trainer_core.checkpoint_io import load_checkpoint

        checkpoint = load_checkpoint(checkpoint_path, map_location=map_location)
        params = inspect.signature(cls.__init__).parameters
        varkw = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        loaded = dict(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {})
        merged = {**loaded, **kwargs}
        if not varkw:
            merged = {k: v for k, v in merged.items() if k in params}
        obj = cls(**merged)
        state = checkpoint.get(cls.__qualname__)
        if state:
            obj.load_state_dict(state)
        return obj
