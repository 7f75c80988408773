"""Executing one run, top to bottom: claim, build the recipe, fit (resuming when the run has a
checkpoint), test, record the final status. ``worker/tasks.py`` wraps this in the Celery task."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from server import store
from server.db import get_engine
from server.settings import Settings
from worker import store_ext
from worker.heartbeat import RunHeartbeat, heartbeat_interval

log = logging.getLogger(__name__)


def describe_device(trainer_args: dict[str, Any]) -> str:
    """What the run's ``device`` field says: ``cpu``, or the GPU this worker process is pinned to."""
    accelerator = trainer_args.get("accelerator", "auto")
    gpu = os.environ.get("RUNYARD_WORKER_GPU")
    if accelerator == "cpu":
        return "cpu"
    try:
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        name = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no driver: the trainer will say so if a GPU was required
        return "cpu"
    return f"cuda:{gpu} ({name})" if gpu is not None else f"cuda:0 ({name})"


def worker_host() -> str:
    return os.environ.get("RUNYARD_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def execute_run(run_id: int, settings: Settings) -> str:
    """Run ``run_id`` if it is still queued; returns its final status (or ``skipped``/``lost``/``requeued``)."""
    engine = get_engine(settings.database_url)
    with Session(engine) as session:
        run = store.get_run(session, run_id)
        if run is None or run.status != "queued":
            log.info("run %s is %s: nothing to do", run_id, run.status if run else "gone")
            return "skipped"
        run = store.claim_run(session, run_id, worker_host(), describe_device(run.trainer or {}))
        if run is None:
            log.info("run %s was claimed by another delivery or cancelled", run_id)
            return "skipped"
        snapshot = {
            "recipe": run.recipe, "params": dict(run.params or {}), "trainer": dict(run.trainer or {}),
            "attempt": run.attempt, "resume_checkpoint_id": run.resume_checkpoint_id,
            "queue": run.queue,
        }
    attempt = snapshot["attempt"]
    beat = RunHeartbeat(engine, run_id, attempt, heartbeat_interval(settings.heartbeat_timeout)).start()
    try:
        status, error = _train(run_id, snapshot, settings, engine, beat)
    finally:
        beat.close()
    with Session(engine) as session:
        if beat.lost.is_set():
            log.warning("run %s was taken from this worker (attempt %s); leaving its status alone", run_id, attempt)
            return "lost"
        if status == "requeued":
            task_id = uuid.uuid4().hex
            if store_ext.requeue_after_shutdown(session, run_id, attempt, task_id):
                from server.queue import enqueue_run

                enqueue_run(run_id, task_id, queue=snapshot["queue"], settings=settings)
            return "requeued"
        if not store_ext.finish_run(session, run_id, attempt, status, error):
            return "lost"
    return status


def _train(run_id: int, snap: dict[str, Any], settings: Settings, engine, beat: RunHeartbeat) -> tuple[str, str | None]:
    from worker.capture import capture_output
    from worker.tracking import TrackingLogger

    tracking = TrackingLogger(engine, run_id, settings.artifact_root, attempt=snap["attempt"])
    try:
        with capture_output(tracking.log_lines):
            try:
                status = _fit_and_test(run_id, snap, settings, engine, beat, tracking)
                return status, None
            except Exception as exc:  # noqa: BLE001 - any failure of the run ends it as failed, with the reason
                from worker.recipes.data import DatasetMissing

                if beat.lost.is_set():
                    return "failed", None
                if isinstance(exc, DatasetMissing):
                    error = str(exc)
                else:
                    error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
                print(traceback.format_exc(), file=sys.stderr)
                return "failed", error
    finally:
        if not tracking.flush(timeout=120):
            log.error("run %s: some records could not be written", run_id)
        tracking.close()


def _resume_from(session: Session, run_id: int, snap: dict[str, Any], settings: Settings) -> Path | None:
    """The checkpoint to start from: the run's own newest one (it ran before and was interrupted),
    else the checkpoint a resumed run was created from; history after it is deleted."""
    own = store_ext.resumable_checkpoint(session, run_id, settings.artifact_root)
    if own is not None:
        path = settings.artifact_root / own.path
        store_ext.delete_metric_points_from(session, run_id, own.step or 0)
        print(f"[runyard] attempt {snap['attempt']}: resuming from {own.path} (step {own.step})")
        return path
    # No checkpoint of its own: whatever an earlier attempt logged or saved is redone from the start.
    store_ext.reset_run_records(session, run_id)
    ckpt_dir = settings.artifact_root / str(run_id) / "checkpoints"
    if snap["attempt"] > 1 and ckpt_dir.is_dir():
        for stale in ckpt_dir.glob("*.ckpt"):
            stale.unlink(missing_ok=True)
    if snap["resume_checkpoint_id"] is not None:
        ckpt = store.get_checkpoint(session, snap["resume_checkpoint_id"])
        if ckpt is None:
            raise ValueError(f"checkpoint {snap['resume_checkpoint_id']} to resume from no longer exists")
        print(f"[runyard] resuming from checkpoint {ckpt.id} of run {ckpt.run_id} ({ckpt.path})")
        return settings.artifact_root / ckpt.path
    return None


def build_trainer(trainer_args: dict[str, Any], run_dir: Path, tracking: Any, control: Any, extra_callbacks=()):
    import trainer_core as L
    from trainer_core.callbacks import EarlyStopping, ModelCheckpoint
    from worker.recipes import TrainerArgs

    args = TrainerArgs.model_validate(trainer_args)
    callbacks: list[Any] = [control, *extra_callbacks] if control is not None else list(extra_callbacks)
    if args.early_stopping_monitor:
        callbacks.append(
            EarlyStopping(monitor=args.early_stopping_monitor, patience=args.early_stopping_patience, mode=args.early_stopping_mode)
        )
    checkpoint_kwargs: dict[str, Any] = {
        "dirpath": str(run_dir / "checkpoints"),
        "filename": "{epoch}-{step}",
        "monitor": args.checkpoint_monitor,
        "mode": args.checkpoint_mode,
        "save_top_k": args.checkpoint_save_top_k,
    }
    if args.checkpoint_every_n_train_steps:
        checkpoint_kwargs["every_n_train_steps"] = args.checkpoint_every_n_train_steps
    callbacks.append(ModelCheckpoint(**checkpoint_kwargs))
    kwargs = args.trainer_kwargs()
    kwargs.setdefault("enable_progress_bar", False)
    return L.Trainer(default_root_dir=str(run_dir), logger=tracking, callbacks=callbacks, **kwargs), args


def _fit_and_test(run_id: int, snap: dict[str, Any], settings: Settings, engine, beat: RunHeartbeat, tracking) -> str:
    import trainer_core as L
    from server.db import session_factory
    from worker.control import WORKER_SHUTDOWN, RunControl
    from worker.recipes import RecipeContext, TrainerArgs, get_recipe

    started = time.perf_counter()
    recipe = get_recipe(snap["recipe"])
    trainer_args = TrainerArgs.model_validate(snap["trainer"])
    if trainer_args.seed is not None:
        L.seed_everything(trainer_args.seed)
    run_dir = settings.artifact_root / str(run_id)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with Session(engine) as session:
        resume_path = _resume_from(session, run_id, snap, settings)
    ctx = RecipeContext(
        data_dir=str(settings.data_dir), download=settings.download_data, run_id=run_id, session_factory=session_factory(engine),
        artifact_root=str(settings.artifact_root),
    )
    built = recipe.build(snap["params"], ctx)
    control = RunControl(beat.stop_requested, tracking, ckpt_dir, trainer_args.checkpoint_every_n_train_steps)
    trainer, _ = build_trainer(snap["trainer"], run_dir, tracking, control)
    print(f"[runyard] run {run_id} attempt {snap['attempt']}: recipe {recipe.name} on {describe_device(snap['trainer'])}"
          f" ({trainer.strategy.root_device}, precision {trainer.precision}), built in {time.perf_counter() - started:.1f} s")
    if beat.stop_requested.is_set() or WORKER_SHUTDOWN.is_set():
        return "cancelled" if beat.cancel.is_set() else "requeued" if WORKER_SHUTDOWN.is_set() else "failed"
    if built.datamodule is not None:
        trainer.fit(built.model, datamodule=built.datamodule, ckpt_path=str(resume_path) if resume_path else None)
    else:
        trainer.fit(built.model, train_dataloaders=built.train_dataloaders, val_dataloaders=built.val_dataloaders,
                    ckpt_path=str(resume_path) if resume_path else None)
    if beat.lost.is_set():
        return "failed"  # not written: the run belongs to another attempt now
    if not control.stopped_early:
        control.save(trainer, force=True)  # the state at the end of fit
    if beat.cancel.is_set():
        print(f"[runyard] run {run_id} cancelled at step {trainer.global_step}")
        return "cancelled"
    if WORKER_SHUTDOWN.is_set():
        print(f"[runyard] worker shutting down: run {run_id} stopped at step {trainer.global_step}, back to the queue")
        return "requeued"
    if built.has_test:
        if built.datamodule is not None:
            trainer.test(built.model, datamodule=built.datamodule)
        else:
            trainer.test(built.model, dataloaders=built.test_dataloaders)
    return "succeeded"
