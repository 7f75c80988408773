"""``LightningModule``'s export and collectives: ``all_gather``, ``to_torchscript``, ``to_onnx``.

A mixin of ``trainer_core.core.module.LightningModule`` (split out of ``module.py``); use it through
``LightningModule``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn


class _ModuleExportMixin(nn.Module):
    """``all_gather``, ``to_torchscript`` and ``to_onnx`` of ``LightningModule``."""

    if TYPE_CHECKING:
        # defined by LightningModule
        @property
        def device(self) -> torch.device: ...
        @property
        def example_input_array(self) -> Any: ...
        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any: ...
        def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any: ...
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any: ...

    def all_gather(self, data: Any, group: Any | None = None, sync_grads: bool = False) -> Any:
        """Gather tensors (or collections of them) from all processes (Lightning's ``LightningModule.all_gather``).

        Numbers become tensors on the module's device; every tensor goes through ``trainer.strategy.all_gather``
        (a new first dimension of size world size under DDP; as it is on one process, as Lightning does for
        ``world_size == 1``). ``sync_grads=True`` lets gradients flow back through the gather.
        """
        device = self.device
        trainer = getattr(self, "_trainer", None)
        strategy = getattr(trainer, "strategy", None) if trainer is not None else None

        def gather(value: Any) -> Any:
            if isinstance(value, Tensor):
                value = value.to(device)
                return value if strategy is None else strategy.all_gather(value, group=group, sync_grads=sync_grads)
            if isinstance(value, numbers.Number) and not isinstance(value, bool):
                return gather(torch.tensor(value, device=device))
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


@contextmanager
def _jit_is_scripting() -> Generator[None, None, None]:
    """While TorchScript compiles a module, ``.trainer`` returns None instead of raising."""
    from trainer_core.core.module import LightningModule

    LightningModule._jit_is_scripting = True
    try:
        yield
    finally:
        LightningModule._jit_is_scripting = False

