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
    """Stops training at the next batch start when ``stop`` is set (the heartbeat thread sets it
    when a cancel is requested; reading an Event is all the loop pays), after saving a resume
    checkpoint there, and saves resume checkpoints as training goes.

    Resume checkpoints are taken when a batch *starts*: by then the previous step's metrics
    and any validation after it are logged, so the checkpoint at step S holds exactly what was
    logged below step S, and a run resumed from it logs from step S on. Saved every
    ``every_n_train_steps`` steps, else at the first batch of each new epoch, and once more
    when fit ends (see the runner).
    """

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

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # A resumed run does not save again the step it starts from. on_train_start, not
        # on_fit_start: the checkpoint's global_step is restored between the two (as in Lightning).
        self._last_saved_step = trainer.global_step

    def _should_stop(self) -> bool:
        return self.stop.is_set() or WORKER_SHUTDOWN.is_set()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._should_stop():
            if not self.stopped_early:
                # Checkpoint here, at a batch start, so a requeued run resumes mid-epoch where it stopped.
                self.stopped_early = True
                self.save(trainer)
            trainer.should_stop = True
            return
        step = trainer.global_step
        n = self.every_n_train_steps
        due = (step - self._last_saved_step >= n) if n else (batch_idx == 0 and step > self._last_saved_step)
        if due:
            self.save(trainer)

    def save(self, trainer: Any, force: bool = False) -> Path | None:
        """Save ``last-epoch=E-step=S.ckpt`` and register it as the run's last checkpoint (a file
        already there for that step is kept unless ``force``: the state at the end of fit)."""
        step, epoch = trainer.global_step, trainer.current_epoch
        path = self.ckpt_dir / self._name(epoch, step)
        if path.exists() and not force:
            return None
        trainer.save_checkpoint(str(path))
        self._last_saved_step = step
        if self.tracking is not None:
            self.tracking.register_checkpoint(path, step=step, epoch=epoch)
        return path

    @staticmethod
    def _name(epoch: int, step: int) -> str:
        return f"last-epoch={epoch}-step={step}.ckpt"
