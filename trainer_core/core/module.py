"""``LightningModule``: an ``nn.Module`` that also says how it is trained, validated, tested, predicted."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainer_core.core.hparams import AttributeDict, save_hyperparameters
from trainer_core.core.module_export import _ModuleExportMixin
from trainer_core.core.module_logging import _ModuleLoggingMixin
from trainer_core.core.module_optim import _ModuleOptimMixin

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


class LightningModule(_ModuleLoggingMixin, _ModuleOptimMixin, _ModuleExportMixin, nn.Module):
    """Organises a PyTorch model's training code; ``Trainer`` runs it.

    Its methods live in this file (attributes, steps, hooks, freezing and checkpoints) and in three mixins
    beside it: ``module_logging.py`` (``log``, ``log_dict``), ``module_optim.py`` (``optimizers()``,
    ``manual_backward``, ``clip_gradients``, toggling, the optimizer step hooks) and ``module_export.py``
    (``all_gather``, ``to_torchscript``, ``to_onnx``).
    """

    # TorchScript must not compile these properties (they reach the trainer, not tensors), as in Lightning
    __jit_unused_properties__: list[str] = [  # TorchScript reads this class attribute
        "example_input_array",
        "on_gpu",
        "current_epoch",
        "global_step",
        "global_rank",
        "local_rank",
        "logger",
        "loggers",
        "automatic_optimization",
        "trainer",
        "fabric",
        "strict_loading",
        "device_mesh",
        "device",
        "dtype",
        "hparams",
        "hparams_initial",
        "_hparams_initial",
    ]
    _jit_is_scripting = False

    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Any = None
        self._automatic_optimization = True
        self._example_input_array: Any = None
        self._hparams_name: str | None = None
        self._log_hyperparams = True
        self._strict_loading: bool | None = None
        self.prepare_data_per_node = True
        self.allow_zero_length_dataloader_with_multiple_devices = False

    # ------------------------------------------------------------------ attributes
    def __getattr__(self, name: str) -> Any:
        # nn.Module only calls this when normal lookup fails: fall back to a saved hyperparameter,
        # so `model.learning_rate` works after `save_hyperparameters()` (as the tutorial shows).
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            values = d.get(store)
            if values is not None and name in values:
                return values[name]
        hparams = d.get("_hparams")
        if hparams is not None and name in hparams:
            return hparams[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles of the module must not drag the trainer (loaders, loggers) along
        state = dict(self.__dict__)
        state["_trainer"] = None
        return state

    @property
    def trainer(self) -> Trainer:
        if not self._jit_is_scripting and self._trainer is None:
            raise RuntimeError(f"{self.__class__.__qualname__} is not attached to a `Trainer`.")
        return self._trainer  # type: ignore[no-any-return]

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        # as Lightning: LightningModules nested in this one are attached to (and detached from) the same trainer
        for child in self.children():
            if isinstance(child, LightningModule):
                child.trainer = trainer
        self._trainer = trainer

    @property
    def automatic_optimization(self) -> bool:
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = bool(value)

    @property
    def strict_loading(self) -> bool:
        return True if self._strict_loading is None else self._strict_loading

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self._strict_loading = value

    @property
    def example_input_array(self) -> Any:
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        self._example_input_array = example

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.parameters():
            return t.dtype
        return torch.get_default_dtype()

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        """The process's index among all processes (``trainer.global_rank``; 0 without a trainer)."""
        return int(self._trainer.global_rank) if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        """The process's index on its machine (``trainer.local_rank``; 0 without a trainer)."""
        return int(self._trainer.local_rank) if self._trainer is not None else 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def hparams(self) -> AttributeDict:
        if "_hparams" not in self.__dict__:
            self.__dict__["_hparams"] = AttributeDict()
        hparams: AttributeDict = self.__dict__["_hparams"]
        return hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        if "_hparams_initial" not in self.__dict__:
            return AttributeDict()
        return AttributeDict(self.__dict__["_hparams_initial"])

    def _set_hparams(self, hparams: Mapping[str, Any]) -> None:
        # as Lightning: a later save_hyperparameters() (a subclass's, after its parent's) adds to the saved ones
        self.hparams.update(hparams)

    @property
    def _hparams_initial(self) -> Any:
        return self.__dict__.get("_hparams_initial")

    @_hparams_initial.setter
    def _hparams_initial(self, value: Any) -> None:
        self.__dict__["_hparams_initial"] = value

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Store the ``__init__`` arguments (all, the named ones, or a dict) in ``self.hparams``."""
        self._log_hyperparams = logger
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        save_hyperparameters(self, *args, ignore=ignore, frame=frame)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on local rank zero only (Lightning's: through the progress bar when one is drawing)."""
        trainer = self._trainer
        if trainer is None:
            print(*args, **kwargs)
            return
        strategy = getattr(trainer, "strategy", None)
        if (strategy.local_rank if strategy is not None else 0) != 0:
            return
        progress_bar = getattr(trainer, "progress_bar_callback", None)
        if progress_bar is not None and progress_bar.is_enabled:
            progress_bar.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    # ------------------------------------------------------------------ steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("`training_step` must be implemented to be used with the Trainer.")

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Not implemented: validation is skipped unless a subclass defines it."""

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """Not implemented: `trainer.test` needs a subclass to define it."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        batch = kwargs.get("batch", args[0])
        return self(batch)

    def configure_optimizers(self) -> Any:
        raise NotImplementedError(
            "`configure_optimizers` must be implemented to be used with the Trainer "
            "(return an optimizer, a list of them, or a dict with 'optimizer' and 'lr_scheduler')."
        )

    def configure_callbacks(self) -> Any:
        return []

    def configure_model(self) -> None: ...

    def configure_sharded_model(self) -> None: ...

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_before_zero_grad(self, optimizer: Any) -> None: ...
    def on_before_backward(self, loss: Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: Any) -> None: ...
    def on_validation_model_zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def on_validation_model_eval(self) -> None:
        self.eval()

    def on_validation_model_train(self) -> None:
        self.train()

    def on_test_model_eval(self) -> None:
        self.eval()

    def on_test_model_train(self) -> None:
        self.train()

    def on_predict_model_eval(self) -> None:
        self.eval()

    def prepare_data(self) -> None: ...
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    # ------------------------------------------------------------------ freezing & checkpoints
    def freeze(self) -> None:
        """No parameter requires grad, and the module is in eval mode."""
        for param in self.parameters():
            param.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = True
        self.train()

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild the module from the checkpoint's hyperparameters (``kwargs`` override them), then load weights."""
        from trainer_core.checkpoint_io import load_checkpoint

        checkpoint = load_checkpoint(checkpoint_path, map_location=map_location)
        if hparams_file is not None:
            import yaml

            with open(hparams_file) as f:
                checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = yaml.safe_load(f) or {}
        obj = _instantiate_from_checkpoint(cls, checkpoint, kwargs)
        if strict is None:
            strict = obj.strict_loading
        obj.on_load_checkpoint(checkpoint)
        result = obj.load_state_dict(checkpoint["state_dict"], strict=strict)
        if not strict:
            if result.missing_keys:
                warnings.warn(f"Found keys that are in the model state dict but not in the checkpoint: {result.missing_keys}", stacklevel=2)
            if result.unexpected_keys:
                warnings.warn(f"Found keys that are not in the model state dict but in the checkpoint: {result.unexpected_keys}", stacklevel=2)
        device = next((t.device for t in checkpoint["state_dict"].values() if isinstance(t, Tensor)), None)
        if device is not None:
            obj.to(device)
        return obj



