"""``Trainer(accelerator=, strategy=, devices=, num_nodes=)`` -> the strategy object (Lightning's
``_AcceleratorConnector``, for what trainer_core runs: one device, or DDP over several processes)."""

from __future__ import annotations

from typing import Any

import torch

from trainer_core.strategies.ddp import DDPStrategy
from trainer_core.strategies.environments import detect_environment
from trainer_core.strategies.strategy import SingleDeviceStrategy, Strategy
from trainer_core.trainer.accelerator import ACCELERATORS, _cuda_count, _mps_available, select_device
from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError

# name -> (start_method, find_unused_parameters or None)
_DDP_NAMES: dict[str, tuple[str, bool | None]] = {
    "ddp": ("popen", None),
    "ddp_spawn": ("spawn", None),
    "ddp_fork": ("fork", None),
    "ddp_notebook": ("fork", None),
}
for _base, _method in (("ddp", "popen"), ("ddp_spawn", "spawn"), ("ddp_fork", "fork"), ("ddp_notebook", "fork")):
    _DDP_NAMES[f"{_base}_find_unused_parameters_false"] = (_method, False)
    _DDP_NAMES[f"{_base}_find_unused_parameters_true"] = (_method, True)

_UNSUPPORTED = {
    "fsdp": "FSDP (fully sharded data parallel)",
    "fsdp_cpu_offload": "FSDP (fully sharded data parallel)",
    "deepspeed": "DeepSpeed",
    "dp": "DataParallel ('dp' was removed in Lightning 2.0; use 'ddp')",
    "xla": "XLA/TPU",
    "model_parallel": "ModelParallelStrategy",
    "hpu_parallel": "Habana HPUs",
}

STRATEGY_NAMES = ("auto", "single_device", *_DDP_NAMES)


def _unsupported(name: str) -> str | None:
    if name in _UNSUPPORTED:
        return _UNSUPPORTED[name]
    if name.startswith("deepspeed"):
        return "DeepSpeed"
    if name.startswith("fsdp"):
        return "FSDP (fully sharded data parallel)"
    return None


def _resolve_accelerator(accelerator: Any) -> str:
    if not isinstance(accelerator, str) or accelerator.lower() not in ACCELERATORS:
        raise MisconfigurationException(
            f"Trainer(accelerator={accelerator!r}) is not valid. Allowed values: {', '.join(map(repr, ACCELERATORS))}."
        )
    name = accelerator.lower()
    if name == "auto":
        return "cuda" if _cuda_count() else ("mps" if _mps_available() else "cpu")
    return "cuda" if name == "gpu" else name


def _bad_devices(devices: Any, why: str = "") -> MisconfigurationException:
    return MisconfigurationException(
        f"Trainer(devices={devices!r}) is not valid{why}. Allowed values: 'auto', an int > 0 (how many), -1 (all), "
        "or a list of device indices like [0, 1] (or the string '0,1')."
    )


def _all_devices(accelerator: str) -> list[int]:
    """``devices="auto"`` / ``-1``: every visible GPU; one process on the CPU (and MPS)."""
    return list(range(max(_cuda_count(), 1))) if accelerator == "cuda" else [0]


def _device_indices(devices: Any, accelerator: str) -> list[int]:
    """The devices' indices (on CPU: as many zeros as processes)."""
    if isinstance(devices, bool):
        raise _bad_devices(devices)
    if devices is None or devices == "auto":
        return _all_devices(accelerator)
    if isinstance(devices, str):
        text = devices.strip()
        if text == "-1":
            devices = -1
        elif "," in text:
            try:
                devices = [int(p) for p in text.split(",") if p.strip()]
            except ValueError:
                raise _bad_devices(devices) from None
        else:
            try:
                devices = int(text)
            except ValueError:
                raise _bad_devices(devices) from None
    if isinstance(devices, int):
        if devices == -1:
            return _all_devices(accelerator)
        if devices == 0 and accelerator == "cpu":
            return [0]  # trainer_core has always taken devices=0 on the CPU as one process
        if devices <= 0:
            raise _bad_devices(devices)
        if accelerator == "cpu":
            return [0] * devices
        return list(range(devices))
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices):
            raise _bad_devices(list(devices))
        if len(set(devices)) != len(devices):
            raise _bad_devices(list(devices), " (a device is listed twice)")
        return [0] * len(devices) if accelerator == "cpu" else list(devices)
    raise _bad_devices(devices)


