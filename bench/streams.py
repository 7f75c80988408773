"""What idle live streams cost the server (issue 11, point 3): /healthz and the runs list with no
stream open, then with 1,000 idle SSE streams open, on SQLite and on PostgreSQL.

For each backend: a real ``uvicorn server.app:create_app --factory`` process (a fresh SQLite home,
or a fresh PostgreSQL database created and dropped here), ``--runs`` external runs seeded with a
few metric points each, then

1. ``--requests`` sequential ``GET /healthz`` and ``GET /api/v1/runs`` (keep-alive) and the
   server's CPU % over ``--idle-s`` seconds, with no stream open;
2. ``--streams`` SSE streams opened (half ``/api/v1/events``, half ``/api/v1/runs/{id}/events``
   over the seeded runs; ``RUNYARD_MAX_STREAMS_PER_CLIENT`` raised for the bench) and left idle;
   the same measures again, plus how long one metric point takes to reach its run's stream and,
   for ``--change-s`` seconds, /healthz and the CPU while one run is renamed every second (a
   change every run-list stream is told: the fan-out);
3. the streams closed, and all of it again ``--rounds`` times, then once more with none open (the
   machine is shared: medians of each state are compared);
4. the ratios; targets: /healthz p99 <= 100 ms and the runs list p50 within 2x of its latency
   with no stream open.

Exits 1 when a target is missed. Usage: ``python bench/streams.py [--backends sqlite,postgresql]
[--streams 1000] [--runs 200] [--requests 300] [--idle-s 5] [--rounds 2] [--poll-interval 0.2]``;
``--repo DIR`` runs the server from another checkout (e.g. ``git archive HEAD``: the code before
the feed; use far fewer streams and requests there).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("RUNYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Server:
    def __init__(self, repo: Path, home: Path, database_url: str, poll_interval: float, streams: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_DATABASE_URL": database_url,
               "RUNYARD_REAPER": "false", "RUNYARD_SSE_POLL_INTERVAL": str(poll_interval),
               "RUNYARD_MAX_STREAMS_PER_CLIENT": str(streams + 10), "PYTHONPATH": str(repo),
               "OMP_NUM_THREADS": "1"}
        self.log = open(home / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--backlog", "4096"],
            cwd=repo, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not answer /healthz with 200 within 90 s")
        self.ps = psutil.Process(self.proc.pid)

    def cpu_percent(self, seconds: float) -> float:
        """The server's CPU over ``seconds`` (100 % = one core busy)."""
        self.ps.cpu_percent(None)
        time.sleep(seconds)
        return self.ps.cpu_percent(None)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def seed(client: httpx.Client, runs: int) -> list[int]:
    ids = []
    for i in range(runs):
        r = client.post("/api/v1/runs", json={"recipe": "external", "name": f"bench-{i}", "project": f"p{i % 4}"})
        r.raise_for_status()
        rid = r.json()["id"]
        client.post(f"/api/v1/runs/{rid}/metrics",
                    json={"points": [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(20)]})
        if i % 3 == 0:
            client.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
        ids.append(rid)
    return ids


