"""A run's own process: what trains one attempt of one run.

The worker starts it (from a forkserver that has torch, trainer_core and the recipes imported
already, so a run starts in well under a second) with only what the run needs in its
environment: ``RUNYARD_URL``, its run token as ``RUNYARD_TOKEN``, ``RUNYARD_RUN_ID`` and
``RUNYARD_RUN_DIR``; no broker, database or worker credentials. It reports everything through
:class:`~trainer_core.loggers.RunyardLogger`, exactly as a script trained anywhere does:
metrics, stdout/stderr, hyperparameters, model summary, checkpoints (uploaded), heartbeats, and
the final status with the traceback on failure.

Exit codes: 0 when the run reported its final status (or lost its run to another attempt),
:data:`EXIT_REQUEUE` when the worker's shutdown stopped it with a resume checkpoint saved (the
worker hands it back to the queue). Anything else (``sys.exit(3)``, a signal such as SIGSEGV
or the OOM killer's SIGKILL) is reported by the worker, which sees the exit code.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trainer_core as L
from trainer_core.checkpoint_io import STORAGE_ERRORS
from worker.control import WORKER_SHUTDOWN, RunControl
from worker.recipes import TrainerArgs, get_recipe, get_registry

EXIT_REQUEUE = 75  # EX_TEMPFAIL
# A rank of a multi-process run whose training raised: it reports nothing itself (another rank's
# death may be the cause); its error is in RUN_DIR/rank-<r>-error.txt and the worker decides.
EXIT_RANK_ERROR = 76
# What the run's process must never see (the worker's own credentials and its broker).
SECRET_ENV = ("RUNYARD_TOKEN", "RUNYARD_BROKER_URL", "RUNYARD_DATABASE_URL", "CELERY_BROKER_URL",
              "RUNYARD_ARTIFACT_URL")


def preload(recipe_modules: str) -> None:
    """Import the recipes in the forkserver, so each run's process starts with them loaded."""
    try:
        get_registry(recipe_modules)
    except Exception:  # the run's process imports them again and reports the error
        pass


def _die_with_worker(worker_pid: int) -> None:
    """End this process (SIGKILL, as the worker got) the moment the worker process dies.

    The forkserver is this process's parent, and it lives as long as any of its children does,
    so PR_SET_PDEATHSIG cannot tell; a pidfd of the worker becomes readable when it exits."""
    import select
    import threading

    try:
        pidfd = os.pidfd_open(worker_pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll the pid instead
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while True:
                time.sleep(0.5)
                try:
                    os.kill(worker_pid, 0)
                except ProcessLookupError:
                    break
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="runyard-worker-watch", daemon=True).start()


