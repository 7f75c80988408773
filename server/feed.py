"""One change feed per server process for every live event stream (issue 11, point 3).

Before, each open stream polled the database itself every ``RUNYARD_SSE_POLL_INTERVAL``: 400
idle streams took the server to 99 % CPU. Now one asyncio task (:class:`ChangeFeed`) polls, once
per interval and in one threadpool call, for new rows only:

- ``metric_points``, ``log_lines``, ``checkpoints`` with an id above its high-water marks, grouped
  by run (a range of the primary key, at most ``store.FEED_BATCH`` rows a table and poll);
- ``runs`` with ``updated_at`` in the last ``OVERLAP`` (writers stamp before they commit, so a
  change may show up late), each (run, ``updated_at``) told once;
- ``run_deletions`` (the tombstones ``store.delete_run`` writes) above its mark;

and then wakes only the subscribers concerned: a run's own streams for a change of that run, and
the run-list streams whose caller may see the changed run's project. A woken stream does its own
bounded read from its own cursor (``server/api/events.py``), so what it sends and what a
``Last-Event-ID`` resumes are exactly what they were. With nothing changing the feed costs one
poll per interval, whatever the number of streams, and an idle stream wakes only to send its
keep-alive.

The feed polls the database, not an in-process signal, so writes by other server processes (or
workers writing directly) are seen the same way. On PostgreSQL, ids of concurrent transactions of
different runs can become visible out of order; every ``RESCAN_S`` the feed looks again at the
last ``RESCAN_WINDOW_S`` of ids and wakes the runs whose newest row it had not told yet (on SQLite
writers are serialized, so ids commit in order). A feed that starts (its first stream, or again
after a time without any) takes the newest ids as its marks; its first rescan also looks at the
``PRIME_MARGIN`` ids below them, for rows that were in flight then.

The callers' credentials are re-checked by the feed too, once per distinct caller (a session, a
token) every ``RECHECK_S``: when a session or token ends, a user is disabled or the projects a
caller may see change, that caller's streams are woken and their own read ends them (``ended``,
``deleted``) as before.

:class:`StreamLimiter` counts open streams per client (per server process) for
``RUNYARD_MAX_STREAMS_PER_CLIENT``.

One feed per event loop (``feed_for(app)``): uvicorn has one loop per process; tests that run an
app under several ``TestClient`` loops get one feed in each. It starts with the app's lifespan or,
without one, with its first subscriber, and polls nothing while no stream is open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from fastapi.concurrency import run_in_threadpool

from server import auth, store
from server.deps import app_state
from server.models import utcnow

log = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=5)  # how far back the runs poll looks (stamped before commit)
RECHECK_S = 2.0  # credentials and visible projects, once per distinct caller
RESCAN_S = 1.0  # PostgreSQL only: look again at the last RESCAN_WINDOW_S of ids
RESCAN_WINDOW_S = 3.0
PRIME_MARGIN = store.FEED_BATCH  # ids below a new feed's first marks its first rescan looks at again
ROW_TABLES = ("metrics", "logs", "checkpoints")
_UNKNOWN = object()


def principal_key(principal: auth.Principal) -> tuple:
    """Streams of the same caller share one credential re-check."""
    return (principal.kind, principal.session_id, principal.token_id, principal.user_id, principal.project_id,
            principal.is_admin)


class Subscriber:
    """One open stream: ``run_id`` for a run's stream, None for the run list."""

    __slots__ = ("principal", "key", "run_id", "_event")

    def __init__(self, principal: auth.Principal, run_id: int | None = None) -> None:
        self.principal = principal
        self.key = principal_key(principal)
        self.run_id = run_id
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:
        """True when woken within ``timeout`` seconds."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class _Caller:
    principal: auth.Principal
    subscribers: set[Subscriber] = field(default_factory=set)
    snapshot: Any = _UNKNOWN  # (still valid, visible project ids or None for all)

    @property
    def visible(self) -> Any:
        return _UNKNOWN if self.snapshot is _UNKNOWN else self.snapshot[1]


@dataclass
class _Poll:
    """What one poll found (made in a worker thread, applied in the event loop)."""

    priming: bool = False
    marks: dict[str, int] | None = None
    rows: dict[str, dict[int, int]] = field(default_factory=dict)
    rescanned: dict[str, dict[int, int]] | None = None
    rescan_base: dict[str, int] | None = None
    runs: list[tuple[int, int, datetime]] = field(default_factory=list)
    horizon: datetime | None = None
    deletions: list[Any] = field(default_factory=list)
    callers: dict[tuple, tuple] = field(default_factory=dict)


class ChangeFeed:
    def __init__(self, sessionmaker: Any, interval: float, shutting_down: threading.Event,
                 dialect: str = "sqlite") -> None:
        self.sessionmaker = sessionmaker
        self.interval = interval
        self.shutting_down = shutting_down
        self.rescan = dialect == "postgresql"
        self.closed = False
        self.polls = 0  # polls of the database made (for tests and diagnostics)
        self.ticks = 0  # intervals gone by (polls + the idle ones)
        self.by_run: dict[int, set[Subscriber]] = {}
        self.lists: set[Subscriber] = set()
        self.callers: dict[tuple, _Caller] = {}
        self._count = 0
        self._primed = False
        self._marks: dict[str, int] = {}
        self._seen_runs: dict[int, datetime] = {}
        self._told: dict[str, dict[int, int]] = {name: {} for name in ROW_TABLES}
        self._history: collections.deque[tuple[float, dict[str, int]]] = collections.deque()
        self._last_recheck = 0.0
        self._last_rescan = 0.0
        self._recheck_now = False
        self._last_failure_log = -1e9
        self._prime_base: tuple[float, dict[str, int]] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------------- subscribers

    @property
    def subscribers(self) -> int:
        return self._count

    def subscribe(self, sub: Subscriber) -> None:
        self.start()
        if sub.run_id is None:
            self.lists.add(sub)
        else:
            self.by_run.setdefault(sub.run_id, set()).add(sub)
        caller = self.callers.get(sub.key)
        if caller is None:
            caller = self.callers[sub.key] = _Caller(sub.principal)
            self._recheck_now = True
        caller.subscribers.add(sub)
        self._count += 1
        if self.closed or self.shutting_down.is_set():
            sub.wake()

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.run_id is None:
            if sub not in self.lists:
                return
            self.lists.discard(sub)
        else:
            subs = self.by_run.get(sub.run_id)
            if subs is None or sub not in subs:
                return
            subs.discard(sub)
            if not subs:
                del self.by_run[sub.run_id]
        caller = self.callers.get(sub.key)
        if caller is not None:
            caller.subscribers.discard(sub)
            if not caller.subscribers:
                del self.callers[sub.key]
        self._count -= 1
        if not self._count:
            self._primed = False  # nothing is polled meanwhile; the next stream starts afresh

    def _all(self) -> list[Subscriber]:
        return [sub for subs in self.by_run.values() for sub in subs] + list(self.lists)

    def wake_all(self) -> None:
        for sub in self._all():
            sub.wake()

    # ---------------------------------------------------------------- the task

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="runyard-change-feed")

    async def stop(self) -> None:
        self.closed = True
        self.wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                if self.shutting_down.is_set():
                    self.wake_all()  # each stream sees the flag and ends: the server can stop
                elif self._count:
                    await self.poll_once()
            except Exception:  # the feed must outlive any one bad poll
                log.exception("the change feed failed a poll; it starts afresh")
                self._primed = False
            self.ticks += 1
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> None:
        now = time.monotonic()
        priming = not self._primed
        callers = None
        if self._recheck_now or now - self._last_recheck >= RECHECK_S:
            self._recheck_now, self._last_recheck = False, now
            callers = [(key, caller.principal) for key, caller in self.callers.items()]
        rescan_base = None
        if self.rescan and not priming and self._prime_base and now - self._prime_base[0] >= RESCAN_WINDOW_S:
            rescan_base, self._prime_base, self._last_rescan = self._prime_base[1], None, now
        elif self.rescan and not priming and now - self._last_rescan >= RESCAN_S:
            while len(self._history) > 1 and now - self._history[1][0] >= RESCAN_WINDOW_S:
                self._history.popleft()
            if self._history and now - self._history[0][0] >= RESCAN_WINDOW_S:
                self._last_rescan = now
                rescan_base = self._history[0][1]
        try:
            found = await run_in_threadpool(self._read, priming, dict(self._marks), rescan_base, callers)
        except Exception as exc:  # the database may be down a moment: start afresh, wake all
            if now - self._last_failure_log >= 30:  # once per 30 s while it lasts, not at every interval
                self._last_failure_log = now
                log.warning("the change feed could not poll the database (retrying every %s s): %s",
                            self.interval, exc, exc_info=True)
            self._primed = False
            return
        self.polls += 1
        self._apply(found, now)

    def _read(self, priming: bool, marks: dict[str, int], rescan_base: dict[str, int] | None,
              callers: list[tuple[tuple, auth.Principal]] | None) -> _Poll:
        """One poll of the database, in a worker thread: a handful of range queries."""
        session = self.sessionmaker()
        try:
            found = _Poll(priming=priming)
            found.horizon = utcnow() - OVERLAP
            if priming:
                found.marks = store.feed_marks(session)
            else:
                found.rows = store.feed_new_rows(session, marks)
                found.deletions = store.run_deletions_after(session, marks["deletions"])
                if rescan_base is not None:
                    found.rescan_base = rescan_base
                    found.rescanned = store.feed_new_rows(session, rescan_base)
            found.runs = store.runs_touched_since(session, found.horizon)
            for key, principal in callers or ():
                valid = auth.still_valid(session, principal)
                visible: set[int] | frozenset[int] | None = (
                    auth.visible_projects(session, principal) if valid else frozenset())
                found.callers[key] = (valid, None if visible is None else frozenset(visible))
            return found
        finally:
            session.close()

    def _apply(self, found: _Poll, now: float) -> None:
        woken: set[Subscriber] = set()
        changed_runs: set[int] = set()
        changed_projects: set[int] = set()
        if found.priming:
            self._marks = dict(found.marks or {})
            self._seen_runs = {run_id: when for run_id, _, when in found.runs}
            self._told = {name: {} for name in ROW_TABLES}
            self._history.clear()
            if self.rescan:  # ids below the first marks may still be in flight: the first rescan looks lower
                self._prime_base = (now, {name: max(0, mark - PRIME_MARGIN) for name, mark in self._marks.items()})
            self._primed = True
            woken.update(self._all())  # whatever happened before the marks were taken: read once
        else:
            for name in ROW_TABLES:
                rows = found.rows.get(name, {})
                changed_runs.update(rows)
                if self.rescan:  # what the rescan compares with (only PostgreSQL rescans)
                    told = self._told[name]
                    for run_id, newest in rows.items():
                        if newest > told.get(run_id, 0):
                            told[run_id] = newest
                if rows:
                    self._marks[name] = max(self._marks[name], max(rows.values()))
            if found.rescanned is not None and found.rescan_base is not None:
                for name in ROW_TABLES:
                    told = self._told[name]
                    for run_id, newest in found.rescanned[name].items():
                        if newest > told.get(run_id, 0):  # committed after a later id was seen
                            told[run_id] = newest
                            changed_runs.add(run_id)
                    base = found.rescan_base[name]
                    self._told[name] = {run_id: newest for run_id, newest in told.items() if newest > base}
            for row in found.deletions:
                changed_runs.add(row.run_id)
                changed_projects.add(row.project_id)
                self._marks["deletions"] = max(self._marks["deletions"], row.id)
            for run_id, project_id, when in found.runs:
                if self._seen_runs.get(run_id) != when:
                    self._seen_runs[run_id] = when
                    changed_runs.add(run_id)
                    changed_projects.add(project_id)
            if found.horizon is not None:
                horizon = found.horizon
                self._seen_runs = {run_id: when for run_id, when in self._seen_runs.items() if when > horizon}
            if self.rescan:
                self._history.append((now, dict(self._marks)))
        for run_id in changed_runs:
            woken.update(self.by_run.get(run_id, ()))
        if changed_projects:
            for sub in self.lists:
                caller = self.callers.get(sub.key)
                visible = _UNKNOWN if caller is None else caller.visible
                if visible is _UNKNOWN or visible is None or cast("frozenset[int]", visible) & changed_projects:
                    woken.add(sub)
        for key, snapshot in found.callers.items():
            caller = self.callers.get(key)
            if caller is None:
                continue
            if caller.snapshot is not _UNKNOWN and caller.snapshot != snapshot:
                woken.update(caller.subscribers)  # their own read ends them or drops what they lost
            caller.snapshot = snapshot
        for sub in woken:
            sub.wake()


def feed_for(app: Any) -> ChangeFeed:
    """The change feed of the running event loop (one per server process under uvicorn)."""
    loop = asyncio.get_running_loop()
    feeds = getattr(app.state, "change_feeds", None)
    if feeds is None:
        feeds = app.state.change_feeds = {}
    feed = feeds.get(loop)
    if feed is None:
        for old_loop in [other for other in feeds if other.is_closed()]:
            del feeds[old_loop]
        settings = app.state.settings
        feed = feeds[loop] = ChangeFeed(app.state.sessionmaker, settings.sse_poll_interval, app.state.shutting_down,
                                        app.state.engine.dialect.name)
    return feed


class StreamLease:
    """One open stream counted against its client; ``release`` is idempotent."""

    __slots__ = ("limiter", "client", "_released")

    def __init__(self, limiter: StreamLimiter, client: str) -> None:
        self.limiter, self.client, self._released = limiter, client, False

    def release(self) -> None:
        with self.limiter.lock:
            if self._released:
                return
            self._released = True
            left = self.limiter.open[self.client] - 1
            if left:
                self.limiter.open[self.client] = left
            else:
                del self.limiter.open[self.client]


def limiter_for(app: Any) -> StreamLimiter:
    return app_state(app, "stream_limiter", StreamLimiter)


class StreamLimiter:
    """Open live streams per client in this server process (``RUNYARD_MAX_STREAMS_PER_CLIENT``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}

    def acquire(self, client: str, limit: int) -> StreamLease | None:
        with self.lock:
            held = self.open.get(client, 0)
            if held >= limit:
                return None
            self.open[client] = held + 1
        return StreamLease(self, client)


def client_of(request: Any) -> str:
    """Whom a stream is counted against: the token, else the logged-in user, else the address."""
    principal = request.state.principal
    if principal.kind == "session" and principal.user_id is not None:
        return f"user {principal.user_id}"
    if principal.token_id is not None:
        return f"token {principal.token_id}"
    client = request.client
    return f"address {client.host if client else 'unknown'}"
