"""stdout/stderr of a run, line by line, into the run's log lines (and still to the terminal)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

MAX_LINE = 10_000


class LineTee:
    """A text stream that passes writes through and hands complete lines to ``sink``.

    A carriage return (progress bars) starts the line over, so only its final state is kept.
    """

    def __init__(self, stream: TextIO, name: str, sink: Callable[[list[tuple[str, str, Any]]], None]) -> None:
        self._stream = stream
        self.name = name
        self._sink = sink
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        try:
            self._stream.write(text)
        except Exception:  # noqa: BLE001 - a closed terminal must not fail the run
            pass
        if not text:
            return 0
        with self._lock:
            data = self._partial + text
            *complete, self._partial = data.split("\n")
            if len(self._partial) > MAX_LINE:
                complete.append(self._partial)
                self._partial = ""
        lines = [line.rsplit("\r", 1)[-1][:MAX_LINE] for line in complete]
        lines = [line for line in lines if line.strip()]
        if lines:
            now = datetime.now(UTC)
            self._sink([(self.name, line, now) for line in lines])
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except Exception:  # noqa: BLE001
            pass

    def close_partial(self) -> None:
        with self._lock:
            rest, self._partial = self._partial.rsplit("\r", 1)[-1], ""
        if rest.strip():
            self._sink([(self.name, rest, datetime.now(UTC))])

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._stream, "errors", None) or "strict"

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def capture_output(sink: Callable[[list[tuple[str, str, Any]]], None]) -> Iterator[None]:
    """Within the block, ``print`` and writes to ``sys.stderr`` (warnings, tracebacks) also go to ``sink``."""
    old_out, old_err = sys.stdout, sys.stderr
    out, err = LineTee(old_out, "stdout", sink), LineTee(old_err, "stderr", sink)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        out.close_partial()
        err.close_partial()
