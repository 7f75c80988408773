"""Server-Sent Events, woken by the server process's one change feed (``server/feed.py``).

``GET /api/v1/runs/{id}/events``: events ``metrics``, ``log``, ``checkpoint``, ``status``. The
event id is ``<metric id>.<log id>.<checkpoint id>``, the last row of each kind sent, so a
client reconnecting with ``Last-Event-ID`` (or ``?cursor=``) gets exactly what it missed.
Without one the stream starts with a ``status`` event and then only new rows.

``GET /api/v1/events``: event ``run`` ``{"action": "created"|"updated"|"deleted", "run"}``; it
never lists every run: changes come by ``updated_at``, deletions from the ``run_deletions``
tombstones.

No stream polls the database on its own: the change feed polls once per
``RUNYARD_SSE_POLL_INTERVAL`` for new rows and wakes the streams concerned, which then read
from their own cursor (``RunEventPoller`` / ``RunListPoller``, one bounded read each; the run-list
streams woken by one feed poll share one read of the changed runs, ``RecentRuns``). The feed
also re-checks each caller every few seconds: a logout, a revoked token, a disabled user or a
role taken away wakes the caller's streams, whose read ends them (``ended`` / ``deleted``).
A client that goes away is noticed by Starlette (it cancels the stream); a server shutting down
ends every stream within one interval. Open streams are capped per client
(``RUNYARD_MAX_STREAMS_PER_CLIENT``, 429).
"""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from server import auth, store
from server.deps import RunId, app_state
from server.errors import ApiError
from server.feed import OVERLAP, Subscriber, client_of, feed_for, limiter_for
from server.schemas import checkpoint_out, run_out
from server.store import INT64_MAX, encode_float

router = APIRouter(prefix="/api/v1", tags=["events"])

# fields a run event does not carry (they are read with the run or the list): sent empty they would wipe what a
# page already shows when it merges the event into its row
_NOT_IN_EVENTS = {"tags", "note", "note_html", "values"}

KEEPALIVE_S = 15.0
RECENT_WINDOW = 6 * OVERLAP  # what the run-list streams woken by one feed poll share (RecentRuns)
POINTS_PER_EVENT = 5000
LINES_PER_EVENT = 2000
RETRY_AFTER_S = 5
CREDENTIALS_ENDED = "The session or token this stream was opened with ended (logout, revocation, expiry)."
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def format_event(event: str, data: object, event_id: str | None = None) -> str:
    out = f"event: {event}\n"
    if event_id is not None:
        out += f"id: {event_id}\n"
    return out + f"data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def parse_cursor(raw: str | None) -> tuple[int, int, int] | None:
    if not raw:
        return None
    try:
        parts = [int(p) for p in raw.strip().split(".")]
    except ValueError:
        return None
    if len(parts) != 3 or any(not 0 <= p <= INT64_MAX for p in parts):  # ids are 64-bit
        return None
    return parts[0], parts[1], parts[2]


def _point(row: Any) -> dict[str, Any]:  # a result row
    value = row.value
    return {"id": row.id, "key": row.key, "step": row.step, "epoch": row.epoch,
            "value": math.nan if value is None else value, "wall_time": row.wall_time}


class RunRead:
    """What one read of a run's new rows found: the run, its ``metrics`` / ``log`` /
    ``checkpoint`` events, the cursor after them, and whether a limit cut the read."""

    __slots__ = ("run", "status_key", "status", "events", "cursor", "more")

    def __init__(self, run: Any, events: list[str], cursor: tuple[int, int, int], more: bool,
                 public_url: str = "") -> None:
        self.run, self.events, self.cursor, self.more = run, events, cursor, more
        # encoded while the reading session is open: other streams use it after it closed
        self.status_key = None if run is None else (run.status, run.updated_at, run.cancel_requested)
        self.status = None if run is None else format_event(
            "status", run_out(run, public_url).model_dump(mode="json", exclude=_NOT_IN_EVENTS),
            ".".join(str(n) for n in cursor))


