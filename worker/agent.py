"""The worker's side of a run: register with the server, claim a run over HTTP, start the run's
own process, watch it, and report what the process could not (it died, or it was stopped to
be requeued).

The worker needs only ``RUNYARD_URL``, its worker token (``RUNYARD_TOKEN``) and the broker
(``RUNYARD_BROKER_URL``); it never opens the database and shares no folder with the server.
A crash in a run (an exception, ``sys.exit``, a segfault, the OOM killer) ends that run as
``failed`` with the reason and the worker takes the next one.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

from server.settings import Settings
from trainer_core.client import ApiError, Client, Unreachable
from worker.child import signal_name

log = logging.getLogger(__name__)

# Set when the worker is asked to shut down (SIGTERM / Ctrl-C): the run's process gets SIGUSR1,
# stops at the next step with a resume checkpoint, and the run goes back to the queue.
WORKER_SHUTDOWN = threading.Event()
# A run process whose run is no longer its own (cancelled elsewhere, failed by the reaper past its
# project's longest run time) stops at its next step; one still alive this long after is killed.
LOST_KILL_AFTER_S = 120.0

SIGNAL_HINTS = {
    "SIGKILL": " (the kernel's out-of-memory killer sends SIGKILL; so does kill -9)",
    "SIGSEGV": " (a segmentation fault: native code crashed)",
    "SIGABRT": " (aborted, e.g. a failed assertion in native code)",
    "SIGBUS": " (a bus error in native code)",
}


def describe_exit(code: int | None) -> str:
    """The reason a run's process ended, as the run's error says it."""
    if code is None:
        return "The run's process did not exit."
    if code < 0:
        name = signal_name(-code) or f"signal {-code}"
        return f"The run's process was killed by {name}{SIGNAL_HINTS.get(name, '')}."
    return f"The run's process exited with code {code} before reporting a final status."


def describe_device(trainer_args: dict[str, Any], reserved: list[str] | None = None, world: int = 1) -> str:
    """What the run's ``device`` field says: ``cpu`` (``cpu x2``: two processes), or the GPU(s)
    reserved for it (``cuda:0,1 (NAME) x2``)."""
    accelerator = trainer_args.get("accelerator", "auto")
    if reserved:
        try:
            import torch

            name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA driver"
        except Exception:
            name = "no CUDA driver"
        return f"cuda:{','.join(reserved)} ({name})" + (f" x{world}" if world > 1 else "")
    if world > 1:
        return f"cpu x{world}"
    gpu = os.environ.get("RUNYARD_WORKER_GPU")
    if accelerator == "cpu":
        return "cpu"
    try:
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        name = torch.cuda.get_device_name(0)
    except Exception:  # no driver: the trainer will say so if a GPU was required
        return "cpu"
    return f"cuda:{gpu} ({name})" if gpu is not None else f"cuda:0 ({name})"


def _noop() -> None:
    """The forkserver's first child: returns at once (see ``Agent._start_forkserver``)."""


