"""Tracking-server benchmark: prints figures, asserts nothing.

- ingest points/s through the REST API in batches of 1,000 and 10,000 (SQLite and PostgreSQL)
- time to read a 1,000,000-point series downsampled to 2,000 points
- time from a point's POST to its arrival on an SSE client (p50, p95)
- RunyardLogger's steady-state cost per training step compared with no logger (and CSVLogger
  as a reference): see ``logger_step_overhead``

Each backend gets its own uvicorn process (like a deployment). Usage:
``python bench/tracking.py [--points 300000] [--no-postgres] [--logger-only] [--rounds 9]``
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
import uuid
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
        # as RunyardLogger sends them: each batch with its idempotency key (stored with the points)
        r = c.post(f"/api/v1/runs/{rid}/metrics", content=body, headers={"Content-Type": "application/json",
                                                                         "Idempotency-Key": uuid.uuid4().hex})
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


def _logger_models() -> dict[str, tuple]:
    """The two steps measured: the tutorial's MNIST autoencoder (784→64→3→64→784, Adam, batch
    64; a realistic small CPU step) and a tiny MLP (64→256→10, SGD, batch 64), where any
    per-step cost of a logger shows most. Both log ``train_loss`` (+ ``lr`` for the MLP)."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    import trainer_core as L

    class LitAutoEncoder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))
            self.decoder = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))

        def training_step(self, batch, batch_idx):  # ANN201
            x, _ = batch
            x = x.view(x.size(0), -1)
            loss = F.mse_loss(self.decoder(self.encoder(x)), x)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

        def training_step(self, batch, batch_idx):  # ANN201
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            self.log("lr", 0.01)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    g = torch.Generator().manual_seed(0)
    mnist = TensorDataset(torch.rand(64 * 100, 1, 28, 28, generator=g), torch.randint(0, 10, (64 * 100,), generator=g))
    small = TensorDataset(torch.randn(64 * 100, 64, generator=g), torch.randint(0, 10, (64 * 100,), generator=g))
    return {
        # steps: ~3 s of steady state each, so the window spans several of the logger's
        # one-second sends (a shorter fit would leave all sending to the final flush)
        "autoencoder": (LitAutoEncoder, DataLoader(mnist, batch_size=64), 3000),
        "tiny MLP": (MLP, DataLoader(small, batch_size=64), 7000),
    }


def logger_step_overhead(url: str, rounds: int = 7, warmup: int = 200) -> list[dict]:
    """Steady-state cost of a logger per training step.

    Real ``trainer_core.Trainer`` fits against the running server, one per configuration —
    no logger (``logger=False``), ``RunyardLogger``, ``CSVLogger`` (reference) and a logger
    whose methods do nothing (what the trainer itself spends producing logged metrics once
    any logger is attached) — interleaved
    within each round, the order rotating. A callback stamps wall (``perf_counter``) and CPU
    (``process_time``: all threads of this process, so the logger's sender thread counts)
    times at every ``on_train_batch_end``; the per-step figure is the mean over the steps
    after ``warmup`` (the interval between batch ends covers data loading, the step, the
    trainer's logging and the logger's ``log_metrics``). Setup (``fit`` start to the first
    batch end: run creation, hyperparameters, model summary) and teardown (last batch end to
    the return of ``fit``: final flush, status) are kept separately. Per round the ratio
    logger/no-logger is taken; the result is the median over rounds with quartiles.
    """
    import torch

    import trainer_core as L
    from trainer_core.loggers import CSVLogger
    from trainer_core.loggers.runyard import RunyardLogger

    torch.set_num_threads(1)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # ANN201
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

    class NullLogger(L.loggers.Logger):
        name = "null"
        version = 0

        def log_metrics(self, metrics, step=None):  # ANN201
            pass

        def log_hyperparams(self, params, *args, **kwargs):  # ANN002, ANN003, ANN201
            pass

    def fit(model_cls: type, data: object, steps: int, config: str, every: int, tmp: str) -> dict[str, float]:
        if config == "none":
            logger: object = False
        elif config == "runyard":
            logger = RunyardLogger(url=url, name="step-overhead", save_dir=tmp)
        elif config == "null":
            logger = NullLogger()
        else:
            logger = CSVLogger(tmp)
        timer = StepTimer()
        torch.manual_seed(0)
        model = model_cls()
        trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=every, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            callbacks=[timer], default_root_dir=tmp)
        w0, c0 = time.perf_counter(), time.process_time()
        trainer.fit(model, data)
        w1, c1 = time.perf_counter(), time.process_time()
        n = len(timer.wall) - 1 - warmup
        return {
            "wall": (timer.wall[-1] - timer.wall[warmup]) / n,
            "cpu": (timer.cpu[-1] - timer.cpu[warmup]) / n,
            "setup": timer.wall[0] - w0,
            "teardown": w1 - timer.wall[-1],
            "setup_cpu": timer.cpu[0] - c0,
            "teardown_cpu": c1 - timer.cpu[-1],
        }

    def quartiles(values: list[float]) -> tuple[float, float, float]:
        q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return q1, q2, q3

    results = []
    configs = ["none", "runyard", "csv", "null"]
    for label, (model_cls, data, steps) in _logger_models().items():
        for every in (1, 50):
            samples: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
            with tempfile.TemporaryDirectory() as tmp:
                fit(model_cls, data, 500, "runyard", every, tmp)  # warm up: imports, allocator, connection
                fit(model_cls, data, 500, "none", every, tmp)
                for r in range(rounds):
                    for config in configs[r % 4:] + configs[:r % 4]:
                        samples[config].append(fit(model_cls, data, steps, config, every, tmp))
            row: dict = {"model": label, "every": every}
            for config in configs:
                for what in ("wall", "cpu", "setup", "teardown", "setup_cpu", "teardown_cpu"):
                    row[f"{config}_{what}"] = statistics.median(s[what] for s in samples[config])
            for config in ("runyard", "csv", "null"):
                for what in ("wall", "cpu"):
                    ratios = [(s[what] / b[what] - 1) * 100 for s, b in zip(samples[config], samples["none"],
                                                                             strict=True)]
                    row[f"{config}_{what}_pct"] = quartiles(ratios)
            results.append(row)
            print_logger_row(row)
    return results


