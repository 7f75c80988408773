"""Lightning's model-summary objects: ``summarize(module)`` returns a ``ModelSummary``.

The numbers come from ``trainer_core.summary.summarize`` (one walk, one optional forward pass of
``example_input_array``); this module gives them Lightning's attribute names.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from trainer_core.summary import (
    UNKNOWN_SIZE,
    ModelSummaryData,
    _numel,
    format_summary,
    get_formatted_model_size,
    get_human_readable_count,
)
from trainer_core.summary import summarize as _summarize_data


def parse_batch_shape(batch: Any) -> str | list[Any]:
    """``[2, 3]`` for a 2x3 tensor, nested lists for sequences, ``"?"`` otherwise."""
    if hasattr(batch, "shape"):
        return list(batch.shape)
    if isinstance(batch, (list, tuple)):
        return [parse_batch_shape(el) for el in batch]
    return UNKNOWN_SIZE


class LayerSummary:
    """One layer: type, parameter count, mode, and the in/out sizes of its first forward pass.

    As in Lightning, constructing it registers a forward hook on ``module`` that records the sizes once
    and removes itself; ``detach_hook()`` removes it if no forward pass came.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._in_size: str | list[Any] | None = None
        self._out_size: str | list[Any] | None = None
        self._hook_handle: RemovableHandle | None = self._register_hook()

    def __del__(self) -> None:
        self.detach_hook()

    def _register_hook(self) -> RemovableHandle | None:
        if isinstance(self._module, torch.jit.ScriptModule):
            return None

        def hook(_: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            inp = (*args, *kwargs.values()) if kwargs is not None else args
            self._in_size = parse_batch_shape(inp[0] if len(inp) == 1 else inp)
            self._out_size = parse_batch_shape(out)
            self.detach_hook()

        return self._module.register_forward_hook(hook, with_kwargs=True)

    def detach_hook(self) -> None:
        handle = getattr(self, "_hook_handle", None)
        if handle is not None:
            handle.remove()
            self._hook_handle = None

    @property
    def in_size(self) -> str | list[Any]:
        return self._in_size or UNKNOWN_SIZE

    @property
    def out_size(self) -> str | list[Any]:
        return self._out_size or UNKNOWN_SIZE

    @property
    def layer_type(self) -> str:
        return str(self._module.__class__.__name__)

    @property
    def num_parameters(self) -> int:
        return _numel(self._module.parameters())

    @property
    def training(self) -> bool:
        return self._module.training


class ModelSummary:
    """Summary of a ``LightningModule`` (or any ``nn.Module``) down to ``max_depth`` (-1: all, 0: none).

    Attributes as in Lightning: ``layer_names``, ``layer_types``, ``in_sizes``, ``out_sizes``,
    ``param_nums``, ``training_modes``, ``total_training_modes``, ``total_parameters``,
    ``trainable_parameters``, ``total_layer_params``, ``model_size`` (MB), ``total_flops``; ``str()`` is
    the table the ``ModelSummary`` callback prints.
    """

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
        self._model = model
        self._max_depth = max_depth
        self._data: ModelSummaryData = _summarize_data(model, max_depth=max_depth)
        self._layer_summary = self.summarize()
        self._flops: int | None = None

    @property
    def data(self) -> ModelSummaryData:
        """The plain summary data (what the Runyard service stores)."""
        return self._data

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        if self._max_depth == 0:
            return []
        if self._max_depth == 1:
            return list(self._model.named_children())
        return list(self._model.named_modules())[1:]

    def summarize(self) -> dict[str, LayerSummary]:
        modules = dict(self.named_modules)
        summary: dict[str, LayerSummary] = OrderedDict()
        for layer in self._data.layers:
            entry = LayerSummary(modules[layer.name])
            entry.detach_hook()
            if self._data.has_sizes:
                entry._in_size = layer.in_size
                entry._out_size = layer.out_size
            summary[layer.name] = entry
        return summary

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_summary.keys())

    @property
    def layer_types(self) -> list[str]:
        return [layer.layer_type for layer in self._layer_summary.values()]

    @property
    def in_sizes(self) -> list[Any]:
        return [layer.in_size for layer in self._layer_summary.values()]

    @property
    def out_sizes(self) -> list[Any]:
        return [layer.out_size for layer in self._layer_summary.values()]

    @property
    def param_nums(self) -> list[int]:
        return [layer.num_parameters for layer in self._layer_summary.values()]

    @property
    def training_modes(self) -> list[bool]:
        return [layer.training for layer in self._layer_summary.values()]

    @property
    def total_training_modes(self) -> dict[str, int]:
        return {"train": self._data.train_modules, "eval": self._data.eval_modules}

    @property
    def total_parameters(self) -> int:
        return self._data.total_params

    @property
    def trainable_parameters(self) -> int:
        return self._data.trainable_params

    @property
    def total_layer_params(self) -> int:
        return sum(self.param_nums)

    @property
    def model_size(self) -> float:
        return self._data.size_mb

    @property
    def total_flops(self) -> int:
        """FLOPs of one forward pass of ``example_input_array`` (0 without one)."""
        if self._flops is None:
            self._flops = _count_flops(self._model)
        return self._flops

    def __str__(self) -> str:
        return format_summary(self._data)

    def __repr__(self) -> str:
        return str(self)


def _count_flops(model: nn.Module) -> int:
    example = getattr(model, "example_input_array", None)
    if example is None:
        return 0
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad(), counter:
            if isinstance(example, (list, tuple)):
                model(*example)
            elif isinstance(example, dict):
                model(**example)
            else:
                model(example)
    finally:
        for m, training in modes.items():
            m.training = training
    return int(counter.get_total_flops())


def summarize(lightning_module: nn.Module, max_depth: int = 1) -> ModelSummary:
    """Lightning's ``summarize``: the ``ModelSummary`` of ``lightning_module``."""
    return ModelSummary(lightning_module, max_depth=max_depth)


__all__ = [
    "LayerSummary",
    "ModelSummary",
    "get_formatted_model_size",
    "get_human_readable_count",
    "parse_batch_shape",
    "summarize",
]
