"""The runs page at scale (issue 14, point 6): prints figures, asserts nothing.

Seeds N runs (default 100,000), each with 50 params (40 numbers, 10 strings), 20 metric keys
(one point each, and their summary rows) and a tag on every tenth, by bulk inserts (COPY on
PostgreSQL) into a schema made by the migrations; then times the real HTTP routes in-process
(FastAPI TestClient, so the figure is the server's time without a network):

- the runs page's first screen: ``GET /api/v1/runs?project=&limit=50`` (default columns) and
  ``GET /api/v1/runs/keys?project=``; and the list with 3 param/metric columns
- a query filtering on a param and sorting by a metric:
  ``q=params.p0 < 0.001&sort=-metrics.val_loss.min`` (and the same with a tag and a status)
- ingest cost of the metric summaries (``--ingest``): store.add_metric_points with and without
  ``runs_query.update_metric_summaries`` (interleaved rounds on one run).

Usage: ``python bench/runs_scale.py [--runs 100000] [--no-postgres] [--no-sqlite] [--ingest]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
N_PARAMS, N_NUMERIC, N_METRICS = 50, 40, 20


def _rows(n: int, project_id: int) -> dict[str, list[tuple[Any, ...]]]:
    rng = random.Random(14)
    base = datetime(2026, 1, 1)
    runs, params, summaries, points, tags = [], [], [], [], []
    point_id = 0
    import json

    for i in range(1, n + 1):
        values: dict[str, Any] = {}
        for p in range(N_PARAMS):
            values[f"p{p}"] = 10 ** rng.uniform(-5, -1) if p < N_NUMERIC else rng.choice(("adam", "sgd", "lamb", "rmsprop"))
        created = base + timedelta(seconds=i)
        status = rng.choice(("succeeded", "succeeded", "failed", "cancelled"))
        runs.append((i, f"run-{i}", project_id, "external", json.dumps(values), "{}", "{}", status, created, created,
                     created, created + timedelta(seconds=rng.randint(10, 5000)), 1, 1, False, "runyard"))
        for key, value in values.items():
            if isinstance(value, float):
                params.append((i, "p", key, value, repr(value)))
            else:
                params.append((i, "p", key, None, value))
        for m in range(N_METRICS):
            key = "val_loss" if m == 0 else f"m{m}"
            last = rng.random()
            point_id += 1
            points.append((point_id, i, key, 100, last, 1.0))
            summaries.append((i, key, point_id, 100, last, last * rng.random(), last + rng.random()))
        if i % 10 == 0:
            tags.append((i, "baseline"))
    return {"runs": runs, "params": params, "summaries": summaries, "points": points, "tags": tags}


COLUMNS = {
    "runs": "id, name, project_id, recipe, params, trainer, hyperparameters, status, created_at, updated_at, "
            "started_at, ended_at, attempt, max_attempts, cancel_requested, queue",
    "run_params": "run_id, kind, key, num, text",
    "run_metric_summaries": "run_id, key, last_id, last_step, last_value, min_value, max_value",
    "metric_points": "id, run_id, key, step, value, wall_time",
    "run_tags": "run_id, tag",
}
SOURCES = {"runs": "runs", "run_params": "params", "run_metric_summaries": "summaries", "metric_points": "points",
           "run_tags": "tags"}


def seed(url: str, n: int) -> float:
    from sqlalchemy import text

    from server.db import get_engine, upgrade_database
    from server.store import get_or_create_project

    upgrade_database(url)
    engine = get_engine(url)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        project_id = get_or_create_project(session, "scale").id
        session.commit()
    started = time.perf_counter()
    data = _rows(n, project_id)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            raw: Any = connection.connection.driver_connection
            with raw.cursor() as cursor:
                for table, columns in COLUMNS.items():
                    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in data[SOURCES[table]]:
                            copy.write_row(row)
                cursor.execute("SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs))")
                cursor.execute("SELECT setval(pg_get_serial_sequence('metric_points', 'id'), "
                               "(SELECT max(id) FROM metric_points))")
        else:
            for table, columns in COLUMNS.items():
                marks = ", ".join("?" for _ in columns.split(","))
                connection.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                                           [tuple(v.isoformat(sep=" ") if isinstance(v, datetime) else v
                                                  for v in row) for row in data[SOURCES[table]]])
        connection.execute(text("INSERT INTO project_keys (project_id, kind, key) SELECT DISTINCT :p, 'p', key "
                                "FROM run_params WHERE run_id = 1"), {"p": project_id})
        connection.execute(text("INSERT INTO project_keys (project_id, kind, key) SELECT DISTINCT :p, 'm', key "
                                "FROM run_metric_summaries WHERE run_id = 1"), {"p": project_id})
        connection.execute(text("INSERT INTO project_keys (project_id, kind, key) VALUES (:p, 't', 'baseline')"),
                           {"p": project_id})
    # statistics for the planner and (PostgreSQL) the visibility map for index-only scans: what
    # autovacuum does after a bulk load
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE" if connection.dialect.name == "postgresql" else "ANALYZE")
    return time.perf_counter() - started


def timed(client: Any, path: str, params: dict[str, Any], rounds: int) -> dict[str, Any]:
    client.get(path, params=params)  # warm
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return {"median_ms": statistics.median(times), "max_ms": max(times), "total": r.json().get("total")}


def measure(url: str, home: Path, rounds: int) -> dict[str, dict[str, Any]]:
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    settings = Settings(home=home, database_url=url, reaper=False, broker_url="memory://")
    out = {}
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        first = [("/api/v1/runs", {"project": "scale", "limit": 50}), ("/api/v1/runs/keys", {"project": "scale"})]
        client.get(first[0][0], params=first[0][1])
        client.get(first[1][0], params=first[1][1])
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for path, params in first:
                r = client.get(path, params=params)
                assert r.status_code == 200, r.text
            times.append((time.perf_counter() - t0) * 1000)
        out["first screen (list + keys)"] = {"median_ms": statistics.median(times), "max_ms": max(times),
                                             "total": None}
        out["list, default columns"] = timed(client, "/api/v1/runs", {"project": "scale", "limit": 50}, rounds)
        out["keys"] = timed(client, "/api/v1/runs/keys", {"project": "scale"}, rounds)
        out["list + 3 columns"] = timed(client, "/api/v1/runs", {
            "project": "scale", "limit": 50, "columns": "params.p0,params.p40,metrics.val_loss.min"}, rounds)
        out["q=params.p0 < 0.001, sort=-metrics.val_loss.min"] = timed(client, "/api/v1/runs", {
            "project": "scale", "limit": 50, "q": "params.p0 < 0.001", "sort": "-metrics.val_loss.min"}, rounds)
        out["q=params.p0 < 0.01 and tag:baseline and status in (...), sort=metrics.m3.max"] = timed(
            client, "/api/v1/runs", {"project": "scale", "limit": 50, "q": "params.p0 < 0.01 and tag:baseline and "
                                     "status in (succeeded, failed)", "sort": "metrics.m3.max"}, rounds)
        out["sort=-params.p1 (no filter)"] = timed(client, "/api/v1/runs", {
            "project": "scale", "limit": 50, "sort": "-params.p1"}, rounds)
        out["groups by params.p40 with 2 metric aggregates"] = timed(client, "/api/v1/runs/groups", {
            "project": "scale", "group_by": "params.p40", "columns": "metrics.val_loss.min,metrics.m1"}, rounds)
    return out


def ingest(url: str, rounds: int, batch: int) -> dict[str, float]:
    """Points/s of store.add_metric_points with and without the summary upsert (interleaved)."""
    from sqlalchemy.orm import Session

    from server import runs_query, store
    from server.db import get_engine, upgrade_database

    upgrade_database(url)
    engine = get_engine(url)
    real = runs_query.update_metric_summaries
    rates: dict[str, list[float]] = {"without summaries": [], "with summaries": []}
    with Session(engine) as session:
        runs = {mode: store.create_run(session, recipe="external", project="ingest", status="running").id
                for mode in rates}
        steps = dict.fromkeys(rates, 0)
        for _ in range(rounds):
            for mode in rates:
                runs_query.update_metric_summaries = real if mode == "with summaries" else (  # type: ignore[assignment]
                    lambda *a, **k: None)
                points = [(f"k{i % 10}", steps[mode] + i // 10, 1.0 / (i + 1), None, None) for i in range(batch)]
                steps[mode] += batch // 10 + 1
                t0 = time.perf_counter()
                store.add_metric_points(session, runs[mode], points)
                rates[mode].append(batch / (time.perf_counter() - t0))
        runs_query.update_metric_summaries = real  # type: ignore[assignment]
    return {mode: statistics.median(values) for mode, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--ingest", action="store_true", help="only the ingest comparison")
    parser.add_argument("--keep", action="store_true", help="keep the seeded databases (their URLs are printed)")
    parser.add_argument("--measure", metavar="URL", help="only time the routes on a database seeded before "
                        "(brought to the latest migration first)")
    args = parser.parse_args()
    if args.measure:
        from server.db import upgrade_database

        upgrade_database(args.measure)
        for what, figures in measure(args.measure, Path(tempfile.mkdtemp(prefix="runyard-scale-")),
                                     args.rounds).items():
            total = "" if figures["total"] is None else f"  (total {figures['total']:,})"
            print(f"  {what:<75} median {figures['median_ms']:7.1f} ms  max {figures['max_ms']:7.1f} ms{total}")
        return
    import psycopg

    backends = []
    tmp = Path(tempfile.mkdtemp(prefix="runyard-scale-"))
    if not args.no_sqlite:
        backends.append(("SQLite", f"sqlite:///{tmp / 'scale.db'}"))
    if not args.no_postgres:
        name = f"runyard_scale_{int(time.time())}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        backends.append(("PostgreSQL", f"postgresql://postgres@127.0.0.1:5432/{name}"))
    try:
        for label, url in backends:
            if args.ingest:
                rates = ingest(url, args.rounds, 10_000)
                ratio = rates["with summaries"] / rates["without summaries"]
                print(f"{label}: ingest of 10,000-point batches: {rates['without summaries']:,.0f} points/s without "
                      f"the summary upsert, {rates['with summaries']:,.0f} with ({ratio:.2f}x)", flush=True)
                continue
            seconds = seed(url, args.runs)
            if args.keep:
                print(f"{label}: {url}", flush=True)
            print(f"{label}: seeded {args.runs:,} runs ({N_PARAMS} params, {N_METRICS} metric keys each) in "
                  f"{seconds:.0f} s", flush=True)
            for what, figures in measure(url, tmp, args.rounds).items():
                total = "" if figures["total"] is None else f"  (total {figures['total']:,})"
                print(f"  {what:<75} median {figures['median_ms']:7.1f} ms  max {figures['max_ms']:7.1f} ms{total}",
                      flush=True)
    finally:
        from server.db import dispose_engine

        for label, url in [] if args.keep else backends:
            dispose_engine(url)
            if label == "PostgreSQL":
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
