"""Model summary: the layer table Lightning prints when fit starts, as data and as text.

``summarize(module, max_depth)`` walks ``named_modules`` and counts parameters; when the
module sets ``example_input_array`` it runs one forward pass (no grad, eval mode, the
train/eval flags restored afterwards) with forward hooks that record input and output
shapes. ``ModelSummaryData.to_dict()`` is what the service stores; ``format_summary``
renders Lightning 2.x's table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

UNKNOWN_SIZE = "?"
PARAMETER_NUM_UNITS = [" ", "K", "M", "B", "T"]
# bytes per parameter for the size estimate: Lightning assumes the module's precision (32-bit here)
_BYTES_PER_PARAM = 4


def get_human_readable_count(number: int) -> str:
    """``132000 -> "132 K"``, ``1024 -> "1.0 K"``, ``2100000 -> "2.1 M"``, ``12 -> "12  "`` (Lightning's format)."""
    if number < 0:
        raise ValueError(f"a parameter count cannot be negative, got {number}")
    num_digits = int(math.floor(math.log10(number)) + 1) if number > 0 else 1
    num_groups = min(int(math.ceil(num_digits / 3)), len(PARAMETER_NUM_UNITS))
    scaled = number * (10 ** (-3 * (num_groups - 1)))
    index = num_groups - 1
    if index < 1 or scaled >= 100:
        return f"{int(scaled):,d} {PARAMETER_NUM_UNITS[index]}"
    return f"{scaled:,.1f} {PARAMETER_NUM_UNITS[index]}"


def get_formatted_model_size(total_model_size: float) -> str:
    return f"{total_model_size:,.3f}"


def _shape_of(value: Any) -> Any:
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shape_of(v) for v in value]
    return UNKNOWN_SIZE


def _is_lazy(p: torch.Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter)


def _numel(params: Iterable[torch.Tensor]) -> int:
    return sum(0 if _is_lazy(p) else p.numel() for p in params)


@dataclass
class LayerSummary:
    name: str
    type: str
    params: int
    training: bool
    in_size: Any = UNKNOWN_SIZE
    out_size: Any = UNKNOWN_SIZE

    @property
    def mode(self) -> str:
        return "train" if self.training else "eval"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "params": self.params,
            "mode": self.mode,
            "in_size": self.in_size,
            "out_size": self.out_size,
        }


