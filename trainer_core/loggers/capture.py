"""stdout/stderr of a run, line by line, into the run's log lines (and still to the terminal).

``LineTee`` wraps a text stream; ``capture_output(sink)`` is a context manager, ``Capture(sink)``
the same with explicit ``start()``/``stop()`` (what ``RunyardLogger`` uses). ``sink`` receives
lists of ``(stream, text, datetime)``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

MAX_LINE = 10_000

Sink = Callable[[list[tuple[str, str, Any]]], None]


class LineTee:
    """A text stream that passes writes through and hands complete lines to ``sink``.

    A carriage return (progress bars) starts the line over, so only its final state is kept.
    ``detach()`` stops handing lines on (the stream keeps passing writes through), for when
    someone else wrapped ``sys.stdout`` after us and we cannot take our wrapper out.
    """

    def __init__(self, stream: TextIO, name: str, sink: Sink) -> None:
        self._stream = stream
        self.name = name
        self._sink: Sink | None = sink
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        try:
            self._stream.write(text)
        except Exception:  # a closed terminal must not fail the run
            pass
        if not text or self._sink is None:
            return len(text) if text else 0
        with self._lock:
            data = self._partial + text
            *complete, self._partial = data.split("\n")
            if len(self._partial) > MAX_LINE:
                complete.append(self._partial)
                self._partial = ""
        lines = [line.rsplit("\r", 1)[-1][:MAX_LINE] for line in complete]
        lines = [line for line in lines if line.strip()]
        sink = self._sink
        if lines and sink is not None:
            now = datetime.now(UTC)
            try:
                sink([(self.name, line, now) for line in lines])
            except Exception:  # printing must never fail because of the capture
                pass
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except Exception:
            pass

    def close_partial(self) -> None:
        with self._lock:
            rest, self._partial = self._partial.rsplit("\r", 1)[-1], ""
        sink = self._sink
        if rest.strip() and sink is not None:
            try:
                sink([(self.name, rest, datetime.now(UTC))])
            except Exception:
                pass

    def detach(self) -> None:
        self.close_partial()
        self._sink = None

    @property
    def wrapped(self) -> TextIO:
        return self._stream

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


class Capture:
    """``start()`` puts ``LineTee``s on ``sys.stdout``/``sys.stderr``; ``stop()`` takes them out
    again (or, when something else wrapped the streams since, detaches them)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._out: LineTee | None = None
        self._err: LineTee | None = None

    @property
    def active(self) -> bool:
        return self._out is not None

    def start(self) -> Capture:
        if self._out is None:
            self._out = LineTee(sys.stdout, "stdout", self._sink)
            self._err = LineTee(sys.stderr, "stderr", self._sink)
            sys.stdout, sys.stderr = self._out, self._err
        return self

    def stop(self) -> None:
        out, err, self._out, self._err = self._out, self._err, None, None
        for tee, attr in ((out, "stdout"), (err, "stderr")):
            if tee is None:
                continue
            if getattr(sys, attr) is tee:
                setattr(sys, attr, tee.wrapped)
            tee.detach()


@contextmanager
def capture_output(sink: Sink) -> Iterator[None]:
    """Within the block, ``print`` and writes to ``sys.stderr`` (warnings, tracebacks) also go to ``sink``."""
    capture = Capture(sink).start()
    try:
        yield
    finally:
        capture.stop()
