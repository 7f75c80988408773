"""worker/child.py through the requirements install's use of it (worker/codeenv.py ``_run_logged``):
a stop kills the child's group at once (SIGKILL, no grace), its non-blank lines reach the output and
the tail. The command child's SIGTERM-then-SIGKILL path is tests/worker/test_code_runs.py's."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

from worker import codeenv

CHILD = textwrap.dedent("""
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    print("one")
    print("")
    print("ready", flush=True)
    while True:
        time.sleep(60)
""")


def test_a_stopped_install_is_killed_at_once_and_keeps_its_lines(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    seen: list[str] = []
    code, tail = codeenv._run_logged(
        [sys.executable, str(script)], tmp_path, seen.append, should_stop=lambda: "ready" in seen
    )
    assert code == -signal.SIGKILL
    assert seen == ["one", "ready"] and tail == ["one", "ready"]


def test_an_install_that_ends_gives_its_code_and_last_lines(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(codeenv.TAIL_LINES + 5)]
    code, tail = codeenv._run_logged(
        [sys.executable, "-c", f"import sys; print({chr(10).join(lines)!r}); sys.exit(3)"],
        tmp_path,
        lambda line: None,
        should_stop=None,
    )
    assert code == 3 and tail == lines[-codeenv.TAIL_LINES:]
