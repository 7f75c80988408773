"""How many processes and GPUs a run takes, and the GPU reservations of one worker host.

``runyard worker --gpus 0,1,2,3`` starts one Celery slot process per GPU (times ``--concurrency``);
every slot of the host shares one **reservation file** (``RUNYARD_GPU_POOL``, a JSON object
``{gpu id: [holder, ...]}``, each holder ``{"pid", "run"}``) guarded by an exclusive ``fcntl``
lock. A slot that takes a run asking for k GPUs reserves k distinct GPUs that still have a free
seat (a GPU has ``RUNYARD_GPU_SEATS`` seats, the ``--concurrency``), preferring its own GPU; it
waits (the run stays queued) while they are not free, and releases them when the run ends. A
holder whose process is gone (a slot killed with -9) is dropped by the next reservation, so a
crash never leaks a GPU. Ids are plain strings (what ``CUDA_VISIBLE_DEVICES`` takes), so the
logic is tested with made-up ids on a machine without GPUs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DDP_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")
GPU_ACCELERATORS = ("gpu", "cuda")


def worker_gpus() -> list[str]:
    """This worker host's GPU ids (``RUNYARD_WORKER_GPUS``, else this slot's ``RUNYARD_WORKER_GPU``)."""
    pool = os.environ.get("RUNYARD_WORKER_GPUS")
    if pool is None:
        pool = os.environ.get("RUNYARD_WORKER_GPU", "")
    return [g.strip() for g in pool.split(",") if g.strip()]


def uses_gpus(trainer: dict[str, Any], have_gpus: bool) -> bool:
    """Whether the run trains on GPUs on a worker that has (``have_gpus``) or has not any."""
    accelerator = str(trainer.get("accelerator") or "auto")
    return accelerator in GPU_ACCELERATORS or (accelerator == "auto" and have_gpus)


def world_size(trainer: dict[str, Any], gpu_count: int) -> int:
    """The run's processes: its devices when more than one and a DDP strategy (or 'auto'), else 1.
    ``-1`` means every GPU of ``gpu_count`` (one process on a CPU run)."""
    if str(trainer.get("strategy") or "auto") not in DDP_STRATEGIES:
        return 1
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        n = len(devices)
    elif isinstance(devices, bool) or not isinstance(devices, int):
        n = 1
    elif devices == -1:
        n = gpu_count if gpu_count > 0 else 1
    else:
        n = devices
    return max(1, n)


def gpus_needed(trainer: dict[str, Any], gpu_count: int) -> int:
    """GPUs the run reserves on a worker with ``gpu_count`` GPUs (0: a CPU run)."""
    if not uses_gpus(trainer, gpu_count > 0):
        return 0
    return world_size(trainer, gpu_count)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GpuPool:
    """The reservation file of one worker host (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], gpus: list[str], seats: int = 1) -> None:
        self.path = Path(path)
        self.gpus = list(gpus)
        self.seats = max(1, int(seats))

    @classmethod
    def from_env(cls, home: str | os.PathLike[str]) -> GpuPool:
        gpus = worker_gpus()
        path = os.environ.get("RUNYARD_GPU_POOL") or str(Path(home) / f"gpu-reservations-{os.getpid()}.json")
        return cls(path, gpus, int(os.environ.get("RUNYARD_GPU_SEATS") or 1))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, list[dict[str, Any]]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                text = fh.read()
                try:
                    table = json.loads(text) if text.strip() else {}
                except ValueError:
                    table = {}
                if not isinstance(table, dict):
                    table = {}
                for g in {*self.gpus, *table}:  # another pool's GPUs in the same file are kept
                    table[g] = [h for h in table.get(g, []) if _alive(int(h.get("pid", 0)))]
                yield table
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(table))
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def reserve(self, count: int, run_id: int, prefer: str | None = None, pid: int | None = None) -> list[str] | None:
        """``count`` GPU ids reserved for ``run_id`` by ``pid`` (this process), or None when not
        that many are free now. Raises ValueError when this host never has that many."""
        if count > len(self.gpus):
            raise ValueError(f"the run asks for {count} GPUs; this worker has {len(self.gpus)}")
        pid = os.getpid() if pid is None else pid
        with self._locked() as table:
            free = [g for g in self.gpus if len(table[g]) < self.seats]
            if prefer in free:  # this slot's own GPU first, then the least used, in id order
                free.remove(prefer)
                free.insert(0, prefer)
            if len(free) < count:
                return None
            chosen = free[:1] + sorted(free[1:], key=lambda g: len(table[g]))[:count - 1] if count else []
            chosen.sort(key=self.gpus.index)  # ranks in the host's order: rank 0 on the first
            for g in chosen:
                table[g].append({"pid": pid, "run": run_id})
            return chosen

    def release(self, run_id: int, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        with self._locked() as table:
            for g in table:
                table[g] = [h for h in table[g] if not (h.get("pid") == pid and h.get("run") == run_id)]

    def holders(self) -> dict[str, list[dict[str, Any]]]:
        with self._locked() as table:
            return {g: list(table[g]) for g in self.gpus}
