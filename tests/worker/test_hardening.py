"""A run's code runs as the same OS user as its worker; it must not read the worker's token
from /proc/<worker pid>/environ (the worker processes are made non-dumpable)."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys

import pytest

from server.settings import forbid_peeking

NOBODY = 65534


def _parents(path: str) -> list[str]:
    out, d = [], os.path.dirname(path)
    while d and d != "/":
        out.append(d)
        d = os.path.dirname(d)
    return out
# The victim runs the real function's source (it needs only the standard library): a process of
# an unprivileged user cannot import the project from a checkout it may not read.
VICTIM = inspect.getsource(forbid_peeking) + """
import time
assert forbid_peeking()
print("ready", flush=True)
time.sleep(60)
"""
# a Python that the unprivileged user may execute (a virtualenv's may live under /root)
PYTHON = next((p for p in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3")
               if p and os.stat(p).st_mode & 0o001 and os.access(os.path.dirname(os.path.realpath(p)), os.X_OK)
               and all(os.stat(d).st_mode & 0o001 for d in _parents(os.path.realpath(p)))), None)


def _as_nobody() -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
def test_a_process_of_the_same_user_cannot_read_a_workers_environment(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to run both sides as one unprivileged user (root reads every /proc)")
    assert PYTHON, "no Python executable by an unprivileged user on this machine"
    secret = "ryw_" + "s" * 40
    env = {"PATH": "/usr/bin:/bin", "RUNYARD_TOKEN": secret}
    for peek in (False, True):
        code = VICTIM if peek else VICTIM.replace("assert forbid_peeking()", "")
        victim = subprocess.Popen([PYTHON, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                                  preexec_fn=_as_nobody, cwd="/")
        try:
            assert victim.stdout.readline().strip() == "ready"
            reader = subprocess.run(
                [PYTHON, "-c", f"print(open('/proc/{victim.pid}/environ','rb').read().count(b'{secret}'))"],
                capture_output=True, text=True, preexec_fn=_as_nobody, cwd="/", timeout=30, env=env)
            if peek:  # hardened: the same user is refused
                assert reader.returncode != 0 and "PermissionError" in reader.stderr, reader.stdout + reader.stderr
            else:  # the control: without it the token is right there
                assert reader.stdout.strip() == "1", reader.stderr
        finally:
            victim.kill()
            victim.wait(timeout=10)
