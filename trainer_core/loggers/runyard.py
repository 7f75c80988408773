"""``RunyardLogger``: track a training run on a Runyard server over its REST API.

Standard library only, through :mod:`trainer_core.client`; trainer_core never imports the server.

- **Nothing blocks training.** ``log_metrics`` appends ``(step, time, dict)`` to a deque (no lock,
  no conversion, no wake-up); every other call only queues. A background thread creates the run
  (``POST /runs`` with ``recipe="external"`` and a random ``client_key``, so a retried create never
  makes two runs), wakes every ``flush_interval`` (or when 10,000 points wait, or on ``flush``),
  and sends.
- **One ordered stream.** Hyperparameters, summary, checkpoints, the final status and metric
  batches go out in the order they were logged: the points logged before a checkpoint are on
  the server before the checkpoint is registered (resuming from it leaves no gap). Metric and
  log-line batches carry an ``Idempotency-Key`` kept across retries: a retry after a lost answer
  stores nothing twice. A 413 halves the batch size (kept for later batches).
- **Offline.** When the server does not answer, the records go to ``spool.jsonl`` in the run's
  local folder (each with its idempotency key; the create with its client_key) and are sent, in
  order, as soon as the server answers again. A run that ended offline is uploaded later with
  :func:`sync_spool` (``runyard sync DIR``).
- **Heartbeat.** ``POST /runs/{id}/heartbeat`` every ``heartbeat_interval`` s from its own thread;
  the answer sets ``stop_requested`` / ``cancel_requested``; a 409 sets ``lost`` (and
  ``stop_requested``): the run is no longer this process's.
- **stdout/stderr** become the run's log lines (``capture=True``) from the logger's start: its
  first use for a run it creates, its construction for a run it is attached to.
  ``RUNYARD_CAPTURE=0`` turns the capture off (a worker captures a child script's output itself).
- **Reproducibility record.** Once started, the environment record of
  :func:`trainer_core.environment.collect` (command line, versions, packages, GPUs, seed, git) is
  sent with ``PUT /runs/{id}/environment`` (an ordered op, spooled like the others), and again at
  ``log_hyperparams``/``log_model_summary``/``finalize`` when the ``seed_everything`` seed (or
  ``RUNYARD_CODE_DIR``) changed since; :meth:`RunyardLogger.send_environment` sends it on demand.
  A server without that route is warned about once.
- **System metrics.** A :class:`~trainer_core.sysmetrics.SystemSampler` thread samples CPU, RAM,
  the process tree's RSS and the GPUs every ``RUNYARD_SYSTEM_METRICS_INTERVAL`` s (default 5;
  ``RUNYARD_SYSTEM_METRICS=0`` or 0 turns it off) into ``system/*`` series: step = the sample's
  number, wall time = when it was taken. They go on the ordered op queue (not the trainer's point
  deque, whose counters belong to the training thread) and out with the next send.
- **Auto-attach.** :meth:`RunyardLogger.auto` is the one process-wide logger attached to
  ``RUNYARD_RUN_ID``; ``Trainer`` uses it when ``RUNYARD_AUTO_LOGGER=1`` (a worker's code runs).
- **Checkpoints** saved by ``ModelCheckpoint`` are uploaded (resumable upload) into the run's
  folder on the server; a checkpoint rotated out locally (top-k) is deleted there too, and the
  best/last flags follow. The server's retention policy (the project's quotas) may drop older
  ones; with ``prune_local`` (on for a worker's run process) their local files go too.
- **Quotas.** A record refused by a quota of the project (413, ``field`` ``quota.<name>``) is not
  split or retried: the next ``log_metrics`` / checkpoint call raises :class:`QuotaExceeded` with the
  server's sentence, so the run fails naming the quota and how to raise it.
- **Final status.** For a run it created, ``finalize`` sets ``succeeded`` / ``failed`` (with the
  exception's traceback when called while handling one, as the trainer does) / ``cancelled``.
  A run it was attached to (``run_id``, e.g. a worker's run process) is only flushed there; its
  owner calls :meth:`RunyardLogger.finish`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import traceback
import uuid
import weakref
from argparse import Namespace
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from trainer_core.client import (
    ApiError,
    Client,
    ClientError,
    Unreachable,
    encode_entries,
    encode_points,
    json_safe,
    points_of,
    safe_filename,
    to_float,
)
from trainer_core.loggers.capture import Capture
from trainer_core.loggers.logger import Logger
from trainer_core.sysmetrics import SystemSampler, interval_from_env

log = logging.getLogger(__name__)

MAX_POINTS_PER_REQUEST = 10_000
MAX_LINES_PER_REQUEST = 5_000
MAX_LINE_CHARS_PER_REQUEST = 1_000_000
SPOOL_NAME = "spool.jsonl"
SPOOL_SENT = "spool.sent"
DEFAULT_SAVE_DIR = "./runyard_logs"
SEND_RETRY_S = 1.0  # a live logger retries one request this long, then spools and probes
PROBE_MIN_S, PROBE_MAX_S = 0.5, 30.0
STATUS_OF = {"success": "succeeded", "succeeded": "succeeded", "failed": "failed", "interrupted": "cancelled",
             "cancelled": "cancelled", "canceled": "cancelled"}
MAX_ERROR_CHARS = 200_000
MAX_SYSTEM_SAMPLES_PER_REQUEST = 1_000
QUOTA_PREFIX = "Runyard refused this run's data: "
MAX_PENDING_CHECKPOINTS = 2  # ModelCheckpoint files waiting for upload before training waits (prune_local)
_OFF = ("0", "false", "no", "off")

# What older code imported from here.
RunyardError = ClientError
_json_value = json_safe
_to_float = to_float
_encode_entries = encode_entries
_encode_points = encode_points
_points_of = points_of


class QuotaExceeded(ClientError):
    """The server refused what the run logged because it would pass a quota of its project (a 413
    whose ``field`` is ``quota.<name>``: points or metric keys per run, checkpoint bytes). Raised in
    the training thread by the logger's next ``log_metrics`` / checkpoint call, so the run fails with
    the server's sentence (which names the quota and how to raise it)."""

    def __init__(self, detail: str, quota: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.quota = quota


def _is_quota(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 413 and str(exc.field or "").startswith("quota.")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Unreachable) or (isinstance(exc, ApiError) and (exc.status >= 500 or exc.status == 429))


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _batch_key(key: str, start: int, n: int) -> str:
    key = f"{key}.{start}+{n}"
    return key if len(key) <= 100 else hashlib.sha256(key.encode()).hexdigest()


# --------------------------------------------------------------------------- the spool


def _spool_line(rec: dict[str, Any]) -> bytes:
    body = rec.get("body")
    if rec.get("op") == "metrics" and isinstance(body, bytes):  # already JSON: embed, do not re-encode
        return (b'{"op":"metrics","idem":' + json.dumps(rec["idem"]).encode() + b',"n":' + str(rec["n"]).encode()
                + b',"body":' + body + b"}\n")
    return json.dumps(json_safe(rec), allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class Spool:
    """``spool.jsonl`` in a run's folder: a header line, then one record per line, in order.
    ``spool.sent`` holds the byte offset up to which the records were delivered."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / SPOOL_NAME
        self.sent_path = self.folder / SPOOL_SENT
        self._f: Any = None
        self.written = 0

    def exists(self) -> bool:
        return self.path.is_file()

    def append(self, rec: dict[str, Any], header: dict[str, Any]) -> None:
        if self._f is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self._f = open(self.path, "ab")  # kept open while offline, closed in clear()
            if fresh:
                self._f.write(_spool_line({"op": "spool", "version": 1, **header}))
        self._f.write(_spool_line(rec))
        self._f.flush()
        self.written += 1

    def header(self) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("op") != "spool":
            raise ValueError(f"{self.path} is not a RunyardLogger spool (its first line is no spool header).")
        return header

    def _start_offset(self, header_end: int) -> int:
        try:
            sent = int(self.sent_path.read_text().strip() or 0)
        except (OSError, ValueError):
            sent = 0
        return max(sent, header_end)

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(offset after the record, record)`` from the first undelivered one on; a torn last
        line (the process died while writing it) is skipped."""
        if self._f is not None:
            self._f.flush()
        with open(self.path, "rb") as f:
            header_end = len(f.readline())
            offset = self._start_offset(header_end)
            f.seek(offset)
            while True:
                line = f.readline()
                if not line or not line.endswith(b"\n"):
                    return
                offset += len(line)
                try:
                    rec = json.loads(line)
                except ValueError:
                    log.warning("skipping an unreadable line in %s", self.path)
                    continue
                if isinstance(rec, dict) and "op" in rec:
                    yield offset, rec

    def find_create(self) -> dict[str, Any] | None:
        """The create record, wherever it is (also before ``spool.sent``'s offset)."""
        with open(self.path, "rb") as f:
            f.readline()
            for line in f:
                if line.startswith(b'{"op":"create"'):
                    try:
                        return cast("dict[str, Any]", json.loads(line))
                    except ValueError:
                        return None
        return None

    def mark(self, offset: int) -> None:
        tmp = self.sent_path.with_name(SPOOL_SENT + ".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, self.sent_path)

    def clear(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.path.unlink(missing_ok=True)
        self.sent_path.unlink(missing_ok=True)
        self.written = 0


# --------------------------------------------------------------------------- sending records


class _Sender:
    """Sends records (plain dicts) to the server, in order: the live logger's sender thread and
    :func:`sync_spool` both use it. Only retryable failures (no answer, 5xx, 429) leave
    :meth:`send` as exceptions; a refusal (4xx) is reported once per kind and the record dropped."""

    def __init__(self, client: Client, run_id: int | None, *, retry_for: float, attached: bool,
                 on_lost: Callable[[str], None] | None = None,
                 on_quota: Callable[[ApiError], None] | None = None, prune_local: bool = False) -> None:
        self.client = client
        self.run_id = run_id
        self.retry_for = retry_for
        self.attached = attached
        self.on_lost = on_lost
        self.on_quota = on_quota
        self.prune_local = prune_local  # delete local checkpoint files the server's retention dropped
        self.quota_error: str | None = None
        self.run: dict[str, Any] | None = None
        self.max_points = MAX_POINTS_PER_REQUEST
        self.remote: dict[str, dict[str, Any]] = {}  # local path -> {"id", "identity", "origin", "order"}
        self.best_id: int | None = None
        self.last_id: int | None = None
        self.last_origin: str | None = None
        self._order = 0
        self.dead: str | None = None  # why the run takes nothing more (refused create, deleted run)
        self.finished: str | None = None
        self.stats: Counter[str] = Counter()
        self.problems: list[str] = []
        self._warned: set[Any] = set()

    # -- helpers ---------------------------------------------------------------------------------
    def _warn(self, kind: Any, message: str) -> None:
        if kind in self._warned:
            log.debug("RunyardLogger: %s", message)
            return
        self._warned.add(kind)
        if len(self.problems) < 20:
            self.problems.append(message)
        log.warning("RunyardLogger: %s", message)

    def known(self) -> dict[str, dict[str, Any]]:
        return {path: dict(info) for path, info in self.remote.items()}

    def send(self, rec: dict[str, Any]) -> None:
        op = rec.get("op")
        if op == "create":
            self._create(rec)
            return
        if self.dead:
            self.stats["dropped"] += 1
            return
        if self.run_id is None:
            self.dead = "no run to send to (the spool has no run id and no create record)"
            self._warn("no-run", self.dead)
            self.stats["dropped"] += 1
            return
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            self._warn(("unknown", op), f"skipping a record of unknown kind {op!r}")
            return
        try:
            handler(rec)
        except ClientError as exc:
            if _retryable(exc):
                raise
            self._refused(op, exc)  # type: ignore[arg-type]
        except OSError as exc:  # a checkpoint file that cannot be read
            self.stats["dropped"] += 1
            self._warn(("os", op), f"could not send a {op} record: {exc}")

    def _refused(self, op: str, exc: ClientError) -> None:
        self.stats["dropped"] += 1
        if not isinstance(exc, ApiError):
            self._warn(("error", op), f"a {op} record was not sent: {exc}")
            return
        if _is_quota(exc):
            self.quota_error = self.quota_error or str(exc.detail)
            self._warn(("quota", op), f"the server refused a {op} record by a quota: {exc.detail}")
            if self.on_quota is not None:
                self.on_quota(exc)
        elif exc.status == 404 and not exc.route_missing and op not in ("delete_checkpoint",):
            self.dead = f"run {self.run_id} does not exist on the server (deleted?); nothing more is sent"
            self._warn("dead", self.dead)
        elif (exc.status == 409 and exc.field == "attempt") or (exc.status == 401 and self.attached):
            self._lost(str(exc.detail))
        else:
            self._warn((op, exc.status), f"the server refused a {op} record: {exc}")

    def _lost(self, why: str) -> None:
        self.dead = f"the run is no longer this process's ({why})"
        self._warn("lost", self.dead)
        if self.on_lost is not None:
            self.on_lost(why)

    # -- records ---------------------------------------------------------------------------------
    def _create(self, rec: dict[str, Any]) -> None:
        if self.run_id is not None:
            return
        body = dict(rec["body"])
        for _ in range(2):
            try:
                run = self.client.request("POST", "/runs", json=body, retry_for=self.retry_for)
                break
            except ApiError as exc:
                if _retryable(exc):
                    raise
                if exc.status == 422 and exc.field == "client_key" and "client_key" in body:
                    body.pop("client_key")  # an older server: create without it
                    continue
                self.dead = f"the server refused to create the run: {exc.detail}"
                self._warn("create", self.dead)
                return
        self.run = run
        self.run_id = int(run["id"])
        self.stats["created"] += 1

    def _post_batch(self, path: str, body: bytes, key: str, n: int, what: str) -> None:
        """POST one batch with its idempotency key; a 413 splits it (keys derived from the
        parent's, so a later retry of the same split stores nothing twice)."""
        try:
            answer = self.client.request("POST", path, data=body, retry_for=self.retry_for,
                                         headers={"Content-Type": "application/json", "Idempotency-Key": key})
        except ApiError as exc:
            if exc.status != 413 or n <= 1 or _is_quota(exc):  # a quota is not helped by smaller batches
                raise
            items = json.loads(body)[what]
            if what == "points":
                self.max_points = max(1, min(self.max_points, len(items) // 2))
                size = self.max_points
            else:
                size = max(1, len(items) // 2)
            start = 0
            while start < len(items):
                chunk = items[start:start + size]
                self._post_batch(path, json.dumps({what: chunk}, separators=(",", ":")).encode(),
                                 _batch_key(key, start, len(chunk)), len(chunk), what)
                start += len(chunk)
                if what == "points":
                    size = self.max_points  # may have dropped further
            return
        if isinstance(answer, dict) and answer.get("duplicate"):
            self.stats[f"duplicate_{what}_batches"] += 1
        else:
            self.stats[what] += int(answer.get("accepted", n)) if isinstance(answer, dict) else n

    def _op_metrics(self, rec: dict[str, Any]) -> None:
        body = rec["body"]
        if not isinstance(body, bytes):
            body = json.dumps(body, separators=(",", ":")).encode()
        self._post_batch(f"/runs/{self.run_id}/metrics", body, rec["idem"], int(rec.get("n", 2)), "points")

    def _op_lines(self, rec: dict[str, Any]) -> None:
        body = json.dumps({"lines": rec["lines"]}, separators=(",", ":"), ensure_ascii=False).encode()
        self._post_batch(f"/runs/{self.run_id}/logs", body, rec["idem"], len(rec["lines"]), "lines")

    def _op_hparams(self, rec: dict[str, Any]) -> None:
        self.client.request("PUT", f"/runs/{self.run_id}/hyperparameters", json=rec["body"],
                            query={"merge": "true"}, retry_for=self.retry_for)
        self.stats["hyperparameters"] += 1

    def _op_environment(self, rec: dict[str, Any]) -> None:
        try:
            self.client.request("PUT", f"/runs/{self.run_id}/environment", json=rec["body"], retry_for=self.retry_for)
        except ApiError as exc:
            if not exc.route_missing:
                raise
            self.stats["dropped"] += 1  # an older server: it keeps no environment records
            self._warn("environment-route", f"the server at {self.client.url} keeps no environment records "
                                            "(an older Runyard); the run goes on without one")
            return
        self.stats["environment"] += 1

    def _op_summary(self, rec: dict[str, Any]) -> None:
        self.client.request("PUT", f"/runs/{self.run_id}/summary", json=rec["body"], retry_for=self.retry_for)
        self.stats["summary"] += 1

    def _op_checkpoint(self, rec: dict[str, Any]) -> None:
        path = rec["path"]
        try:
            f = open(path, "rb")  # closed below
        except FileNotFoundError:  # rotated out (top-k) before it was sent: nothing to upload
            self.stats["checkpoints_skipped"] += 1
            f = None
        if f is not None:
            with f:
                ident = _identity(os.fstat(f.fileno()))
                want = rec.get("identity")
                old = self.remote.get(path)
                if want is not None and list(want) != ident:
                    self.stats["checkpoints_skipped"] += 1  # replaced since: a later record has the new file
                elif old is not None and old["identity"] == ident:
                    pass  # sent before
                else:
                    if old is not None:  # the same name saved again (last.ckpt): the old one goes
                        self.client.delete_checkpoint(old["id"], retry_for=self.retry_for)
                        self._forget(path)
                    meta = dict(rec.get("meta") or {})
                    checkpoint = self.client.upload_file(self.run_id, path, meta, fileobj=f,  # type: ignore[arg-type]
                                                         retry_for=self.retry_for, replace=True)
                    self._order += 1
                    self.remote[path] = {"id": int(checkpoint["id"]), "identity": ident,
                                         "origin": rec.get("origin", "manual"), "order": self._order}
                    if meta.get("is_best"):
                        self.best_id = int(checkpoint["id"])
                    if meta.get("is_last"):
                        self.last_id = int(checkpoint["id"])
                        self.last_origin = rec.get("origin", "manual")
                    self.stats["checkpoints"] += 1
                    if rec.get("origin") == "callback":
                        self._prune_local()
        if rec.get("origin") == "callback":
            self._op_reconcile({"best_path": rec.get("best_path")})

    def _prune_local(self) -> None:
        """Delete the local files of checkpoints (saved by ModelCheckpoint) that the server's
        retention policy dropped (its project's quotas), so that a run saving every step keeps only
        the policy's set on this disk too. Only with ``prune_local`` (a worker's run process)."""
        if not self.prune_local or sum(1 for i in self.remote.values() if i.get("origin") == "callback") < 2:
            return
        try:
            listed = self.client.request("GET", f"/runs/{self.run_id}/checkpoints", retry_for=self.retry_for)
        except ClientError:
            return  # next time
        present = {int(c["id"]) for c in listed if isinstance(c, dict) and "id" in c}
        for path, info in list(self.remote.items()):
            if info.get("origin") != "callback" or int(info["id"]) in present:
                continue
            try:
                if _identity(os.stat(path)) == list(info["identity"]):  # not saved again since
                    os.unlink(path)
                    self.stats["checkpoints_pruned_locally"] += 1
            except OSError:
                pass
            self._forget(path)

    def _forget(self, path: str) -> None:
        info = self.remote.pop(path, None)
        if info is None:
            return
        if self.best_id == info["id"]:
            self.best_id = None
        if self.last_id == info["id"]:
            self.last_id = None

    def _op_delete_checkpoint(self, rec: dict[str, Any]) -> None:
        info = self.remote.get(rec["path"])
        checkpoint_id = info["id"] if info else rec.get("id")
        if checkpoint_id is not None:
            self.client.delete_checkpoint(int(checkpoint_id), retry_for=self.retry_for)
            self.stats["checkpoints_deleted"] += 1
        self._forget(rec["path"])

    def _op_reconcile(self, rec: dict[str, Any]) -> None:
        """Mirror the local checkpoint folder: what ModelCheckpoint deleted goes on the server
        too; the best and last flags follow."""
        for path, info in (rec.get("known") or {}).items():
            self.remote.setdefault(path, dict(info))
            self._order = max(self._order, int(info.get("order", 0)))
        for path, info in list(self.remote.items()):
            if info.get("origin") != "callback" or os.path.exists(path):
                continue
            self.client.delete_checkpoint(int(info["id"]), retry_for=self.retry_for)
            self.stats["checkpoints_deleted"] += 1
            self._forget(path)
        best = rec.get("best_path")
        if best and best in self.remote and self.remote[best]["id"] != self.best_id:
            if self._flag(self.remote[best]["id"], "is_best"):
                self.best_id = self.remote[best]["id"]
        if self.last_id is None and self.last_origin == "callback":  # the last one was rotated out
            mine = [info for info in self.remote.values() if info.get("origin") == "callback"]
            if mine:
                newest = max(mine, key=lambda info: info.get("order", 0))
                if self._flag(newest["id"], "is_last"):
                    self.last_id = newest["id"]

    def _flag(self, checkpoint_id: int, flag: str) -> bool:
        """Set ``flag`` on a checkpoint; False (and forgotten) when the server has it no more (its
        retention policy dropped it)."""
        try:
            self.client.request("PATCH", f"/checkpoints/{checkpoint_id}", json={flag: True}, retry_for=self.retry_for)
            return True
        except ApiError as exc:
            if exc.status != 404 or exc.route_missing:
                raise
        for path, info in list(self.remote.items()):
            if info["id"] == checkpoint_id:
                self._forget(path)
        return False

    def _op_finish(self, rec: dict[str, Any]) -> None:
        body: dict[str, Any] = {"status": rec["status"]}
        if rec.get("error"):
            body["error"] = rec["error"]
        if self.quota_error is not None and rec["status"] == "succeeded":
            # a record sent before this one was refused by a quota: the run did not get all it logged
            body = {"status": "failed", "error": f"{QUOTA_PREFIX}{self.quota_error}"}
        try:
            self.run = self.client.request("POST", f"/runs/{self.run_id}/finish", json=body,
                                           retry_for=self.retry_for)
        except ApiError as exc:
            if exc.route_missing:  # an older server
                self.run = self.client.request("PATCH", f"/runs/{self.run_id}", json=body, retry_for=self.retry_for)
            elif exc.status == 409 and exc.field != "attempt":
                try:  # a retry whose first try's answer was lost finds its own status there
                    self.run = self.client.request("GET", f"/runs/{self.run_id}", retry_for=self.retry_for)
                except ApiError:
                    self.run = None
                if not (isinstance(self.run, dict) and self.run.get("status") == body["status"]):
                    log.info("RunyardLogger: run %s was not running any more (%s)", self.run_id, exc.detail)
                    self.problems.append(f"run {self.run_id} had finished already: {exc.detail}")
                    return
            else:
                raise
        self.finished = body["status"]


# --------------------------------------------------------------------------- the logger

_LIVE: weakref.WeakSet[RunyardLogger] = weakref.WeakSet()
_ATEXIT = False


def _close_all_at_exit() -> None:
    for logger in list(_LIVE):
        try:
            logger._at_exit()
        except Exception:  # never fail the interpreter's exit
            pass


class RunyardLogger(Logger):
    """Send a run's metrics, hyperparameters, model summary, stdout/stderr, checkpoints,
    heartbeats and final status to a Runyard server.

    Args:
        url: the server (default ``RUNYARD_URL``, else ``http://127.0.0.1:8000``).
        project: project name on the server (and the folder under ``save_dir``).
        name: run name (the server picks one when left out).
        run_id: attach to an existing run (default ``RUNYARD_RUN_ID``) instead of creating one;
            ``finalize`` then only flushes and the owner calls :meth:`finish`.
        upload_checkpoints: upload what ModelCheckpoint saves, and mirror its top-k deletions.
        flush_interval: seconds between sends while training.
        retry_for: how long ``finalize``/``finish`` wait for an unreachable server before leaving
            the rest in the spool (``runyard sync``).
        timeout: seconds per HTTP request.
        max_buffered_points: points kept in memory before new ones are dropped (when the sender
            cannot keep up; offline, records go to the spool instead).
        save_dir: local root (default ``./runyard_logs``); the run's folder is
            ``save_dir/<project>/<version>``, ``version`` a local key like ``run-1a2b3c4d``. For an
            attached run, ``save_dir`` (or ``RUNYARD_RUN_DIR``) is the run's folder itself.
        token: API token (default ``RUNYARD_TOKEN``).
        capture: copy stdout/stderr into the run's log lines while the logger runs (default on;
            ``RUNYARD_CAPTURE=0`` turns it off whatever is passed).
        heartbeat_interval: seconds between heartbeats (default ``RUNYARD_HEARTBEAT_INTERVAL`` or 5;
            0 turns them off).
        system_metrics: seconds between system-metric samples (``system/*`` series); ``None`` or
            ``True``: ``RUNYARD_SYSTEM_METRICS_INTERVAL`` or 5; ``False``/0: off.
            ``RUNYARD_SYSTEM_METRICS=0`` turns it off whatever is passed.
        environment: send the reproducibility record (``PUT /runs/{id}/environment``).
        spool_dir: where ``spool.jsonl`` goes when the server cannot be reached (default: the run's
            local folder; ``runyard sync`` finds it in any folder below the one it is given).
        prune_local: delete the local files of uploaded ModelCheckpoint checkpoints that the server's
            retention policy dropped (the project's quotas), so the local disk keeps only the policy's
            set too; default: on for an attached run (a worker's run process), off for a script.

    When the server refuses a record by a quota of the run's project (points or metric keys per
    run, checkpoint bytes: 413), the next ``log_metrics`` / checkpoint call raises
    :class:`QuotaExceeded` with the server's sentence, so the run fails naming the quota.
    """

    def __init__(
        self,
        url: str | None = None,
        project: str = "default",
        name: str | None = None,
        run_id: int | None = None,
        upload_checkpoints: bool = True,
        flush_interval: float = 1.0,
        retry_for: float = 10.0,
        timeout: float = 10.0,
        max_buffered_points: int = 2_000_000,
        *,
        save_dir: str | os.PathLike[str] | None = None,
        token: str | None = None,
        capture: bool | None = None,
        heartbeat_interval: float | None = None,
        system_metrics: float | bool | None = None,
        environment: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        prune_local: bool | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        from trainer_core.utilities.rank_zero import rank_zero_only

        # On a rank other than 0 (torchrun's RANK, a worker's rank process) the logger sends nothing:
        # global rank 0 reports the run's metrics, logs, heartbeats, checkpoints and status. Its
        # client (the run's token) may still download, e.g. the resume checkpoint.
        self._inert = (rank_zero_only.rank or 0) != 0
        self.client = Client(url or None, token, timeout=timeout)
        self.project = project
        self.run_name = name
        self.tags = [str(t) for t in tags or ()]  # set when the logger creates its run (not an attached one)
        if run_id is None and os.environ.get("RUNYARD_RUN_ID", "").strip():
            run_id = int(os.environ["RUNYARD_RUN_ID"])
        self._attached = run_id is not None
        self.upload_checkpoints = upload_checkpoints
        self.flush_interval = flush_interval
        self.retry_for = retry_for
        self.timeout = timeout
        self.max_buffered_points = max_buffered_points
        if os.environ.get("RUNYARD_CAPTURE", "").strip().lower() in _OFF:
            capture = False
        self.capture = True if capture is None else bool(capture)
        if system_metrics is None or system_metrics is True:
            system_interval = interval_from_env()
        elif system_metrics is False:
            system_interval = 0.0
        else:
            system_interval = max(0.0, float(system_metrics))
        if os.environ.get("RUNYARD_SYSTEM_METRICS", "").strip().lower() in _OFF:
            system_interval = 0.0
        self.system_metrics_interval = system_interval
        self.environment = bool(environment)
        if heartbeat_interval is None:
            heartbeat_interval = float(os.environ.get("RUNYARD_HEARTBEAT_INTERVAL") or 5.0)
        self.heartbeat_interval = float(heartbeat_interval)
        # what the worker's run process (and anyone else) reads
        self.stop_requested = threading.Event()
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self.heartbeats = 0

        # the local folder
        if self._attached:
            folder = os.fspath(save_dir) if save_dir is not None else (
                os.environ.get("RUNYARD_RUN_DIR") or os.path.join(DEFAULT_SAVE_DIR, f"run-{run_id}"))
            folder = os.path.normpath(folder)
            self._save_dir = os.path.dirname(folder) or "."
            self._name = ""
            self._version = os.path.basename(folder)
        else:
            self._save_dir = os.fspath(save_dir) if save_dir is not None else DEFAULT_SAVE_DIR
            self._name = re.sub(r"[^\w.=+-]", "_", project) or "default"
            while True:
                self._version = f"run-{secrets.token_hex(4)}"
                if not os.path.exists(os.path.join(self._save_dir, self._name, self._version)):
                    break
        self._client_key = None if self._attached else uuid.uuid4().hex
        self._quota_error: QuotaExceeded | None = None
        self._sender = _Sender(self.client, run_id, retry_for=SEND_RETRY_S, attached=self._attached,
                               on_lost=self._mark_lost, on_quota=self._on_quota,
                               prune_local=self._attached if prune_local is None else bool(prune_local))
        self._spool = Spool(os.path.abspath(self.log_dir if spool_dir is None else os.fspath(spool_dir)))

        # queues: log_metrics appends (step, wall time, dict) to _metrics from the training thread
        # without a lock (deque.append/popleft are atomic); the sender pops. Everything else is an
        # op (kind, mark, payload) on _ops; mark = the points queued before it, which the sender
        # sends first. _queued_points is written by the training thread only, _taken_points by the
        # sender only.
        self._metrics: deque[tuple[int, float, dict[str, Any]]] = deque()
        self._ops: deque[tuple[str, int, Any]] = deque()
        self._queued_points = 0
        self._taken_points = 0
        self._wake_at = MAX_POINTS_PER_REQUEST
        self._dropped = 0
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._urgent = False
        self._flush_waiters = 0
        self._busy = False
        self._stop_flag = False
        self._abandon = False
        self._offline = False
        self._probe_at = 0.0
        self._probe_delay = PROBE_MIN_S
        self._last_probe = 0.0
        self._probing = False
        self._progress_at = 0.0
        self._started = False
        self._finish_sent = False
        self._thread: threading.Thread | None = None
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self._capture: Capture | None = None
        self._sampler: SystemSampler | None = None
        self._env_key: tuple[Any, ...] | None = None
        self._queued_ckpt: dict[str, list[int]] = {}
        self._ckpt_queued = 0  # ModelCheckpoint files queued for upload (training thread) ...
        self._ckpt_done = 0  # ... and sent or spooled (sender thread)
        self._saw_checkpoints = False
        self._owner_sets_last = False
        self._last_epoch: int | None = None
        self._epoch_sent: tuple[int, float] | None = None  # (step, epoch) of the last epoch point sent
        if self._attached and not self._inert:
            # The run exists and is this process's: heartbeats and the capture of its output start
            # now (a run process may spend a while building data before the first log call).
            self._start()

    # ------------------------------------------------------------------ identity and folders

    @property
    def url(self) -> str:
        return self.client.url

    @url.setter
    def url(self, value: str) -> None:
        self.client.url = value.rstrip("/")

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        """The run's local key (its folder's name), known at once; the server's id is :attr:`run_id`."""
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name) if self._name else self._save_dir

    @property
    def log_dir(self) -> str:
        return os.path.join(self.root_dir, self._version)

    @property
    def spool_path(self) -> str:
        return str(self._spool.path)

    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def run_id(self) -> int | None:
        """The server's id of the run. For a run this logger creates, reading it starts the logger
        and waits (up to ``timeout`` s) for the server; ``None`` while it cannot be reached."""
        if self._sender.run_id is None and not self._attached and not self._sender.dead and not self._inert:
            self._start()
            deadline = time.monotonic() + self.timeout
            with self._cond:
                self._urgent = True
                self._cond.notify_all()
                while self._sender.run_id is None and not self._sender.dead and time.monotonic() < deadline:
                    self._cond.wait(0.05)
        return self._sender.run_id

    @property
    def experiment(self) -> dict[str, Any] | None:
        """The run as the server last described it (``None`` until created)."""
        run_id = self.run_id
        if self._sender.run is None and run_id is not None:
            try:
                self._sender.run = self.client.request("GET", f"/runs/{run_id}")
            except ClientError:
                pass
        return self._sender.run

    @property
    def run_url(self) -> str:
        return f"{self.client.url}/runs/{self.run_id}"

    # ------------------------------------------------------------------ starting and stopping

    def _start(self) -> None:
        global _ATEXIT
        with self._start_lock:
            if self._thread is not None:
                return
            if not self._started:
                self._started = True
                _LIVE.add(self)
                if not _ATEXIT:
                    _ATEXIT = True
                    atexit.register(_close_all_at_exit)
                if not self._attached:
                    body: dict[str, Any] = {"recipe": "external", "project": self.project, "client_key": self._client_key}
                    if self.run_name:
                        body["name"] = self.run_name
                    if self.tags:
                        body["tags"] = list(self.tags)
                    self._ops.appendleft(("create", 0, {"body": body}))
                    self._urgent = True  # the run should exist on the server at once
                if self.environment:  # right after the create: collected on the sender's thread
                    self._env_key = _environment_key()
                    self._ops.append(("environment", 0, {"body": None}))
                    self._urgent = True
            self._stop_flag = False
            self._abandon = False
            thread = threading.Thread(target=self._loop, name=f"runyard-logger-{self._version}", daemon=True)
            self._thread = thread
            thread.start()
            if self.heartbeat_interval > 0 and not self._finish_sent and (
                    self._hb_thread is None or not self._hb_thread.is_alive()):
                self._hb_stop.clear()
                self._hb_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                                   name=f"runyard-heartbeat-{self._version}")
                self._hb_thread.start()
            if self.capture and self._capture is None:
                self._capture = Capture(self._on_lines).start()
            if self.system_metrics_interval > 0 and self._sampler is None and not self._finish_sent:
                self._sampler = SystemSampler(interval=self.system_metrics_interval,
                                              emit=self._on_system_sample).start()

    def _stop_sampler(self) -> None:
        """Stop the system-metric sampler (its last sample is queued before this returns)."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop()

    def _on_system_sample(self, step: int, wall_time: float, metrics: dict[str, float]) -> None:
        # the sampler's thread: an op (deque.append is atomic), no wake-up; out with the next send
        self._ops.append(("sysmetrics", 0, (step, wall_time, metrics)))

    def _check_seed(self) -> None:
        """Send the environment record again when ``seed_everything`` changed the seed since (or
        the code folder ``RUNYARD_CODE_DIR``, set by a worker once it unpacked a run's code)."""
        if not self.environment or not self._started or self._finish_sent:
            return
        key = _environment_key()
        if key != self._env_key:
            self._env_key = key
            self._enqueue("environment", {"body": None})

    def send_environment(self) -> None:
        """Collect and send the environment record again (in order, after what was logged before)."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        if self.environment and not self._finish_sent:
            self._env_key = _environment_key()
            self._enqueue("environment", {"body": None})

    def _stop_capture(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.stop()

    def _stop_heartbeat(self) -> None:
        self._hb_stop.set()
        thread = self._hb_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1)

    def _stop_sender(self, abandon: bool, timeout: float) -> None:
        """Stop the sender thread (``abandon``: spool what is left instead of sending it)."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._abandon = abandon
            self._stop_flag = True
            self._cond.notify_all()
        thread.join(timeout=timeout)
        if thread.is_alive():
            return  # stuck in a request; it stops after it
        with self._start_lock:
            self._thread = None
        if abandon:
            self._spool_leftovers()

    def _spool_leftovers(self) -> None:
        """What was queued after the sender stopped (this thread owns the queues now)."""
        ops = self._drain_ops()
        if not ops and not self._metrics:
            return
        self._abandon = True
        for rec in self._records(ops, self._queued_points):
            self._spool_write(rec)

    def _at_exit(self) -> None:
        if self._thread is None and not self._spool.written:
            self._stop_sampler()
            self._stop_capture()
            return
        # offline with everything spooled (finalize waited already): leave it for `runyard sync`
        self.close(timeout=0.0 if self._offline and self._all_out() else min(self.retry_for, 10.0))

    def close(self, timeout: float | None = None) -> bool:
        """Send what is buffered (up to ``timeout``, default ``retry_for``, while the server is
        unreachable), spool the rest, stop the threads and the capture. Does not finish the run."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return True
        delivered = True
        self._stop_sampler()
        if self._thread is not None:
            delivered = self._wait_delivered(grace=self.retry_for if timeout is None else timeout, timeout=timeout)
            self._stop_sender(abandon=not delivered, timeout=self.timeout + 5)
        self._stop_heartbeat()
        self._stop_capture()
        if not delivered or self._spool.exists():
            self._tell_spooled()
        return delivered

    def _tell_spooled(self) -> None:
        if self._spool.exists():
            log.warning("RunyardLogger: %s could not be reached; what was not sent is in %s: upload it with "
                        "`runyard sync %s`", self.client.url, self._spool.path, self.log_dir)

    # ------------------------------------------------------------------ the sender thread

    def _drain_ops(self) -> list[tuple[str, int, Any]]:
        ops = []
        while self._ops:
            try:
                ops.append(self._ops.popleft())
            except IndexError:
                break
        return ops

    def _loop(self) -> None:
        next_send = time.monotonic() + self.flush_interval
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._stop_flag:
                        break
                    work = bool(self._ops) or self._queued_points != self._taken_points
                    hurry = (self._flush_waiters > 0 or self._urgent
                             or self._queued_points - self._taken_points >= MAX_POINTS_PER_REQUEST)
                    wait = 1.0
                    if self._offline:
                        probe_at = self._probe_at
                        if self._flush_waiters:
                            probe_at = min(probe_at, self._last_probe + PROBE_MIN_S)
                        if now >= probe_at:
                            break
                        wait = min(wait, probe_at - now)
                    if work:
                        if hurry or now >= next_send:
                            break
                        wait = min(wait, next_send - now)
                    self._cond.wait(max(wait, 0.001))
                stop = self._stop_flag
                # Metrics go out once per flush_interval (or when a request's worth waits, or for a
                # flush); a wake-up for an op sends only the points logged before that op.
                send_all = (stop or self._flush_waiters > 0 or time.monotonic() >= next_send
                            or self._queued_points - self._taken_points >= MAX_POINTS_PER_REQUEST)
                self._urgent = False
                self._busy = True
                ops = self._drain_ops()
                target = self._queued_points if send_all else 0
            try:
                for rec in self._records(ops, target):  # offline: appended to the spool, in order
                    self._dispatch(rec)
                if self._offline and not self._abandon and time.monotonic() >= min(
                        self._probe_at, self._last_probe + PROBE_MIN_S if self._flush_waiters else math.inf):
                    self._try_drain()
            except Exception:  # the sender must survive anything
                log.exception("RunyardLogger sender error")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if send_all:
                next_send = time.monotonic() + self.flush_interval
            if stop:
                return

    def _records(self, ops: list[tuple[str, int, Any]], target: int) -> Iterator[dict[str, Any]]:
        """Records in logging order: before each op, the points logged before it."""
        lines: list[tuple[str, str, Any]] = []
        system: list[tuple[int, float, dict[str, Any]]] = []
        for kind, mark, payload in ops:
            if kind == "lines":
                lines.extend(payload)
                if len(lines) >= MAX_LINES_PER_REQUEST:
                    yield from self._line_records(lines)
                    lines = []
                continue
            if kind == "sysmetrics":  # system samples: their own steps, no order against the trainer's
                system.append(payload)
                if len(system) >= MAX_SYSTEM_SAMPLES_PER_REQUEST:
                    yield self._system_record(system)
                    system = []
                continue
            if lines:
                yield from self._line_records(lines)
                lines = []
            if system:  # before the op (the final status comes after the last sample)
                yield self._system_record(system)
                system = []
            yield from self._metric_records(mark)
            if kind == "environment" and payload.get("body") is None:
                payload = {"body": self._environment_record()}
            yield {"op": kind, **payload}
        if system:
            yield self._system_record(system)
        yield from self._metric_records(target)
        if lines:
            yield from self._line_records(lines)

    @staticmethod
    def _system_record(entries: list[tuple[int, float, dict[str, Any]]]) -> dict[str, Any]:
        return {"op": "metrics", "idem": uuid.uuid4().hex, "n": sum(len(e[2]) for e in entries),
                "body": encode_entries(entries)}

    @staticmethod
    def _environment_record() -> dict[str, Any]:
        from trainer_core.environment import collect  # first use: reads the installed packages once

        return cast("dict[str, Any]", json_safe(collect()))

    def _metric_records(self, until: int) -> Iterator[dict[str, Any]]:
        while self._taken_points < until and self._metrics:
            entries: list[tuple[int, float, dict[str, Any]]] = []
            count = 0
            limit = self._sender.max_points
            while self._metrics and self._taken_points + count < until and not (
                    entries and count + len(self._metrics[0][2]) > limit):
                entry = self._metrics.popleft()
                count += len(entry[2])
                entry = self._without_repeated_epoch(entry)
                if entry[2]:
                    entries.append(entry)
            self._taken_points += count
            if not entries:
                continue
            epoch = entries[-1][2].get("epoch")
            if epoch is not None:
                self._last_epoch = epoch
            count = sum(len(e[2]) for e in entries)
            if count <= limit:
                yield {"op": "metrics", "idem": uuid.uuid4().hex, "n": count, "body": encode_entries(entries)}
            else:  # more points than a request may carry (one log_metrics call with many keys)
                points = points_of(entries)
                for start in range(0, len(points), limit):
                    chunk = points[start:start + limit]
                    yield {"op": "metrics", "idem": uuid.uuid4().hex, "n": len(chunk), "body": encode_points(chunk)}

    def _without_repeated_epoch(self, entry: tuple[int, float, dict[str, Any]]) -> tuple[int, float, dict[str, Any]]:
        """The trainer adds ``epoch`` to every ``log_metrics`` call (as Lightning does), so the
        step that ends an epoch logs it twice (its step metrics, then its epoch metrics) with the
        same value: the server stores it once."""
        step, _, metrics = entry
        epoch = metrics.get("epoch")
        if type(epoch) not in (int, float):
            return entry
        sent = (step, cast(float, epoch))  # an int or a float, checked above
        if self._epoch_sent == sent:
            return entry[0], entry[1], {k: v for k, v in metrics.items() if k != "epoch"}
        self._epoch_sent = sent
        return entry

    @staticmethod
    def _line_records(lines: list[tuple[str, str, Any]]) -> Iterator[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        chars = 0
        for stream, text, when in lines:
            if batch and (len(batch) >= MAX_LINES_PER_REQUEST or chars + len(text) > MAX_LINE_CHARS_PER_REQUEST):
                yield {"op": "lines", "idem": uuid.uuid4().hex, "lines": batch}
                batch, chars = [], 0
            stamp = when.isoformat() if hasattr(when, "isoformat") else when
            batch.append({"stream": stream, "text": text, "time": stamp})
            chars += len(text) + 64
        if batch:
            yield {"op": "lines", "idem": uuid.uuid4().hex, "lines": batch}

    def _dispatch(self, rec: dict[str, Any]) -> None:
        try:
            if self._offline or self._abandon:
                self._spool_write(rec)
                return
            try:
                self._sender.send(rec)
                self._progress_at = time.monotonic()
            except ClientError as exc:  # no answer / 5xx: keep it, in order, on disk
                self._go_offline(exc)
                self._spool_write(rec)
        finally:
            if rec.get("op") == "checkpoint" and rec.get("origin") == "callback":
                self._ckpt_done += 1
            with self._cond:
                self._cond.notify_all()

    def _spool_header(self) -> dict[str, Any]:
        return {"run_id": self._sender.run_id, "url": self.client.url, "attached": self._attached,
                "client_key": self._client_key, "project": self.project, "name": self.run_name,
                "key": self._version}

    def _spool_write(self, rec: dict[str, Any]) -> None:
        if rec["op"] == "reconcile":
            rec = {**rec, "known": self._sender.known()}
        elif rec["op"] == "delete_checkpoint" and rec["path"] in self._sender.remote:
            rec = {**rec, "id": self._sender.remote[rec["path"]]["id"]}
        try:
            self._spool.append(rec, self._spool_header())
        except OSError as exc:
            self._sender._warn("spool", f"cannot write {self._spool.path} ({exc}); a {rec['op']} record is lost")

    def _go_offline(self, exc: BaseException) -> None:
        if self._offline:
            return
        self._offline = True
        self._probe_delay = PROBE_MIN_S
        self._last_probe = time.monotonic()
        self._probe_at = self._last_probe + PROBE_MIN_S
        self._sender._warn(("offline", type(exc).__name__),
                           f"{exc} Training goes on; records are kept in {self._spool.path} and sent when the "
                           "server answers again.")

    def _try_drain(self) -> bool:
        """Probe the server; when it answers, send the spool in order. True when back online."""
        self._last_probe = time.monotonic()
        self._probing = True  # every record is out of memory (sent or spooled) while this runs
        try:
            ok = self.client.healthy(timeout=min(self.timeout, 3.0))
            sent = 0
            if ok and self._spool.exists():
                for offset, rec in self._spool.records():
                    if self._abandon:
                        return False
                    self._sender.send(rec)
                    self._spool.mark(offset)
                    self._progress_at = time.monotonic()
                    sent += 1
                    with self._cond:
                        self._cond.notify_all()
        except ClientError:
            ok = False
        finally:
            self._probing = False
        if not ok:
            self._probe_delay = min(self._probe_delay * 2, PROBE_MAX_S)
            self._probe_at = time.monotonic() + self._probe_delay
            return False
        self._spool.clear()
        self._offline = False
        self._probe_delay = PROBE_MIN_S
        log.info("RunyardLogger: %s answers again; %d spooled records sent", self.client.url, sent)
        return True

    # ------------------------------------------------------------------ heartbeat

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_interval
        while not self._hb_stop.wait(interval):
            run_id = self._sender.run_id
            if run_id is None or self._finish_sent:
                continue
            try:
                answer = self.client.request("POST", f"/runs/{run_id}/heartbeat", json={},
                                             timeout=min(self.timeout, max(1.0, 2 * interval)))
            except ApiError as exc:
                if exc.route_missing:
                    return  # an older server without heartbeats
                if exc.status in (404, 409) or (exc.status == 401 and self._attached):
                    self._mark_lost(str(exc.detail))
                    return
                if exc.status in (401, 403):
                    self._sender._warn("heartbeat", f"heartbeats refused: {exc}")
                    return
                continue
            except ClientError:
                continue
            self.heartbeats += 1
            if isinstance(answer, dict):
                if answer.get("cancel_requested"):
                    self.cancel_requested.set()
                    self.stop_requested.set()
                if answer.get("stop"):
                    self.stop_requested.set()
            if self._offline:  # the server is back: do not wait for the next probe
                with self._cond:
                    self._probe_at = 0.0
                    self._cond.notify_all()

    def _on_quota(self, exc: ApiError) -> None:
        """The sender thread met a quota refusal: the training thread raises it at its next call."""
        if self._quota_error is None:
            field = str(exc.field or "")
            self._quota_error = QuotaExceeded(f"{QUOTA_PREFIX}{exc.detail}",
                                              field.removeprefix("quota.") or None)

    def _raise_quota(self) -> None:
        if self._quota_error is not None and not self._finish_sent:
            raise self._quota_error

    def _mark_lost(self, why: str) -> None:
        if self._finish_sent:
            return
        if not self.lost.is_set():
            log.warning("RunyardLogger: run %s is no longer this process's: %s", self._sender.run_id, why)
        self.lost.set()
        self.stop_requested.set()

    # ------------------------------------------------------------------ queueing

    def _enqueue(self, kind: str, payload: dict[str, Any], urgent: bool = True) -> None:
        if self._thread is None:
            self._start()
        self._ops.append((kind, self._queued_points, payload))
        if urgent:
            with self._cond:
                self._urgent = True
                self._cond.notify()

    def _on_lines(self, lines: list[tuple[str, str, Any]]) -> None:
        self._ops.append(("lines", 0, lines))  # no wake-up: lines go with the next send

    def _delivered(self) -> bool:
        return (not self._ops and self._taken_points >= self._queued_points and not self._busy
                and not self._offline)

    def _all_out(self) -> bool:
        """Nothing is left in memory: every record was sent or spooled."""
        return (not self._ops and self._taken_points >= self._queued_points
                and (not self._busy or self._probing))

    def _wait_delivered(self, grace: float, timeout: float | None = None) -> bool:
        """Wait until everything queued is on the server. False when ``timeout`` passed, or the
        server has been unreachable (no progress) for ``grace`` seconds of this wait and all that
        is left is in the spool."""
        if self._thread is None:
            return self._delivered() or not self._started
        end = None if timeout is None else time.monotonic() + timeout
        offline_since = None
        with self._cond:
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while not self._delivered():
                    thread = self._thread
                    if thread is None or not thread.is_alive():
                        return False
                    now = time.monotonic()
                    if end is not None and now >= end:
                        return False
                    if self._offline:
                        offline_since = now if offline_since is None else offline_since
                        quiet = now - max(offline_since, self._progress_at)
                        if quiet >= grace and (self._all_out() or quiet >= grace + self.timeout + 5):
                            return False
                    else:
                        offline_since = None
                    self._cond.wait(0.05)
                return True
            finally:
                self._flush_waiters -= 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is on the server; False if ``timeout`` ran out
        first (what is left stays queued or spooled and is sent later)."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return True
        return self._wait_delivered(grace=math.inf, timeout=timeout)

    # ------------------------------------------------------------------ Logger API

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        # Hot path (every logged step): a copy of the dict onto a deque, nothing else. The
        # sender thread converts values, builds the points and the JSON.
        if self._quota_error is not None:
            self._raise_quota()
        if self._thread is None:
            self._start()
        n = len(metrics)
        if not n:
            return
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
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        if isinstance(params, Namespace):
            params = vars(params)
        self._enqueue("hparams", {"body": json_safe(dict(params or {}))})
        self._check_seed()

    def log_model_summary(self, summary: dict[str, Any]) -> None:
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        self._enqueue("summary", {"body": json_safe(summary)})
        self._check_seed()

    def _epoch_of(self, path: str) -> int | None:
        match = re.search(r"epoch=(\d+)", os.path.basename(path))
        if match:
            return int(match.group(1))
        epoch = self._metrics[-1][2].get("epoch") if self._metrics else self._last_epoch
        value = to_float(epoch) if epoch is not None else None
        return int(value) if value is not None and math.isfinite(value) else None

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        self._raise_quota()
        if not self.upload_checkpoints:
            return
        saved = (getattr(checkpoint_callback, "_last_checkpoint_saved", "") or
                 getattr(checkpoint_callback, "last_model_path", "") or
                 getattr(checkpoint_callback, "best_model_path", ""))
        if not saved:
            return
        path = os.path.abspath(saved)
        try:
            ident = _identity(os.stat(path))
        except OSError:
            return
        if self._queued_ckpt.get(path) == ident:
            return
        self._queued_ckpt[path] = ident
        best_raw = getattr(checkpoint_callback, "best_model_path", "") or ""
        best = os.path.abspath(best_raw) if best_raw else None
        scores = getattr(checkpoint_callback, "best_k_models", None) or {}
        score = scores.get(saved, scores.get(path)) if isinstance(scores, dict) else None
        score = to_float(score) if score is not None else None
        step = getattr(checkpoint_callback, "_last_global_step_saved", None)
        # "last": ModelCheckpoint's last.ckpt when it keeps one; else the newest file, unless the
        # owner uploads its own resume checkpoints as last (upload_checkpoint(is_last=True)).
        if getattr(checkpoint_callback, "save_last", None):
            last_raw = getattr(checkpoint_callback, "last_model_path", "") or ""
            is_last = bool(last_raw) and os.path.abspath(last_raw) == path
        else:
            is_last = not self._owner_sets_last
        meta = {
            "filename": safe_filename(os.path.basename(path)),
            "epoch": self._epoch_of(path),
            "step": int(step) if isinstance(step, int) and step >= 0 else None,
            "monitor": getattr(checkpoint_callback, "monitor", None),
            "score": score if score is not None and math.isfinite(score) else None,
            "is_best": path == best,
            "is_last": is_last,
        }
        self._saw_checkpoints = True
        self._ckpt_queued += 1
        self._enqueue("checkpoint", {"path": path, "identity": ident, "meta": meta, "origin": "callback",
                                     "best_path": best})
        self._wait_for_uploads()

    def _wait_for_uploads(self) -> None:
        """With ``prune_local``: hold the training thread while more than MAX_PENDING_CHECKPOINTS
        saved files wait for their upload, so that a run saving faster than it uploads cannot fill
        the local disk (the server's retention prunes the local copies once uploaded). Not while the
        server is unreachable (the files are then the spool's)."""
        if not self._sender.prune_local:
            return
        deadline = time.monotonic() + max(60.0, 6 * self.timeout)
        with self._cond:
            while (self._ckpt_queued - self._ckpt_done > MAX_PENDING_CHECKPOINTS and not self._offline
                   and not self._sender.dead and self._thread is not None and self._thread.is_alive()
                   and time.monotonic() < deadline):
                self._cond.wait(0.05)

    def upload_checkpoint(self, path: str | os.PathLike[str], *, step: int, epoch: int, resumable: bool = False,
                          is_last: bool = False) -> None:
        """Upload a checkpoint saved outside ModelCheckpoint (e.g. a resume checkpoint), after
        every point logged before this call. Not mirrored on local deletion (see
        :meth:`delete_checkpoint`)."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        self._raise_quota()
        path = os.path.abspath(os.fspath(path))
        ident = _identity(os.stat(path))
        meta = {"filename": safe_filename(os.path.basename(path)), "epoch": epoch, "step": step,
                "resumable": resumable, "is_last": is_last}
        if is_last:
            self._owner_sets_last = True
        self._enqueue("checkpoint", {"path": path, "identity": ident, "meta": meta, "origin": "manual"})

    def delete_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Delete on the server the checkpoint this logger uploaded from ``path`` (in order)."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        self._enqueue("delete_checkpoint", {"path": os.path.abspath(os.fspath(path))})

    def save(self) -> None:
        """Nothing to do: the trainer calls save() after every log_metrics (as Lightning does),
        and blocking there, or waking the sender for a request per step, would slow training.
        The sender sends every ``flush_interval``; ``flush()`` and ``finalize()`` wait for it."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return

    @staticmethod
    def _error_text() -> str | None:
        """The exception being handled, as the run's error: ``Type: message``, a blank line,
        the traceback."""
        exc_type, exc, tb = sys.exc_info()
        if exc is None or exc_type is None:
            return None
        text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip()
        message = str(exc)
        head = f"{exc_type.__name__}: {message}" if message else exc_type.__name__
        error = f"{head}\n\n{text}"
        if len(error) > MAX_ERROR_CHARS:
            error = error[:20_000] + "\n[...]\n" + error[-(MAX_ERROR_CHARS - 21_000):]
        return error

    def _queue_reconcile(self) -> None:
        if self._saw_checkpoints:
            self._enqueue("reconcile", {})

    def finalize(self, status: str) -> None:
        """The trainer's end of an entry point (fit, validate, test, predict). A run this logger
        created gets its final status (``failed`` with the exception being handled, if any); an
        attached run is only flushed (its owner calls :meth:`finish`)."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return
        if not self._started:
            return  # nothing was ever logged: no run to close
        error = self._error_text() if status == "failed" else None
        self._check_seed()
        self._queue_reconcile()
        if self._attached or self._finish_sent:
            delivered = self._wait_delivered(grace=self.retry_for)
            if self._finish_sent and not self._attached:  # e.g. test() after fit(): done again
                self._stop_capture()
                if delivered:
                    self._stop_sender(abandon=False, timeout=self.timeout + 5)
            if not delivered:
                self._tell_spooled()
            return
        final = STATUS_OF.get(status, "failed")
        if final == "failed" and error is None:
            error = f"The training script reported status {status!r}."
        self._finish(final, error)

    def finish(self, status: str, error: str | None = None) -> bool:
        """Flush, then set the run's final status (``succeeded``, ``failed`` or ``cancelled``;
        the trainer's ``success``/``interrupted`` work too) with ``POST /runs/{id}/finish``. A
        failure without ``error`` records the exception being handled, if any. True when it
        reached the server (else it is in the spool)."""
        if self._inert:  # a rank other than 0 of a multi-process run reports nothing
            return True
        final = STATUS_OF.get(status)
        if final is None:
            raise ValueError(f"finish() takes 'succeeded', 'failed' or 'cancelled', not {status!r}.")
        if error is None and final == "failed":
            error = self._error_text()
        if self._thread is None:
            self._start()
        self._queue_reconcile()
        return self._finish(final, error)

    def _finish(self, status: str, error: str | None) -> bool:
        self._check_seed()
        self._stop_sampler()  # its last sample goes before the final status
        self._finish_sent = True
        self._enqueue("finish", {"status": status, "error": error})
        delivered = self._wait_delivered(grace=self.retry_for)
        self._stop_heartbeat()
        self._stop_capture()
        if delivered:
            self._stop_sender(abandon=False, timeout=self.timeout + 5)
        else:
            self._tell_spooled()  # the sender keeps trying while this process lives
        return delivered


    # ------------------------------------------------------------------ auto-attach

    @classmethod
    def auto(cls) -> RunyardLogger:
        """The process-wide logger attached to the run ``RUNYARD_RUN_ID`` (with ``RUNYARD_URL``,
        ``RUNYARD_TOKEN``, ``RUNYARD_RUN_DIR``), made on the first call and shared by every later
        one: what ``Trainer`` adds with ``RUNYARD_AUTO_LOGGER=1``, so a script's trainers (fit,
        then test; or several) report into one run. Raises ``ValueError`` without ``RUNYARD_RUN_ID``."""
        global _AUTO
        with _AUTO_LOCK:
            if _AUTO is None:
                raw = os.environ.get("RUNYARD_RUN_ID", "").strip()
                if not raw:
                    raise ValueError("RunyardLogger.auto() attaches to the run RUNYARD_RUN_ID, which is not set.")
                try:
                    run_id = int(raw)
                except ValueError:
                    raise ValueError(f"RUNYARD_RUN_ID={raw!r} is not a run id (an integer).") from None
                # A worker's run process keeps its own spool in the run folder: this process (its child)
                # gets a spool folder of its own there, so both can go offline and resume safely.
                folder = os.environ.get("RUNYARD_RUN_DIR") or os.path.join(DEFAULT_SAVE_DIR, f"run-{run_id}")
                _AUTO = cls(run_id=run_id, spool_dir=os.path.join(folder, f"script-spool-{os.getpid()}"))
            return _AUTO


_AUTO: RunyardLogger | None = None
_AUTO_LOCK = threading.Lock()


def auto_logger_enabled() -> bool:
    """``RUNYARD_AUTO_LOGGER`` is on and ``RUNYARD_RUN_ID`` names a run."""
    return (os.environ.get("RUNYARD_AUTO_LOGGER", "").strip().lower() in ("1", "true", "yes", "on")
            and bool(os.environ.get("RUNYARD_RUN_ID", "").strip()))


def _environment_key() -> tuple[Any, ...]:
    """What, when it changes, makes the environment record worth sending again."""
    seed_module = sys.modules.get("trainer_core.seed")
    return (seed_module.last_seed() if seed_module is not None else None, os.environ.get("RUNYARD_CODE_DIR"))


# --------------------------------------------------------------------------- runyard sync


class SyncSummary(dict[str, Any]):
    """What :func:`sync_spool` did: ``{"folder", "runs": [per-spool dicts]}``; ``str()`` says it in a sentence."""

    def __str__(self) -> str:
        runs = self.get("runs") or []
        if not runs:
            return f"nothing to sync in {self.get('folder')} (no {SPOOL_NAME})"
        parts = []
        for run in runs:
            bits = [f"{run.get('points', 0)} points", f"{run.get('lines', 0)} log lines",
                    f"{run.get('checkpoints', 0)} checkpoints"]
            if run.get("duplicates"):
                bits.append(f"{run['duplicates']} batches the server had already")
            if run.get("finished"):
                bits.append(f"status {run['finished']}")
            if run.get("dropped"):
                bits.append(f"{run['dropped']} records refused")
            parts.append(f"run {run.get('run_id')} at {run.get('url')} ({run.get('records', 0)} records: "
                         + ", ".join(bits) + ")")
        return f"synced {len(runs)} spool{'s' if len(runs) != 1 else ''}: " + "; ".join(parts)


def sync_spool(folder: str | os.PathLike[str], url: str | None = None, token: str | None = None, *,
               retry_for: float = 30.0, timeout: float = 30.0) -> SyncSummary:
    """Upload what RunyardLoggers left in spools (a run that ended offline): ``folder`` is a run's
    folder (with ``spool.jsonl``) or any folder above run folders: every spool below is sent, the
    deepest first (a worker's run folder holds its run script's spool in ``script-spool-<pid>/``).

    Records go in their order, each with its idempotency key (a run created offline is created
    with its client_key), so syncing twice, or a spool whose first records had reached the
    server, stores nothing twice. Progress is kept in ``spool.sent``; a synced spool is removed.
    ``url``: the server (default: the one the spool was written for, else ``RUNYARD_URL``).
    Raises :class:`~trainer_core.client.Unreachable` (progress kept) when the server does not
    answer within ``retry_for`` seconds."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist.")
    # deepest first: a run script's own spool (``script-spool-<pid>/`` in a worker's run folder) goes
    # before the run process's, which holds the final status
    spools = sorted(root.rglob(SPOOL_NAME), key=lambda p: (-len(p.parts), str(p)))
    summary = SyncSummary(folder=str(root), runs=[])
    for path in spools:
        summary["runs"].append(_sync_one(path.parent, url, token, retry_for, timeout))
    return summary


def _sync_one(folder: Path, url: str | None, token: str | None, retry_for: float, timeout: float) -> dict[str, Any]:
    spool = Spool(folder)
    header = spool.header()
    client = Client(url or header.get("url") or None, token, timeout=timeout)
    sender = _Sender(client, header.get("run_id"), retry_for=retry_for, attached=bool(header.get("attached")))
    records = 0
    try:
        if sender.run_id is None:  # created offline: (re)create it first, idempotent by its client_key
            create = spool.find_create()
            if create is not None:
                sender.send(create)
        for offset, rec in spool.records():
            sender.send(rec)
            spool.mark(offset)
            records += 1
    except ClientError as exc:
        raise Unreachable(f"{exc} {records} records of {spool.path} were sent; run the sync again to send the "
                          "rest.") from None
    spool.clear()
    stats = sender.stats
    return {
        "folder": str(folder), "run_id": sender.run_id, "url": client.url, "records": records,
        "points": stats["points"], "lines": stats["lines"], "checkpoints": stats["checkpoints"],
        "checkpoints_deleted": stats["checkpoints_deleted"], "created": bool(stats["created"]),
        "duplicates": stats["duplicate_points_batches"] + stats["duplicate_lines_batches"],
        "dropped": stats["dropped"], "finished": sender.finished, "problems": list(sender.problems),
    }


__all__ = ["RunyardError", "RunyardLogger", "Spool", "SyncSummary", "auto_logger_enabled", "sync_spool"]
