"""The callback that lets the outside world steer a running trainer: cancel requests, worker
shutdown, and the run's own resume checkpoints (``last-epoch=E-step=S.ckpt``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trainer_core as L

# Set when the worker process is asked to shut down (SIGTERM / Ctrl-C): the run stops at the next
# step, saves a resume checkpoint and goes back to the queue for another worker.
WORKER_SHUTDOWN = threading.Event()


class RunControl(L.Callback):
    """Stops training at the next step when ``stop`` is set (the heartbeat thread sets it when a
    cancel is requested; reading an Event is all the loop pays), and saves resume checkpoints
    every ``every_n_train_steps`` steps, else at each training epoch's end."""

    def __init__(self, stop: threading.Event, tracking: Any, ckpt_dir: Path, every_n_train_steps: int | None = None) -> None:
        self.stop = stop
        self.tracking = tracking
        self.ckpt_dir = Path(ckpt_dir)
        self.every_n_train_steps = every_n_train_steps
        self.stopped_early = False
        self._last_saved_step = -1

    @property
    def state_key(self) -> str:
        return "RunyardRunControl"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.tracking is not None:
            self.tracking.trainer = trainer

    def _should_stop(self) -> bool:
        return self.stop.is_set() or WORKER_SHUTDOWN.is_set()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._should_stop():
            trainer.should_stop = True
            self.stopped_early = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._should_stop():
            trainer.should_stop = True
            self.stopped_early = True
            return
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.every_n_train_steps and not self._should_stop():
            self.save(trainer)

    def save(self, trainer: Any) -> Path | None:
        """Save ``last-epoch=E-step=S.ckpt`` (once per step) and register it as the run's last checkpoint."""
        step, epoch = trainer.global_step, trainer.current_epoch
        if step == self._last_saved_step or getattr(trainer, "sanity_checking", False):
            return None
        path = self.ckpt_dir / f"last-epoch={epoch}-step={step}.ckpt"
        trainer.save_checkpoint(str(path))
        self._last_saved_step = step
        if self.tracking is not None:
            self.tracking.register_checkpoint(path, step=step, epoch=epoch)
        return path
