"""Numerical precision: autocast contexts, GradScaler for fp16 on CUDA, backward and optimizer step."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
_LEGACY = {
    64: "64-true", "64": "64-true", 32: "32-true", "32": "32-true",
    16: "16-mixed", "16": "16-mixed", "bf16": "bf16-mixed",
}


def parse_precision(precision: Any) -> str:
    if precision is None:
        return "32-true"
    value = _LEGACY.get(precision, precision)
    if value not in PRECISIONS:
        raise ValueError(
            f"Trainer(precision={precision!r}) is not valid. Allowed values: {', '.join(map(repr, PRECISIONS))} "
            "(and the legacy forms 64, 32, 16, 'bf16')."
        )
    return value


class Precision:
    """32-bit (or 64-bit) training: nothing to wrap."""

    name = "32-true"

    def __init__(self, name: str = "32-true") -> None:
        self.name = name

    def forward_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.name == "64-true":
            return module.double()
        if self.name == "16-true":
            return module.half()
        if self.name == "bf16-true":
            return module.bfloat16()
        return module

    def backward(self, module: Any, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        module.backward(loss, *args, **kwargs)

    def unscale_gradients(self, optimizer: Any) -> None: ...

    def optimizer_step(self, optimizer: Any, closure: Any = None, **kwargs: Any) -> Any:
        return optimizer.step(closure=closure, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

    @property
    def checkpoint_key(self) -> str:
        return type(self).__qualname__


class MixedPrecision(Precision):
    """``torch.autocast`` with fp16 or bf16; a ``GradScaler`` for fp16 on CUDA.

    Its scaler state is saved under the ``"MixedPrecision"`` key, as Lightning does.
    """

    def __init__(self, name: str, device: torch.device) -> None:
        super().__init__(name)
        self.device_type = device.type
        self.dtype = torch.float16 if name == "16-mixed" else torch.bfloat16
        self.scaler = None
        if name == "16-mixed" and device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")

    def forward_context(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def backward(self, module: Any, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        module.backward(loss, *args, **kwargs)

    def unscale_gradients(self, optimizer: Any) -> None:
        if self.scaler is not None:
            optimizer = getattr(optimizer, "optimizer", optimizer)
            from torch.amp.grad_scaler import OptState

            if self.scaler._per_optimizer_states[id(optimizer)]["stage"] is not OptState.UNSCALED:
                self.scaler.unscale_(optimizer)

    def optimizer_step(self, optimizer: Any, closure: Any = None, **kwargs: Any) -> Any:
        if self.scaler is None:
            return optimizer.step(closure=closure, **kwargs)
        # GradScaler.step takes no closure: run it first (forward, backward, clipping), then step.
        result = closure() if closure is not None else None
        if closure is not None and result is None:
            # training_step returned None: nothing was backpropagated, so there is nothing to step
            return None
        self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        return result

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.scaler is not None and state_dict:
            self.scaler.load_state_dict(state_dict)


def make_precision(name: str, device: torch.device) -> Precision:
    if name in ("16-mixed", "bf16-mixed"):
        return MixedPrecision(name, device)
    return Precision(name)
