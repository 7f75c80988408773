"""The Celery client side: how the server (and CLI) put a run on the queue.

Tasks carry the run id only. The worker (``worker/celery_app.py``) builds its Celery
app with :func:`make_celery` too, so both sides agree on broker, queue and task name.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as sqla_transport
from kombu.transport.sqlalchemy.models import metadata as sqla_metadata
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError

from server.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_NAME = "runyard.execute_run"
DEFAULT_QUEUE = "runyard"
SQLITE_TRANSPORT = "runyard-sqla"
SQLITE_POLLING_INTERVAL_S = 0.1


class SQLiteChannel(sqla_transport.Channel):
    """kombu's SQLAlchemy channel with two fixes for the embedded SQLite broker: kombu hands
    every transport option to ``create_engine`` (so ``polling_interval`` would break it), and
    SQLite shared by the server and worker processes wants WAL and a busy timeout."""

    def _engine_from_config(self) -> Engine:
        conninfo = self.connection.client
        engine = create_engine(conninfo.hostname, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        # Several processes open a fresh broker file at once (`runyard up` starts the server and
        # two workers together): kombu's unlocked create_all then fails in all but one with
        # "table kombu_queue already exists". Create the tables under a lock on the file.
        lock_path = Path(str(engine.url.database) + ".lock") if engine.url.database else None
        if lock_path is not None:
            import fcntl

            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    sqla_metadata.create_all(engine)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        return engine

    def _get_or_create(self, queue: str) -> Any:  # kombu's signature
        """kombu's, but a queue row another process inserted first is read, not an error
        (kombu catches OperationalError only; SQLite raises IntegrityError for the unique name)."""
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class SQLiteTransport(sqla_transport.Transport):
    Channel = SQLiteChannel
    polling_interval = SQLITE_POLLING_INTERVAL_S


TRANSPORT_ALIASES.setdefault(SQLITE_TRANSPORT, "server.queue:SQLiteTransport")


def broker_url_for_kombu(url: str) -> str:
    """``sqla+sqlite:///...`` runs on :class:`SQLiteTransport`; other URLs are kombu's own."""
    if url.startswith("sqla+sqlite:"):
        return SQLITE_TRANSPORT + url.removeprefix("sqla")
    return url


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.broker_url.startswith("sqla+sqlite:///"):
        Path(settings.broker_url.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    app = Celery("runyard", broker=broker_url_for_kombu(settings.broker_url), set_as_current=False)
    # Redis: a SIGKILLed worker's message would come back after the visibility timeout; the
    # heartbeat reaper requeues the run long before that (docs/architecture.md).
    transport_options = {} if settings.broker_url.startswith("sqla+") else {"visibility_timeout": 3600}
    app.conf.update(
        task_default_queue=DEFAULT_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


@lru_cache(maxsize=4)
def _client(broker_url: str) -> Celery:
    return make_celery(Settings(broker_url=broker_url))


ENQUEUE_ATTEMPTS = 3


def enqueue_run(run_id: int, task_id: str, queue: str = DEFAULT_QUEUE, settings: Settings | None = None) -> None:
    """Send the task that executes ``run_id``; ``task_id`` is stored on the run (for revoke).

    Each send uses its own broker connection, retried with a fresh one: with the SQLite broker a
    worker starting up can hold the file's lock while we publish, and kombu's in-place retry then
    reuses a channel it has already closed (``'NoneType' object has no attribute 'client'``).
    Sending the same task id twice is harmless: the worker's claim step skips a duplicate.
    """
    settings = settings or get_settings()
    app = _client(settings.broker_url)
    for attempt in range(1, ENQUEUE_ATTEMPTS + 1):
        try:
            with app.connection_for_write() as connection:
                app.send_task(TASK_NAME, args=[run_id], task_id=task_id, queue=queue, connection=connection)
            return
        except Exception as exc:  # retried, then raised to the caller
            if attempt == ENQUEUE_ATTEMPTS:
                raise
            log.warning("enqueue of run %s failed (%s: %s); retrying with a new broker connection",
                        run_id, type(exc).__name__, exc)
            time.sleep(0.2 * attempt)


def revoke(task_id: str, settings: Settings | None = None) -> None:
    """Best effort: brokers without broadcast (the SQLite transport) skip this; the worker
    also refuses to start a run whose status is no longer ``queued``."""
    settings = settings or get_settings()
    try:
        _client(settings.broker_url).control.revoke(task_id)
    except Exception as exc:  # revoke is an optimisation, never an error for the user
        log.debug("revoke of %s skipped: %s", task_id, exc)
