"""Jobs benchmarks (issue 4): prints figures, asserts nothing.

1. submit -> running and submit -> first logged metric: from ``POST /api/v1/runs`` to the run's
   ``started_at`` (set when an idle worker claims it) and to the ``wall_time`` of its first metric
   point (logged in the run's own process, forked from the worker's forkserver, and sent over
   HTTP), with the embedded broker (SQLite) and with Redis. Same machine, so one clock. Each run
   is tiny and finishes before the next is submitted (the worker is idle).
2. step overhead: wall time per training step of the same recipe with the run's RunyardLogger
   (to a live server, with heartbeats) and the cancel-check callback versus no logger and no
   callback, interleaved rounds, medians.

    .venv/bin/python bench/jobs.py [--runs 10] [--steps 400] [--rounds 5] [--skip-redis] [--only latency|overhead]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def latency(broker: str, runs: int) -> list[float]:
    from tests.helpers.mnist import write_mnist
    from tests.worker.stack import Stack, stack_env

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        data = write_mnist(home / "mnist", 64, 16)
        extra = {}
        if broker == "redis":
            import redis

            # an unused database (15 is the server tests')
            db = next(n for n in range(14, 0, -1) if redis.Redis(db=n).dbsize() == 0
                      and redis.Redis(db=n).set("runyard-bench", "1", nx=True))
            extra["broker_url"] = f"redis://127.0.0.1:6379/{db}"
        stack = Stack(stack_env(home / "home", data, **extra), home / "logs")
        try:
            stack.start_server()
            stack.start_worker()
            stack.wait_status(stack.submit("digits_classifier", {}, {"max_steps": 1})["id"], "succeeded", 120)  # warm-up
            out = []
            for _ in range(runs):
                time.sleep(0.5)  # idle worker: polling, nothing in flight
                t0 = time.time()
                run = stack.submit("digits_classifier", {}, {"max_steps": 3, "limit_val_batches": 0,
                                                             "log_every_n_steps": 1})
                run = stack.wait_status(run["id"], ("running", "succeeded"), 60)
                started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00")).timestamp()
                stack.wait_status(run["id"], "succeeded", 60)
                series = stack.metrics(run["id"], "train_loss")["train_loss"]
                out.append((started - t0, min(series["wall_times"]) - t0))
            return out
        finally:
            stack.close()
            if broker == "redis":
                redis.Redis(db=db).flushdb()


def step_overhead(steps: int, rounds: int) -> dict[str, list[float]]:
    import torch

    import trainer_core as L
    from tests.helpers.mnist import write_mnist
    from tests.worker.stack import Stack, stack_env
    from trainer_core.loggers.runyard import RunyardLogger
    from worker.control import RunControl
    from worker.recipes import RecipeContext, get_registry

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    data = write_mnist(tmp / "mnist", 2048, 16)
    stack = Stack(stack_env(tmp / "home", data), tmp / "logs")
    stack.start_server()
    recipe = get_registry("")["mnist_classifier"]

    class StepTimer(L.Callback):
        """Each step's wall time (batch start to next batch start); the median resists the
        bursts of other processes on a shared machine, the mean shows them."""

        def __init__(self) -> None:
            self.starts: list[tuple[float, float, float]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.starts.append((time.perf_counter(), time.thread_time(), time.process_time()))

        def on_train_end(self, trainer, pl_module):
            s = self.starts[20:]  # skip warm-up
            self.per_step = {
                "wall": statistics.median(b[0] - a[0] for a, b in zip(s, s[1:], strict=False)),
                "loop_cpu": (s[-1][1] - s[0][1]) / (len(s) - 1),  # the training thread only
                "process_cpu": (s[-1][2] - s[0][2]) / (len(s) - 1),  # + the sender/heartbeat thread
            }

    def one(variant: str, log_every: int) -> dict[str, float]:
        L.seed_everything(0)
        built = recipe.build({"hidden_dim": 256, "batch_size": 32}, RecipeContext(data_dir=str(data), download=False))
        timer = StepTimer()
        callbacks: list = [timer]
        logger: object = False
        tracking = None
        if variant in ("tracked", "control_only"):
            tracking = RunyardLogger(url=stack.base_url, project="bench", save_dir=str(tmp / "runs"),
                                     heartbeat_interval=0.5)
            callbacks.insert(0, RunControl(tracking.stop_requested, None, tmp / "ckpt", every_n_train_steps=10**9))
            logger = tracking if variant == "tracked" else False
        trainer = L.Trainer(max_steps=steps, max_epochs=1, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            log_every_n_steps=log_every)
        trainer.fit(built.model, datamodule=built.datamodule)
        if tracking is not None:
            tracking.finalize("success")
        return timer.per_step

    variants = {"plain": ("plain", 50), "control_only": ("control_only", 50), "tracked": ("tracked", 50),
                "tracked_every_step": ("tracked", 1)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    names = list(variants)
    try:
        for i in range(rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order each round
                results[name].append(one(*variants[name]))
    finally:
        stack.close()
    return results


def hook_costs(n: int = 200_000) -> dict[str, float]:
    """Microseconds the training thread spends per call in our code, timed in a tight loop:
    the cancel/checkpoint checks of RunControl (two hooks a step) and RunyardLogger.log_metrics
    (with no server: it only queues)."""
    import threading

    import trainer_core as L
    from trainer_core.loggers.runyard import RunyardLogger
    from worker.control import RunControl

    tmp = Path(tempfile.mkdtemp())
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    control = RunControl(threading.Event(), None, tmp, every_n_train_steps=10**9)
    t0 = time.perf_counter()
    for i in range(n):
        control.on_train_batch_start(trainer, None, None, i)
        control.on_train_batch_end(trainer, None, None, None, i)
    per_step_control = (time.perf_counter() - t0) / n
    tracking = RunyardLogger(url="http://127.0.0.1:9", save_dir=str(tmp / "runs"), flush_interval=3600)
    metrics = {"train_loss": 0.5, "train_acc": 0.9, "epoch": 0}
    t0 = time.perf_counter()
    for i in range(n):
        tracking.log_metrics(metrics, i)
    per_log = (time.perf_counter() - t0) / n
    return {"control_us_per_step": per_step_control * 1e6, "log_metrics_us_per_call": per_log * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--only", choices=["latency", "overhead", "hooks"])
    args = parser.parse_args()

    if args.only in (None, "latency"):
        brokers = ["sqlite"] + ([] if args.skip_redis else ["redis"])
        for broker in brokers:
            pairs = latency(broker, args.runs)
            for label, values in (("submit->running", [a for a, _ in pairs]),
                                  ("submit->first metric", [b for _, b in pairs])):
                print(f"{label}, {broker} broker, {len(values)} runs: median {statistics.median(values):.3f} s, "
                      f"min {min(values):.3f} s, max {max(values):.3f} s")
    if args.only in (None, "hooks"):
        costs = hook_costs()
        print(f"RunControl cancel/checkpoint checks: {costs['control_us_per_step']:.2f} us per step; "
              f"RunyardLogger.log_metrics: {costs['log_metrics_us_per_call']:.2f} us per call (2 metrics)")
    if args.only in (None, "overhead"):
        r = step_overhead(args.steps, args.rounds)
        print(f"overhead per training step vs no logger, {args.rounds} rounds of {args.steps} steps, "
              "median of per-round ratios (each round runs every variant back to back) [quartiles]:")
        for measure in ("loop_cpu", "process_cpu", "wall"):
            for name in ("control_only", "tracked", "tracked_every_step"):
                ratios = sorted(100 * (x[measure] / p[measure] - 1) for x, p in zip(r[name], r["plain"], strict=True))
                q1, med, q3 = statistics.quantiles(ratios, n=4)
                ms = statistics.median(x[measure] for x in r[name]) * 1e3
                plain_ms = statistics.median(x[measure] for x in r["plain"]) * 1e3
                print(f"  {measure:11s} {name:18s}: {med:+5.1f}% [{q1:+.1f}, {q3:+.1f}]  "
                      f"({ms:.3f} ms vs {plain_ms:.3f} ms per step)")


if __name__ == "__main__":
    main()