@dataclass
class ModelSummaryData:
    layers: list[LayerSummary]
    trainable_params: int
    total_params: int
    train_modules: int
    eval_modules: int
    max_depth: int
    has_sizes: bool = False
    bytes_per_param: int = _BYTES_PER_PARAM
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def size_mb(self) -> float:
        return self.total_params * self.bytes_per_param / 1e6

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (plain ints, floats, strings and lists only)."""
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_params": self.total_params,
            "size_mb": self.size_mb,
            "train_modules": self.train_modules,
            "eval_modules": self.eval_modules,
            "max_depth": self.max_depth,
            "has_sizes": self.has_sizes,
        }

    def __str__(self) -> str:
        return format_summary(self)


def _selected_modules(module: nn.Module, max_depth: int) -> list[tuple[str, nn.Module]]:
    if max_depth == 0:
        return []
    if max_depth == 1:
        return list(module.named_children())
    mods = list(module.named_modules())[1:]  # the root is the LightningModule itself
    if max_depth > 1:
        mods = [(name, m) for name, m in mods if name.count(".") < max_depth]
    return mods


def _record_sizes(module: nn.Module, layers: dict[str, tuple[nn.Module, LayerSummary]]) -> bool:
    example = getattr(module, "example_input_array", None)
    if example is None:
        return False
    handles = []

    def make_hook(summary: LayerSummary) -> Callable[[nn.Module, Any, Any, Any], None]:
        def hook(_mod: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            inputs = list(args) + list(kwargs.values())
            summary.in_size = _shape_of(inputs[0] if len(inputs) == 1 else inputs)
            summary.out_size = _shape_of(out)

        return hook

    for mod, summary in layers.values():
        handles.append(mod.register_forward_hook(make_hook(summary), with_kwargs=True))
    modes = {m: m.training for m in module.modules()}
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    # under "16-true"/"bf16-true"/"64-true" the weights are not float32: cast float inputs to match
    dtype = first.dtype if first is not None and first.is_floating_point() else None
    try:
        example = _to_device(example, device, dtype)
        module.eval()
        with torch.no_grad():
            if isinstance(example, (list, tuple)):
                module(*example)
            elif isinstance(example, dict):
                module(**example)
            else:
                module(example)
    except Exception as e:  # a summary must not end the run; say why sizes are missing
        warnings.warn(
            f"The model summary could not run `example_input_array` through {type(module).__name__} "
            f"({type(e).__name__}: {e}); In/Out sizes are shown as '?'.",
            stacklevel=3,
        )
        for _mod, summary in layers.values():
            summary.in_size = summary.out_size = UNKNOWN_SIZE
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return True


def _to_device(value: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device, dtype) for k, v in value.items()}
    return value


def summarize(module: nn.Module, max_depth: int = 1) -> ModelSummaryData:
    """Summarise ``module``'s layers down to ``max_depth`` (``-1``: all, ``0``: none)."""
    if not isinstance(max_depth, int) or max_depth < -1:
        raise ValueError(f"max_depth must be an integer >= -1, got {max_depth!r}")
    layers: dict[str, tuple[nn.Module, LayerSummary]] = {}
    for name, mod in _selected_modules(module, max_depth):
        layers[name] = (
            mod,
            LayerSummary(name, type(mod).__name__, _numel(mod.parameters()), mod.training),
        )
    has_sizes = (
        _record_sizes(module, layers) if layers else getattr(module, "example_input_array", None) is not None
    )
    submodules = list(module.modules())[1:]
    train = sum(1 for m in submodules if m.training)
    params = list(module.parameters())
    bytes_per_param = _BYTES_PER_PARAM
    precision = str(getattr(getattr(module, "_trainer", None), "precision", "32"))
    if precision.startswith("64"):
        bytes_per_param = 8
    elif precision in ("16-true", "bf16-true", "16", "bf16"):
        bytes_per_param = 2
    return ModelSummaryData(
        layers=[summary for _, summary in layers.values()],
        trainable_params=_numel(p for p in params if p.requires_grad),
        total_params=_numel(params),
        train_modules=train,
        eval_modules=len(submodules) - train,
        max_depth=max_depth,
        has_sizes=has_sizes,
        bytes_per_param=bytes_per_param,
    )


def format_summary(data: ModelSummaryData) -> str:
    """Lightning 2.x's table: header, dashes, one row per layer, dashes, totals."""
    cols: list[tuple[str, list[str]]] = [
        (" ", [str(i) for i in range(len(data.layers))]),
        ("Name", [layer.name for layer in data.layers]),
        ("Type", [layer.type for layer in data.layers]),
        ("Params", [get_human_readable_count(layer.params) for layer in data.layers]),
        ("Mode", [layer.mode for layer in data.layers]),
    ]
    if data.has_sizes:
        cols.append(("In sizes", [str(layer.in_size) for layer in data.layers]))
        cols.append(("Out sizes", [str(layer.out_size) for layer in data.layers]))
    widths = [max([len(header)] + [len(v) for v in values]) for header, values in cols]
    total_width = sum(widths) + 3 * len(cols)
    lines = [
        " | ".join(f"{header:<{w}}" for (header, _), w in zip(cols, widths, strict=True)),
        "-" * total_width,
    ]
    for i in range(len(data.layers)):
        lines.append(" | ".join(f"{values[i]:<{w}}" for (_, values), w in zip(cols, widths, strict=True)))
    lines.append("-" * total_width)
    totals = [
        (get_human_readable_count(data.trainable_params), "Trainable params"),
        (get_human_readable_count(data.non_trainable_params), "Non-trainable params"),
        (get_human_readable_count(data.total_params), "Total params"),
        (get_formatted_model_size(data.size_mb), "Total estimated model params size (MB)"),
        (str(data.train_modules), "Modules in train mode"),
        (str(data.eval_modules), "Modules in eval mode"),
    ]
    lines.extend(f"{value:<10}{label}" for value, label in totals)
    return "\n".join(lines)


__all__ = [
    "LayerSummary",
    "ModelSummaryData",
    "format_summary",
    "get_formatted_model_size",
    "get_human_readable_count",
    "summarize",
]
