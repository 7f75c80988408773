"""The callback that lets the outside world steer a run's trainer: cancel requests (learned by
the run's RunyardLogger heartbeat), the worker's warm shutdown (SIGUSR1 from the worker), and
the run's own resume checkpoints (``last-epoch=E-step=S.ckpt``), uploaded to the server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trainer_core as L

# Set in the run's process when its worker shuts down (the worker sends SIGUSR1): the run
# stops at the next step, saves a resume checkpoint and goes back to the queue.
WORKER_SHUTDOWN = threading.Event()


class RunControl(L.Callback):
    """Stops training at the next batch start when ``stop`` is set (reading an Event is all the
    loop pays), after saving a resume checkpoint there, and saves resume checkpoints as
    training goes.

    Resume checkpoints are taken when a batch *starts*: by then the previous step's metrics
    and any validation after it are logged, so the checkpoint at step S holds exactly what was
    logged below step S, and a run resumed from it logs from step S on. Saved every
    ``every_n_train_steps`` steps, else at the first batch of each new epoch, and once more
    when fit ends. Each is uploaded through the run's logger, after every point logged before it.
    """

    def __init__(self, stop: threading.Event, logger: Any, ckpt_dir: Path, every_n_train_steps: int | None = None) -> None:
        self.stop = stop
        self.logger = logger
        self.ckpt_dir = Path(ckpt_dir)
        self.every_n_train_steps = every_n_train_steps
        self.stopped_early = False
        self._last_saved_step = -1
        self._saved: list[Path] = []  # this attempt's resume checkpoints, oldest first

    @property
    def state_key(self) -> str:
        return "RunyardRunControl"

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # A resumed run does not save again the step it starts from. on_train_start, not
        # on_fit_start: the checkpoint's global_step is restored between the two (as in Lightning).
        self._last_saved_step = trainer.global_step

    def _should_stop(self) -> bool:
        return self.stop.is_set() or WORKER_SHUTDOWN.is_set()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        stop = self._should_stop()
        if getattr(trainer.strategy, "world_size", 1) > 1:
            # One rank told to stop (rank 0 learns of a cancel, a rank gets SIGUSR1) stops them all
            # at the same step: a rank that went on alone would wait in its next collective forever.
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
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

    def save(self, trainer: Any) -> Path | None:
        """Save ``last-epoch=E-step=S.ckpt`` and upload it as the run's resume checkpoint (once
        per name: a registered checkpoint is immutable)."""
        step, epoch = trainer.global_step, trainer.current_epoch
        path = self.ckpt_dir / self._name(epoch, step)
        if path.exists():
            return None
        trainer.save_checkpoint(str(path))
        self._last_saved_step = step
        self._saved.append(path)
        if self.logger is not None:
            self.logger.upload_checkpoint(path, step=step, epoch=epoch, resumable=True, is_last=True)
            # Only the newest resume checkpoint is kept: the older one goes on the server once the
            # new one is registered (the logger's queue keeps that order), never before.
            if len(self._saved) >= 2:
                self.logger.delete_checkpoint(self._saved[-2])
        # Locally, two generations back was uploaded long ago (the logger sends in order).
        if len(self._saved) >= 3:
            self._saved.pop(0).unlink(missing_ok=True)
        return path

    @staticmethod
    def _name(epoch: int, step: int) -> str:
        return f"last-epoch={epoch}-step={step}.ckpt"
