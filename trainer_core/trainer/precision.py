"""Numerical precision: autocast contexts, GradScaler for fp16 on CUDA, backward and optimizer step.

``"16-true"``, ``"bf16-true"`` and ``"64-true"`` run the whole module in that dtype, as Lightning's
``HalfPrecision`` and ``DoublePrecision`` plugins do: the module's floating-point parameters and
buffers are converted, every ``*_step`` receives its batch with floating-point tensors cast to that
dtype, and tensors created inside a step default to it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from trainer_core.utilities.exceptions import MisconfigurationException

# Lightning's package logger is at INFO, so its "Using ... Automatic Mixed Precision (AMP)" reaches handlers
log = logging.getLogger(__name__)
log.setLevel(logging.INFO)

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
_LEGACY = {
    64: "64-true", "64": "64-true", 32: "32-true", "32": "32-true",
    16: "16-mixed", "16": "16-mixed", "bf16": "bf16-mixed",
}


def parse_precision(precision: Any) -> str:
    if precision is None:
        return "32-true"
    value: str = _LEGACY.get(precision, precision)
    if value not in PRECISIONS:
        raise MisconfigurationException(
            f"Trainer(precision={precision!r}) is not valid. Allowed values: {', '.join(map(repr, PRECISIONS))} "
            "(and the legacy forms 64, 32, 16, 'bf16')."
        )
    return value


def cast_floating_point(data: Any, dtype: torch.dtype) -> Any:
    """``data`` with every floating-point tensor cast to ``dtype``, through tuples (namedtuples too),
    lists and mappings; integer and boolean tensors and anything else are returned as they are."""
    if isinstance(data, Tensor):
        return data.to(dtype) if data.is_floating_point() else data
    if isinstance(data, (list, tuple)):
        items = [cast_floating_point(d, dtype) for d in data]
        if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
            return type(data)(*items)
        return items if type(data) is list else type(data)(items)
    if isinstance(data, Mapping):
        mapped = {k: cast_floating_point(v, dtype) for k, v in data.items()}
        if type(data) is dict:
            return mapped
        kind: Any = type(data)
        if isinstance(data, defaultdict):
            return kind(data.default_factory, mapped)
        return kind(mapped)
    return data


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class Precision:
    """32-bit training (``"32-true"``): nothing to wrap or convert."""

    name = "32-true"
    # the dtype that ``convert_input`` casts floating-point batch tensors to; None: batches are left alone
    input_dtype: torch.dtype | None = None

    def __init__(self, name: str = "32-true") -> None:
        self.name = name

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def convert_input(self, data: Any) -> Any:
        """The batch as a ``*_step`` receives it."""
        return data

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


class _TruePrecision(Precision):
    """The module, its inputs and the tensors created in its steps all in one dtype."""

    dtype: torch.dtype

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.input_dtype = self.dtype

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return _default_dtype(self.dtype)

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        return cast_floating_point(data, self.dtype)


class HalfPrecision(_TruePrecision):
    """``"16-true"`` and ``"bf16-true"``: no autocast and no GradScaler, as in Lightning."""

    def __init__(self, name: str) -> None:
        self.dtype = torch.bfloat16 if name == "bf16-true" else torch.float16
        super().__init__(name)


class DoublePrecision(_TruePrecision):
    """``"64-true"``."""

    dtype = torch.float64


def _float16_matmul_works(device: torch.device) -> bool:
    """Whether this torch build multiplies float16 matrices on ``device`` (CPU support came late)."""
    try:
        a = torch.ones(2, 2, dtype=torch.float16, device=device)
        torch.nn.functional.linear(a, a, a[0])
    except RuntimeError:
        return False
    return True


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

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
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
    """The plugin for ``name`` on ``device``; its ``name`` is the precision used (``16-mixed`` on the CPU becomes
    ``bf16-mixed``, with Lightning's warning, as ``accelerator_connector._check_and_init_precision`` does)."""
    if name == "16-mixed" and device.type == "cpu":
        warnings.warn(
            "You passed `Trainer(accelerator='cpu', precision='16-mixed')` but AMP with fp16 is not supported on "
            "CPU. Using `precision='bf16-mixed'` instead.",
            UserWarning,
            stacklevel=4,
        )
        name = "bf16-mixed"
    if name in ("16-mixed", "bf16-mixed"):
        log.info(f"Using {'16bit' if name == '16-mixed' else 'bfloat16'} Automatic Mixed Precision (AMP)")
        return MixedPrecision(name, device)
    if name == "16-true" and device.type == "cpu" and not _float16_matmul_works(device):
        raise RuntimeError(
            f"Trainer(precision='16-true') cannot run on the CPU with this torch build ({torch.__version__}): it "
            "has no float16 matrix multiplication there. Use precision='bf16-true', 'bf16-mixed' or '32-true' on "
            "the CPU, or train on a GPU."
        )
    if name in ("16-true", "bf16-true"):
        return HalfPrecision(name)
    if name == "64-true":
        return DoublePrecision(name)
    return Precision(name)