def main(payload: dict[str, Any]) -> None:
    """The process's entry point (``multiprocessing`` target); exits with the code above."""
    _die_with_worker(int(payload["worker_pid"]))
    for name in list(os.environ):
        if name in SECRET_ENV or name.startswith(("AWS_", "PG")):
            del os.environ[name]
    run_dir = Path(payload["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(RUNYARD_URL=payload["url"], RUNYARD_TOKEN=payload["token"],
                      RUNYARD_RUN_ID=str(payload["run"]["id"]), RUNYARD_RUN_DIR=str(run_dir))
    set_rank_env(payload)
    # SIGUSR1 from the worker, or a SIGTERM sent to this process: stop at the next step with a
    # resume checkpoint, then exit for a requeue. Ctrl-C is the worker's to handle.
    signal.signal(signal.SIGUSR1, lambda *_: WORKER_SHUTDOWN.set())
    signal.signal(signal.SIGTERM, lambda *_: WORKER_SHUTDOWN.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()  # a segfault prints the Python stack to the worker's stderr
    os.chdir(run_dir)
    sys.exit(run(payload, run_dir))


def set_rank_env(payload: dict[str, Any]) -> None:
    """The GPUs the worker reserved (``CUDA_VISIBLE_DEVICES``) and, for a rank of a multi-process
    run, torchrun's environment: ``trainer_core`` (and Lightning) then join that process group."""
    if payload.get("cuda_visible_devices") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(payload["cuda_visible_devices"])
    if payload.get("devices") is not None:  # the count the reservation gives (a list or -1 becomes it)
        payload["run"]["trainer"] = {**(payload["run"].get("trainer") or {}), "devices": payload["devices"]}
    dist = payload.get("dist")
    if not dist:
        return
    os.environ.update(
        RANK=str(dist["rank"]), LOCAL_RANK=str(dist["rank"]), GROUP_RANK="0", NODE_RANK="0",
        WORLD_SIZE=str(dist["world_size"]), LOCAL_WORLD_SIZE=str(dist["world_size"]),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(dist["master_port"]), TORCHELASTIC_RUN_ID=str(dist["run_id"]),
        RUNYARD_RANK=str(dist["rank"]),
    )
    # trainer_core was imported by the forkserver (rank 0 then): its rank-zero switch follows now.
    from trainer_core.utilities.rank_zero import rank_zero_only

    rank_zero_only.rank = int(dist["rank"])


def rank_of(payload: dict[str, Any]) -> int:
    return int((payload.get("dist") or {}).get("rank", 0))


def run(payload: dict[str, Any], run_dir: Path) -> int:
    from trainer_core.loggers.runyard import RunyardLogger

    if payload.get("dist"):
        return run_rank(payload, run_dir)
    spec = payload["run"]
    logger = RunyardLogger(url=payload["url"], run_id=spec["id"], save_dir=str(run_dir),
                           heartbeat_interval=payload.get("heartbeat_interval", 5.0))
    try:
        status = _train(payload, logger, run_dir)
    except Exception as exc:  # any failure of the run ends it as failed, with the reason
        from pydantic import ValidationError

        from trainer_core.loggers.runyard import QuotaExceeded
        from worker.code import CodeRunError
        from worker.recipes.data import DatasetMissing

        if isinstance(exc, (DatasetMissing, CodeRunError, QuotaExceeded)):  # their sentence says it all
            error = str(exc)
        elif isinstance(exc, ValidationError):
            error = f"The recipe refused its parameters: {exc}"
        elif isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:  # a full or read-only run folder
            what = exc.strerror if " writing " in (exc.strerror or "") else \
                f"{STORAGE_ERRORS[exc.errno]} writing {exc.filename or run_dir}"  # not a checkpoint's own
            error = (f"{what}; the run's earlier checkpoints are kept: free space on the worker "
                     f"(its run folders are under {run_dir.parent}), then resume the run.")
        else:
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        if isinstance(exc, CodeRunError):
            print(f"[runyard] {error}", file=sys.stderr)
        else:
            print(traceback.format_exc(), file=sys.stderr)
        if logger.lost.is_set():
            return 0
        logger.finish("failed", error=error)
        return 0
    return _report_end(logger, status)


def _report_end(logger: Any, status: str) -> int:
    """The end of a trained run, as its process reports it: the exit code the agent reads."""
    if status == "lost":  # the run is no longer this process's: send what is buffered, nothing else
        logger.flush(timeout=30)
        return 0
    if status == "requeued":
        logger.flush(timeout=120)
        return EXIT_REQUEUE
    logger.finish(status)
    return 0


def run_rank(payload: dict[str, Any], run_dir: Path) -> int:
    """One rank of a multi-process run. Rank 0 reports as a single process does, except that a
    training error is left to the worker (``EXIT_RANK_ERROR``); other ranks report nothing."""
    from trainer_core.loggers.runyard import RunyardLogger

    rank = rank_of(payload)
    logger = RunyardLogger(url=payload["url"], run_id=payload["run"]["id"], save_dir=str(run_dir),
                           heartbeat_interval=payload.get("heartbeat_interval", 5.0))
    try:
        status = _train(payload, logger, run_dir)
    except Exception as exc:
        error = f"rank {rank}: {type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        print(traceback.format_exc(), file=sys.stderr)
        (run_dir / f"rank-{rank}-error.txt").write_text(error, encoding="utf-8")
        if rank == 0:
            logger.flush(timeout=30)
        return EXIT_RANK_ERROR
    if rank != 0:
        return EXIT_REQUEUE if status == "requeued" else 0
    return _report_end(logger, status)


def _fetch(logger: Any, checkpoint: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = str(checkpoint.get("filename") or checkpoint.get("path", "checkpoint.ckpt")).rsplit("/", 1)[-1]
    dest = folder / f"{checkpoint['id']}-{name}"
    logger.client.download(checkpoint["download_url"], dest, sha256=checkpoint.get("sha256"))
    return dest


def build_trainer(trainer_args: dict[str, Any], run_dir: Path, logger: Any, control: Any,
                  extra_callbacks: Sequence[Any] = ()) -> tuple[L.Trainer, TrainerArgs]:
    import trainer_core as L
    from trainer_core.callbacks import EarlyStopping, ModelCheckpoint

    args = TrainerArgs.model_validate(trainer_args)
    callbacks: list[Any] = [control, *extra_callbacks] if control is not None else list(extra_callbacks)
    if args.early_stopping_monitor:
        callbacks.append(
            EarlyStopping(monitor=args.early_stopping_monitor, patience=args.early_stopping_patience,
                          mode=args.early_stopping_mode)
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
    return L.Trainer(default_root_dir=str(run_dir), logger=logger, callbacks=callbacks, **kwargs), args


def _train(payload: dict[str, Any], logger: Any, run_dir: Path) -> str:
    started = time.perf_counter()
    spec = payload["run"]
    if spec.get("recipe") == "code":  # the user's own code (a snapshot): worker/code.py
        from worker import code

        return code.train(payload, logger, run_dir)
    get_registry(payload.get("recipes", ""))
    recipe = get_recipe(spec["recipe"])
    return train_recipe(payload, logger, run_dir, recipe, spec.get("params") or {}, started=started)


def train_recipe(payload: dict[str, Any], logger: Any, run_dir: Path, recipe: Any, params: dict[str, Any], *,
                 label: str | None = None, started: float | None = None, data_dir: str | None = None,
                 download: bool | None = None) -> str:
    """Build ``recipe`` with ``params`` and train it (resume checkpoint, cancel, warm shutdown,
    test); the status. ``data_dir``/``download`` replace the worker's for code runs."""
    from worker.recipes import RecipeContext

    started = time.perf_counter() if started is None else started
    spec = payload["run"]
    run_id, attempt = spec["id"], payload["attempt"]
    trainer_args = TrainerArgs.model_validate(spec.get("trainer") or {})
    if trainer_args.seed is not None:
        L.seed_everything(trainer_args.seed)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume_path = None
    resume = payload.get("resume")
    if resume:
        resume_path = _fetch(logger, resume, run_dir / "resume")
        whose = "its own" if resume["run_id"] == run_id else f"run {resume['run_id']}'s"
        print(f"[runyard] attempt {attempt}: resuming from {whose} checkpoint {resume['filename']} "
              f"(step {resume['step']})")
    ctx = RecipeContext(data_dir=payload["data_dir"] if data_dir is None else data_dir,
                        download=payload["download_data"] if download is None else download, run_id=run_id,
                        inputs=list(payload.get("inputs") or []),
                        fetch_input=lambda c: _fetch(logger, c, run_dir / "inputs"))
    built = recipe.build(params, ctx)
    # The trainer's stop flag follows the logger's (cancel requested, or the run was taken away).
    control = RunControl(logger.stop_requested, logger, ckpt_dir, trainer_args.checkpoint_every_n_train_steps)
    trainer, _ = build_trainer(spec.get("trainer") or {}, run_dir, logger, control)
    print(f"[runyard] run {run_id} attempt {attempt}: {label or 'recipe ' + recipe.name} on "
          f"{payload.get('device', 'cpu')} ({trainer.strategy.root_device}, precision {trainer.precision}), built in "
          f"{time.perf_counter() - started:.1f} s")
    if logger.stop_requested.is_set() or WORKER_SHUTDOWN.is_set():
        return _stopped(logger)
    ckpt_path = str(resume_path) if resume_path else None
    if built.datamodule is not None:
        trainer.fit(built.model, datamodule=built.datamodule, ckpt_path=ckpt_path)
    else:
        trainer.fit(built.model, train_dataloaders=built.train_dataloaders, val_dataloaders=built.val_dataloaders,
                    ckpt_path=ckpt_path)
    if logger.lost.is_set():
        return "lost"
    if not control.stopped_early:
        control.save(trainer)  # the state at the end of fit
    if logger.cancel_requested.is_set() or WORKER_SHUTDOWN.is_set():
        print(f"[runyard] run {run_id} stopped at step {trainer.global_step}"
              + (", back to the queue" if not logger.cancel_requested.is_set() else " (cancelled)"))
        return _stopped(logger)
    if built.has_test:
        if built.datamodule is not None:
            trainer.test(built.model, datamodule=built.datamodule)
        else:
            trainer.test(built.model, dataloaders=built.test_dataloaders)
    return "succeeded"


def _stopped(logger: Any) -> str:
    if logger.lost.is_set():
        return "lost"
    if logger.cancel_requested.is_set():
        return "cancelled"
    return "requeued" if WORKER_SHUTDOWN.is_set() else "failed"
