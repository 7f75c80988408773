"""A multi-process run on one worker host: start its ranks, watch them, end them together.

Each rank is a run process (:func:`worker.run_process.main`, forked from the worker's
forkserver) with torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``,
``TORCHELASTIC_RUN_ID`` unique per attempt) and the run's token; all ranks see the same
``CUDA_VISIBLE_DEVICES`` (the reserved GPUs), so rank r trains on ``cuda:r``. Only global rank 0
reports to the server. A rank that dies (a signal such as the OOM killer's SIGKILL, or an exit
code) ends the run at once: the other ranks get SIGTERM, SIGKILL after :data:`RANK_STOP_GRACE_S`,
and the attempt goes back to the queue counted, with "rank r of N was killed by SIGKILL" as its
error (failed with it after ``max_attempts``), so it resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from worker.agent import Agent

RANK_STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL for the ranks left when one died or rank 0 ended
SETTLE_S = 2.0  # after a rank's training error, how long to look for a rank that died first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def describe_rank_exit(rank: int, world: int, code: int | None) -> str:
    from worker.agent import SIGNAL_HINTS
    from worker.child import signal_name

    if code is not None and code < 0:
        name = signal_name(-code) or f"signal {-code}"
        return f"rank {rank} of {world} was killed by {name}{SIGNAL_HINTS.get(name, '')}."
    return f"rank {rank} of {world} exited with code {code}."


def rank_dir(run_dir: Path, rank: int) -> Path:
    """Rank 0 works in the run's folder; rank r > 0 in ``rank-r`` below it (its own downloads)."""
    return run_dir if rank == 0 else run_dir / f"rank-{rank}"


def _signal(procs: list[BaseProcess], sig: int) -> None:
    for p in procs:
        if p.exitcode is None and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)


def stop_all(procs: list[BaseProcess], grace: float = RANK_STOP_GRACE_S) -> None:
    """SIGTERM every rank still alive, SIGKILL after ``grace``; returns once all have exited."""
    _signal(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    _signal(procs, signal.SIGKILL)
    for p in procs:
        p.join()


def supervise(agent: Agent, claim: dict[str, Any], payload: dict[str, Any], world: int) -> str:
    """Run ``world`` ranks of the claimed attempt; the run's status (as ``Agent._supervise``)."""
    from worker import run_process
    from worker.agent import LOST_KILL_AFTER_S, WORKER_SHUTDOWN

    run_id, attempt = claim["run"]["id"], claim["attempt"]
    run_dir = Path(payload["run_dir"])
    dist = {"world_size": world, "master_port": free_port(),
            "run_id": f"runyard-{run_id}-{attempt}-{secrets.token_hex(4)}"}
    procs: list[BaseProcess] = []
    for rank in range(world):
        rank_payload = {**payload, "run_dir": str(rank_dir(run_dir, rank)), "dist": {**dist, "rank": rank}}
        proc = agent._context.Process(target=run_process.main, args=(rank_payload,),
                                      name=f"runyard-run-{run_id}-rank-{rank}")
        proc.start()
        procs.append(proc)
    print(f"runyard: run {run_id} attempt {attempt}: {world} ranks, pids "
          f"{', '.join(str(p.pid) for p in procs)}, master port {dist['master_port']}", flush=True)
    signalled = False
    beat_every = float(claim.get("heartbeat_interval") or 1.0)
    next_beat = time.monotonic() + beat_every
    lost_since: float | None = None
    rank0_done_at: float | None = None
    crash: str | None = None
    errored_at: float | None = None
    while True:
        procs[0].join(0.2)
        codes = [p.exitcode for p in procs]
        dead = [(r, c) for r, c in enumerate(codes)
                if c is not None and c not in (0, run_process.EXIT_REQUEUE, run_process.EXIT_RANK_ERROR)]
        if dead:  # a rank was killed or exited on its own: the run cannot go on
            crash = describe_rank_exit(dead[0][0], world, dead[0][1])
            break
        if any(c == run_process.EXIT_RANK_ERROR for c in codes):
            # a rank's training raised; a peer's death makes the others raise too: look for it a moment
            errored_at = errored_at or time.monotonic()
            if time.monotonic() - errored_at > SETTLE_S or all(c is not None for c in codes):
                break
        elif all(c is not None for c in codes):
            break
        if codes[0] is not None:  # rank 0 reported; the others end with it (or are ended)
            rank0_done_at = rank0_done_at or time.monotonic()
            if time.monotonic() - rank0_done_at > RANK_STOP_GRACE_S:
                break
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + beat_every
            if agent._beat_run(run_id, attempt) is False:
                lost_since = lost_since or time.monotonic()
            else:
                lost_since = None
        if lost_since is not None and time.monotonic() - lost_since > LOST_KILL_AFTER_S:
            _signal(procs, signal.SIGKILL)
            lost_since = None
        if WORKER_SHUTDOWN.is_set() and not signalled:
            signalled = True  # every rank stops at the same step (RunControl agrees across ranks)
            _signal(procs, signal.SIGUSR1)
    if crash is not None:
        # Said before the others are stopped: their own errors (a broken collective) come after it.
        after = agent.report_crash(run_id, attempt, crash)
        stop_all(procs)
        agent._clean(run_dir)
        return after or "lost"  # "queued": retried from its last checkpoint (maybe by another slot already)
    stop_all(procs)
    codes = [p.exitcode for p in procs]
    if crash is None and codes[0] == run_process.EXIT_REQUEUE:
        return agent.requeue(run_id, attempt, run_dir)
    status = agent._status(run_id)
    if status == "running":  # rank 0 did not report a final status: say why
        errors = [rank_dir(run_dir, r) / f"rank-{r}-error.txt" for r, c in enumerate(codes)
                  if c == run_process.EXIT_RANK_ERROR]
        found = [e for e in errors if e.is_file()]
        if found:  # a training error (not retried, as in a single process)
            reason = found[0].read_text(encoding="utf-8", errors="replace")
            try:
                agent.client.request("POST", f"/runs/{run_id}/finish",
                                     json={"status": "failed", "error": reason[:20000], "attempt": attempt},
                                     retry_for=60)
                status = "failed"
            except Exception as exc:  # the reaper still ends it
                print(f"runyard: run {run_id}: {reason.splitlines()[0]} (not recorded: {exc})", flush=True)
        else:
            status = agent.report_crash(run_id, attempt, describe_rank_exit(0, world, cast(int, codes[0])))
    agent._clean(run_dir)
    return status or "lost"
