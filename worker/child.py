"""A supervised child process of the worker: its output lines pumped to where they go (the last
non-blank ones kept in a tail), a stop flag polled while it runs, and its process group stopped
when the flag says so.

Used by the requirements install of a code run (:mod:`worker.codeenv`: pip, SIGKILL at once on a
stop) and by a code run's cli/command child (:mod:`worker.code`: SIGTERM, SIGKILL after
``RUNYARD_STOP_GRACE``). The caller starts the child (``start_new_session=True``, so its pid is its
group's id; :func:`spawn`) with its output piped, and decides what the exit code means.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

POLL_S = 0.2  # how often the stop flag is asked while the child runs
JOIN_S = 10.0  # how long the output readers get to finish once the child has exited

Sink = Callable[[str], None]


class Pipe(NamedTuple):
    """One of the child's output streams: each line (without its line end) goes to ``sink``;
    the non-blank ones also to ``tail`` when there is one."""

    stream: IO[bytes]
    sink: Sink
    tail: collections.deque[str] | None = None
    name: str = "runyard-child-output"


@dataclass
class Ended:
    code: int  # the exit code; negative: the signal that ended it
    stopped: bool  # the stop flag was raised and the group signalled


_PR_SET_PDEATHSIG = 1
_libc: Any = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not Linux: the child is killed through its group instead
    _libc = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the run's process dies (the worker, or the OOM
    killer, may SIGKILL that one; its child must not live on with the run's token)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: list[str],
    cwd: str | os.PathLike[str],
    env: dict[str, str],
    *,
    stderr: int = subprocess.PIPE,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """``argv`` in a process group of its own (its pid is the group's id), no stdin, stdout piped,
    stderr piped (or ``subprocess.STDOUT``: into stdout); with ``die_with_parent`` it gets SIGKILL
    when this process dies."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )


def signal_name(sig: int) -> str | None:
    """``SIGKILL`` for 9; None for a number that names no signal."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return None


def kill_group(pgid: int, sig: int) -> None:
    """``sig`` to the process group ``pgid`` (gone already: nothing)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pump(stream: IO[bytes], sink: Sink, tail: collections.deque[str] | None = None) -> None:
    """Every line of ``stream`` to ``sink`` (non-blank ones to ``tail`` too), to its end."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\r\n")
        if tail is not None and line.strip():
            tail.append(line)
        sink(line)
    stream.close()


def supervise_child(
    proc: subprocess.Popen[Any],
    pipes: Sequence[Pipe],
    should_stop: Callable[[], bool] | None,
    *,
    grace: float | None = None,
    on_stop: Callable[[], None] | None = None,
    on_kill: Callable[[], None] | None = None,
    kill_leftovers: bool = True,
) -> Ended:
    """Wait for ``proc`` to end while its ``pipes`` are pumped and ``should_stop`` is polled.

    The first time ``should_stop()`` is true, ``on_stop()`` is called and the child's group gets
    SIGKILL (``grace`` None) or SIGTERM, then SIGKILL (after ``on_kill()``) once ``grace`` seconds
    have passed without it ending. With ``kill_leftovers`` what is left of its group is killed
    after it has exited."""
    readers = [
        threading.Thread(target=pump, args=(p.stream, p.sink, p.tail), daemon=True, name=p.name) for p in pipes
    ]
    for reader in readers:
        reader.start()
    stop_at: float | None = None
    killed = False
    while True:
        try:
            code = proc.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop_at is None:
            if should_stop is not None and should_stop():
                if on_stop is not None:
                    on_stop()
                stop_at = time.monotonic()
                killed = grace is None
                kill_group(proc.pid, signal.SIGKILL if killed else signal.SIGTERM)
        elif not killed and grace is not None and time.monotonic() - stop_at > grace:
            if on_kill is not None:
                on_kill()
            killed = True
            kill_group(proc.pid, signal.SIGKILL)
    if kill_leftovers:
        kill_group(proc.pid, signal.SIGKILL)  # what it left behind in its group goes with it
    for reader in readers:
        reader.join(timeout=JOIN_S)
    return Ended(code, stop_at is not None)