def latencies(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.get(path)
        out.append(time.perf_counter() - started)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
    return out


def measure(server: Server, client: httpx.Client, requests: int, idle_s: float) -> dict:
    healthz = latencies(client, "/healthz", requests)
    runs = latencies(client, "/api/v1/runs?limit=50", requests)
    return {"healthz_p50_ms": 1000 * statistics.median(healthz), "healthz_p99_ms": 1000 * percentile(healthz, 99),
            "runs_p50_ms": 1000 * statistics.median(runs), "runs_p99_ms": 1000 * percentile(runs, 99),
            "cpu_percent": server.cpu_percent(idle_s)}


def open_stream(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError(f"{path}: connection closed before the answer")
        head += data
    status = head.split(b"\r\n", 1)[0].decode()
    if " 200 " not in status + " ":
        raise RuntimeError(f"{path}: {status} {head[-300:]!r}")
    return sock


def drain(sock: socket.socket) -> None:
    """Read away what the stream sent so far (its first events)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def wait_event(sock: socket.socket, name: bytes, timeout: float) -> None:
    sock.settimeout(timeout)
    seen = b""
    while b"event: " + name not in seen:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the stream ended")
        seen += data


def with_changes(server: Server, client: httpx.Client, run_id: int, seconds: float) -> dict:
    """One run renamed every second (every run-list stream is woken for it) while /healthz is
    asked in a loop: the fan-out of a change to all the streams."""
    server.ps.cpu_percent(None)
    started, renamed, lat = time.perf_counter(), 0, []
    while time.perf_counter() - started < seconds:
        if time.perf_counter() - started >= renamed:
            client.patch(f"/api/v1/runs/{run_id}", json={"name": f"renamed-{renamed}"}).raise_for_status()
            renamed += 1
        t = time.perf_counter()
        client.get("/healthz")
        lat.append(time.perf_counter() - t)
    return {"renames": renamed, "healthz_p50_ms": 1000 * statistics.median(lat),
            "healthz_p99_ms": 1000 * percentile(lat, 99), "cpu_percent": server.ps.cpu_percent(None)}


def bench_backend(name: str, args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"runyard-bench-streams-{name}-"))
    database, url = None, f"sqlite:///{home / 'runyard.db'}"
    if name == "postgresql":
        import psycopg

        database = f"runyard_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"
    server = None
    streams: list[socket.socket] = []
    baselines, during, opened, settles, delivery_ms, busy = [], [], [], [], None, None
    try:
        server = Server(args.repo, home, url, args.poll_interval, args.streams)
        with httpx.Client(base_url=server.url, timeout=120) as client:
            ids = seed(client, args.runs)
            latencies(client, "/api/v1/runs?limit=50", 30)  # warm-up
            latencies(client, "/healthz", 30)
            # rounds of (none open, all open), and none open again at the end: the machine is shared,
            # so each state is measured more than once and the medians compared
            for round_ in range(args.rounds):
                baselines.append(measure(server, client, args.requests, args.idle_s))
                started = time.perf_counter()
                for i in range(args.streams):
                    path = "/api/v1/events" if i % 2 else f"/api/v1/runs/{ids[i % len(ids)]}/events"
                    streams.append(open_stream(server.port, path))
                opened.append(time.perf_counter() - started)
                settles.append(server.cpu_percent(3.0))  # the streams' first reads
                during.append(measure(server, client, args.requests, args.idle_s))
                if round_ == 0:  # one change among the idle streams: how long until its stream tells it
                    probe = streams[0]
                    drain(probe)
                    started = time.perf_counter()
                    client.post(f"/api/v1/runs/{ids[0]}/metrics",
                                json={"points": [{"key": "probe", "step": 1, "value": 1}]})
                    wait_event(probe, b"metrics", 30)
                    delivery_ms = 1000 * (time.perf_counter() - started)
                    busy = with_changes(server, client, ids[1], args.change_s)
                for sock in streams:
                    sock.close()
                streams.clear()
                server.cpu_percent(3.0)  # the server ends them
            baselines.append(measure(server, client, args.requests, args.idle_s))
    finally:
        for sock in streams:
            sock.close()
        if server is not None:
            server.stop()
        if database is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(home, ignore_errors=True)

    def median_of(measures: list[dict]) -> dict:
        return {key: statistics.median(m[key] for m in measures) for key in measures[0]}

    before, with_streams = median_of(baselines), median_of(during)
    return {"backend": name, "streams": args.streams, "runs": args.runs, "rounds": args.rounds,
            "open_s": statistics.median(opened), "settle_cpu_percent": statistics.median(settles),
            "before": before, "during": with_streams, "delivery_ms": delivery_ms,
            "with_changes": busy, "baselines": baselines, "with_streams": during,
            "healthz_p99_ratio": with_streams["healthz_p99_ms"] / before["healthz_p99_ms"],
            "runs_p50_ratio": with_streams["runs_p50_ms"] / before["runs_p50_ms"],
            "runs_p99_ratio": with_streams["runs_p99_ms"] / before["runs_p99_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--change-s", type=float, default=10.0, help="seconds of one rename a second")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose server is measured")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the server, drops the db
    results, missed = [], []
    for name in args.backends.split(","):
        result = bench_backend(name, args)
        results.append(result)
        b, d = result["before"], result["during"]
        print(f"\n{name}: {args.streams} idle streams (opened in {result['open_s']:.1f} s), {args.runs} runs, "
              f"{args.requests} requests each; medians of {args.rounds + 1} measures with none open and "
              f"{args.rounds} with all open")
        print(f"  {'':22} {'0 streams':>12} {f'{args.streams} streams':>14} {'ratio':>8}")
        for key, label in (("healthz_p50_ms", "/healthz p50 ms"), ("healthz_p99_ms", "/healthz p99 ms"),
                           ("runs_p50_ms", "runs list p50 ms"), ("runs_p99_ms", "runs list p99 ms"),
                           ("cpu_percent", "server CPU % (idle)")):
            ratio = d[key] / b[key] if b[key] else float("nan")
            print(f"  {label:22} {b[key]:12.2f} {d[key]:14.2f} {ratio:8.2f}")
        print(f"  CPU % while the streams did their first read: {result['settle_cpu_percent']:.1f}; "
              f"a metric point reached its stream in {result['delivery_ms']:.0f} ms")
        busy = result["with_changes"]
        print(f"  one run renamed every second with the streams open ({busy['renames']} renames, each told to "
              f"every list stream): /healthz p50 {busy['healthz_p50_ms']:.1f} ms, p99 "
              f"{busy['healthz_p99_ms']:.1f} ms, server CPU {busy['cpu_percent']:.0f} %")
        if d["healthz_p99_ms"] > 100:
            missed.append(f"{name}: /healthz p99 {d['healthz_p99_ms']:.1f} ms > 100 ms")
        if result["runs_p50_ratio"] > 2:
            missed.append(f"{name}: runs list p50 {result['runs_p50_ratio']:.2f}x its latency with no stream")
    print("\n" + json.dumps(results))
    for line in missed:
        print("MISSED:", line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
