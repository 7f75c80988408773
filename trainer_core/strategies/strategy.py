"""``trainer.strategy``: where the model runs and how its processes talk (Lightning's ``Strategy``).

``SingleDeviceStrategy`` is one process on one device: every collective is the identity. The
distributed strategies (``trainer_core.strategies.ddp``) override the same methods with
``torch.distributed`` calls, so loops, callbacks and the module call one API either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from trainer_core.strategies.launchers import _Launcher

TBroadcast = TypeVar("TBroadcast")


class Strategy:
    """The base: one process. Subclasses set ``launcher`` when ranks must be started."""

    strategy_name = "single_device"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._root_device = torch.device(device)
        self.lightning_module: Any = None
        # what the loops call the steps on: the module itself, or its DistributedDataParallel wrapper
        self.model: Any = None
        self.launcher: _Launcher | None = None
        self.accelerator: str = "cuda" if self._root_device.type == "cuda" else self._root_device.type

    # ------------------------------------------------------------------ where this process runs
    @property
    def root_device(self) -> torch.device:
        return self._root_device

    @property
    def parallel_devices(self) -> list[torch.device]:
        return [self.root_device]

    @property
    def is_distributed(self) -> bool:
        """More than one process takes part (the collectives below really communicate)."""
        return False

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def num_nodes(self) -> int:
        return 1

    @property
    def num_processes(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """``DistributedSampler(num_replicas=, rank=)`` for this process; None when one process trains."""
        return None

    # ------------------------------------------------------------------ life cycle
    def setup_environment(self) -> None:
        """Before the setup hooks: join the process group (distributed strategies)."""

    def connect(self, model: Any) -> None:
        self.lightning_module = model
        self.model = model

    def setup_module(self, model: Any, fitting: bool) -> None:
        """After the model is on its device: wrap it for training (DDP), or keep it as it is."""
        self.model = model

    def teardown(self) -> None:
        """After a run: unwrap the module (the process group stays for the next entry point)."""
        self.model = self.lightning_module

    # ------------------------------------------------------------------ the steps
    def wrap_step(self, step_fx: Callable[..., Any]) -> Callable[..., Any]:
        """How the loops call a step of the module (``step_fx``: the bound method, or its batch_idx-less
        form): as it is here; through the DistributedDataParallel wrapper while DDP fits."""
        return step_fx

    @contextlib.contextmanager
    def block_backward_sync(self) -> Generator[None, None, None]:
        """Within a gradient-accumulation window: no gradient all-reduce until the step's backward."""
        yield

    def pre_backward(self, loss: Tensor) -> None:
        """Before a manual ``backward`` (DDP prepares its reducer for the loss's graph)."""

    # ------------------------------------------------------------------ collectives (identity here)
    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""

    def broadcast(self, obj: TBroadcast, src: int = 0) -> TBroadcast:
        """``obj`` as process ``src`` has it, on every process."""
        return obj

    def all_gather(self, tensor: Tensor, group: Any = None, sync_grads: bool = False) -> Tensor:
        """Every process's ``tensor`` stacked along a new first dimension (world size); as it is on one process."""
        return tensor

    def reduce(self, tensor: Any, group: Any = None, reduce_op: str | None = "mean") -> Any:
        """``tensor`` reduced over the processes (``mean``/``sum``/``max``/``min``); non-tensors come back as they are."""
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """One decision for all processes: every process's (``all=True``) or any process's (``all=False``)."""
        return decision

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str, storage_options: Any = None) -> None:
        """Write ``checkpoint`` (global rank 0 only)."""
        if self.is_global_zero:
            from trainer_core.checkpoint_io import save_checkpoint

            save_checkpoint(checkpoint, filepath)

    def remove_checkpoint(self, filepath: str) -> None:
        if self.is_global_zero:
            import os

            with contextlib.suppress(FileNotFoundError):
                os.remove(filepath)


class SingleDeviceStrategy(Strategy):
    """Lightning's ``SingleDeviceStrategy``: one process, one device."""

    def __init__(self, device: torch.device | str = "cpu", accelerator: Any = None, **_: Any) -> None:
        super().__init__(device)