def _instantiate_from_checkpoint(
    cls: type[LightningModule], checkpoint: dict[str, Any], overrides: dict[str, Any]
) -> Any:
    params = inspect.signature(cls.__init__).parameters
    varkw = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    init_names = [
        n
        for i, (n, p) in enumerate(params.items())
        if i > 0 and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    loaded = dict(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {})
    args_name = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_NAME)
    if args_name and args_name in init_names:
        loaded = {args_name: loaded}
    kwargs = {**loaded, **overrides}
    if not varkw:
        kwargs = {k: v for k, v in kwargs.items() if k in init_names}
    return cls(**kwargs)


def move_data_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``; tensors already there are left alone."""
    if isinstance(batch, Tensor):
        if batch.device == device:
            return batch
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, (list, tuple)):
        moved = [move_data_to_device(b, device) for b in batch]
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
            return type(batch)(*moved)
        return type(batch)(moved) if not isinstance(batch, list) else moved
    if isinstance(batch, Mapping):
        moved_map = {k: move_data_to_device(v, device) for k, v in batch.items()}
        return moved_map if isinstance(batch, dict) else type(batch)(moved_map)  # type: ignore[call-arg]
    if hasattr(batch, "to") and callable(batch.to):
        try:
            return batch.to(device)
        except TypeError:
            return batch
    return batch
