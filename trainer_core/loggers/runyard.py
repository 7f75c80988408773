"""``RunyardLogger``: track a script's training on a Runyard server over its REST API.

Standard library only (urllib, json, threading): trainer_core never imports the server.
The run is created (``recipe="external"``) on first use. ``log_metrics`` only appends
``(step, time, dict)`` to a deque (no lock, no conversion, no wake-up); a background thread
wakes every ``flush_interval`` (or when 10,000 points are waiting, or on ``flush``), converts
the values, builds the JSON and sends batches (``POST /runs/{id}/metrics``, at most 10,000
points each), retrying with back-off while the server is briefly unreachable, so training
never waits on the network. ``finalize`` flushes everything and sets the final status.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from argparse import Namespace
from collections import deque
from typing import Any

from trainer_core.loggers.logger import Logger

log = logging.getLogger(__name__)

MAX_POINTS_PER_REQUEST = 10_000
STATUS_OF = {"success": "succeeded", "failed": "failed", "interrupted": "cancelled"}


class RunyardError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _json_value(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _to_float(value: Any) -> float | None:
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_NON_FINITE_JSON = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}


def _encode_entries(entries: list[tuple[int, float, dict]]) -> bytes:
    """``{"points": [...]}`` straight from what ``log_metrics`` queued, as text: the same JSON as
    ``_encode_points(_points_of(entries))`` at a third of the CPU (no dict per point, no generic
    encoder walk), which matters because the sender shares the GIL with training."""
    prefixes: dict[Any, str] = {}
    parts = []
    for step, now, metrics in entries:
        epoch = metrics.get("epoch")
        if epoch is not None and type(epoch) is not int:
            epoch = _to_float(epoch)
            epoch = int(epoch) if epoch is not None and math.isfinite(epoch) else None
        tail = f',"step":{int(step)},"epoch":{"null" if epoch is None else int(epoch)},"wall_time":{float(now)!r}}}'
        for key, value in metrics.items():
            if type(value) is not float:
                value = _to_float(value)
                if value is None:
                    continue
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = prefixes[key] = '{"key":' + json.dumps(key if isinstance(key, str) else str(key)) + ',"value":'
            if value != value:
                text = '"NaN"'
            elif value in _NON_FINITE_JSON:
                text = _NON_FINITE_JSON[value]
            else:
                text = repr(value)  # a finite float's repr is valid JSON
            parts.append(prefix + text + tail)
    return ('{"points":[' + ",".join(parts) + "]}").encode()


def _points_of(entries: list[tuple[int, float, dict]]) -> list[tuple]:
    """``(key, step, value, epoch, wall_time)`` tuples from what ``log_metrics`` queued (runs
    on the sender thread: tensors' ``.item()`` and non-numeric values are dealt with here)."""
    points = []
    for step, now, metrics in entries:
        epoch = metrics.get("epoch")
        for key, value in metrics.items():
            if type(value) is not float:
                value = _to_float(value)
                if value is None:
                    continue
            points.append((key, step, value, epoch, now))
    return points


def _encode_points(points: list[tuple]) -> bytes:
    """``{"points": [...]}`` from ``(key, step, value, epoch, wall_time)`` tuples, without a
    generic walk over the payload."""
    out = []
    for key, step, value, epoch, wall_time in points:
        if value != value:
            value = "NaN"
        elif value in _NON_FINITE:
            value = _NON_FINITE[value]
        if epoch is not None and type(epoch) is not int:
            epoch = _to_float(epoch)
            epoch = int(epoch) if epoch is not None and math.isfinite(epoch) else None
        out.append({"key": key, "step": step, "value": value, "epoch": epoch, "wall_time": wall_time})
    return json.dumps({"points": out}, separators=(",", ":")).encode()


class RunyardLogger(Logger):
    """Send a run's hyperparameters, model summary, metrics, status and (optionally)
    checkpoints to a Runyard server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000`` (default ``RUNYARD_URL`` or that).
        project: project name on the server.
        name: run name (the server picks one when left out).
        run_id: attach to an existing run instead of creating one.
        upload_checkpoints: upload each saved checkpoint file (``PUT .../checkpoints/upload``).
        flush_interval: seconds between background sends (the sender also wakes early when
            10,000 points are waiting, and on ``flush``/``finalize``).
        retry_for: how long (seconds) a send is retried while the server is unreachable before
            the logger gives up on it with a warning (training is never interrupted).
        timeout: seconds per HTTP request.
    """

    def __init__(
        self,
        url: str | None = None,
        project: str = "default",
        name: str | None = None,
        run_id: int | None = None,
        upload_checkpoints: bool = False,
        flush_interval: float = 1.0,
        retry_for: float = 60.0,
        timeout: float = 10.0,
        max_buffered_points: int = 2_000_000,
    ) -> None:
        super().__init__()
        self.url = (url or os.environ.get("RUNYARD_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.project = project
        self._name = name
        self._run_id = run_id
        self._run: dict[str, Any] | None = None
        self.upload_checkpoints = upload_checkpoints
        self.flush_interval = flush_interval
        self.retry_for = retry_for
        self.timeout = timeout
        self.max_buffered_points = max_buffered_points
        self._ops: deque[tuple[str, Any]] = deque()  # ("call", (method, path, body, raw, query))
        # log_metrics appends (step, wall time, dict) here from the training thread without a
        # lock (deque.append/popleft are atomic); the sender pops. Counters: _queued_points is
        # written by the training thread only, _taken_points by the sender only.
        self._metrics: deque[tuple[int, float, dict]] = deque()
        self._queued_points = 0
        self._taken_points = 0
        self._wake_at = MAX_POINTS_PER_REQUEST
        self._flush_requested = False
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._uploaded: set[tuple[str, float]] = set()
        self._dropped = 0
        self._finalized = False
        self._max_points = MAX_POINTS_PER_REQUEST  # lowered when the server answers 413

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: Any = None, raw: bytes | str | None = None,
                 query: dict[str, Any] | None = None, retry: bool = True,
                 content_type: str = "application/octet-stream") -> Any:
        suffix = f"/api/v1{path}"
        if query:
            suffix += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = raw
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(_json_value(body), allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            headers["Content-Type"] = content_type
        deadline = time.monotonic() + (self.retry_for if retry else 0)
        delay = 0.2
        while True:
            url = self.url + suffix  # read each try: the server may have moved (tests, failover)
            upload = None
            if isinstance(raw, str):  # a file to stream (checkpoints can be large): reopen per try
                try:
                    upload = open(raw, "rb")  # noqa: SIM115 - closed in finally
                except OSError as exc:
                    raise RunyardError(f"Cannot read {raw} to upload it: {exc}") from None
                headers["Content-Length"] = str(os.fstat(upload.fileno()).st_size)
                data = upload
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                return json.loads(payload) if payload else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                if exc.code < 500 or time.monotonic() > deadline:
                    raise RunyardError(f"{method} {url} failed with {exc.code}: {detail}", exc.code) from None
                problem = f"{exc.code}: {detail}"
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RunyardError(f"The Runyard server at {self.url} is unreachable ({exc}); "
                                       "start it or check the url.") from None
                problem = str(exc)
            finally:
                if upload is not None:
                    upload.close()
            log.debug("retrying %s %s in %.1fs (%s)", method, path, delay, problem)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ run

    @property
    def run_id(self) -> int:
        if self._run_id is None:
            run = self._request("POST", "/runs", {"recipe": "external", "project": self.project, "name": self._name})
            self._run = run
            self._run_id = int(run["id"])
            self._name = run["name"]
        return self._run_id

    @property
    def experiment(self) -> dict[str, Any] | None:
        _ = self.run_id
        return self._run

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def version(self) -> int | None:
        return self._run_id

    @property
    def run_url(self) -> str:
        return f"{self.url}/runs/{self.run_id}"

    # ------------------------------------------------------------------ background sender

    def _start(self) -> None:
        if self._thread is None:
            _ = self.run_id  # create the run in the caller's thread so errors surface early
            self._thread = threading.Thread(target=self._loop, name="runyard-logger", daemon=True)
            self._thread.start()

    def _enqueue(self, kind: str, item: Any) -> None:
        self._start()
        with self._cond:
            self._ops.append((kind, item))
            self._cond.notify()

    def _pending(self) -> bool:
        return bool(self._ops or self._metrics)

    def _loop(self) -> None:
        next_send = time.monotonic() + self.flush_interval
        while True:
            with self._cond:
                # Sleep until the next send time unless asked to hurry (a call to make, a full
                # batch, flush/finalize): one wake-up per flush_interval while training.
                while not (self._closed or self._flush_requested or self._ops
                           or self._queued_points - self._taken_points >= MAX_POINTS_PER_REQUEST):
                    remaining = next_send - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if not self._pending():
                    self._flush_requested = False
                    if self._closed:
                        return
                    next_send = time.monotonic() + self.flush_interval
                    continue
                self._busy = True
                calls = list(self._ops)
                self._ops.clear()
            try:
                for _, (method, path, body, raw, query) in calls:
                    self._send("call", method, path, body, raw=raw, query=query)
                # Only what is queued now: entries logged during the sends wait for the next
                # wake-up instead of turning this into a request per step.
                left = len(self._metrics)
                while left:
                    entries = []
                    count = 0
                    while left and not (entries and count + len(self._metrics[0][2]) > self._max_points):
                        entry = self._metrics.popleft()
                        left -= 1
                        entries.append(entry)
                        count += len(entry[2])
                    self._taken_points += count
                    if count <= self._max_points:
                        self._send_points(entries, None)
                    else:  # more points than a request may carry (one log_metrics call with many keys)
                        points = _points_of(entries)
                        for start in range(0, len(points), self._max_points):
                            self._send_points(None, points[start:start + self._max_points])
            finally:
                next_send = time.monotonic() + self.flush_interval
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send_points(self, entries: list | None, points: list | None) -> None:
        """POST one batch (queued entries, or point tuples). A server configured with a lower
        RUNYARD_MAX_METRIC_POINTS answers 413: the batch goes again in chunks of half its size
        (halving further while still too large), and that size is kept for later batches."""
        body = _encode_entries(entries) if entries is not None else _encode_points(points)
        try:
            self._request("POST", f"/runs/{self._run_id}/metrics", raw=body, content_type="application/json")
            return
        except RunyardError as exc:
            size = len(points) if points is not None else sum(len(e[2]) for e in entries)
            if exc.status != 413 or size <= 1:
                log.warning("RunyardLogger dropped a points request: %s", exc)
                return
        except Exception:  # noqa: BLE001 - the sender must survive anything
            log.exception("RunyardLogger sender error")
            return
        self._max_points = max(1, min(self._max_points, size // 2))
        if points is None:
            points = _points_of(entries)
        start = 0
        while start < len(points):  # the size may drop further while the chunks go out
            chunk = points[start:start + self._max_points]
            self._send_points(None, chunk)
            start += len(chunk)

    def _send(self, kind: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._request(*args, **kwargs)
        except RunyardError as exc:
            log.warning("RunyardLogger dropped a %s request: %s", kind, exc)
        except Exception:  # noqa: BLE001 - the sender must survive anything
            log.exception("RunyardLogger sender error")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered is sent; False if ``timeout`` ran out first."""
        if self._thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending() or self._busy:
                self._flush_requested = True
                self._cond.notify_all()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    # ------------------------------------------------------------------ Logger API

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Hot path (every logged step): a copy of the dict onto a deque, nothing else. The
        # sender thread converts values, builds the points and the JSON.
        if self._thread is None:
            self._start()
        n = len(metrics)
        if self._queued_points - self._taken_points + n > self.max_buffered_points:
            self._dropped += n
            if self._dropped == n:
                log.warning("RunyardLogger: the server at %s is not keeping up; dropping metric points", self.url)
            return
        self._metrics.append((0 if step is None else int(step), time.time(), dict(metrics)))
        self._queued_points += n
        if self._queued_points >= self._wake_at:  # a full request waiting: wake the sender early
            self._wake_at = self._queued_points + MAX_POINTS_PER_REQUEST
            with self._cond:
                self._cond.notify()

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        params = dict(params or {})
        self._enqueue("call", ("PUT", f"/runs/{self.run_id}/hyperparameters", _json_value(params), None,
                               {"merge": "true"}))

    def log_model_summary(self, summary: dict[str, Any]) -> None:
        self._enqueue("call", ("PUT", f"/runs/{self.run_id}/summary", _json_value(summary), None, None))

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if not self.upload_checkpoints:
            return
        path = (getattr(checkpoint_callback, "_last_checkpoint_saved", "") or
                getattr(checkpoint_callback, "last_model_path", "") or
                getattr(checkpoint_callback, "best_model_path", ""))
        if not path or not os.path.isfile(path):
            return
        marker = (os.path.abspath(path), os.path.getmtime(path))
        if marker in self._uploaded:
            return
        self._uploaded.add(marker)
        best = os.path.abspath(getattr(checkpoint_callback, "best_model_path", "") or "") == marker[0]
        score = getattr(checkpoint_callback, "best_model_score", None) if best else None
        score = _to_float(score) if score is not None else None
        trainer = getattr(checkpoint_callback, "_trainer", None)
        query = {
            "filename": os.path.basename(path).replace(" ", "_"),
            "is_best": str(best).lower(),
            "is_last": "true",
            "monitor": getattr(checkpoint_callback, "monitor", None),
            "score": score if score is not None and math.isfinite(score) else None,
            "epoch": getattr(trainer, "current_epoch", None),
            "step": getattr(trainer, "global_step", None),
        }
        # Streamed from disk by the sender. A checkpoint deleted before it is sent (top-k
        # rotation) is skipped with a warning.
        self._enqueue("call", ("PUT", f"/runs/{self.run_id}/checkpoints/upload", None, os.path.abspath(path), query))

    def save(self) -> None:
        """Nothing to do: the trainer calls save() after every log_metrics (as Lightning does),
        and blocking there, or waking the sender for a request per step, would slow training.
        The sender sends every ``flush_interval``; ``flush()`` and ``finalize()`` wait for it."""

    def finalize(self, status: str) -> None:
        if self._finalized:
            return
        self._finalized = True
        if self._run_id is None and self._thread is None:
            return  # nothing was ever logged: no run to close
        complete = self.flush(timeout=self.retry_for + 5)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        final = STATUS_OF.get(status, "failed" if status != "success" else "succeeded")
        body: dict[str, Any] = {"status": final}
        if final == "failed":
            body["error"] = f"The training script reported status {status!r}."
        if not complete:
            log.warning("RunyardLogger: not every metric reached %s before finalize", self.url)
        try:
            self._request("PATCH", f"/runs/{self.run_id}", body)
        except RunyardError as exc:
            log.warning("RunyardLogger could not set the final status: %s", exc)
