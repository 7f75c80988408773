"""The worker's Celery app: ``celery -A worker.celery_app worker --pool solo`` (what
``runyard worker`` starts, one process per GPU).

It shares broker and task settings with the server's client (``server.queue.make_celery``).
Each worker process also runs the reaper that requeues runs whose worker died, and turns a
shutdown request into "stop the run at the next step, checkpoint it, put it back in the queue".
"""

from __future__ import annotations

import logging

from celery import signals

from server.queue import make_celery
from server.settings import get_settings

log = logging.getLogger(__name__)

settings = get_settings()
app = make_celery(settings)
app.conf.update(
    include=["worker.tasks"],
    # One run at a time per process; the process is the unit of GPU pinning.
    worker_concurrency=1,
    worker_pool="solo",
    # The run's own capture turns prints into log lines; Celery's logging proxy would get in between.
    worker_redirect_stdouts=False,
    # The SQLite broker has no fanout exchange for remote control; Redis has.
    worker_enable_remote_control=not settings.broker_url.startswith("sqla+"),
)

_reaper = None


@signals.worker_ready.connect
def _start_reaper(**_: object) -> None:
    global _reaper
    from server.db import get_engine
    from worker.heartbeat import Reaper

    settings.ensure_dirs()
    _reaper = Reaper(settings, get_engine(settings.database_url)).start()


@signals.worker_shutting_down.connect
def _stop_runs(**_: object) -> None:
    from worker.control import WORKER_SHUTDOWN

    WORKER_SHUTDOWN.set()
    if _reaper is not None:
        _reaper.close(join=False)  # a signal handler: set, don't wait


# Celery's -A finds the app as ``celery``/``app``.
celery = app


def _load_recipes_now() -> None:
    """Import the recipes (and torch) when the worker starts: a broken RUNYARD_RECIPES module
    stops the worker with its error at once, and the first run does not pay the imports."""
    from worker.recipes import get_registry

    get_registry(settings.recipes)
    import worker.runner  # noqa: F401


_load_recipes_now()
