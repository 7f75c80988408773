"""Hyperparameters: ``AttributeDict``, init-arg collection for ``save_hyperparameters``."""

from __future__ import annotations

import copy
import inspect
import types
import warnings
from argparse import Namespace
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import torch


class AttributeDict(dict[str, Any]):
    """A dict whose keys are also attributes: ``hparams.lr == hparams["lr"]``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"'AttributeDict' object has no attribute '{key}'") from err

    def __setattr__(self, key: str, val: Any) -> None:
        self[key] = val

    def __delattr__(self, item: str) -> None:
        if item not in self:
            raise AttributeError(item)
        del self[item]

    def __repr__(self) -> str:
        if not self:
            return ""
        width = max(len(str(k)) for k in self)
        return "\n".join(f'"{k}":'.ljust(width + 3) + f" {v!r}" for k, v in sorted(self.items()))


def _parse_class_init_keys(cls: type) -> tuple[str, str | None, str | None]:
    params = list(inspect.signature(cls.__init__).parameters.values())  # type: ignore[misc]
    self_name = params[0].name
    args = next((p.name for p in params if p.kind == inspect.Parameter.VAR_POSITIONAL), None)
    kwargs = next((p.name for p in params if p.kind == inspect.Parameter.VAR_KEYWORD), None)
    return self_name, args, kwargs


def _init_args_of_frame(frame: types.FrameType) -> dict[str, Any] | None:
    local_vars = frame.f_locals
    cls = local_vars.get("__class__")
    if cls is None or frame.f_code.co_name != "__init__":
        return None
    self_var, args_var, kwargs_var = _parse_class_init_keys(cls)
    params = inspect.signature(cls.__init__).parameters
    out = {k: local_vars[k] for k in params if k in local_vars}
    if kwargs_var:
        out.update(out.get(kwargs_var, {}))
    exclude = {n for n in (self_var, args_var, kwargs_var) if n} | {"__class__", "frame", "frame_args"}
    return {k: v for k, v in out.items() if k not in exclude}


def collect_init_args(frame: types.FrameType | None) -> dict[str, Any]:
    """Init arguments of every ``__init__`` in the call chain starting at ``frame`` (subclass wins)."""
    found: list[dict[str, Any]] = []
    inside = False
    while frame is not None:
        args = _init_args_of_frame(frame)
        if args is not None:
            found.append(args)
            inside = True
        elif inside:
            break
        frame = frame.f_back
    merged: dict[str, Any] = {}
    for args in found:  # innermost first, so the most derived class's __init__ wins
        merged.update(args)
    return merged


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors of several elements
        return False


def save_hyperparameters(
    obj: Any, *args: Any, ignore: Sequence[str] | str | None = None, frame: types.FrameType | None = None
) -> None:
    if frame is None:
        raise RuntimeError("save_hyperparameters needs the caller's frame.")
    if isinstance(ignore, str):
        ignore = [ignore]
    ignore = [arg for arg in (ignore or []) if isinstance(arg, str)]
    init_args = collect_init_args(frame)
    if len(args) == 1 and not isinstance(args[0], str):
        hp = args[0]
        # as Lightning: remember which init argument the container came in as, so that
        # load_from_checkpoint can pass it back under that name (e.g. `Model(config=...)`)
        obj._hparams_name = next((k for k, v in init_args.items() if v is hp), None)
        if obj._hparams_name is None:
            obj._hparams_name = next((k for k, v in init_args.items() if _equal(v, hp)), None)
        if isinstance(hp, Namespace):
            hp = vars(hp)
        if not isinstance(hp, Mapping):
            raise ValueError(f"save_hyperparameters() got an unsupported hyperparameter container {type(hp)}.")
        hparams = dict(hp)
    elif args:
        missing = [a for a in args if a not in init_args]
        if missing:
            raise ValueError(
                f"save_hyperparameters() got names that are not init arguments: {missing}. "
                f"Init arguments: {sorted(init_args)}."
            )
        obj._hparams_name = "kwargs"
        hparams = {a: init_args[a] for a in args}
    else:
        obj._hparams_name = "kwargs" if init_args else None
        hparams = dict(init_args)
    for key in ignore:
        hparams.pop(key, None)
    # as Lightning: hyperparameters accumulate, so a subclass calling save_hyperparameters() after its
    # parent did keeps the parent's (e.g. `lr` given to the parent's __init__ by default), and `ignore`
    # drops a name the parent saved
    obj._set_hparams(hparams)
    for key in ignore:
        obj._hparams.pop(key, None)
    for key, value in obj._hparams.items():
        if isinstance(value, torch.nn.Module):
            warnings.warn(
                f"Attribute {key!r} is an instance of `nn.Module` and is already saved during checkpointing."
                f" It is recommended to ignore them using `self.save_hyperparameters(ignore=[{key!r}])`.",
                stacklevel=4,
            )
    try:
        obj._hparams_initial = copy.deepcopy(obj._hparams)
    except Exception:  # objects that cannot be copied are logged as they are
        obj._hparams_initial = AttributeDict(obj._hparams)


_PLAIN_SCALARS = (type(None), bool, int, float, str, torch.Tensor, torch.dtype, torch.device, torch.Size)


def to_plain(value: Any, name: str = "") -> Any:
    """Reduce hyperparameters to what ``torch.load(weights_only=True)`` can read; drop the rest."""
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            plain = to_plain(v, f"{name}.{k}" if name else str(k))
            if plain is not _DROP:
                out[k] = plain
        return out
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
        items = [v for v in items if v is not _DROP]
        return items if isinstance(value, list) else tuple(items)
    warnings.warn(
        f"Hyperparameter {name!r} of type {type(value).__name__} is not a plain value and is left out of "
        "the checkpoint (checkpoints hold only tensors and plain Python values). Pass it again to "
        "`load_from_checkpoint(..., " + f"{name.split('.')[0]}=...)` or exclude it with "
        "`save_hyperparameters(ignore=[...])`.",
        stacklevel=3,
    )
    return _DROP


_DROP = object()


def plain_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = to_plain(dict(hparams))
    return plain
