"""Choosing the one device a run uses."""

from __future__ import annotations

from typing import Any

import torch

from trainer_core.utilities.exceptions import MisconfigurationException, _MisconfigurationRuntimeError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _parse_device_index(devices: Any, name: str) -> int:
    """The device index for a single-device run from ``devices`` (``"auto"``, 1, -1, ``[i]``, ``"i,"``)."""
    if devices in ("auto", None, 1, "1", -1, "-1"):
        return 0
    if isinstance(devices, str):
        parts = [p for p in devices.split(",") if p.strip()]
        if len(parts) == 1 and devices.strip().endswith(","):
            return int(parts[0])
        try:
            devices = int(devices)
        except ValueError:
            raise MisconfigurationException(
                f"Trainer(devices={devices!r}) is not valid; use 'auto', 1, or a one-element list like [0]."
            ) from None
    if isinstance(devices, (list, tuple)):
        if len(devices) != 1:
            raise MisconfigurationException(
                f"Trainer(devices={list(devices)!r}) asks for {len(devices)} devices; trainer_core trains on a "
                "single device for now. Allowed values: 'auto', 1, -1 or a one-element list like [0]."
            )
        return int(devices[0])
    if isinstance(devices, int):
        if devices == 0 and name == "cpu":
            return 0
        if devices <= 0:
            raise MisconfigurationException(f"Trainer(devices={devices!r}) is not valid; use 'auto', 1 or [<index>].")
        raise MisconfigurationException(
            f"Trainer(devices={devices}) asks for {devices} devices; trainer_core trains on a single device for "
            "now. Allowed values: 'auto', 1, -1 or a one-element list like [0]."
        )
    raise MisconfigurationException(f"Trainer(devices={devices!r}) is not valid; use 'auto', 1, or a one-element list like [0].")


def select_device(accelerator: Any, devices: Any) -> torch.device:
    if not isinstance(accelerator, str) or accelerator.lower() not in ACCELERATORS:
        raise MisconfigurationException(
            f"Trainer(accelerator={accelerator!r}) is not valid. Allowed values: {', '.join(map(repr, ACCELERATORS))}."
        )
    accelerator = accelerator.lower()
    if accelerator == "auto":
        if _cuda_count():
            accelerator = "cuda"
        elif _mps_available():
            accelerator = "mps"
        else:
            accelerator = "cpu"
    index = _parse_device_index(devices, accelerator)
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        count = _cuda_count()
        if count == 0:
            raise _MisconfigurationRuntimeError(
                f"Trainer(accelerator={accelerator!r}) was requested, but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False). Use accelerator='cpu' or accelerator='auto'."
            )
        if index >= count:
            raise MisconfigurationException(f"Trainer(devices=[{index}]) asks for CUDA device {index}, but only {count} are visible.")
        return torch.device("cuda", index)
    if not _mps_available():
        raise _MisconfigurationRuntimeError("Trainer(accelerator='mps') was requested, but MPS is not available on this machine.")
    return torch.device("mps")
