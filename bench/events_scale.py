"""What one poll of the run-list change feed (``/api/v1/events``, ``server/feed.py``) costs with
100,000 runs in the store, on SQLite and PostgreSQL (issue 14 point 6): the statements, the rows
they return and the time of one feed poll plus the run-list stream's read, with 0 and with 10
changed runs, next to the same with 1,000 runs. It should not grow with the runs: each poll is a
handful of range queries on indexes (``runs.updated_at``, the primary keys of the rows and
``run_deletions``), never a list of every run id.

    .venv/bin/python bench/events_scale.py [--runs 100000] [--polls 50] [--backend sqlite|postgresql|both]

Runs are seeded with bulk inserts (50 params each, ``updated_at`` an hour back); PostgreSQL needs
the local server (127.0.0.1:5432, user postgres). Prints one line per case; the figures go in
docs/benchmarks.md ("issue 14: events per poll").
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def seed_runs(engine, count: int, project_id: int, batch: int = 5000, params: int = 50) -> None:
    """``count`` finished runs in ``project_id`` by bulk inserts, changed an hour ago."""
    from sqlalchemy import insert

    from server.models import Run
    from server.store import utcnow

    when = utcnow() - timedelta(hours=1)
    row_params = {f"p{i}": i * 0.5 for i in range(params)}
    done = 0
    with engine.begin() as conn:
        while done < count:
            n = min(batch, count - done)
            conn.execute(insert(Run), [{
                "name": f"seeded-{done + i}", "project_id": project_id, "recipe": "external", "params": row_params,
                "trainer": {}, "hyperparameters": {}, "status": "succeeded", "created_at": when, "updated_at": when,
                "attempt": 1, "max_attempts": 1, "cancel_requested": False, "queue": "runyard"} for i in range(n)])
            done += n


class Counter:
    """Statements run on ``engine`` while active, and the rows each SELECT returned (counted
    by running it again afterwards, outside the measured time)."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.engine, self.event = engine, event
        self.seen: list[tuple[str, object]] = []

    def __enter__(self) -> Counter:
        self.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self.event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.seen.append((statement, parameters))

    def rows(self) -> int:
        total = 0
        with self.engine.connect() as conn:
            for statement, parameters in self.seen:
                if statement.lstrip().upper().startswith("SELECT"):
                    total += len(conn.exec_driver_sql(statement, parameters).fetchall())
        return total


def make_app(url: str, home: Path):
    from server.app import create_app
    from server.db import upgrade_database
    from server.settings import Settings

    upgrade_database(url)
    settings = Settings(home=home, database_url=url, broker_url="memory://", reaper=False, migrate=False,
                        sse_poll_interval=3600.0)  # the bench drives the polls itself
    return create_app(settings)


def one_poll(app, loop, feed, poller) -> float:
    """One change-feed poll and the run-list stream's read, as a woken stream does them."""
    start = time.perf_counter()
    loop.run_until_complete(feed.poll_once())
    poller.shared = (id(feed), feed.polls)
    poller.poll()
    return time.perf_counter() - start


def measure(app, runs: int, polls: int, changes: int, loop, feed, poller) -> dict:
    from sqlalchemy import update

    from server.models import Run
    from server.store import utcnow

    engine = app.state.engine
    times, statements, rows = [], [], []
    for _ in range(polls):
        if changes:
            with engine.begin() as conn:  # ``changes`` runs changed since the last poll
                ids = [secrets.randbelow(runs) + 1 for _ in range(changes)]
                conn.execute(update(Run).where(Run.id.in_(ids)).values(updated_at=utcnow()))
        with Counter(engine) as counter:
            times.append(one_poll(app, loop, feed, poller))
        statements.append(len(counter.seen))
        rows.append(counter.rows())
        if changes:  # back to an hour ago: each poll sees its own 10 changes, not those of the polls before
            with engine.begin() as conn:
                conn.execute(update(Run).where(Run.updated_at > utcnow() - timedelta(minutes=30))
                             .values(updated_at=utcnow() - timedelta(hours=1)))
    return {"runs": runs, "changes": changes, "ms": statistics.median(times) * 1000,
            "statements": statistics.median(statements), "rows": statistics.median(rows)}


def run_backend(name: str, url: str, sizes: list[int], polls: int) -> list[dict]:
    from server import auth, store
    from server.api.events import RunListPoller
    from server.feed import ChangeFeed

    out = []
    with tempfile.TemporaryDirectory() as home:
        app = make_app(url, Path(home))
        engine = app.state.engine
        with app.state.sessionmaker() as session:
            project = store.get_or_create_project(session, "bench")
            session.commit()
            project_id = project.id
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        feed = ChangeFeed(app.state.sessionmaker, 3600.0, threading.Event(), engine.dialect.name)
        seeded = 0
        for size in sizes:
            seed_runs(engine, size - seeded, project_id)
            seeded = size
            if name == "postgresql":
                with engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE runs")
                    conn.commit()
            principal = auth.Principal(kind="open", is_admin=True)  # single-user mode: sees every project
            request = SimpleNamespace(app=app, state=SimpleNamespace(principal=principal))
            poller = RunListPoller(request)
            feed._count, feed._primed = 1, False  # one stream subscribed; the first poll primes
            loop.run_until_complete(feed.poll_once())
            poller.poll()  # the stream's start
            for _ in range(5):  # warm up (thread pool, connections, caches): not measured
                one_poll(app, loop, feed, poller)
            listing = []  # before: a poll that lists every run id (what the stream did before the feed)
            for _ in range(min(polls, 10)):
                with app.state.sessionmaker() as session:
                    start = time.perf_counter()
                    ids = store.run_ids(session)
                    listing.append(time.perf_counter() - start)
            print(f"{name:10} {size:>7} runs  before (every run id per poll): {statistics.median(listing) * 1000:7.2f} ms "
                  f"per poll and stream, {len(ids)} rows returned", flush=True)
            for changes in (0, 10):
                result = measure(app, size, polls, changes, loop, feed, poller)
                result["backend"] = name
                out.append(result)
                print(f"{name:10} {size:>7} runs  {changes:>2} changes/poll: {result['ms']:7.2f} ms per poll, "
                      f"{result['statements']:.0f} statements, {result['rows']:.0f} rows returned", flush=True)
        loop.close()
        engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    sizes = sorted({min(1000, args.runs), args.runs})
    results = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            results += run_backend("sqlite", f"sqlite:///{folder}/bench.db", sizes, args.polls)
    if args.backend in ("postgresql", "both"):
        import psycopg

        name = f"runyard_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            results += run_backend("postgresql", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", sizes,
                                   args.polls)
        finally:
            from server.db import dispose_engine

            dispose_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    for backend in {r["backend"] for r in results}:
        for changes in (0, 10):
            cases = [r for r in results if r["backend"] == backend and r["changes"] == changes]
            if len(cases) == 2:
                small, big = cases
                print(f"{backend}: {changes} changes, {big['runs']} vs {small['runs']} runs: "
                      f"time x{big['ms'] / small['ms']:.2f}, statements {small['statements']:.0f} -> "
                      f"{big['statements']:.0f}, rows {small['rows']:.0f} -> {big['rows']:.0f}")


if __name__ == "__main__":
    main()
