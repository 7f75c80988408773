"""Starting the other ranks of a run (Lightning's launchers).

- ``_SubprocessScriptLauncher`` (``strategy="ddp"``): runs this script again, once per extra local rank, with
  ``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set; the children build the same
  Trainer and join instead of launching. A child that dies takes the others down (as Lightning's observer does),
  so no rank waits forever for a dead peer.
- ``_MultiProcessingLauncher`` (``strategy="ddp_spawn"``): ``torch.multiprocessing.start_processes`` with the
  Trainer pickled to each process; rank 0 sends its results back (weights, state, metrics) and the main process
  takes them over, as Lightning does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from trainer_core.strategies.ddp import DDPStrategy
    from trainer_core.strategies.environments import ClusterEnvironment
    from trainer_core.trainer.trainer import Trainer

log = logging.getLogger(__name__)


class _Launcher:
    is_interactive_compatible = False

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Trainer | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError


def _script_command() -> list[str]:
    """How this process was started: ``python script.py args`` or ``python -m package.module args``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        name = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", name, *sys.argv[1:]]
    main_file = getattr(__main__, "__file__", None)
    if main_file is None:
        raise RuntimeError(
            "Trainer(strategy='ddp') starts the other ranks by running this script again, but this process has no "
            "script (an interactive session or a notebook). Use strategy='ddp_spawn', or start the ranks with "
            "`torchrun --nproc-per-node=N script.py`."
        )
    return [sys.executable, os.path.abspath(sys.argv[0] or main_file), *sys.argv[1:]]


class _SubprocessScriptLauncher(_Launcher):
    def __init__(self, cluster_environment: ClusterEnvironment, num_processes: int, num_nodes: int) -> None:
        self.cluster_environment = cluster_environment
        self.num_processes = num_processes
        self.num_nodes = num_nodes
        self.procs: list[subprocess.Popen[bytes]] = []

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Trainer | None = None, **kwargs: Any) -> Any:
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            _ChildProcessObserver(self.procs).start()
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        command = _script_command()
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=os.getcwd()))


