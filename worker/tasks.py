"""The one task: ``runyard.execute_run(run_id)``. It carries the run id only; everything else is
read from the database, and the claim makes duplicate deliveries harmless."""

from __future__ import annotations

from celery.exceptions import Reject

from server.queue import TASK_NAME
from server.settings import get_settings
from worker.celery_app import app
from worker.control import WORKER_SHUTDOWN


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_run(run_id: int) -> str:
    if WORKER_SHUTDOWN.is_set():
        # Fetched while this worker is stopping: hand the message back untouched for the next worker.
        raise Reject("worker is shutting down", requeue=True)
    from worker.runner import execute_run as run

    return run(int(run_id), get_settings())