class Agent:
    """One per worker process (one Celery solo-pool process, the unit of GPU pinning)."""

    def __init__(self, settings: Settings, queues: list[str]) -> None:
        self.settings = settings
        self.client = Client(settings.url, settings.token or None, timeout=30)
        self.name = settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.queues = queues
        self.worker_id: int | None = None
        self.current_run: int | None = None
        self.work_dir = Path(settings.home).resolve() / "work"
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._context = multiprocessing.get_context("forkserver")
        from worker.gpus import GpuPool

        self.pool = GpuPool.from_env(Path(settings.home).resolve())

    # -- registration and liveness -------------------------------------------------------------
    def recipes(self) -> list[dict[str, Any]]:
        from worker.recipes import get_registry

        return [recipe.describe() for recipe in get_registry(self.settings.recipes).values()]

    def register(self, retry_for: float = 120.0) -> None:
        answer = self.client.request("POST", "/workers", json={"name": self.name, "queues": self.queues,
                                                               "recipes": self.recipes(), "gpus": self.pool.gpus},
                                     retry_for=retry_for)
        self.worker_id = int(answer["id"])
        log.info("registered with %s as worker %s (%s), recipes %s", self.settings.url, self.worker_id, self.name,
                 ", ".join(answer.get("recipes", [])))

    def start(self) -> Agent:
        self._start_forkserver()
        self.register()
        self._thread = threading.Thread(target=self._beat, name="runyard-worker-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self._done.wait(interval):
            try:
                self.client.request("POST", f"/workers/{self.worker_id}/heartbeat", json={"run_id": self.current_run})
            except ApiError as exc:
                if exc.status == 404:  # the server forgot us (a new database): register again
                    try:
                        self.register(retry_for=0)
                    except (ApiError, Unreachable):
                        pass
            except Unreachable:
                pass
            except Exception:  # liveness must not kill the worker
                log.warning("worker heartbeat failed", exc_info=True)

    def close(self) -> None:
        self._done.set()

    def _start_forkserver(self) -> None:
        """The forkserver imports torch, trainer_core and the recipes once; each run's process
        is forked from it. Its environment has no credentials (they are read into settings)."""
        for name in ("RUNYARD_TOKEN", "RUNYARD_BROKER_URL", "RUNYARD_DATABASE_URL", "CELERY_BROKER_URL"):
            os.environ.pop(name, None)
        os.environ["RUNYARD_RECIPES"] = self.settings.recipes
        # Also what a first run would import on its way: torch._dynamo (the first optimizer's
        # constructor imports it, 1.5 s) and sklearn.datasets (the digits recipes' loader);
        # a module that is not installed is skipped.
        self._context.set_forkserver_preload(["worker.forkserver_init", "worker.run_process", "torch._dynamo",
                                              "sklearn.datasets", *self._recipe_modules()])
        # Wait until the forkserver has imported everything (a first process forked from it
        # returns only then): until it has, a run's process could not start, and the run would
        # go without heartbeats. The worker says it is ready only after this.
        warm = self._context.Process(target=_noop, name="runyard-forkserver-warmup")
        warm.start()
        warm.join()

    def _recipe_modules(self) -> list[str]:
        return [m.strip() for m in self.settings.recipes.split(",") if m.strip()]

    # -- one run -----------------------------------------------------------------------------------
    def execute(self, run_id: int) -> str:
        """Claim ``run_id`` and train it in its own process; the final status (or skipped)."""
        try:
            spec = self.client.request("GET", f"/runs/{run_id}", retry_for=30)
        except ApiError as exc:
            if exc.status == 404:
                return "skipped"
            raise
        if spec["status"] != "queued":
            log.info("run %s is %s: nothing to do", run_id, spec["status"])
            return "skipped"
        from worker.gpus import gpus_needed, world_size

        trainer = spec.get("trainer") or {}
        need = gpus_needed(trainer, len(self.pool.gpus))
        world = world_size(trainer, len(self.pool.gpus))
        if world == 1 and not self.pool.gpus:
            need = 0  # a one-GPU run on a worker without GPUs: the trainer's error says so
        reserved: list[str] = []
        if need:
            got = self._reserve(run_id, need)
            if got is None:
                return "skipped"
            reserved = got
        try:
            try:
                device = describe_device(trainer, reserved, world)
                claim = self.client.request("POST", f"/runs/{run_id}/claim", json={
                    "worker": self.name, "device": device}, retry_for=30)
            except ApiError as exc:
                if exc.status == 409:
                    log.info("run %s was claimed by another delivery or cancelled", run_id)
                    return "skipped"
                raise
            refusal = self._refused(need)
            if refusal is not None:  # this host can never fit it (the server refuses it while it knows)
                self.report_crash(run_id, claim["attempt"], refusal, final=True)
                return "failed"
            self.current_run = run_id
            try:
                return self._supervise(claim, reserved, world)
            finally:
                self.current_run = None
        finally:
            if reserved:
                self.pool.release(run_id)

    def _refused(self, need: int) -> str | None:
        if need > len(self.pool.gpus):
            return (f"The run asks for {need} GPUs (trainer.devices); this worker has {len(self.pool.gpus)} "
                    f"({', '.join(self.pool.gpus) or 'none'}).")
        return None

    def _reserve(self, run_id: int, need: int) -> list[str] | None:
        """Reserve ``need`` of this host's GPUs for the run, waiting while they are busy (the run
        stays queued); None when the run is no longer queued. A run this host can never fit gets
        an empty list (it is claimed and failed with the reason)."""
        from celery.exceptions import Reject

        if need > len(self.pool.gpus):
            return []
        said = False
        next_check = time.monotonic() + 5.0
        while True:
            got = self.pool.reserve(need, run_id, prefer=os.environ.get("RUNYARD_WORKER_GPU"))
            if got is not None:
                return got
            if WORKER_SHUTDOWN.is_set():
                raise Reject("worker is shutting down", requeue=True)
            if not said:
                said = True
                print(f"runyard: run {run_id} waits for {need} free GPU(s) of {', '.join(self.pool.gpus)}", flush=True)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 5.0
                if self._status(run_id) not in ("queued", None):
                    return None
            time.sleep(0.25)

    def report_crash(self, run_id: int, attempt: int, error: str, final: bool = False) -> str | None:
        """The attempt crashed (a rank died): back to the queue counted, failed after max_attempts
        (``final``: failed now). The run's status after it (None when the server did not answer)."""
        print(f"runyard: run {run_id} attempt {attempt}: {error}", flush=True)
        try:
            if final:
                answer = self.client.request("POST", f"/runs/{run_id}/finish", json={
                    "status": "failed", "error": error, "attempt": attempt}, retry_for=60)
            else:
                answer = self.client.request("POST", f"/runs/{run_id}/requeue", json={
                    "attempt": attempt, "error": error}, retry_for=60)
            return str(answer.get("status"))
        except (ApiError, Unreachable) as exc:
            log.info("run %s: %s (not recorded: %s)", run_id, error, exc)
            return None

    def requeue(self, run_id: int, attempt: int, run_dir: Path) -> str:
        try:
            self.client.request("POST", f"/runs/{run_id}/requeue", json={"attempt": attempt}, retry_for=60)
            print(f"runyard: run {run_id} saved and requeued (worker shutting down)", flush=True)
            self._clean(run_dir)
            return "requeued"
        except ApiError as exc:
            log.warning("run %s could not be requeued: %s", run_id, exc)
            return "lost"

    def _supervise(self, claim: dict[str, Any], reserved: list[str] | None = None, world: int = 1) -> str:
        run_id, attempt = claim["run"]["id"], claim["attempt"]
        run_dir = self.work_dir / f"run-{run_id}-attempt-{attempt}"
        payload = {
            **claim, "url": self.settings.url, "run_dir": str(run_dir), "data_dir": str(self.settings.data_dir),
            "download_data": self.settings.download_data, "recipes": self.settings.recipes,
            "device": claim["run"].get("device") or "cpu", "worker_pid": os.getpid(),
            "home": str(Path(self.settings.home).resolve()),  # code runs cache requirements envs under it
        }
        if reserved:  # every rank sees the reserved GPUs; Trainer(devices=N) takes cuda:0..N-1 of them
            payload["cuda_visible_devices"] = ",".join(reserved)
            payload["devices"] = world
        elif world > 1:
            payload["devices"] = world
        if world > 1:
            from worker import ranks

            return ranks.supervise(self, claim, payload, world)
        from worker import run_process

        process = self._context.Process(target=run_process.main, args=(payload,), name=f"runyard-run-{run_id}")
        process.start()
        signalled = False
        beat_every = float(claim.get("heartbeat_interval") or 1.0)
        next_beat = time.monotonic() + beat_every
        lost_since: float | None = None
        while True:
            process.join(0.2)
            if process.exitcode is not None:
                break
            if time.monotonic() >= next_beat:
                # The worker vouches for the process it sees alive; the process heartbeats too
                # (and learns of a cancel that way), but a busy one may be late on a loaded machine.
                next_beat = time.monotonic() + beat_every
                if self._beat_run(run_id, attempt) is False:  # the run is no longer this attempt's
                    lost_since = lost_since or time.monotonic()
                else:
                    lost_since = None
            if lost_since is not None and time.monotonic() - lost_since > LOST_KILL_AFTER_S:
                # e.g. the reaper failed it past its project's longest run time: its process learned
                # it from its own heartbeat but did not stop (stuck outside a training step)
                log.warning("run %s is no longer this worker's; its process did not stop: killed", run_id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(cast(int, process.pid), signal.SIGKILL)
                lost_since = None
            if WORKER_SHUTDOWN.is_set() and not signalled:
                signalled = True
                try:
                    os.kill(cast(int, process.pid), signal.SIGUSR1)
                except ProcessLookupError:
                    pass
        code = process.exitcode
        if code == run_process.EXIT_REQUEUE:
            return self.requeue(run_id, attempt, run_dir)
        status = self._status(run_id)
        if status == "running":  # the process ended without a final status: say why
            reason = describe_exit(code)
            try:
                self.client.request("POST", f"/runs/{run_id}/finish",
                                    json={"status": "failed", "error": reason, "attempt": attempt}, retry_for=60)
                status = "failed"
            except ApiError as exc:
                log.info("run %s: %s (not recorded: %s)", run_id, reason, exc)
        self._clean(run_dir)
        return status or "lost"

    def _beat_run(self, run_id: int, attempt: int) -> bool | None:
        """Heartbeat the run for its process; False when the run is no longer this attempt's (409:
        its process learns it from its own token), None when no answer came."""
        try:
            self.client.request("POST", f"/runs/{run_id}/heartbeat", json={"attempt": attempt},
                                timeout=max(1.0, self.settings.heartbeat_timeout / 2))
            return True
        except ApiError as exc:
            return False if exc.status == 409 else None
        except Unreachable:
            return None
        except Exception:  # a heartbeat must never stop the supervision
            log.warning("heartbeat of run %s failed", run_id, exc_info=True)
            return None

    def _status(self, run_id: int) -> str | None:
        try:
            return self.client.request("GET", f"/runs/{run_id}", retry_for=30)["status"]
        except (ApiError, Unreachable):
            return None

    @staticmethod
    def _clean(run_dir: Path) -> None:
        """The server has everything; keep the folder only when the logger left a spool to sync."""
        if run_dir.is_dir() and not any(run_dir.rglob("spool*.jsonl")):
            shutil.rmtree(run_dir, ignore_errors=True)
