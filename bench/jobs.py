"""Jobs benchmarks (issue 4): prints figures, asserts nothing.

1. submit -> running: time from ``POST /api/v1/runs`` to the run's ``started_at`` (set when an
   idle worker claims it), with the embedded broker (SQLite) and with Redis. Same machine, so
   one clock. Each run is tiny and finishes before the next is submitted (the worker is idle).
2. step overhead: wall time per training step of the same recipe with the tracking logger and
   the cancel-check callback (``RunControl`` fed by a live heartbeat thread) versus no logger
   and no callback, interleaved rounds, medians.

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
            extra["broker_url"] = "redis://127.0.0.1:6379/14"
            import redis

            redis.Redis(db=14).flushdb()
        stack = Stack(stack_env(home / "home", data, **extra), home / "logs")
        try:
            stack.start_server()
            stack.start_worker()
            stack.wait_status(stack.submit("digits_classifier", {}, {"max_steps": 1})["id"], "succeeded", 120)  # warm-up
            out = []
            for _ in range(runs):
                time.sleep(0.5)  # idle worker: polling, nothing in flight
                t0 = time.time()
                run = stack.submit("digits_classifier", {}, {"max_steps": 1, "limit_val_batches": 0})
                run = stack.wait_status(run["id"], ("running", "succeeded"), 60)
                started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00")).timestamp()
                out.append(started - t0)
                stack.wait_status(run["id"], "succeeded", 60)
            return out
        finally:
            stack.close()


def step_overhead(steps: int, rounds: int) -> dict[str, list[float]]:

    import torch
    from sqlalchemy.orm import Session

    import trainer_core as L
    from server import store
    from server.db import get_engine, upgrade_database
    from server.settings import Settings
    from tests.helpers.mnist import write_mnist
    from worker.control import RunControl
    from worker.heartbeat import RunHeartbeat
    from worker.recipes import RecipeContext, get_registry
    from worker.tracking import TrackingLogger

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    data = write_mnist(tmp / "mnist", 2048, 16)
    settings = Settings(home=tmp / "home", data_dir=data)
    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    engine = get_engine(settings.database_url)
    recipe = get_registry("")["mnist_classifier"]

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 20:  # skip warm-up
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.per_step = (time.perf_counter() - self.t0) / (trainer.global_step - 20)

    def one(variant: str, log_every: int) -> float:
        L.seed_everything(0)
        built = recipe.build({"hidden_dim": 256, "batch_size": 32}, RecipeContext(data_dir=str(data), download=False))
        timer = StepTimer()
        callbacks: list = [timer]
        logger: object = False
        cleanup = []
        if variant == "tracked":
            with Session(engine) as s:
                run = store.create_run(s, recipe="mnist_classifier", status="queued")
                run = store.claim_run(s, run.id, "bench", "cpu")
            beat = RunHeartbeat(engine, run.id, run.attempt, 0.5).start()
            logger = TrackingLogger(engine, run.id, settings.artifact_root)
            callbacks.insert(0, RunControl(beat.stop_requested, logger, tmp / "ckpt", every_n_train_steps=10**9))
            cleanup = [beat.close, logger.close]
        trainer = L.Trainer(max_steps=steps, max_epochs=1, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            log_every_n_steps=log_every)
        trainer.fit(built.model, datamodule=built.datamodule)
        for close in cleanup:
            close()
        return timer.per_step

    results: dict[str, list[float]] = {"plain": [], "tracked": [], "tracked_every_step": []}
    for _ in range(rounds):
        results["plain"].append(one("plain", 50))
        results["tracked"].append(one("tracked", 50))
        results["tracked_every_step"].append(one("tracked", 1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--only", choices=["latency", "overhead"])
    args = parser.parse_args()

    if args.only in (None, "latency"):
        brokers = ["sqlite"] + ([] if args.skip_redis else ["redis"])
        for broker in brokers:
            values = latency(broker, args.runs)
            print(f"submit->running, {broker} broker, {len(values)} runs: median {statistics.median(values):.3f} s, "
                  f"min {min(values):.3f} s, max {max(values):.3f} s")
    if args.only in (None, "overhead"):
        r = step_overhead(args.steps, args.rounds)
        plain = statistics.median(r["plain"])
        for name in ("tracked", "tracked_every_step"):
            value = statistics.median(r[name])
            print(f"step time {name}: {value * 1e3:.3f} ms vs plain {plain * 1e3:.3f} ms "
                  f"-> overhead {100 * (value / plain - 1):+.2f}% (rounds: "
                  f"{', '.join(f'{v * 1e3:.2f}' for v in r[name])} vs {', '.join(f'{v * 1e3:.2f}' for v in r['plain'])})")


if __name__ == "__main__":
    main()