class _ChildProcessObserver(threading.Thread):
    """Lightning's: when a child rank ends with an error, end every rank (children, then this process)."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="child-process-observer")
        self._procs = procs
        self._interval = interval

    def run(self) -> None:
        while True:
            for proc in self._procs:
                code = proc.poll()
                if code is not None and code != 0:
                    what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                    log.error(
                        "Child process with PID %d terminated with %s. Forcefully terminating all other processes "
                        "to avoid zombies.", proc.pid, what,
                    )
                    sys.stderr.write(
                        f"trainer_core: rank process {proc.pid} ended with {what}; ending the other ranks.\n"
                    )
                    for other in self._procs:
                        if other.poll() is None:
                            other.kill()
                    os.kill(os.getpid(), signal.SIGKILL)
            if all(p.poll() == 0 for p in self._procs):
                return
            time.sleep(self._interval)


@dataclass
class _WorkerOutput:
    best_model_path: str | None
    weights_path: str | None
    trainer_state: Any
    trainer_results: Any
    callback_metrics: dict[str, Any]
    # what rank 0's tuner callbacks found (``_spawn_result``), by the callback's ``_spawn_key``
    callback_results: dict[str, Any] = field(default_factory=dict)


class _MultiProcessingLauncher(_Launcher):
    def __init__(self, strategy: DDPStrategy, start_method: str = "spawn") -> None:
        self._strategy = strategy
        self._start_method = start_method

    @property
    def is_interactive_compatible(self) -> bool:  # type: ignore[override]
        return self._start_method == "fork"

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Trainer | None = None, **kwargs: Any) -> Any:
        import torch.multiprocessing as mp

        if self._start_method == "spawn":
            _check_main_guard()

        env = self._strategy.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        context = mp.get_context(self._start_method)
        return_queue = context.SimpleQueue()
        process_args = (trainer, function, args, kwargs, return_queue, _GlobalState.capture())
        mp.start_processes(  # type: ignore[no-untyped-call]
            self._wrapping_function, args=process_args, nprocs=self._strategy.num_processes,
            start_method=self._start_method,
        )
        output: _WorkerOutput = return_queue.get()
        if trainer is None:
            return output.trainer_results
        self._recover_results_in_main_process(output, trainer, args)
        return output.trainer_results

    def _wrapping_function(
        self, process_idx: int, trainer: Trainer | None, function: Callable[..., Any], args: Any, kwargs: Any,
        return_queue: Any, global_state: _GlobalState | None = None,
    ) -> None:
        if global_state is not None and self._start_method == "spawn":
            global_state.restore()  # a spawned interpreter starts with fresh RNGs and torch flags
        if self._start_method == "spawn" and self._strategy.root_device.type == "cpu":
            # a CPU tensor sent to a spawned process arrives in memory shared by all of them: every rank would
            # step the same weights (Lightning's _disable_module_memory_sharing)
            _unshare_modules((trainer, args, kwargs))
        from trainer_core.strategies.ddp import DDPStrategy

        strategy = trainer.strategy if trainer is not None else self._strategy
        assert isinstance(strategy, DDPStrategy)
        strategy._local_rank = process_idx
        strategy.set_world_ranks()
        results = function(*args, **kwargs)
        if trainer is not None:
            output = self._collect_rank_zero_results(trainer, results)
        else:
            output = _WorkerOutput(None, None, None, results, {})
        if process_idx == 0:
            return_queue.put(output)

    def _collect_rank_zero_results(self, trainer: Trainer, results: Any) -> _WorkerOutput:
        from trainer_core.trainer.states import TrainerFn

        checkpoint_callback = trainer.checkpoint_callback
        best = getattr(checkpoint_callback, "best_model_path", None) or None
        weights_path = None
        if trainer.is_global_zero and trainer.state.fn == TrainerFn.FITTING and trainer.lightning_module is not None:
            weights_path = os.path.join(tempfile.mkdtemp(prefix="trainer_core_spawn_"), ".temp.ckpt")
            torch.save(trainer.lightning_module.state_dict(), weights_path)

        def cpu(d: dict[str, Any]) -> dict[str, Any]:
            # as numpy arrays (Lightning's): a tensor sent through the queue would need this process alive
            return {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in d.items()}

        # the tuner callbacks' results (a suggested lr, a batch size) and what they set on the module
        tuners: list[Any] = [cb for cb in trainer.callbacks if hasattr(cb, "_spawn_result")]
        callback_results = {cb._spawn_key: cb._spawn_result(trainer) for cb in tuners}
        return _WorkerOutput(
            best, weights_path, trainer.state, _to_cpu(results), cpu(dict(trainer.callback_metrics)),
            callback_results,
        )

    def _recover_results_in_main_process(self, output: _WorkerOutput, trainer: Trainer, args: Any = ()) -> None:
        checkpoint_callback = trainer.checkpoint_callback
        if checkpoint_callback is not None and output.best_model_path:
            checkpoint_callback.best_model_path = output.best_model_path
        if output.weights_path is not None and trainer.lightning_module is not None:
            state = torch.load(output.weights_path, map_location="cpu", weights_only=True)
            trainer.lightning_module.load_state_dict(state)
            import shutil

            shutil.rmtree(os.path.dirname(output.weights_path), ignore_errors=True)
        trainer.state = output.trainer_state
        if output.callback_results:
            # a tuner callback's result reaches the main process's callback, module and datamodule (Lightning 2.6
            # loses it: its ranks end the tuning run with an uncaught _TunerExitException)
            from trainer_core.core.datamodule import LightningDataModule

            datamodule = next((a for a in args if isinstance(a, LightningDataModule)), None)
            tuners: list[Any] = [cb for cb in trainer.callbacks if hasattr(cb, "_recover_spawn_result")]
            for cb in tuners:
                result = output.callback_results.get(cb._spawn_key)
                if result is not None:
                    cb._recover_spawn_result(trainer, datamodule, result)
        # as Lightning: the main process gets rank 0's weights, state and callback metrics (not its loop counters)
        trainer.callback_metrics.update(
            {k: torch.as_tensor(v) if _is_array(v) else v for k, v in output.callback_metrics.items()}
        )


def _check_main_guard() -> None:
    """Lightning's ``_check_missing_main_guard``: spawn re-imports ``__main__``; without the guard it recurses."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "You are using `strategy='ddp_spawn'` (torch.multiprocessing with start method 'spawn'), but the "
            "script does not guard its entry point. Put the code that starts training under "
            "`if __name__ == '__main__':`, or use strategy='ddp'."
        )


@dataclass
class _GlobalState:
    """What a spawned process must start from as the parent had it (Lightning's ``_GlobalStateSnapshot``)."""

    use_deterministic_algorithms: bool
    use_deterministic_algorithms_warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    rng_states: dict[str, Any]

    @classmethod
    def capture(cls) -> _GlobalState:
        from trainer_core.seed import capture_rng_state

        return cls(
            torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, capture_rng_state(),
        )

    def restore(self) -> None:
        from trainer_core.seed import restore_rng_state

        torch.use_deterministic_algorithms(
            self.use_deterministic_algorithms, warn_only=self.use_deterministic_algorithms_warn_only
        )
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        restore_rng_state(self.rng_states)


def _unshare_modules(obj: Any, seen: set[int] | None = None) -> None:
    """Give every module reachable from ``obj`` (a Trainer, args) its own copy of its parameters and buffers."""
    seen = set() if seen is None else seen
    modules: list[torch.nn.Module] = []
    trainer_module = getattr(obj[0], "lightning_module", None) if isinstance(obj, tuple) and obj else None
    if isinstance(trainer_module, torch.nn.Module):
        modules.append(trainer_module)
    stack = list(obj) if isinstance(obj, (tuple, list)) else [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.nn.Module):
            modules.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    done: set[int] = set()
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in done:
                done.add(id(tensor))
                tensor.data = tensor.data.clone()


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
