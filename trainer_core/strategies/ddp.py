"""``DDPStrategy``: one process per device, gradients all-reduced by ``DistributedDataParallel``.

Everything that communicates is ``torch.distributed``: the process group (``gloo`` on CPU, ``nccl`` on CUDA),
DDP's reducer, ``all_reduce``/``all_gather``/``broadcast_object_list``/``barrier``. The steps go through the DDP
wrapper the way Lightning's ``_ForwardRedirection`` does: for the duration of one call the module's ``forward``
is the step, so DDP's forward hooks (buffer broadcast, reducer preparation) run around ``training_step``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from trainer_core.strategies.environments import ClusterEnvironment, LightningEnvironment
from trainer_core.strategies.launchers import _MultiProcessingLauncher, _SubprocessScriptLauncher
from trainer_core.strategies.strategy import Strategy

log = logging.getLogger(__name__)

T = TypeVar("T")

# torch's default process group timeout (30 minutes), Lightning's default_pg_timeout
default_pg_timeout = timedelta(minutes=30)

_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "mean": "SUM", "avg": "SUM", "product": "PRODUCT"}


class DDPStrategy(Strategy):
    """Lightning's ``DDPStrategy`` (``start_method``: ``popen`` = ``"ddp"``, ``spawn`` = ``"ddp_spawn"``,
    ``fork`` = ``"ddp_fork"``/``"ddp_notebook"``). Extra keyword arguments go to ``DistributedDataParallel``."""

    strategy_name = "ddp"

    def __init__(
        self,
        accelerator: Any = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: Any = None,
        precision_plugin: Any = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
        start_method: str = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        if start_method not in ("popen", "spawn", "fork", "forkserver"):
            raise ValueError(
                f"DDPStrategy(start_method={start_method!r}) is not valid; use 'popen', 'spawn', 'fork' or 'forkserver'."
            )
        self._parallel_devices = parallel_devices
        super().__init__(parallel_devices[0] if parallel_devices else "cpu")
        self.cluster_environment: ClusterEnvironment = cluster_environment or LightningEnvironment()
        self._process_group_backend = process_group_backend
        self._timeout = timeout
        self._start_method = start_method
        self._ddp_kwargs = ddp_kwargs
        self._num_nodes = 1
        self._local_rank: int | None = None

    # ------------------------------------------------------------------ set by the Trainer's connector
    def _configure(self, parallel_devices: list[torch.device], num_nodes: int, environment: ClusterEnvironment | None) -> None:
        self._parallel_devices = parallel_devices
        self._num_nodes = num_nodes
        if environment is not None and isinstance(self.cluster_environment, LightningEnvironment):
            self.cluster_environment = environment
        self.accelerator = "cuda" if parallel_devices[0].type == "cuda" else parallel_devices[0].type
        if self.cluster_environment.creates_processes_externally:
            self.cluster_environment.validate_settings(len(parallel_devices), num_nodes)
        if self._start_method == "popen":
            self.launcher = _SubprocessScriptLauncher(self.cluster_environment, self.num_processes, num_nodes)
        else:
            self.launcher = _MultiProcessingLauncher(self, start_method=self._start_method)
        self.set_world_ranks()

    # ------------------------------------------------------------------ ranks
    @property
    def parallel_devices(self) -> list[torch.device]:
        return list(self._parallel_devices or [torch.device("cpu")])

    @property
    def root_device(self) -> torch.device:
        return self.parallel_devices[self.local_rank]

    @property
    def is_distributed(self) -> bool:
        return True

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @num_nodes.setter
    def num_nodes(self, value: int) -> None:
        self._num_nodes = value

    @property
    def num_processes(self) -> int:
        return len(self.parallel_devices)

    @property
    def local_rank(self) -> int:
        if self._local_rank is not None:
            return self._local_rank
        return self.cluster_environment.local_rank()

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank()

    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank()

    @property
    def world_size(self) -> int:
        return self.cluster_environment.world_size()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.num_nodes * self.num_processes, "rank": self.global_rank}

    @property
    def process_group_backend(self) -> str:
        if self._process_group_backend:
            return self._process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def set_world_ranks(self) -> None:
        from trainer_core.utilities.rank_zero import rank_zero_only

        env = self.cluster_environment
        env.set_global_rank(self.node_rank * self.num_processes + self.local_rank)
        env.set_world_size(self.num_nodes * self.num_processes)
        rank_zero_only.rank = self.global_rank

    # ------------------------------------------------------------------ life cycle
    def setup_environment(self) -> None:
        """Join the process group (once per process; later entry points reuse it)."""
        self.set_world_ranks()
        if self.root_device.type == "cuda":
            torch.cuda.set_device(self.root_device)
        if dist.is_available() and dist.is_initialized():
            return
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        kwargs: dict[str, Any] = {}
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        log.info(
            "Initializing distributed: GLOBAL_RANK: %d, MEMBER: %d/%d", self.global_rank, self.global_rank + 1,
            self.world_size,
        )
        dist.init_process_group(
            self.process_group_backend, rank=self.global_rank, world_size=self.world_size, **kwargs
        )
        # the group this process made is closed at exit: left open, torch warns and gloo/nccl may abort the
        # interpreter at shutdown (a rank that trained fine would then end with SIGABRT)
        atexit.register(_destroy_process_group)
        if self.global_rank == 0:
            from trainer_core.utilities.rank_zero import rank_zero_info

            rank_zero_info(
                f"{'-' * 100}\ndistributed_backend={self.process_group_backend}\nAll distributed processes "
                f"registered. Starting with {self.world_size} processes\n{'-' * 100}\n"
            )

    def setup_module(self, model: Any, fitting: bool) -> None:
        if not fitting:  # Lightning: no DDP wrapper outside fit (no gradients); the module states are synced
            _sync_module_states(model)
            self.model = model
            return
        device_ids = None if self.root_device.type == "cpu" else [self.root_device.index]
        self.model = DistributedDataParallel(model, device_ids=device_ids, **self._ddp_kwargs)

    def teardown(self) -> None:
        super().teardown()
        if self.root_device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ the steps
    def wrap_step(self, step_fx: Callable[..., Any]) -> Callable[..., Any]:
        wrapper = self.model
        if not isinstance(wrapper, DistributedDataParallel):
            return step_fx  # outside fit the module runs unwrapped (Lightning's)

        def through_wrapper(*args: Any) -> Any:
            return _redirect_forward(wrapper, self.lightning_module, step_fx, *args)

        return through_wrapper

    @contextlib.contextmanager
    def block_backward_sync(self) -> Generator[None, None, None]:
        if isinstance(self.model, DistributedDataParallel):
            with self.model.no_sync():
                yield
        else:
            yield

    def pre_backward(self, loss: Tensor) -> None:
        module = self.lightning_module
        if isinstance(self.model, DistributedDataParallel) and module is not None and not module.automatic_optimization:
            _prepare_for_backward(self.model, loss)

    # ------------------------------------------------------------------ collectives
    def barrier(self, name: str | None = None) -> None:
        if not _initialized():
            return
        if dist.get_backend() == "nccl" and self.root_device.type == "cuda":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()

    def broadcast(self, obj: T, src: int = 0) -> T:
        if not _initialized():
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src)
        return box[0]

    def all_gather(self, tensor: Tensor, group: Any = None, sync_grads: bool = False) -> Tensor:
        if not _initialized():
            return tensor
        group = group if group is not None else dist.group.WORLD
        tensor = tensor.contiguous()
        if tensor.ndim == 0:
            tensor = tensor.unsqueeze(0)
            squeeze = True
        else:
            squeeze = False
        if sync_grads:
            from torch.distributed import nn as dist_nn

            gathered = torch.stack(dist_nn.functional.all_gather(tensor, group))  # type: ignore[no-untyped-call]
        else:
            parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
            dist.all_gather(parts, tensor, group)
            gathered = torch.stack(parts)
        return gathered.squeeze(1) if squeeze else gathered

    def reduce(self, tensor: Any, group: Any = None, reduce_op: str | None = "mean") -> Any:
        if not isinstance(tensor, Tensor) or not _initialized():
            return tensor
        op_name = "mean" if reduce_op is None else str(reduce_op).lower().replace("reduceop.", "")
        if op_name not in _REDUCE_OPS:
            raise ValueError(f"reduce_op={reduce_op!r} is not supported; use 'mean', 'sum', 'max' or 'min'.")
        group = group if group is not None else dist.group.WORLD
        # as Lightning's _sync_ddp: integer tensors are averaged as floats; the input is not modified
        result = tensor.clone()
        if op_name in ("mean", "avg") and not torch.is_floating_point(result):
            result = result.to(torch.get_default_dtype())
        dist.all_reduce(result, op=getattr(dist.ReduceOp, _REDUCE_OPS[op_name]), group=group)
        if op_name in ("mean", "avg"):
            result = result / dist.get_world_size(group)
        return result

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not _initialized():
            return decision
        votes = torch.tensor(int(decision), device=self.root_device)
        total = self.reduce(votes, reduce_op="sum")
        return bool(total == self.world_size) if all else bool(total > 0)


def _destroy_process_group() -> None:
    if _initialized():
        with contextlib.suppress(Exception):
            if dist.get_backend() == "gloo":
                # every rank stops using its connections before any closes them (a peer closing first makes
                # gloo's threads abort the interpreter); bounded, so a rank whose peer died still exits
                dist.monitored_barrier(timeout=timedelta(seconds=5))
            dist.destroy_process_group()


def _redirect_forward(wrapper: DistributedDataParallel, module: Any, step_fx: Callable[..., Any], *args: Any) -> Any:
    """``step_fx(*args)`` run as ``wrapper``'s forward (Lightning's ``_ForwardRedirection``): for one call the module's
    ``forward`` is the step, so DDP's forward hooks (buffer broadcast, reducer preparation) run around it."""
    had_own = "forward" in module.__dict__
    original_forward = module.forward

    def forward(*inner: Any, **inner_kw: Any) -> Any:
        restore()  # the step itself may call self(x)
        return step_fx(*inner, **inner_kw)

    def restore() -> None:
        if had_own:
            module.forward = original_forward
        else:
            module.__dict__.pop("forward", None)

    module.forward = forward
    try:
        return wrapper(*args)
    finally:
        restore()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sync_module_states(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP does when it wraps; Lightning's helper)."""
    if not _initialized():
        return
    from torch.distributed.utils import _sync_module_states as sync

    group = dist.group.WORLD
    assert group is not None
    sync(module, process_group=group, broadcast_bucket_size=int(250 * 1024 * 1024), src=0,
         params_and_buffers_to_ignore=set())


def _prepare_for_backward(model: DistributedDataParallel, output: Any) -> None:
    """Lightning's ``prepare_for_backward`` for manual optimization: tell DDP's reducer which outputs the loss uses."""
    if not (torch.is_grad_enabled() and model.require_backward_grad_sync):
        return
    model.require_forward_param_sync = True
    if model.find_unused_parameters:
        from torch.nn.parallel.distributed import _find_tensors

        args = list(_find_tensors(output))  # type: ignore[no-untyped-call]
    else:
        args = []
    reducer = model.reducer
    reducer._rebuild_buckets()
    reducer.prepare_for_backward(args)