def print_logger_row(row: dict) -> None:
    def pct(q: tuple[float, float, float]) -> str:
        return f"{q[1]:+.1f}% [{q[0]:+.1f}, {q[2]:+.1f}]"

    print(f"RunyardLogger per step, {row['model']}, log_every_n_steps={row['every']}: "
          f"no logger {row['none_wall'] * 1e3:.3f} ms wall / {row['none_cpu'] * 1e3:.3f} ms CPU; "
          f"RunyardLogger wall {pct(row['runyard_wall_pct'])}, CPU {pct(row['runyard_cpu_pct'])}; "
          f"CSVLogger wall {pct(row['csv_wall_pct'])}, CPU {pct(row['csv_cpu_pct'])}; "
          f"do-nothing logger wall {pct(row['null_wall_pct'])}, CPU {pct(row['null_cpu_pct'])}")
    print("    setup / teardown wall ms (CPU ms): " + "; ".join(
        f"{c} {row[c + '_setup'] * 1e3:.0f} ({row[c + '_setup_cpu'] * 1e3:.0f}) / "
        f"{row[c + '_teardown'] * 1e3:.0f} ({row[c + '_teardown_cpu'] * 1e3:.0f})"
        for c in ("none", "runyard", "csv", "null")))


def logger_cpu_per_step(url: str, calls: int = 20_000) -> float:
    """CPU time (all threads, so the sender's JSON and HTTP count) per ``log_metrics`` call of
    three metrics, including the final flush: the logger's own cost per logged step, in ms."""
    from trainer_core.loggers.runyard import RunyardLogger

    best = float("inf")
    for _ in range(3):
        logger = RunyardLogger(url=url, name="logger-cpu", save_dir=tempfile.mkdtemp())
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
    parser.add_argument("--logger-only", action="store_true", help="only the RunyardLogger measurements")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the logger measurement")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    backends = [("SQLite", None)]
    pg_db = None
    if args.logger_only:
        with tempfile.TemporaryDirectory() as home:
            proc, url = start_server(Path(home), None)
            try:
                own = logger_cpu_per_step(url)
                print(f"RunyardLogger own CPU per logged step (3 metrics, sender included): {own * 1000:.1f} us")
                logger_step_overhead(url, rounds=args.rounds)
            finally:
                proc.terminate()
                proc.wait(10)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return
    if not args.no_postgres:
        try:
            import psycopg

            pg_db = f"runyard_bench_{os.getpid()}"
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {pg_db}")
            backends.append(("PostgreSQL", f"postgresql://postgres@127.0.0.1:5432/{pg_db}"))
        except Exception as exc:
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
                            logger_step_overhead(url, rounds=args.rounds)
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