def resolve_strategy(accelerator: Any, strategy: Any, devices: Any, num_nodes: Any) -> Strategy:
    """The strategy a Trainer runs with. Raises naming the argument for anything trainer_core cannot run."""
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
        raise MisconfigurationException(f"Trainer(num_nodes={num_nodes!r}) is not valid. Allowed values: an int >= 1.")
    if isinstance(strategy, Strategy):
        instance: Strategy | None = strategy
        name = strategy.strategy_name
    elif isinstance(strategy, str):
        name = strategy.lower()
        what = _unsupported(name)
        if what is not None:
            raise MisconfigurationException(
                f"Trainer(strategy={strategy!r}): {what} is not supported by trainer_core. Allowed values: "
                f"{', '.join(map(repr, STRATEGY_NAMES))} or a DDPStrategy(...) instance."
            )
        if name not in STRATEGY_NAMES:
            raise MisconfigurationException(
                f"Trainer(strategy={strategy!r}) is not valid. Allowed values: {', '.join(map(repr, STRATEGY_NAMES))} "
                "or a DDPStrategy(...) instance."
            )
        instance = None
    else:
        raise MisconfigurationException(
            f"Trainer(strategy={strategy!r}) is not valid. Allowed values: {', '.join(map(repr, STRATEGY_NAMES))} "
            "or a DDPStrategy(...) instance."
        )

    acc = _resolve_accelerator(accelerator)
    indices = _device_indices(devices, acc)
    if acc == "cuda":
        count = _cuda_count()
        if count == 0:
            raise _MisconfigurationRuntimeError(
                f"Trainer(accelerator={accelerator!r}) was requested, but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False). Use accelerator='cpu' or accelerator='auto'."
            )
        missing = [i for i in indices if i >= count]
        if missing:
            raise MisconfigurationException(
                f"Trainer(devices={devices!r}) asks for CUDA device {missing[0]}, but only {count} are visible."
            )
    if acc == "mps" and len(indices) > 1:
        raise MisconfigurationException(f"Trainer(devices={devices!r}): MPS has one device; use devices=1.")
    parallel = [torch.device("cpu") if acc == "cpu" else torch.device(acc, i) for i in indices]
    distributed_request = len(parallel) * num_nodes > 1
    environment = detect_environment()

    if instance is None:
        if name == "auto":  # several devices, or ranks started by torchrun/SLURM: DDP
            external = environment.creates_processes_externally and _external_world() > 1
            name = "ddp" if distributed_request or external else "single_device"
        if name == "single_device":
            if distributed_request:
                raise MisconfigurationException(
                    f"Trainer(strategy='single_device') runs one process, but devices={devices!r} and "
                    f"num_nodes={num_nodes} ask for {len(parallel) * num_nodes}. Use strategy='ddp'."
                )
            return SingleDeviceStrategy(select_device(acc, [indices[0]] if acc == "cuda" else 1))
        start_method, find_unused = _DDP_NAMES[name]
        kwargs: dict[str, Any] = {}
        if find_unused is not None:
            kwargs["find_unused_parameters"] = find_unused
        instance = DDPStrategy(start_method=start_method, **kwargs)
        instance.strategy_name = name
    if isinstance(instance, DDPStrategy):
        instance._configure(parallel, num_nodes, environment)
    elif isinstance(instance, SingleDeviceStrategy) and distributed_request:
        raise MisconfigurationException(
            f"Trainer(strategy=SingleDeviceStrategy(...)) runs one process, but devices={devices!r} and "
            f"num_nodes={num_nodes} ask for more."
        )
    return instance


def _external_world() -> int:
    import os

    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1
