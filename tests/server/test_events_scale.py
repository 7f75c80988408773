"""Issue 14 point 6: a poll of ``/api/v1/events``' change feed costs O(changes), not O(runs).
Against a real uvicorn server (in a thread, as in test_feed.py) on SQLite and PostgreSQL, with an
open run-list stream: the statements per feed poll and the rows they return stay the same when
20,000 runs are added (bulk inserts, as ``bench/events_scale.py`` seeds them), changed runs are
still told, and no statement of a poll scans the ``runs`` table (each is a range on an index:
EXPLAIN). Counts, not times; the times are in bench/events_scale.py and docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import event, select

from server.models import Run
from tests.server.test_feed import Stream, api, new_run, served, wait_for  # noqa: F401 - fixtures

BENCH = Path(__file__).resolve().parents[2] / "bench" / "events_scale.py"
MANY = 20_000


def bench():  # ANN201
    spec = importlib.util.spec_from_file_location("events_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def poll_cost(server, polls: int = 15) -> tuple[float, float, list[tuple[str, object]]]:
    """(statements per poll, SELECT rows returned per poll, the statements) over ``polls`` polls."""
    engine = server.app.state.engine
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # ANN202
        seen.append((statement, parameters))

    feed = server.feed
    ticks = feed.polls
    wait_for(lambda: feed.polls >= ticks + 1, 30, "a poll in flight to end")
    event.listen(engine, "before_cursor_execute", record)
    try:
        start = feed.polls
        wait_for(lambda: feed.polls >= start + polls, 60, f"{polls} feed polls")
        done = feed.polls
        taken = list(seen)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    rows = 0
    with engine.connect() as conn:  # what each SELECT returned, run again outside the polls
        for statement, parameters in taken:
            if statement.lstrip().upper().startswith("SELECT"):
                rows += len(conn.exec_driver_sql(statement, parameters).fetchall())
    return len(taken) / (done - start), rows / (done - start), taken


def scans_of_runs(engine, statements: list[tuple[str, object]]) -> list[str]:
    """The plans of ``statements`` that read the whole ``runs`` or ``run_deletions`` table."""
    bad = []
    with engine.connect() as conn:
        for statement, parameters in {s: p for s, p in statements}.items():
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            if engine.dialect.name == "sqlite":
                plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
                full = any(step.strip().startswith(("SCAN runs", "SCAN run_deletions")) for step in plan.split("|"))
            else:
                plan = " | ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters))
                full = "Seq Scan on runs" in plan or "Seq Scan on run_deletions" in plan
            if full:
                bad.append(f"{statement} -> {plan}")
    return bad


def test_a_feed_poll_costs_the_changes_not_the_runs(served, api):  # noqa: F811
    engine = served.app.state.engine
    seeded_project = new_run(api, "first", project="scale")
    api.patch(f"/api/v1/runs/{seeded_project}", json={"status": "succeeded"})
    with engine.connect() as conn:
        project_id = conn.exec_driver_sql(f"SELECT project_id FROM runs WHERE id = {int(seeded_project)}").scalar()
    stream = Stream(served, "/api/v1/events")
    try:
        assert stream.status == 200 and stream.started.wait(15)
        wait_for(lambda: served.feed.subscribers >= 1, what="the stream subscribed")
        few_statements, few_rows, _ = poll_cost(served)

        bench().seed_runs(engine, MANY, project_id, params=5)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE runs")
                conn.commit()
        many_statements, many_rows, statements = poll_cost(served)
        # the same few range queries, returning the same (no) rows, with 20,000 more runs
        assert many_statements <= few_statements + 1, (few_statements, many_statements)
        assert many_rows <= few_rows + 0.5, (few_rows, many_rows)
        assert scans_of_runs(engine, statements) == []

        # ten changes: told, and what a poll returns is about them, not about the 20,000
        changed = []
        with engine.connect() as conn:
            changed = list(conn.scalars(select(Run.id).where(Run.name.like("seeded-%")).order_by(Run.id).limit(10)))
        for run_id in changed:
            assert api.patch(f"/api/v1/runs/{run_id}", json={"name": f"changed-{run_id}"}).status_code == 200
        for run_id in changed:
            stream.wait(lambda e, run_id=run_id: e[0] == "run" and e[2]["run"]["id"] == run_id
                        and e[2]["run"]["name"] == f"changed-{run_id}")
        changed_statements, changed_rows, statements = poll_cost(served, polls=5)
        assert changed_statements <= few_statements + 1, (few_statements, changed_statements)
        assert changed_rows <= few_rows + 10 * 3, changed_rows  # each changed run a few times at most
        assert scans_of_runs(engine, statements) == []
    finally:
        stream.close()
