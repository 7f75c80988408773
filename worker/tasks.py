"""The one task: ``runyard.execute_run(run_id)``. It carries the run id only; the worker claims
the run over HTTP, which makes duplicate deliveries harmless."""

from __future__ import annotations

from celery.exceptions import Reject

from server.queue import TASK_NAME
from worker.agent import WORKER_SHUTDOWN
from worker.celery_app import app, get_agent


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_run(run_id: int) -> str:
    if WORKER_SHUTDOWN.is_set():
        # Fetched while this worker is stopping: hand the message back untouched for the next worker.
        raise Reject("worker is shutting down", requeue=True)
    try:
        agent = get_agent()
    except Exception as exc:  # not registered (server down): the message goes back
        raise Reject(f"this worker is not registered with the server ({exc})", requeue=True) from exc
    return agent.execute(int(run_id))
