"""The change feed behind the live streams (server/feed.py, issue 11 point 3), against a real
uvicorn server (in a thread of this process, so the test can count the database statements and
read the feed's counters) on SQLite and PostgreSQL: one feed poll per interval whatever the number
of open streams, every kind of event still delivered, the run list stream without listing runs,
the per-client cap (429), writes by another process, PostgreSQL's out-of-order commits, credential
re-checks and a prompt shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from sqlalchemy import event

from tests.server.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
INTERVAL = 0.05


def wait_for(condition, timeout: float = 15.0, what: str = "the condition"):  # ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} did not hold within {timeout:g} s")


class ThreadServer:
    """``uvicorn`` serving an app in a thread of the test process."""

    def __init__(self, app) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_for(lambda: self.server.started, 60, "uvicorn startup")
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.state.shutting_down.set()
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"

    @property
    def feed(self):
        feeds = list(self.app.state.change_feeds.values())
        assert len(feeds) == 1, feeds  # one event loop, one feed
        return feeds[0]


class Stream:
    """An SSE client on a raw socket (so that a test can hold many and close them at will)."""

    def __init__(self, server: ThreadServer, path: str, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                          f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
        self.events: list[tuple[str, str | None, dict]] = []
        self.started = threading.Event()  # the first bytes: the stream has taken its start
        self.ended = threading.Event()
        self.body = b""
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            while len(self.buffer) < length:
                self._fill()
            self.body = self.buffer[:length]
            self.sock.close()
            self.ended.set()
            return
        self.thread = threading.Thread(target=self._read_events, daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buffer += data

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_events(self) -> None:
        text = ""
        try:
            while True:  # chunked transfer encoding
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    return
                while len(self.buffer) < size + 2:
                    self._fill()
                text += self.buffer[:size].decode()
                self.started.set()
                self.buffer = self.buffer[size + 2:]
                while "\n\n" in text:
                    block, text = text.split("\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                                  and not line.startswith(":"))
                    if "data" in fields:
                        self.events.append((fields.get("event", ""), fields.get("id"), json.loads(fields["data"])))
        except (EOFError, OSError, ValueError):
            return
        finally:
            self.ended.set()

    def wait(self, predicate, timeout: float = 15.0):  # ANN201
        """The first event (kind, id, data) for which ``predicate`` holds."""
        def found():
            return next((e for e in list(self.events) if predicate(e)), None)

        return wait_for(found, timeout, "the event")

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.ended.wait(10)


@pytest.fixture(scope="module")
def served(app_settings):
    from server.app import create_app

    settings = app_settings.model_copy(update={"sse_poll_interval": INTERVAL})
    with ThreadServer(create_app(settings)) as server:
        yield server


@pytest.fixture
def api(served):
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def new_run(api, name: str = "r", project: str = "default") -> int:
    r = api.post("/api/v1/runs", json={"recipe": "external", "name": name, "project": project})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def count_statements(engine):  # ANN201
    seen: list[str] = []

    def record(conn, cursor, statement, *args):  # ANN202
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(engine, "before_cursor_execute", record)


def statements_per_poll(server: ThreadServer, polls: int = 20) -> float:
    feed = server.feed
    seen, stop = count_statements(server.app.state.engine)
    try:
        start = feed.polls
        wait_for(lambda: feed.polls >= start + polls, 30, f"{polls} feed polls")
        done = feed.polls
        n = len(seen)
    finally:
        stop()
    return n / (done - start)


def test_idle_streams_cost_one_feed_poll_whatever_their_number(served, api):
    runs = [new_run(api, f"idle-{i}") for i in range(5)]
    few = [Stream(served, "/api/v1/events"), Stream(served, f"/api/v1/runs/{runs[0]}/events")]
    try:
        assert [s.status for s in few] == [200, 200]
        wait_for(lambda: served.feed.subscribers == 2, what="2 subscribers")
        few[1].wait(lambda e: e[0] == "status")
        with_few = statements_per_poll(served)
        many = [Stream(served, "/api/v1/events") for _ in range(24)]
        many += [Stream(served, f"/api/v1/runs/{runs[i % 5]}/events") for i in range(24)]
        try:
            assert {s.status for s in many} == {200}
            wait_for(lambda: served.feed.subscribers == 50, what="50 subscribers")
            wait_for(lambda: all(s.events for s in many[24:]), what="every run stream's first status")
            with_many = statements_per_poll(served)
            # one poll is five range queries (plus a credential re-check every 2 s and, on
            # PostgreSQL, a rescan every second); before the feed each stream polled on its own
            # (three or more queries per stream and interval: 150 here)
            assert with_few <= 8 and with_many <= 8, (with_few, with_many)
            assert abs(with_many - with_few) <= 2, (with_few, with_many)
            # and idle streams wake for nothing: no event, no keep-alive yet
            assert all(s.kinds() == [] for s in many[:24]) and all(s.kinds() == ["status"] for s in many[24:])
        finally:
            for s in many:
                s.close()
    finally:
        for s in few:
            s.close()
    wait_for(lambda: served.feed.subscribers == 0, what="every stream unsubscribed")
    ticks = served.feed.ticks
    wait_for(lambda: served.feed.ticks >= ticks + 1, what="a poll in flight to end")
    polls, ticks = served.feed.polls, served.feed.ticks
    wait_for(lambda: served.feed.ticks >= ticks + 10, what="10 intervals")
    assert served.feed.polls == polls  # no stream open: the feed does not poll


def test_run_stream_gets_every_kind_of_event_and_resumes_exactly(served, api):
    rid = new_run(api, "events")
    stream = Stream(served, f"/api/v1/runs/{rid}/events")
    try:
        first = stream.wait(lambda e: e[0] == "status")
        assert first[2]["status"] == "running"
        # fields read with the run, not sent in events: a page merging the event must keep what it shows
        assert not {"tags", "note", "note_html", "values"} & set(first[2])
        api.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "loss", "step": 1, "value": 0.5}]})
        metrics = stream.wait(lambda e: e[0] == "metrics")
        assert [(p["key"], p["step"], p["value"]) for p in metrics[2]["points"]] == [("loss", 1, 0.5)]
        api.post(f"/api/v1/runs/{rid}/logs", json={"lines": [{"text": "hello"}]})
        assert stream.wait(lambda e: e[0] == "log")[2]["lines"][0]["text"] == "hello"
        r = api.put(f"/api/v1/runs/{rid}/checkpoints/upload?filename=a.ckpt&step=1", content=b"abc",
                    headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert stream.wait(lambda e: e[0] == "checkpoint")[2]["id"] == r.json()["id"]
        cursor = stream.events[-1][1]
    finally:
        stream.close()
    # missed while disconnected: exactly that, after Last-Event-ID
    api.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "loss", "step": 2, "value": 0.25}]})
    api.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
    again = Stream(served, f"/api/v1/runs/{rid}/events", {"Last-Event-ID": cursor})
    try:
        again.wait(lambda e: e[0] == "status" and e[2]["status"] == "succeeded")
        points = [p for e in again.events if e[0] == "metrics" for p in e[2]["points"]]
        assert [(p["step"], p["value"]) for p in points] == [(2, 0.25)]
        assert "checkpoint" not in again.kinds() and "log" not in again.kinds()
        assert api.delete(f"/api/v1/runs/{rid}").status_code == 204
        assert again.wait(lambda e: e[0] == "deleted")[2] == {"id": rid}
        assert again.ended.wait(10), "a deleted run's stream ends"
    finally:
        again.close()


def test_run_list_stream_without_listing_runs(served, api, monkeypatch):
    from server import store

    calls = []
    original = store.run_ids
    monkeypatch.setattr(store, "run_ids", lambda *a, **k: calls.append(a) or original(*a, **k))
    before = new_run(api, "before the stream")
    api.patch(f"/api/v1/runs/{before}", json={"status": "succeeded"})
    stream = Stream(served, "/api/v1/events")
    try:
        assert stream.started.wait(15)
        rid = new_run(api, "listed")
        created = stream.wait(lambda e: e[2].get("run", {}).get("id") == rid)
        assert created[2]["action"] == "created" and created[2]["run"]["name"] == "listed"
        api.patch(f"/api/v1/runs/{rid}", json={"status": "failed", "error": "boom"})
        updated = stream.wait(lambda e: e[2]["action"] == "updated" and e[2]["run"]["id"] == rid)
        assert updated[2]["run"]["error"] == "boom"
        assert "tags" not in updated[2]["run"] and "values" not in updated[2]["run"]
        assert api.delete(f"/api/v1/runs/{rid}").status_code == 204
        assert api.delete(f"/api/v1/runs/{before}").status_code == 204  # listed before the stream opened
        stream.wait(lambda e: e[2] == {"action": "deleted", "run": {"id": before}})
        told = [(e[2]["action"], e[2]["run"]["id"]) for e in stream.events]
        assert told == [("created", rid), ("updated", rid), ("deleted", rid), ("deleted", before)]
        # created and deleted before the stream could tell: nothing to say
        ghost = new_run(api, "ghost")
        api.patch(f"/api/v1/runs/{ghost}", json={"status": "succeeded"})
        stream.wait(lambda e: e[2]["run"]["id"] == ghost)
        assert calls == [], "the list stream listed run ids"
    finally:
        stream.close()


def test_streams_are_capped_per_client(served, api):
    from server.feed import client_of

    settings = served.app.state.settings
    limit = settings.max_streams_per_client
    settings.max_streams_per_client = 2
    rid = new_run(api, "capped")
    held = [Stream(served, "/api/v1/events"), Stream(served, f"/api/v1/runs/{rid}/events")]
    try:
        assert [s.status for s in held] == [200, 200]
        over = Stream(served, "/api/v1/events")
        assert over.status == 429 and int(over.headers["retry-after"]) > 0
        body = json.loads(over.body)
        assert body["field"] == "RUNYARD_MAX_STREAMS_PER_CLIENT" and "RUNYARD_MAX_STREAMS_PER_CLIENT" in body["detail"]
        assert Stream(served, f"/api/v1/runs/{rid}/events").status == 429
        held.pop().close()  # one closed: its place is free again
        wait_for(lambda: served.app.state.stream_limiter.open.get("address 127.0.0.1") == 1, what="the release")
        held.append(Stream(served, f"/api/v1/runs/{rid}/events"))
        assert held[-1].status == 200
    finally:
        settings.max_streams_per_client = limit
        for s in held:
            s.close()
    wait_for(lambda: not served.app.state.stream_limiter.open, what="every lease released")

    def request(kind: str, token_id: int | None = None, user_id: int | None = None) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(principal=SimpleNamespace(kind=kind, token_id=token_id,
                                                                               user_id=user_id)),
                               client=SimpleNamespace(host="10.0.0.7"))

    # counted per token, per logged-in user (all their browsers), else per address
    assert client_of(request("anonymous")) == client_of(request("open")) == "address 10.0.0.7"
    assert client_of(request("personal", token_id=4, user_id=9)) == "token 4"
    assert client_of(request("session", user_id=9)) == "user 9"


def test_writes_from_another_process_reach_the_streams(served, api, app_settings):
    rid = new_run(api, "other process")
    doomed = new_run(api, "deleted by the other process")
    api.patch(f"/api/v1/runs/{doomed}", json={"status": "succeeded"})
    run_stream = Stream(served, f"/api/v1/runs/{rid}/events")
    list_stream = Stream(served, "/api/v1/events")
    try:
        run_stream.wait(lambda e: e[0] == "status")
        assert list_stream.started.wait(15)
        script = (
            "import sys\n"
            "from server.db import get_engine, session_factory\n"
            "from server import store\n"
            "s = session_factory(get_engine(sys.argv[1]))()\n"
            f"store.add_metric_points(s, {rid}, [('acc', 7, 0.75, 0, 1.0)])\n"
            f"store.add_log_lines(s, {rid}, [{{'text': 'from afar', 'stream': 'stdout'}}])\n"
            "print(store.create_run(s, recipe='external', name='made elsewhere', status='running').id)\n"
            f"store.delete_run(s, {doomed}, sys.argv[2])\n"
        )
        done = subprocess.run([sys.executable, "-c", script, app_settings.database_url, str(app_settings.artifact_root)],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-3000:]
        made = int(done.stdout.strip().splitlines()[-1])
        metrics = run_stream.wait(lambda e: e[0] == "metrics")
        assert [(p["key"], p["step"], p["value"]) for p in metrics[2]["points"]] == [("acc", 7, 0.75)]
        assert run_stream.wait(lambda e: e[0] == "log")[2]["lines"][0]["text"] == "from afar"
        created = list_stream.wait(lambda e: e[2]["run"]["id"] == made)
        assert created[2]["action"] == "created" and created[2]["run"]["name"] == "made elsewhere"
        list_stream.wait(lambda e: e[2] == {"action": "deleted", "run": {"id": doomed}})
    finally:
        run_stream.close()
        list_stream.close()


def test_postgresql_rows_committed_out_of_order_still_wake_their_stream(served, api, backend):
    """Two transactions of two runs: the one with the lower id commits after the feed saw the
    higher one; the feed's rescan of the last seconds of ids still wakes the first run's stream."""
    if backend[0] != "postgresql":
        pytest.skip("SQLite serializes its writers: ids commit in order")
    from sqlalchemy import create_engine, insert

    from server.models import MetricPoint

    slow, fast = new_run(api, "slow"), new_run(api, "fast")
    streams = {rid: Stream(served, f"/api/v1/runs/{rid}/events") for rid in (slow, fast)}
    engine = create_engine(backend[1].replace("postgresql://", "postgresql+psycopg://"))
    try:
        for s in streams.values():
            s.wait(lambda e: e[0] == "status")
        with engine.connect() as late:
            late.execute(insert(MetricPoint).values(run_id=slow, key="k", step=1, value=1.0, wall_time=1.0))
            with engine.begin() as early:  # a higher id, committed first
                early.execute(insert(MetricPoint).values(run_id=fast, key="k", step=1, value=2.0, wall_time=1.0))
            streams[fast].wait(lambda e: e[0] == "metrics")
            polls = served.feed.polls
            wait_for(lambda: served.feed.polls > polls + 2, what="the feed moving past the lower id")
            late.commit()
        got = streams[slow].wait(lambda e: e[0] == "metrics", timeout=15)
        assert got[2]["points"][0]["value"] == 1.0
    finally:
        engine.dispose()
        for s in streams.values():
            s.close()


@pytest.fixture
def own_server(tmp_path):
    """A server of its own (SQLite), for tests that end streams or leave open mode."""
    from server.app import create_app
    from server.settings import Settings

    app = create_app(Settings(home=tmp_path, reaper=False, sse_poll_interval=INTERVAL))
    with ThreadServer(app) as server:
        yield server


def test_shutdown_ends_every_stream_promptly(tmp_path):
    from server.app import create_app
    from server.settings import Settings

    app = create_app(Settings(home=tmp_path, reaper=False, sse_poll_interval=INTERVAL))
    server = ThreadServer(app).__enter__()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            rid = c.post("/api/v1/runs", json={"recipe": "external"}).json()["id"]
        streams = [Stream(server, "/api/v1/events"), Stream(server, f"/api/v1/runs/{rid}/events")]
        streams[1].wait(lambda e: e[0] == "status")
        started = time.monotonic()
        app.state.shutting_down.set()  # what SIGINT/SIGTERM set (server/app.py)
        for s in streams:
            assert s.ended.wait(5), "a stream outlived the shutdown"
        assert time.monotonic() - started < 2
    finally:
        server.__exit__()


def test_a_stream_ends_when_its_token_is_revoked_or_its_role_taken_away(own_server):
    from server import auth, store, users

    app = own_server.app
    session = app.state.sessionmaker()
    try:
        alice = users.create_user(session, "alice", password="correct horse battery")
        vision = store.get_or_create_project(session, "vision")
        users.set_role(session, vision, alice, "member")
        run = store.create_run(session, recipe="external", name="v", project="vision", status="running").id
        token, secret = auth.create_token(session, "personal", user_id=alice.id, scope="read")
        token_id = token.id
    finally:
        session.close()
    bearer = {"Authorization": f"Bearer {secret}"}
    run_stream = Stream(own_server, f"/api/v1/runs/{run}/events", bearer)
    list_stream = Stream(own_server, "/api/v1/events", bearer)
    try:
        assert run_stream.status == list_stream.status == 200
        run_stream.wait(lambda e: e[0] == "status")
        assert list_stream.started.wait(15)
        session = app.state.sessionmaker()
        try:
            users.set_role(session, store.project_by_name(session, "vision"), users.get_user(session, alice.id), None)
        finally:
            session.close()
        assert run_stream.wait(lambda e: e[0] == "deleted")[2] == {"id": run}
        assert list_stream.wait(lambda e: e[2].get("action") == "deleted")[2] == {"action": "deleted", "run": {"id": run}}
        assert run_stream.ended.wait(10)
        session = app.state.sessionmaker()
        try:
            auth.revoke_token(session, token_id)
        finally:
            session.close()
        assert list_stream.wait(lambda e: e[0] == "ended")
        assert list_stream.ended.wait(10)
    finally:
        run_stream.close()
        list_stream.close()


def test_deleting_a_run_leaves_a_tombstone_swept_after_a_day(served, api):
    from datetime import timedelta

    from sqlalchemy import select, update

    from server.app import sweep_run_deletions
    from server.models import RunDeletion, utcnow

    old, fresh = new_run(api, "old"), new_run(api, "fresh")
    for rid in (old, fresh):
        api.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
        assert api.delete(f"/api/v1/runs/{rid}").status_code == 204
    session = served.app.state.sessionmaker()
    try:
        rows = {row.run_id: row for row in session.scalars(select(RunDeletion).where(RunDeletion.run_id.in_([old, fresh])))}
        assert set(rows) == {old, fresh} and rows[old].project_id == rows[fresh].project_id
        session.execute(update(RunDeletion).where(RunDeletion.run_id == old)
                        .values(deleted_at=utcnow() - timedelta(days=1, minutes=1)))
        session.commit()
        assert sweep_run_deletions(served.app) >= 1
        left = set(session.scalars(select(RunDeletion.run_id).where(RunDeletion.run_id.in_([old, fresh]))))
        assert left == {fresh}
    finally:
        session.close()


def test_run_list_streams_woken_together_share_one_read(served, api):
    streams = [Stream(served, "/api/v1/events") for _ in range(20)]
    try:
        for s in streams:
            assert s.started.wait(15)
        seen, stop = count_statements(served.app.state.engine)
        try:
            rid = new_run(api, "shared")
            for s in streams:
                s.wait(lambda e: e[0] == "run" and e[2]["run"]["id"] == rid)
        finally:
            stop()
        # whole runs read by updated_at (the feed's own poll reads only id, project and updated_at):
        # one read for the 20 streams the poll woke (two when their reads straddle two polls)
        reads = [q for q in seen if "runs.updated_at >" in q and "runs.name" in q]
        assert 1 <= len(reads) <= 3, len(reads)
    finally:
        for s in streams:
            s.close()


def test_streams_of_one_run_woken_together_share_one_read(served, api):
    """Several dashboards on one run: the streams one feed poll wakes at the same cursor read its
    new rows once (SharedRunReads), and every stream still gets every point."""
    rid = new_run(api, "watched")
    streams = [Stream(served, f"/api/v1/runs/{rid}/events") for _ in range(12)]
    try:
        for s in streams:
            assert s.started.wait(15)
        seen, stop = count_statements(served.app.state.engine)
        try:
            r = api.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "loss", "step": i, "value": i}
                                                                 for i in range(50)]})
            assert r.status_code == 200, r.text
            for s in streams:
                s.wait(lambda e: e[0] == "metrics" and e[2]["points"][-1]["step"] == 49)
        finally:
            stop()
        reads = [q for q in seen if "FROM metric_points" in q and "metric_points.id >" in q
                 and "metric_points.run_id =" in q]
        assert 1 <= len(reads) <= 3, len(reads)  # one per feed poll the 12 reads fell into
    finally:
        for s in streams:
            s.close()
