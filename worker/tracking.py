"""The tracking logger: what a run logs goes to the store, written from a background thread.

The training loop only appends to an in-memory list (``log_metrics`` costs microseconds and
never touches the database); a writer thread drains it every ``flush_interval`` seconds in
one batch. Everything else the run records (hyperparameters, model summary, log lines,
checkpoints) goes through the same ordered queue, so a checkpoint is registered only after
every point logged before it is in the database: resuming from a registered checkpoint
therefore never leaves a gap in the metric history. ``finalize``/``close`` flush and wait.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server import store
from trainer_core.loggers.logger import Logger
from worker import store_ext

log = logging.getLogger(__name__)

Op = tuple[str, Any]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _as_float(value: Any) -> float | None:
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


class TrackingLogger(Logger):
    """Streams a run's metrics, hyperparameters, model summary, logs and checkpoints to the store."""

    def __init__(
        self,
        engine: Engine,
        run_id: int,
        artifact_root: str | Path,
        *,
        flush_interval: float = 0.5,
        on_error: Callable[[BaseException], None] | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.run_id = run_id
        # When set, every write first checks (row-locked) that the run is still this attempt's: a
        # worker the reaper gave up on must not add points after the next attempt trimmed them.
        self.attempt = attempt
        self.lost = False
        self.artifact_root = Path(artifact_root)
        self.flush_interval = flush_interval
        self.on_error = on_error
        self._ops: deque[Op] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._closed = False
        # the trainer, for the step/epoch of a saved checkpoint (set by RunControl.setup)
        self.trainer: Any = None
        self.points_written = 0
        self._thread = threading.Thread(target=self._writer, name=f"runyard-tracking-{run_id}", daemon=True)
        self._thread.start()

    # -- Logger API ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "runyard"

    @property
    def version(self) -> int:
        return self.run_id

    @property
    def save_dir(self) -> str:
        return str(self.artifact_root / str(self.run_id))

    @property
    def log_dir(self) -> str:
        return self.save_dir

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = time.time()
        epoch = metrics.get("epoch")
        epoch = int(epoch) if epoch is not None else None
        step = int(step) if step is not None else 0
        rows = [(k, step, _as_float(v), epoch, now) for k, v in metrics.items() if k != "epoch"]
        with self._lock:
            if self._ops and self._ops[-1][0] == "points":
                self._ops[-1][1].extend(rows)
            else:
                self._ops.append(("points", rows))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        from trainer_core.loggers.logger import convert_params

        self._push(("hparams", store.json_safe(convert_params(params))))

    def log_model_summary(self, summary: dict[str, Any]) -> None:
        self._push(("summary", summary))

    def log_lines(self, lines: list[tuple[str, str, Any]]) -> None:
        """``(stream, text, datetime)`` lines captured from stdout/stderr."""
        self._push(("logs", lines), wake=False)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        trainer = self.trainer or getattr(checkpoint_callback, "_trainer", None)
        step = int(getattr(trainer, "global_step", 0) or 0)
        epoch = int(getattr(trainer, "current_epoch", 0) or 0)
        self._push(("checkpoint", self._snapshot(checkpoint_callback, step, epoch)))

    def register_checkpoint(self, path: str | Path, *, step: int, epoch: int, last: bool = True) -> None:
        """A checkpoint saved outside a ModelCheckpoint (the run's resume checkpoints)."""
        self._push(("checkpoint", {"files": {str(path): (None, None)}, "best": None, "last": str(path) if last else None,
                                   "step": step, "epoch": epoch, "prune_last": last, "refresh": True}))

    def save(self) -> None:
        """The trainer calls this after each logging step: the writer's own rhythm
        (``flush_interval``) already bounds how stale the database is, so nothing to do."""

    def finalize(self, status: str) -> None:
        self.flush()

    # -- flushing ---------------------------------------------------------------------------------
    def _push(self, op: Op, wake: bool = True) -> None:
        with self._lock:
            self._ops.append(op)
        if wake:
            self._wake.set()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything logged so far is in the database (True) or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._ops or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.1))
        return True

    def close(self, timeout: float = 60.0) -> None:
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    def _writer(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            with self._lock:
                ops = list(self._ops)
                self._ops.clear()
                self._in_flight = len(ops)
            if ops:
                self._write(ops)
            with self._idle:
                self._in_flight = 0
                self._idle.notify_all()
            if self._closed and not self._ops:
                return

    def _write(self, ops: list[Op]) -> None:
        for attempt in range(1000):
            try:
                with Session(self.engine) as session:
                    while ops:
                        if self.attempt is not None and not store_ext.owns_run(session, self.run_id, self.attempt):
                            self.lost = True
                            log.warning("run %s is no longer attempt %s's: dropping %d records", self.run_id,
                                        self.attempt, len(ops))
                            session.rollback()
                            return
                        kind, payload = ops[0]
                        self._apply(session, kind, payload)
                        ops.pop(0)
                return
            except store.NotFound:
                log.info("run %s is gone; dropping what it logged", self.run_id)
                return
            except Exception as exc:  # noqa: BLE001 - retry: a locked SQLite or a PostgreSQL restart passes
                if attempt == 0 and self.on_error is not None:
                    self.on_error(exc)
                log.warning("writing run %s's records failed (%s); retrying", self.run_id, exc)
                if self._closed and attempt > 20:
                    return
                time.sleep(min(2.0, 0.1 * (attempt + 1)))

    def _apply(self, session: Session, kind: str, payload: Any) -> None:
        if kind == "points":
            self.points_written += store.add_metric_points(session, self.run_id, payload, check_run=False)
        elif kind == "hparams":
            store.set_hyperparameters(session, self.run_id, payload, merge=True)
        elif kind == "summary":
            store.set_summary(session, self.run_id, payload)
        elif kind == "logs":
            store.add_log_lines(session, self.run_id, payload, check_run=False)
        elif kind == "checkpoint":
            self._sync_checkpoints(session, payload)

    # -- checkpoints ------------------------------------------------------------------------------
    def _relative(self, path: str | Path) -> str:
        path = Path(path).resolve()
        try:
            return path.relative_to(self.artifact_root.resolve()).as_posix()
        except ValueError:
            return str(path)

    @staticmethod
    def _snapshot(callback: Any, step: int, epoch: int) -> dict[str, Any]:
        """What a ModelCheckpoint knows right after saving, copied (the callback keeps changing)."""
        monitor = getattr(callback, "monitor", None)
        files: dict[str, tuple[str | None, float | None]] = {}
        for path, score in dict(getattr(callback, "best_k_models", {}) or {}).items():
            files[str(path)] = (monitor, _as_float(score))
        for attr in ("best_model_path", "last_model_path"):
            path = getattr(callback, attr, "") or ""
            if path and path not in files:
                files[path] = (monitor, _as_float(getattr(callback, "best_model_score", None)) if attr == "best_model_path" else None)
        return {
            "files": files,
            "best": getattr(callback, "best_model_path", "") or None,
            "last": None,
            "step": step,
            "epoch": epoch,
            "dirpath": getattr(callback, "dirpath", None),
            "prune_last": False,
        }

    def _sync_checkpoints(self, session: Session, snap: dict[str, Any]) -> None:
        known = set(store_ext.checkpoint_paths(session, self.run_id))
        own_dir = (self.artifact_root / str(self.run_id)).resolve()
        for path, (monitor, score) in snap["files"].items():
            file = Path(path)
            if not file.resolve().is_relative_to(own_dir):
                continue  # e.g. the best path a resumed run inherited from the run it resumed
            rel = self._relative(file)
            # Names carry epoch and step, so a file registered before is unchanged; a new one was
            # saved just now, at the trainer state of the snapshot.
            if (rel in known and not snap.get("refresh")) or not file.is_file():
                continue
            store_ext.upsert_checkpoint(
                session, self.run_id, rel, epoch=snap["epoch"], step=snap["step"], monitor=monitor, score=score,
                size=file.stat().st_size, sha256=sha256_of(file),
            )
            known.add(rel)
        # Forget files a ModelCheckpoint deleted (top-k rotation).
        store_ext.forget_checkpoints(session, self.run_id, [r for r in known if not (self.artifact_root / r).is_file()])
        current_best, current_last = store_ext.current_flags(session, self.run_id)
        best = snap["best"]
        if best and Path(best).is_file() and Path(best).resolve().is_relative_to(own_dir):
            best = self._relative(best)
        else:
            best = current_best
        last = self._relative(snap["last"]) if snap["last"] else current_last
        store_ext.set_checkpoint_flags(session, self.run_id, best, last)
        if snap["prune_last"] and last:
            self._prune_resume_checkpoints(session, keep=last)

    def _prune_resume_checkpoints(self, session: Session, keep: str) -> None:
        """Resume checkpoints are ``last-*.ckpt``; once a newer one is registered the older go."""
        keep_path = (self.artifact_root / keep).resolve()
        stale = []
        for rel in store_ext.checkpoint_paths(session, self.run_id):
            path = (self.artifact_root / rel).resolve()
            if path.name.startswith("last") and path != keep_path and path.parent == keep_path.parent:
                stale.append(rel)
                path.unlink(missing_ok=True)
        store_ext.forget_checkpoints(session, self.run_id, stale)
