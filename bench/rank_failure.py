"""How fast a multi-process run ends when one of its ranks dies (issue 13, point 7).

A real server and a real Celery worker (made-up GPU ids ``7,9``, ranks on CPU with gloo) train a
2-rank ``rank_probe`` run; once it has a resume checkpoint, rank 1 is SIGKILLed. Measured: the
time from the kill until the run is back in the queue (the agent's report), until both rank
processes are gone, and until the next attempt has its ranks again, against
``RUNYARD_HEARTBEAT_TIMEOUT`` (what a lost worker would cost). Prints figures; asserts nothing.
Usage: ``python bench/rank_failure.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.mnist import write_mnist
from tests.worker.stack import Stack, stack_env

TIMEOUT_S = 30.0


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="runyard-rank-failure-"))
    data = write_mnist(home / "mnist", n_train=64, n_test=16)
    stack = Stack(stack_env(home, data, RUNYARD_RECIPES="tests.worker.recipes_for_tests,tests.worker.ddp_recipes",
                            RUNYARD_HEARTBEAT_TIMEOUT=str(TIMEOUT_S), RUNYARD_MAX_ATTEMPTS=str(args.rounds + 1)),
                  home / "logs")
    requeued, ended, restarted = [], [], []
    try:
        stack.start_server()
        stack.start_worker("w", RUNYARD_WORKER_GPUS="7,9", RUNYARD_GPU_POOL=str(home / "pool.json"))
        trainer = {"devices": 2, "strategy": "ddp", "max_epochs": 1, "checkpoint_every_n_train_steps": 5}
        run = stack.submit("rank_probe", {"n": 100_000, "step_delay": 0.02}, trainer)
        for attempt in range(1, args.rounds + 1):
            pattern = re.compile(rf"run {run['id']} attempt {attempt}: 2 ranks, pids (\d+), (\d+)")
            while not (found := pattern.search(stack.read_log("w"))):
                time.sleep(0.05)
            pids = [int(found.group(1)), int(found.group(2))]
            stack.wait_last_checkpoint(run["id"], min_step=5 * attempt + 5, timeout=300)
            t0 = time.perf_counter()
            os.kill(pids[1], signal.SIGKILL)
            while stack.run(run["id"])["attempt"] == attempt and stack.run(run["id"])["status"] == "running":
                time.sleep(0.02)
            requeued.append(time.perf_counter() - t0)
            while not all(gone(p) for p in pids):
                time.sleep(0.02)
            ended.append(time.perf_counter() - t0)
            nxt = re.compile(rf"run {run['id']} attempt {attempt + 1}: 2 ranks")
            while not nxt.search(stack.read_log("w")):
                time.sleep(0.02)
            restarted.append(time.perf_counter() - t0)
    finally:
        stack.close()
    print(f"rank SIGKILL -> run requeued: median {statistics.median(requeued):.2f} s (max {max(requeued):.2f})")
    print(f"rank SIGKILL -> all ranks gone: median {statistics.median(ended):.2f} s (max {max(ended):.2f})")
    print(f"rank SIGKILL -> next attempt's ranks started: median {statistics.median(restarted):.2f} s")
    print(f"heartbeat timeout (a lost worker's cost): {TIMEOUT_S:.0f} s; ratio requeue/timeout "
          f"{statistics.median(requeued) / TIMEOUT_S:.3f}")


if __name__ == "__main__":
    main()
