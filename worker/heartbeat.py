"""Heartbeats of running runs and the reaper that requeues runs whose worker died.

See docs/architecture.md, "Decision: heartbeats, not only broker redelivery": the SQLite broker
never redelivers a message fetched by a SIGKILLed worker and Redis only after an hour, so
each running run is renewed every few seconds and any worker (or the server) requeues runs
whose heartbeat is older than ``RUNYARD_HEARTBEAT_TIMEOUT``.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server import store
from server.settings import Settings
from worker import store_ext

log = logging.getLogger(__name__)


def heartbeat_interval(timeout: float) -> float:
    """A quarter of the timeout, between 0.2 s and 5 s: three missed beats before a requeue."""
    return max(0.2, min(5.0, timeout / 4))


class RunHeartbeat:
    """Renews ``heartbeat_at`` of one run from a daemon thread, and learns on the way whether a
    cancel was requested (``cancel``) or the run was taken away from this attempt (``lost``)."""

    def __init__(self, engine: Engine, run_id: int, attempt: int, interval: float) -> None:
        self.engine, self.run_id, self.attempt, self.interval = engine, run_id, attempt, interval
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.stop_requested = threading.Event()  # set by the cancel, the loss, or a worker shutdown
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"runyard-heartbeat-{run_id}", daemon=True)

    def start(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def beat(self) -> str:
        with Session(self.engine) as session:
            state = store_ext.heartbeat_attempt(session, self.run_id, self.attempt)
        if state == store_ext.CANCEL:
            self.cancel.set()
            self.stop_requested.set()
        elif state == store_ext.LOST:
            self.lost.set()
            self.stop_requested.set()
        return state

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the run; the next beat retries
                log.warning("heartbeat of run %s failed", self.run_id, exc_info=True)

    def close(self, join: bool = True) -> None:
        self._done.set()
        if join:
            self._thread.join(timeout=5)


def reap_stale_runs(settings: Settings, engine: Engine) -> list[int]:
    """Requeue (and enqueue again) the running runs whose heartbeat is stale; returns their ids."""
    from server.queue import enqueue_run

    with Session(engine) as session:
        runs = store.requeue_stale_runs(session, settings.heartbeat_timeout)
        requeued = [(run.id, run.task_id, run.queue) for run in runs]
    for run_id, task_id, run_queue in requeued:
        log.warning("run %s lost its worker (no heartbeat for %s s): requeued", run_id, settings.heartbeat_timeout)
        enqueue_run(run_id, task_id, queue=run_queue, settings=settings)
    return [run_id for run_id, *_ in requeued]


class Reaper:
    """Calls :func:`reap_stale_runs` every half timeout from a daemon thread."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.interval = max(0.5, settings.heartbeat_timeout / 2)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runyard-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            try:
                reap_stale_runs(self.settings, self.engine)
            except Exception:  # noqa: BLE001 - keep reaping; the database may come back
                log.warning("reaping stale runs failed", exc_info=True)
            if self._done.wait(self.interval):
                return

    def close(self, join: bool = True) -> None:
        self._done.set()
        if join:
            self._thread.join(timeout=5)
