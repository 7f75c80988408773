"""Tracking-server benchmark: prints figures, asserts nothing.

- ingest points/s through the REST API in batches of 1,000 and 10,000 (SQLite and PostgreSQL)
- time to read a 1,000,000-point series downsampled to 2,000 points
- time from a point's POST to its arrival on an SSE client (p50, p95)
- RunyardLogger overhead per training step compared with no logger

Each backend gets its own uvicorn process (like a deployment). Usage:
``python bench/tracking.py [--points 300000] [--no-postgres]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, database_url: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_REAPER": "false", "RUNYARD_SSE_POLL_INTERVAL": "0.2"}
    if database_url:
        env["RUNYARD_DATABASE_URL"] = database_url
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--port",
                             str(port), "--log-level", "warning"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def new_run(c: httpx.Client, name: str) -> int:
    return c.post("/api/v1/runs", json={"recipe": "external", "name": name}).json()["id"]


def bodies(total: int, batch: int, key: str = "loss") -> list[bytes]:
    out = []
    for start in range(0, total, batch):
        out.append(json.dumps({"points": [{"key": key, "step": i, "value": 1.0 / (i + 1), "epoch": i // 10_000}
                                          for i in range(start, min(total, start + batch))]}).encode())
    return out


def ingest(c: httpx.Client, total: int, batch: int) -> float:
    rid = new_run(c, f"ingest-{batch}")
    payloads = bodies(total, batch)
    t0 = time.perf_counter()
    for body in payloads:
        r = c.post(f"/api/v1/runs/{rid}/metrics", content=body, headers={"Content-Type": "application/json"})
        r.raise_for_status()
    return total / (time.perf_counter() - t0)


def downsampled_read(c: httpx.Client) -> tuple[float, float, int]:
    rid = new_run(c, "million")
    for body in bodies(1_000_000, 10_000):
        c.post(f"/api/v1/runs/{rid}/metrics", content=body, headers={"Content-Type": "application/json"})
    times = []
    for _ in range(11):
        t0 = time.perf_counter()
        r = c.get(f"/api/v1/runs/{rid}/metrics?keys=loss&max_points=2000")
        times.append(time.perf_counter() - t0)
    series = r.json()["series"]["loss"]
    assert series["total_points"] == 1_000_000
    return statistics.median(times) * 1000, max(times) * 1000, len(series["steps"])


def sse_latency(c: httpx.Client, url: str, samples: int = 40) -> tuple[float, float]:
    rid = new_run(c, "sse")
    sent: dict[int, float] = {}
    latencies: list[float] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(timeout=60) as lc, lc.stream("GET", f"{url}/api/v1/runs/{rid}/events") as response:
            for line in response.iter_lines():
                if line.startswith("event: status"):
                    ready.set()
                if line.startswith("data: ") and '"points"' in line:
                    now = time.perf_counter()
                    for p in json.loads(line[6:])["points"]:
                        latencies.append(now - sent[p["step"]])
                    if len(latencies) >= samples:
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    for step in range(samples):
        sent[step] = time.perf_counter()
        c.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "x", "step": step, "value": 1.0}]})
        time.sleep(0.137)  # not in phase with the server's poll interval
    thread.join(30)
    latencies.sort()
    return latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.95) - 1] * 1000


def logger_overhead(url: str, steps: int = 1500, every: int = 1) -> tuple[float, float, float, float]:
    """trainer_core.Trainer fitting a small MLP (batch 64) for ``steps`` steps, with
    ``logger=False``, with a logger that does nothing (the trainer's own cost of producing
    logged metrics) and with RunyardLogger (``log_every_n_steps=every``); CPU ms per step."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import trainer_core as L
    from trainer_core.loggers.runyard import RunyardLogger

    torch.set_num_threads(1)

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            self.log("lr", 0.01)
            return loss

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64 * 50, 64), torch.randint(0, 10, (64 * 50,))), batch_size=64)

    def fit(logger: object, steps: int) -> float:
        trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=every, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        model = MLP()
        # CPU time of this process (all threads, so the sender thread's work counts): the
        # machine is shared and wall time swings by tens of percent with others' load.
        t0 = time.process_time()
        trainer.fit(model, data)  # includes finalize: the logger's final flush is counted
        return time.process_time() - t0

    class NullLogger(L.loggers.Logger):
        name = "null"
        version = 0

        def log_metrics(self, metrics, step=None):  # noqa: ANN001, ANN201
            pass

        def log_hyperparams(self, params, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
            pass

    fit(False, 50)  # warm up
    runs: dict[str, list[float]] = {"none": [], "null": [], "runyard": []}
    for _ in range(5):  # interleaved, best of 5: the machine is shared
        runs["none"].append(fit(False, steps) / steps)
        runs["null"].append(fit(NullLogger(), steps) / steps)
        runs["runyard"].append(fit(RunyardLogger(url=url, name="overhead"), steps) / steps)
    base, null, logged = (min(runs[k]) for k in ("none", "null", "runyard"))
    return base * 1000, null * 1000, logged * 1000, (logged / base - 1) * 100


def logger_cpu_per_step(url: str, calls: int = 20_000) -> float:
    """CPU time (all threads, so the sender's JSON and HTTP count) per ``log_metrics`` call of
    three metrics, including the final flush: the logger's own cost per logged step, in ms."""
    from trainer_core.loggers.runyard import RunyardLogger

    best = float("inf")
    for _ in range(3):
        logger = RunyardLogger(url=url, name="logger-cpu")
        _ = logger.run_id
        metrics = {"train_loss": 0.5, "lr": 0.01, "epoch": 0}
        t0 = time.process_time()
        for step in range(calls):
            metrics["train_loss"] = 1.0 / (step + 1)
            logger.log_metrics(metrics, step=step)
        logger.flush()
        best = min(best, (time.process_time() - t0) / calls)
        logger.finalize("success")
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=300_000, help="points per ingest measurement")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    backends = [("SQLite", None)]
    pg_db = None
    if not args.no_postgres:
        try:
            import psycopg

            pg_db = f"runyard_bench_{os.getpid()}"
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {pg_db}")
            backends.append(("PostgreSQL", f"postgresql://postgres@127.0.0.1:5432/{pg_db}"))
        except Exception as exc:  # noqa: BLE001
            print(f"PostgreSQL skipped: {exc}")
    try:
        for label, database_url in backends:
            with tempfile.TemporaryDirectory() as home:
                proc, url = start_server(Path(home), database_url)
                try:
                    with httpx.Client(base_url=url, timeout=120) as c:
                        for batch in (1_000, 10_000):
                            rate = ingest(c, args.points, batch)
                            print(f"{label}: ingest, batches of {batch:>6,}: {rate:>10,.0f} points/s")
                        if label == "SQLite":
                            median, worst, n = downsampled_read(c)
                            print(f"{label}: 1,000,000-point series -> {n} points: median {median:.1f} ms "
                                  f"(max {worst:.1f} ms)")
                            p50, p95 = sse_latency(c, url)
                            print(f"{label}: POST -> SSE client latency: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
                            own = logger_cpu_per_step(url)
                            print(f"RunyardLogger own CPU per logged step (3 metrics, sender included): "
                                  f"{own * 1000:.1f} us")
                            for every in (50, 1):
                                base, null, logged, pct = logger_overhead(url, every=every)
                                print(f"RunyardLogger (Trainer, log_every_n_steps={every}): CPU {base:.3f} ms/step "
                                      f"without a logger, {null:.3f} with a do-nothing logger, {logged:.3f} with "
                                      f"RunyardLogger ({pct:+.1f}% vs no logger); logger's own cost / step: "
                                      f"{own / every / base * 100:.2f}%")
                        else:
                            median, worst, n = downsampled_read(c)
                            print(f"{label}: 1,000,000-point series -> {n} points: median {median:.1f} ms "
                                  f"(max {worst:.1f} ms)")
                finally:
                    proc.terminate()
                    proc.wait(10)
    finally:
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if pg_db:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)")


if __name__ == "__main__":
    main()