def read_run(session: Any, run_id: int, cursor: tuple[int, int, int], public_url: str) -> RunRead:
    """The rows of run ``run_id`` after ``cursor``, as events (one bounded read)."""
    run = store.get_run(session, run_id)
    if run is None:
        return RunRead(None, [], cursor, False)
    m, lg, c = cursor
    points = store.metric_points_after(session, run_id, m, limit=POINTS_PER_EVENT)
    lines = store.log_lines_after(session, run_id, lg, limit=LINES_PER_EVENT)
    checkpoints = store.checkpoints_after(session, run_id, c)
    more = len(points) >= POINTS_PER_EVENT or len(lines) >= LINES_PER_EVENT
    if points:
        m = points[-1].id
    if lines:
        lg = lines[-1].id
    if checkpoints:
        c = checkpoints[-1].id
    event_id = f"{m}.{lg}.{c}"
    events: list[str] = []
    if points:
        payload = [_point(p) for p in points]
        for p in payload:
            p["value"] = encode_float(p["value"])
        events.append(format_event("metrics", {"points": payload}, event_id))
    if lines:
        events.append(format_event("log", {"lines": [
            {"id": ln.id, "stream": ln.stream, "time": ln.time.isoformat(), "text": ln.text} for ln in lines
        ]}, event_id))
    for checkpoint in checkpoints:
        events.append(format_event("checkpoint", checkpoint_out(checkpoint).model_dump(mode="json"), event_id))
    return RunRead(run, events, (m, lg, c), more, public_url)


class SharedRunReads:
    """The streams of one run that one change-feed poll woke, at the same cursor (the usual case:
    several dashboards on one run), share one read and one encoding of its new rows. Entries of
    older polls are dropped; each stream still checks its own caller."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation: object | None = None
        self.entries: dict[tuple, tuple[threading.Lock, list[RunRead]]] = {}

    def read(self, session: Any, generation: object, run_id: int, cursor: tuple[int, int, int],
             public_url: str) -> RunRead:
        with self.lock:
            if generation != self.generation:
                self.generation, self.entries = generation, {}
            entry = self.entries.setdefault((run_id, cursor), (threading.Lock(), []))
        lock, found = entry
        with lock:  # the first stream reads; the others at the same cursor wait for it and reuse
            if not found:
                found.append(read_run(session, run_id, cursor, public_url))
            return found[0]


def shared_run_reads(app: Any) -> SharedRunReads:
    return app_state(app, "shared_run_reads", SharedRunReads)


class RunEventPoller:
    """One read for one run's stream (runs in a worker thread)."""

    def __init__(self, request: Request, run_id: RunId, cursor: tuple[int, int, int] | None) -> None:
        self.app = request.app
        self.run_id = run_id
        self.cursor = cursor
        self.status_key: tuple | None = None
        self.principal = request.state.principal
        self.more = False  # the last read was cut at a limit: read again at once
        self.shared: object | None = None  # set by the stream before a read the change feed woke

    def poll(self) -> list[str]:
        session = self.app.state.sessionmaker()
        try:
            if not auth.still_valid(session, self.principal):
                return [format_event("ended", {"reason": CREDENTIALS_ENDED})]
            if self.cursor is None:
                self.cursor = store.event_cursors(session, self.run_id)
            public_url = self.app.state.settings.public_url
            if self.shared is not None:
                read = shared_run_reads(self.app).read(session, self.shared, self.run_id, self.cursor, public_url)
            else:
                read = read_run(session, self.run_id, self.cursor, public_url)
            if read.run is None or not self._may_read(session, read.run.project_id):
                return [format_event("deleted", {"id": self.run_id})]
            self.cursor, self.more = read.cursor, read.more
            events = list(read.events)
            if read.status_key != self.status_key:
                self.status_key = read.status_key
                events.append(cast(str, read.status))  # a status_key change comes with its status
            return events
        finally:
            session.close()

    def _may_read(self, session: Any, project_id: int) -> bool:
        """A user whose role was taken away (or who logged out) stops getting the run's events."""
        if not self.principal.is_user:
            return True  # a run's own token: checked when the stream opened
        return auth.role_in(session, self.principal, project_id) is not None


async def _stream(request: Request, poller: Any, sub: Subscriber, lease: Any) -> AsyncIterator[str]:
    """Read once, then again only when the change feed wakes ``sub``; a keep-alive after
    ``KEEPALIVE_S`` of silence. Ends on ``deleted`` / ``ended``, when the server shuts down, or
    when the client goes away (Starlette cancels the generator)."""
    feed = feed_for(request.app)
    shutting_down = request.app.state.shutting_down
    feed.subscribe(sub)  # before the first read: a change made during it wakes the stream again
    try:
        last_sent = time.monotonic()
        read, first = True, True
        while True:
            if shutting_down.is_set() or feed.closed:
                return
            if read:
                sub.clear()
                if not first:  # the streams woken by one feed poll share their reads (SharedRunReads, RecentRuns)
                    poller.shared = (id(feed), feed.polls)
                events = await run_in_threadpool(poller.poll)
                if first:  # sent after the first read: a client that got it knows the stream's start is taken
                    first = False
                    yield "retry: 1000\n\n"
                for event in events:
                    yield event
                    last_sent = time.monotonic()
                    if event.startswith(("event: deleted", "event: ended")):
                        return
                if getattr(poller, "more", False):
                    sub.wake()
            read = await sub.wait(KEEPALIVE_S - (time.monotonic() - last_sent))
            if not read:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
    finally:
        feed.unsubscribe(sub)
        lease.release()


