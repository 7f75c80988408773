"""Load held (issue 11, point 7): prints figures and checks exactly-once storage.

For each backend (SQLite + the embedded broker; PostgreSQL + Redis) a real server process and a
real training worker run while, for ``--duration`` seconds (default 60):

- ``--writers`` (8) metric writers each track a script run (``recipe="external"``) and POST batches
  of ``--batch`` points at ``--rate`` batches per second, each batch with its own
  ``Idempotency-Key``; a batch whose answer is lost (timeout, connection error, 429/5xx) is sent
  again with the same key until it is acknowledged, as ``RunyardLogger`` does;
- ``--readers`` (2) readers loop over the runs list, one run, its metric keys and a downsampled
  series read;
- ``--streams`` (100) live streams stay open (half per-run streams on the writers' runs, half the
  run-list stream) and count the events they get;
- the worker trains ``digits_classifier`` runs one after the other (logging every step).

Afterwards the database is read directly: every acknowledged point must be stored exactly once
(no point lost, none duplicated), and every training run must have each (key, step) once.
Targets: 0 errors, 0 lost, 0 duplicated, write p99 <= 1 s on SQLite.

    .venv/bin/python bench/load.py [--duration 60] [--backends sqlite,postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

JSON = {"Content-Type": "application/json"}
RETRY = {429, 500, 502, 503, 504}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Figures:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.write_latency: list[float] = []
        self.read_latency: list[float] = []
        self.errors: list[str] = []
        self.retries = 0
        self.acked: dict[int, set[tuple[str, int]]] = {}
        self.reads = 0
        self.stream_events = 0
        self.streams_open = 0
        self.stream_errors: list[str] = []

    def error(self, what: str) -> None:
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(what)
            else:
                self.errors.append("...")


def writer(url: str, run_id: int, index: int, stop: threading.Event, figures: Figures, batch: int,
           rate: float) -> None:
    keys = [f"w{index}/loss", f"w{index}/acc", f"w{index}/lr"]
    acked: set[tuple[str, int]] = set()
    step = 0
    period = 1.0 / rate
    with httpx.Client(base_url=url, timeout=10) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            points = []
            for _ in range(batch // len(keys)):
                points += [{"key": k, "step": step, "value": random.random()} for k in keys]
                step += 1
            body = json.dumps({"points": points})
            headers = {**JSON, "Idempotency-Key": uuid.uuid4().hex}
            t0 = time.perf_counter()
            while True:  # until acknowledged (same key: stored once)
                try:
                    r = client.post(f"/api/v1/runs/{run_id}/metrics", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    with figures.lock:
                        figures.retries += 1
                    figures.error(f"writer {index}: {type(exc).__name__} (sent again)")
                    continue
                if r.status_code in RETRY:
                    with figures.lock:
                        figures.retries += 1
                    if r.status_code >= 500:
                        figures.error(f"writer {index}: {r.status_code} {r.text[:200]}")
                    time.sleep(0.05)
                    continue
                break
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                figures.error(f"writer {index}: {r.status_code} {r.text[:200]}")
            else:
                acked.update((p["key"], p["step"]) for p in points)
                with figures.lock:
                    figures.write_latency.append(elapsed)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.monotonic()
    with figures.lock:
        figures.acked[run_id] = acked


def reader(url: str, run_ids: list[int], stop: threading.Event, figures: Figures) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            run_id = random.choice(run_ids)
            for path in ("/api/v1/runs?limit=50", f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/metric-keys",
                         f"/api/v1/runs/{run_id}/metrics?max_points=500"):
                t0 = time.perf_counter()
                try:
                    r = client.get(path)
                except httpx.HTTPError as exc:
                    figures.error(f"reader {path}: {type(exc).__name__}")
                    continue
                elapsed = time.perf_counter() - t0
                if r.status_code != 200:
                    figures.error(f"reader {path}: {r.status_code} {r.text[:200]}")
                with figures.lock:
                    figures.read_latency.append(elapsed)
                    figures.reads += 1


def streams(url: str, run_ids: list[int], count: int, stop, counts) -> None:
    """The live streams, in a process of their own (clients are other machines: their parsing
    must not take the writers' GIL). ``stop``: a multiprocessing Event; ``counts``: a shared
    array [open, events, errors]."""
    async def one(client: httpx.AsyncClient, path: str) -> None:
        try:
            async with client.stream("GET", path, headers={"Accept": "text/event-stream"}) as r:
                if r.status_code != 200:
                    counts[2] += 1
                    return
                counts[0] += 1
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        counts[1] += 1
        except (httpx.HTTPError, asyncio.CancelledError):
            if not stop.is_set():
                counts[2] += 1

    async def main() -> None:
        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=None), limits=limits) as client:
            paths = [f"/api/v1/runs/{run_ids[i % len(run_ids)]}/events" if i % 2 == 0 else "/api/v1/events"
                     for i in range(count)]
            tasks = [asyncio.create_task(one(client, p)) for p in paths]
            while not stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def trainer(stack, stop: threading.Event, done: list[int], figures: Figures) -> None:
    while not stop.is_set():
        try:
            run = stack.submit("digits_classifier", {}, {"max_epochs": 3, "log_every_n_steps": 1})
            final = stack.wait_status(run["id"], ("succeeded", "failed", "cancelled"), timeout=300)
        except Exception as exc:  # counted
            figures.error(f"training run: {exc}"[:300])
            return
        if final["status"] != "succeeded":
            figures.error(f"training run {run['id']} {final['status']}: {final.get('error')}"[:300])
            return
        done.append(run["id"])


def verify(database_url: str, figures: Figures, training_runs: list[int]) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    lost = duplicated = stored = unacknowledged = 0
    with engine.connect() as c:
        for run_id, acked in figures.acked.items():
            rows = c.execute(sa.text("SELECT key, step, count(*) FROM metric_points WHERE run_id = :r "
                                     "GROUP BY key, step"), {"r": run_id}).all()
            have = {(k, s): n for k, s, n in rows}
            stored += sum(have.values())
            duplicated += sum(n - 1 for n in have.values() if n > 1)
            lost += len(acked - set(have))
            unacknowledged += len(set(have) - acked)  # a refused batch must store nothing
        train_dupes = 0
        train_points = 0
        for run_id in training_runs:
            row = c.execute(sa.text("SELECT count(*), count(DISTINCT key || ':' || CAST(step AS VARCHAR(30))) "
                                    "FROM metric_points WHERE run_id = :r"), {"r": run_id}).one()
            train_points += row[0]
            train_dupes += row[0] - row[1]
    engine.dispose()
    return {"stored": stored, "lost": lost, "duplicated": duplicated, "unacknowledged_stored": unacknowledged,
            "training_points": train_points,
            "training_duplicated": train_dupes}


def one_backend(backend: str, args: argparse.Namespace) -> dict:
    from tests.helpers.mnist import write_mnist
    from tests.worker.stack import Stack, stack_env

    tmp = Path(tempfile.mkdtemp(prefix=f"runyard-load-{backend}-"))
    extra: dict[str, str] = {}
    cleanup = []
    if backend == "postgres":
        import redis
        import sqlalchemy as sa

        name = f"runyard_load_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        extra["database_url"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        db = next(n for n in range(13, 0, -1) if redis.Redis(db=n).set("runyard-load", "1", nx=True))
        extra["broker_url"] = f"redis://127.0.0.1:6379/{db}"

        def drop() -> None:
            redis.Redis(db=db).flushdb()
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        cleanup.append(drop)
    data = write_mnist(tmp / "mnist", 64, 16)
    env = stack_env(tmp / "home", data, **extra)
    env["RUNYARD_MAX_STREAMS_PER_CLIENT"] = str(args.streams + 50)
    env["RUNYARD_HEARTBEAT_TIMEOUT"] = "30"
    stack = Stack(env, tmp / "logs")
    figures = Figures()
    try:
        stack.start_server()
        stack.start_worker()
        url = stack.base_url
        run_ids = [stack.client.post("/api/v1/runs", json={"recipe": "external", "name": f"writer-{i}"}).json()["id"]
                   for i in range(args.writers)]
        stop = threading.Event()
        training: list[int] = []
        stream_stop = multiprocessing.Event()
        counts = multiprocessing.Array("q", 3)
        stream_proc = multiprocessing.Process(target=streams, args=(url, run_ids, args.streams, stream_stop, counts))
        stream_proc.start()
        deadline = time.monotonic() + 60
        while counts[0] + counts[2] < args.streams and time.monotonic() < deadline:
            time.sleep(0.1)
        threads: list[threading.Thread] = []
        threads += [threading.Thread(target=writer, args=(url, rid, i, stop, figures, args.batch, args.rate),
                                     daemon=True) for i, rid in enumerate(run_ids)]
        threads += [threading.Thread(target=reader, args=(url, run_ids, stop, figures), daemon=True)
                    for _ in range(args.readers)]
        threads.append(threading.Thread(target=trainer, args=(stack, stop, training, figures), daemon=True))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        stop.wait(args.duration)
        stop.set()
        elapsed = time.monotonic() - t0
        for t in threads:
            t.join(timeout=320)
        stream_stop.set()
        stream_proc.join(timeout=60)
        figures.streams_open, figures.stream_events = counts[0], counts[1]
        figures.stream_errors += [f"{counts[2]} streams failed"] if counts[2] else []
        healthz = stack.client.get("/healthz")
        if healthz.status_code != 200:
            figures.error(f"/healthz after the load: {healthz.status_code} {healthz.text[:200]}")
        database_url = extra.get("database_url") or f"sqlite:///{(tmp / 'home' / 'runyard.db').resolve()}"
        checked = verify(database_url, figures, training)
        acked = sum(len(a) for a in figures.acked.values())
        return {
            "backend": backend, "seconds": round(elapsed, 1), "writers": args.writers, "readers": args.readers,
            "streams_open": figures.streams_open, "acknowledged_points": acked,
            "points_per_s": round(acked / elapsed), "write_requests": len(figures.write_latency),
            "write_p50_ms": round(pct(figures.write_latency, 0.5) * 1000, 1),
            "write_p99_ms": round(pct(figures.write_latency, 0.99) * 1000, 1),
            "reads": figures.reads, "read_p50_ms": round(pct(figures.read_latency, 0.5) * 1000, 1),
            "read_p99_ms": round(pct(figures.read_latency, 0.99) * 1000, 1),
            "stream_events": figures.stream_events, "training_runs": len(training),
            "retries": figures.retries, "errors": len(figures.errors) + len(figures.stream_errors),
            "error_samples": (figures.errors + figures.stream_errors)[:5], **checked,
        }
    finally:
        stack.close()
        for fn in cleanup:
            fn()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--batch", type=int, default=300, help="points per metrics request")
    parser.add_argument("--rate", type=float, default=5, help="requests per second per writer")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    results = []
    for backend in args.backends.split(","):
        result = one_backend(backend.strip(), args)
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
    ok = all(r["errors"] == 0 and r["lost"] == 0 and r["duplicated"] == 0 and r["training_duplicated"] == 0
             and r["unacknowledged_stored"] == 0 for r in results)
    print("targets:", "met" if ok else "NOT met", "(0 errors, 0 lost, 0 duplicated)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
