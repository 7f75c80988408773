"""The worker's Celery app: ``celery -A worker.celery_app worker --pool solo`` (what
``runyard worker`` starts, one process per GPU).

It shares broker and task settings with the server's client (``server.queue.make_celery``).
When it is ready it registers with the server over HTTP (``RUNYARD_URL`` with the worker token
``RUNYARD_TOKEN``) and publishes its recipes; a shutdown request becomes "stop the run at the
next step, checkpoint it, put it back in the queue". It opens no database.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from celery import signals

from server.queue import DEFAULT_QUEUE, make_celery
from server.settings import forbid_peeking, get_settings

if TYPE_CHECKING:
    from worker.agent import Agent

log = logging.getLogger(__name__)

settings = get_settings()
forbid_peeking()  # a run's code (same user) must not read this process's token from /proc
app = make_celery(settings)
app.conf.update(
    include=["worker.tasks"],
    # One run at a time per process; the process is the unit of GPU pinning.
    worker_concurrency=1,
    worker_pool="solo",
    worker_redirect_stdouts=False,
    # The SQLite broker has no fanout exchange for remote control; Redis has.
    worker_enable_remote_control=not settings.broker_url.startswith("sqla+"),
)

_agent = None
_agent_lock = threading.Lock()


class _QuietReject(logging.Filter):
    """A task handed back to the broker (``Reject(requeue=True)``, e.g. fetched while the worker
    stops) is one warning line, not a traceback: Celery logs rejections with their stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        from celery.exceptions import Reject

        if record.exc_info and isinstance(record.exc_info[1], Reject):
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("celery.app.trace").addFilter(_QuietReject())


def get_agent() -> Agent:
    """The worker's agent, started (registered, forkserver up) on first use."""
    global _agent
    with _agent_lock:
        if _agent is None:
            from worker.agent import Agent

            queues = [q.name for q in app.amqp.queues.consume_from.values()] if app.amqp.queues.consume_from else []
            _agent = Agent(settings, queues or [DEFAULT_QUEUE]).start()
        return _agent


EXIT_CONFIG = 78  # EX_CONFIG: `runyard worker` does not restart a worker that exits with it


@signals.worker_ready.connect
def _register(**_: object) -> None:
    import os
    import sys

    from trainer_core.client import ApiError, Unreachable

    settings.ensure_dirs()
    try:
        agent = get_agent()
    except ApiError as exc:
        if exc.status in (401, 403):
            print(f"runyard worker: the server at {settings.url} refused this worker's token ({exc.detail}). "
                  "Make one with `runyard token create --worker` on the server and set RUNYARD_TOKEN.",
                  file=sys.stderr, flush=True)
            os._exit(EXIT_CONFIG)
        raise
    except Unreachable as exc:
        print(f"runyard worker: cannot reach the server at {settings.url} ({exc}); set RUNYARD_URL.",
              file=sys.stderr, flush=True)
        os._exit(EXIT_CONFIG)
    print(f"runyard worker ready: {agent.name}, queues {', '.join(agent.queues)}, server {settings.url}", flush=True)


@signals.worker_shutting_down.connect
def _stop_runs(**_: object) -> None:
    from worker.agent import WORKER_SHUTDOWN

    WORKER_SHUTDOWN.set()
    if _agent is not None:
        _agent.close()


# Celery's -A finds the app as ``celery``/``app``.
celery = app


def _load_recipes_now() -> None:
    """Import the recipes (and torch) when the worker starts: a broken RUNYARD_RECIPES module
    stops the worker with its error at once."""
    from worker.recipes import get_registry

    get_registry(settings.recipes)


_load_recipes_now()
