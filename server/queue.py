"""The Celery client side: how the server (and CLI) put a run on the queue.

Tasks carry the run id only. The worker (``worker/celery_app.py``) builds its Celery
app with :func:`make_celery` too, so both sides agree on broker, queue and task name.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from celery import Celery

from server.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_NAME = "runyard.execute_run"
DEFAULT_QUEUE = "runyard"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.broker_url.startswith("sqla+sqlite:///"):
        Path(settings.broker_url.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    app = Celery("runyard", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=DEFAULT_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # The SQLAlchemy transport polls its table; 0.1 s keeps submit->running well under a second.
        broker_transport_options={"polling_interval": 0.1, "visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


@lru_cache(maxsize=4)
def _client(broker_url: str) -> Celery:
    return make_celery(Settings(broker_url=broker_url))


def enqueue_run(run_id: int, task_id: str, queue: str = DEFAULT_QUEUE, settings: Settings | None = None) -> None:
    """Send the task that executes ``run_id``; ``task_id`` is stored on the run (for revoke)."""
    settings = settings or get_settings()
    _client(settings.broker_url).send_task(TASK_NAME, args=[run_id], task_id=task_id, queue=queue)


def revoke(task_id: str, settings: Settings | None = None) -> None:
    """Best effort: brokers without broadcast (the SQLite transport) skip this; the worker
    also refuses to start a run whose status is no longer ``queued``."""
    settings = settings or get_settings()
    try:
        _client(settings.broker_url).control.revoke(task_id)
    except Exception as exc:  # noqa: BLE001 - revoke is an optimisation, never an error for the user
        log.debug("revoke of %s skipped: %s", task_id, exc)
