"""Server-Sent Events fed by polling the database (workers write from other processes).

``GET /api/v1/runs/{id}/events``: events ``metrics``, ``log``, ``checkpoint``, ``status``. The
event id is ``<metric id>.<log id>.<checkpoint id>``, the last row of each kind sent, so a
client reconnecting with ``Last-Event-ID`` (or ``?cursor=``) gets exactly what it missed.
Without one the stream starts with a ``status`` event and then only new rows.

Both streams re-check the caller every poll (cached 2 s): a logout, a revoked token, a disabled
user or a role taken away ends them (``ended`` / ``deleted``).

``GET /api/v1/events``: event ``run`` ``{"action": "created"|"updated"|"deleted", "run"}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from server import auth, store
from server.deps import RunId
from server.errors import ApiError
from server.schemas import checkpoint_out, run_out
from server.store import INT64_MAX, encode_float

router = APIRouter(prefix="/api/v1", tags=["events"])

KEEPALIVE_S = 15.0
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


def _point(row) -> dict:  # noqa: ANN001 - a result row
    value = row.value
    return {"id": row.id, "key": row.key, "step": row.step, "epoch": row.epoch,
            "value": math.nan if value is None else value, "wall_time": row.wall_time}


class RunEventPoller:
    """One poll of the database for one run's stream (runs in a worker thread)."""

    def __init__(self, request: Request, run_id: RunId, cursor: tuple[int, int, int] | None) -> None:
        self.app = request.app
        self.run_id = run_id
        self.cursor = cursor
        self.status_key: tuple | None = None
        self.principal = request.state.principal

    def poll(self) -> list[str]:
        session = self.app.state.sessionmaker()
        try:
            if not auth.still_valid(session, self.principal):
                return [format_event("ended", {"reason": CREDENTIALS_ENDED})]
            run = store.get_run(session, self.run_id)
            if run is None or not self._may_read(session, run):
                return [format_event("deleted", {"id": self.run_id})]
            events: list[str] = []
            if self.cursor is None:
                self.cursor = store.event_cursors(session, self.run_id)
            m, lg, c = self.cursor
            points = store.metric_points_after(session, self.run_id, m, limit=5000)
            lines = store.log_lines_after(session, self.run_id, lg, limit=2000)
            checkpoints = store.checkpoints_after(session, self.run_id, c)
            if points:
                m = points[-1].id
            if lines:
                lg = lines[-1].id
            if checkpoints:
                c = checkpoints[-1].id
            self.cursor = (m, lg, c)
            event_id = f"{m}.{lg}.{c}"
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
            key = (run.status, run.updated_at, run.cancel_requested)
            if key != self.status_key:
                self.status_key = key
                public_url = self.app.state.settings.public_url
                events.append(format_event("status", run_out(run, public_url).model_dump(mode="json"), event_id))
            return events
        finally:
            session.close()

    def _may_read(self, session: Any, run: Any) -> bool:
        """A user whose role was taken away (or who logged out) stops getting the run's events."""
        if not self.principal.is_user:
            return True  # a run's own token: checked when the stream opened
        return auth.role_in(session, self.principal, run.project_id) is not None


async def _stream(request: Request, poll, interval: float) -> AsyncIterator[str]:  # noqa: ANN001
    yield "retry: 1000\n\n"
    last_sent = time.monotonic()
    shutting_down = request.app.state.shutting_down
    while True:
        if shutting_down.is_set() or await request.is_disconnected():
            return
        events = await run_in_threadpool(poll)
        for event in events:
            yield event
            last_sent = time.monotonic()
            if event.startswith(("event: deleted", "event: ended")):
                return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(interval)


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
    poller = RunEventPoller(request, run_id, parsed)
    interval = request.app.state.settings.sse_poll_interval
    return StreamingResponse(_stream(request, poller.poll, interval), media_type="text/event-stream",
                             headers=SSE_HEADERS)


class RunListPoller:
    """Run list changes by ``updated_at``. Writers take their timestamp before they commit, so a
    change can become visible after a later-stamped one was already sent: each poll looks
    ``OVERLAP`` back and skips what it already sent (same run, same ``updated_at``)."""

    OVERLAP = timedelta(seconds=5)

    def __init__(self, request: Request) -> None:
        self.app = request.app
        self.principal = request.state.principal
        self.since: datetime | None = None
        self.known: set[int] | None = None
        self.sent: dict[int, datetime] = {}

    def poll(self) -> list[str]:
        session = self.app.state.sessionmaker()
        try:
            if not auth.still_valid(session, self.principal):
                return [format_event("ended", {"reason": CREDENTIALS_ENDED})]
            public_url = self.app.state.settings.public_url
            visible = auth.visible_projects(session, self.principal)
            ids = store.run_ids(session, visible)
            events: list[str] = []
            if self.known is None:
                self.since = store.utcnow()
                recent = store.runs_changed_since(session, self.since - self.OVERLAP, visible)
                self.known = ids | {run.id for run in recent}
                self.sent = {run.id: run.updated_at for run in recent}
                return events
            changed = store.runs_changed_since(session, self.since - self.OVERLAP, visible)
            for run in changed:
                if self.sent.get(run.id) == run.updated_at:
                    continue
                action = "updated" if run.id in self.known else "created"
                events.append(format_event("run", {"action": action,
                                                   "run": run_out(run, public_url).model_dump(mode="json")}))
                self.sent[run.id] = run.updated_at
                self.since = max(self.since, run.updated_at)
            seen = ids | {run.id for run in changed}
            for run_id in sorted(self.known - seen):
                events.append(format_event("run", {"action": "deleted", "run": {"id": run_id}}))
                self.sent.pop(run_id, None)
            self.known = seen
            horizon = self.since - self.OVERLAP
            self.sent = {run_id: when for run_id, when in self.sent.items() if when > horizon}
            return events
        finally:
            session.close()


@router.get("/events", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def run_list_events(request: Request) -> StreamingResponse:
    poller = RunListPoller(request)
    interval = request.app.state.settings.sse_poll_interval
    return StreamingResponse(_stream(request, poller.poll, interval), media_type="text/event-stream",
                             headers=SSE_HEADERS)
