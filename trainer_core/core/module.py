"""``LightningModule``: an ``nn.Module`` that also says how it is trained, validated, tested, predicted."""

from __future__ import annotations

import inspect
import numbers
import os
import warnings
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainer_core.core.hparams import AttributeDict, save_hyperparameters
from trainer_core.core.optimizer import _call_hook
from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError
from trainer_core.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


class LightningModule(nn.Module):
    """Organises a PyTorch model's training code; ``Trainer`` runs it."""

    # TorchScript must not compile these properties (they reach the trainer, not tensors), as in Lightning
    __jit_unused_properties__: list[str] = [  # noqa: RUF012 - TorchScript reads this class attribute
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
        return 0

    @property
    def local_rank(self) -> int:
        return 0

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
        """``print`` on the global rank zero only."""
        if self._trainer is None or getattr(self._trainer, "is_global_zero", True):
            print(*args, **kwargs)

    # ------------------------------------------------------------------ export & collectives
    @torch.no_grad()
    def all_gather(self, data: Any, group: Any | None = None, sync_grads: bool = False) -> Any:
        """Gather tensors (or collections of them) from all processes.

        Numbers become tensors on the module's device. With one process (all trainer_core runs), each tensor
        comes back as it is, with no extra world-size dimension, as Lightning does for ``world_size == 1``.
        """
        device = self.device

        def gather(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, numbers.Number) and not isinstance(value, bool):
                return torch.tensor(value, device=device)
            if isinstance(value, Mapping):
                return type(value)({k: gather(v) for k, v in value.items()})  # type: ignore[call-arg]
            if isinstance(value, tuple) and hasattr(value, "_fields"):
                return type(value)(*(gather(v) for v in value))
            if isinstance(value, (list, tuple)):
                return type(value)(gather(v) for v in value)
            return value

        return gather(data)

    def _prepare_example(self, sample: Any) -> Any:
        # as Lightning: the example goes through on_before_batch_transfer and the device transfer hooks
        sample = self.on_before_batch_transfer(sample, 0)
        sample = self.transfer_batch_to_device(sample, self.device, 0)
        return self.on_after_batch_transfer(sample, 0)

    @torch.no_grad()
    def to_torchscript(
        self,
        file_path: str | os.PathLike[str] | None = None,
        method: str | None = "script",
        example_inputs: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Compile the module with ``torch.jit.script`` (default) or ``torch.jit.trace``; save it if ``file_path``.

        ``method="trace"`` uses ``example_inputs`` or ``example_input_array``. The module's train/eval mode is
        restored afterwards; the returned module is in eval mode. Lightning 2.6 warns that TorchScript is
        deprecated (use ``torch.export.export``), and so does this.
        """
        from trainer_core.utilities.rank_zero import rank_zero_deprecation

        rank_zero_deprecation(
            "`LightningModule.to_torchscript` has been deprecated in v2.7 and will be removed in v2.8. "
            "TorchScript is deprecated in PyTorch. Use `torch.export.export()` for model exporting instead. "
            "See https://pytorch.org/docs/stable/export.html for more information."
        )
        mode = self.training
        if method == "script":
            with _jit_is_scripting():
                scripted = torch.jit.script(self.eval(), **kwargs)
        elif method == "trace":
            if example_inputs is None:
                if self.example_input_array is None:
                    raise ValueError(
                        "Choosing method=`trace` requires either `example_inputs`"
                        " or `model.example_input_array` to be defined."
                    )
                example_inputs = self.example_input_array
            if kwargs.get("check_inputs") is not None:
                kwargs["check_inputs"] = self._prepare_example(kwargs["check_inputs"])
            example_inputs = self._prepare_example(example_inputs)
            with _jit_is_scripting():
                scripted = torch.jit.trace(  # type: ignore[no-untyped-call]
                    func=self.eval(), example_inputs=example_inputs, **kwargs
                )
        else:
            raise ValueError(f"The 'method' parameter only supports 'script' or 'trace', but value given was: {method}")
        self.train(mode)
        if file_path is not None:
            torch.jit.save(scripted, os.fspath(file_path))
        return scripted

    @torch.no_grad()
    def to_onnx(self, file_path: str | os.PathLike[str] | Any = None, input_sample: Any = None, **kwargs: Any) -> Any:
        """Export to ONNX with ``torch.onnx.export`` (needs the ``onnx`` package); ``kwargs`` go to the exporter.

        The input is ``input_sample`` or ``example_input_array``; the module's train/eval mode is restored.
        """
        import importlib.util

        if importlib.util.find_spec("onnx") is None:
            raise ModuleNotFoundError(f"`{type(self).__name__}.to_onnx()` requires `onnx` to be installed.")
        if kwargs.get("dynamo", False) and importlib.util.find_spec("onnxscript") is None:
            raise ModuleNotFoundError(
                f"`{type(self).__name__}.to_onnx(dynamo=True)` requires `onnxscript` and `torch>=2.5.0` to be installed."
            )
        mode = self.training
        if input_sample is None:
            if self.example_input_array is None:
                raise ValueError(
                    "Could not export to ONNX since neither `input_sample` nor"
                    " `model.example_input_array` attribute is set."
                )
            input_sample = self.example_input_array
        input_sample = self._prepare_example(input_sample)
        if isinstance(file_path, os.PathLike):
            file_path = os.fspath(file_path)
        out = torch.onnx.export(self, input_sample, file_path, **kwargs)
        self.train(mode)
        return out

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a scalar or a ``torchmetrics.Metric`` (Lightning's ``LightningModule.log``); the trainer reduces
        it per step and/or per epoch (``trainer/results.py``) and sends it (``trainer/logger_connector.py``).

        ``sync_dist`` is accepted and has nothing to do on one device.
        """
        trainer = self._trainer
        if trainer is None:
            # not an error, so that the `*_step` methods can be tested without a Trainer (as Lightning)
            warnings.warn(
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the "
                "model yet. This is most likely because the model hasn't been passed to the `Trainer`",
                stacklevel=2,
            )
            return
        if trainer.barebones:
            rank_zero_warn(
                "You are trying to `self.log()` but `Trainer(barebones=True)` is configured."
                " Logging can impact raw speed so it is disabled under this setting."
            )
            return
        connector = trainer._logger_connector
        results = connector.results
        if results is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but the loop's result collection is not registered"
                " yet. This is most likely because you are trying to log in a `predict` hook,"
                " but it doesn't support logging"
            )
        if results.fx is None:
            raise _MisconfigurationRuntimeError(
                "You are trying to `self.log()` but it is not managed by the `Trainer` control flow"
            )
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"`self.log({name}, {value})` was called, but the tensor must have a single element. "
                    f"You can try doing `self.log({name}, {value}.mean())`"
                )
            value = value.detach()
            if value.dim():
                value = value.reshape(())
            if value.dtype in (torch.float16, torch.bfloat16):
                value = value.float()  # as Lightning: metrics are float32 (or float64) whatever the step's dtype
        elif isinstance(value, numbers.Number):
            # float32 (float64 under "64-true"), never the half dtype a "*16-true" step runs under
            dtype = torch.float64 if torch.get_default_dtype() is torch.float64 else torch.float32
            value = torch.tensor(float(value), dtype=dtype)  # type: ignore[arg-type]
        elif isinstance(value, Mapping):
            raise ValueError(f"self.log({name!r}, value) got a dict; use self.log_dict for several values.")
        elif not _results_module().is_metric(value):
            raise ValueError(
                f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged"
            )
        elif metric_attribute is None:
            metric_attribute, self._metric_attributes = _results_module().find_metric_attribute(
                self, value, name, self.__dict__.get("_metric_attributes")
            )
        if logger and not trainer.loggers:
            rank_zero_warn(
                f"You called `self.log({name!r}, ..., logger=True)` but have no logger configured. You can enable one"
                " by doing `Trainer(logger=ALogger(...))`"
            )
        connector.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, add_dataloader_idx, batch_size,
                      metric_attribute, enable_graph)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """``self.log`` for each item; a ``torchmetrics.MetricCollection`` logs each of its metrics."""
        items: Any = dictionary.items()
        if _results_module().is_metric_collection(dictionary):
            kwargs: dict[str, bool] = {"keep_base": False}
            if getattr(dictionary, "_enable_compute_groups", False):
                kwargs["copy_state"] = False
            items = dictionary.items(**kwargs)
        for k, v in items:
            self.log(
                k,
                v,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                enable_graph=enable_graph,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
            )

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

    # ------------------------------------------------------------------ optimization
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        trainer = self.trainer
        opts = trainer._lightning_optimizers if use_pl_optimizer else trainer.optimizers
        if isinstance(opts, list) and len(opts) == 1:
            return opts[0]
        return opts

    def lr_schedulers(self) -> Any:
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        schedulers = [c.scheduler for c in configs]
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.automatic_optimization:
            raise _MisconfigurationRuntimeError(
                "to use manual_backward, please disable automatic optimization:"
                " set model property `automatic_optimization` as False"
            )
        # Lightning's strategy.backward: on_before_backward, the precision's backward, on_after_backward
        trainer = self.trainer
        _call_hook(trainer, "on_before_backward", loss)
        trainer._precision.backward(self, loss, *args, **kwargs)
        _call_hook(trainer, "on_after_backward")

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)  # type: ignore[no-untyped-call]

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Only the given optimizer's parameters require grad until ``untoggle_optimizer``."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        keep = {id(p) for g in optimizer.param_groups for p in g["params"]}
        self._param_requires_grad_state: dict[int, tuple[Tensor, bool]] = {}
        for opt in self.trainer.optimizers:
            for g in opt.param_groups:
                for p in g["params"]:
                    if id(p) not in keep and id(p) not in self._param_requires_grad_state:
                        self._param_requires_grad_state[id(p)] = (p, p.requires_grad)
                        p.requires_grad = False

    @contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Generator[None, None, None]:
        """``with self.toggled_optimizer(opt):`` toggles ``opt`` for the block, then untoggles it."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def untoggle_optimizer(self, optimizer: Any) -> None:
        for p, flag in getattr(self, "_param_requires_grad_state", {}).values():
            p.requires_grad = flag
        self._param_requires_grad_state = {}

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning's: the Trainer's values are the defaults, and passing other ones than the Trainer's is an error
        trainer = self.trainer
        trainer_val, trainer_algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm
        if gradient_clip_val is None:
            gradient_clip_val = trainer_val or 0.0
        elif trainer_val is not None and trainer_val != gradient_clip_val:
            raise MisconfigurationException(
                f"You have set `Trainer(gradient_clip_val={trainer_val!r})`"
                f" and have passed `clip_gradients(gradient_clip_val={gradient_clip_val!r})`."
                " Please use only one of them."
            )
        if gradient_clip_algorithm is None:
            algorithm = trainer_algorithm or "norm"
        else:
            algorithm = gradient_clip_algorithm.lower()
            if trainer_algorithm is not None and trainer_algorithm != algorithm:
                raise MisconfigurationException(
                    f"You have set `Trainer(gradient_clip_algorithm={getattr(trainer_algorithm, 'value', trainer_algorithm)!r})`"
                    f" and have passed `clip_gradients(gradient_clip_algorithm={algorithm!r})"
                    " Please use only one of them."
                )
        if not isinstance(gradient_clip_val, (int, float)):
            raise TypeError(f"`gradient_clip_val` should be an int or a float. Got {gradient_clip_val}.")
        if algorithm not in ("value", "norm"):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {algorithm} is invalid. Allowed algorithms: ['value', 'norm']."
            )
        if gradient_clip_val <= 0:
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)
        trainer._precision.unscale_gradients(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad(set_to_none=True)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

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


@contextmanager
def _jit_is_scripting() -> Generator[None, None, None]:
    """While TorchScript compiles a module, ``.trainer`` returns None instead of raising."""
    LightningModule._jit_is_scripting = True
    try:
        yield
    finally:
        LightningModule._jit_is_scripting = False


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


def _results_module() -> Any:
    """``trainer_core.trainer.results`` (imported late: the trainer package imports this module)."""
    from trainer_core.trainer import results

    return results