def _open_stream(request: Request, poller: Any, run_id: int | None) -> StreamingResponse:
    """The stream's response, counted against its client (429 past RUNYARD_MAX_STREAMS_PER_CLIENT)."""
    limit = request.app.state.settings.max_streams_per_client
    lease = limiter_for(request.app).acquire(client_of(request), limit)
    if lease is None:
        raise ApiError(429, f"This client already holds {limit} open live streams, the most "
                            "RUNYARD_MAX_STREAMS_PER_CLIENT allows; close one (another tab or dashboard) and "
                            "retry, or raise the setting.", "RUNYARD_MAX_STREAMS_PER_CLIENT",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
    body = _stream(request, poller, Subscriber(request.state.principal, run_id), lease)
    weakref.finalize(body, lease.release)  # a response that never started streaming frees it too
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/runs/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def run_events(run_id: RunId, request: Request,
                     cursor: str | None = Query(None, description="Resume after this event id.")) -> StreamingResponse:
    def exists() -> bool:
        session = request.app.state.sessionmaker()
        try:
            return store.get_run(session, run_id) is not None
        finally:
            session.close()

    if not await run_in_threadpool(exists):
        raise store.missing_run(run_id)
    raw = request.headers.get("last-event-id") or cursor
    parsed = parse_cursor(raw)
    if raw and parsed is None:
        raise ApiError(422, f"Event id {raw!r} is not a cursor of this stream (expected three numbers "
                            "joined by dots); reconnect without it.", "Last-Event-ID")
    return _open_stream(request, RunEventPoller(request, run_id, parsed), run_id)


class RunListPoller:
    """Run list changes by ``updated_at``, deletions by the ``run_deletions`` tombstones; it never
    lists every run. Writers take their timestamp before they commit, so a change can become
    visible after a later-stamped one was already sent: each read looks ``OVERLAP`` back and skips
    what it already sent (same run, same ``updated_at``). A run is ``created`` when it is newer
    than the stream's start and was not announced yet; a deletion is told for the runs the client
    can know (older than the stream's start, or announced by it)."""

    OVERLAP = OVERLAP

    def __init__(self, request: Request) -> None:
        self.app = request.app
        self.principal = request.state.principal
        self.since: datetime | None = None
        self.newest_id = 0  # the newest run when the stream started: the client listed up to it
        self.deletion_mark = 0
        self.visible: set[int] | None = None
        self.announced: set[int] = set()  # runs newer than the start told as created
        self.sent: dict[int, datetime] = {}
        self.shared: object | None = None  # set by the stream before a read the change feed woke

    def poll(self) -> list[str]:
        session = self.app.state.sessionmaker()
        try:
            if not auth.still_valid(session, self.principal):
                return [format_event("ended", {"reason": CREDENTIALS_ENDED})]
            public_url = self.app.state.settings.public_url
            visible = auth.visible_projects(session, self.principal)
            events: list[str] = []
            if self.since is None:
                self.since = store.utcnow()
                self.newest_id = store.newest_run_id(session)
                self.deletion_mark = store.newest_run_deletion_id(session)
                recent = store.runs_changed_since(session, self.since - self.OVERLAP, visible)
                self.sent = {run.id: run.updated_at for run in recent}
                self.visible = visible
                return events
            lost = self._lost_projects(session, visible)
            if lost:
                for run_id in sorted(store.run_ids(session, lost)):
                    events.append(format_event("run", {"action": "deleted", "run": {"id": run_id}}))
                    self.sent.pop(run_id, None)
                    self.announced.discard(run_id)
            self.visible = visible
            for run_id, project_id, updated_at, payload in self._changed(session, visible, public_url):
                if self.sent.get(run_id) == updated_at or (visible is not None and project_id not in visible):
                    continue
                created = run_id > self.newest_id and run_id not in self.announced
                if created:
                    self.announced.add(run_id)
                action = "created" if created else "updated"
                events.append(f'event: run\ndata: {{"action":"{action}","run":{payload()}}}\n\n')
                self.sent[run_id] = updated_at
                self.since = max(self.since, updated_at)
            for row in self._deletions(session, visible):
                self.deletion_mark = row.id
                if row.run_id <= self.newest_id or row.run_id in self.announced:
                    events.append(format_event("run", {"action": "deleted", "run": {"id": row.run_id}}))
                self.sent.pop(row.run_id, None)
                self.announced.discard(row.run_id)
            horizon = self.since - self.OVERLAP
            self.sent = {run_id: when for run_id, when in self.sent.items() if when > horizon}
            return events
        finally:
            session.close()

    def _changed(self, session: Any, visible: set[int] | None, public_url: str) -> list[tuple]:
        """(run id, project id, updated_at, payload()) of the runs changed since ``since`` minus
        ``OVERLAP``, oldest change first. Woken by the change feed (``shared`` set), the streams
        woken by one poll share one read and one encoding of each run (``RecentRuns``)."""
        cap = self.app.state.settings.max_value_bytes  # oversized stored values cut, as in GET /runs
        if self.shared is not None:
            horizon, rows = recent_runs(self.app).rows(session, self.shared, public_url, cap)
            since = cast(datetime, self.since)  # set by the first poll
            low = max(since - self.OVERLAP, horizon)
            return [row for row in rows if row[2] > low]
        return [(run.id, run.project_id, run.updated_at, lambda run=run: _run_json(run, public_url, cap))
                for run in store.runs_changed_since(session, cast(datetime, self.since) - self.OVERLAP, visible)]

    def _deletions(self, session: Any, visible: set[int] | None) -> list[Any]:
        """Tombstones after ``deletion_mark`` (shared like ``_changed``)."""
        if self.shared is not None:
            rows = recent_runs(self.app).deletions(session, self.shared)
            return [row for row in rows if row.id > self.deletion_mark
                    and (visible is None or row.project_id in visible)]
        return store.run_deletions_after(session, self.deletion_mark, visible)

    def _lost_projects(self, session: Any, visible: set[int] | None) -> set[int]:
        """Projects the caller could see at the last read and no longer may (a role taken away)."""
        if visible is None:
            return set()
        before = self.visible if self.visible is not None else store.project_ids(session)
        return set(before) - set(visible)


class RecentRuns:
    """The runs changed in the last ``RECENT_WINDOW``, read and encoded once per change-feed poll
    and shared by every run-list stream that poll woke (one query instead of one per stream).
    A change the feed sees was stamped at most ``OVERLAP`` before it committed, so a stream woken
    for it finds it in this window even when its own read comes seconds late."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: object | None = None
        self.horizon: datetime | None = None
        self._rows: list[tuple] = []
        self.deletions_key: object | None = None
        self._deletions: list[Any] = []

    def rows(self, session: Any, key: object, public_url: str, cap: int) -> tuple[datetime, list[tuple]]:
        with self.lock:  # the first stream of a poll reads; the others wait for it and reuse
            if key != self.key:
                horizon = store.utcnow() - RECENT_WINDOW
                rows = []
                for run in store.runs_changed_since(session, horizon):
                    encoded = _run_json(run, public_url, cap)
                    rows.append((run.id, run.project_id, run.updated_at, lambda encoded=encoded: encoded))
                self.key, self.horizon, self._rows = key, horizon, rows
            return cast(datetime, self.horizon), self._rows  # set above

    def deletions(self, session: Any, key: object) -> list[Any]:
        with self.lock:
            if key != self.deletions_key:
                self._deletions = store.run_deletions_since(session, store.utcnow() - RECENT_WINDOW)
                self.deletions_key = key
            return self._deletions


def _run_json(run: Any, public_url: str, cap: int) -> str:
    """A run as the JSON text of a run-list event (as ``format_event`` would encode it)."""
    return json.dumps(run_out(run, public_url, cap=cap).model_dump(mode="json", exclude=_NOT_IN_EVENTS),
                      separators=(",", ":"), default=str)


def recent_runs(app: Any) -> RecentRuns:
    return app_state(app, "recent_runs", RecentRuns)


@router.get("/events", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def run_list_events(request: Request) -> StreamingResponse:
    return _open_stream(request, RunListPoller(request), None)
