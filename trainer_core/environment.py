"""The reproducibility record of a run: what ran, where, with which software.

:func:`collect` returns a JSON-ready dict that :class:`~trainer_core.loggers.RunyardLogger` sends
with ``PUT /runs/{id}/environment`` (once the run exists, and again when the seed changed)::

    command     the process's full command line (``sys.orig_argv``: interpreter, flags, script, args)
    cwd         the working directory
    python      the Python version ("3.11.7"); executable: ``sys.executable``
    platform    ``platform.platform()``
    torch       torch's version; cuda: ``torch.version.cuda``; cudnn: ``torch.backends.cudnn.version()``
                when a CUDA device is there (else null)
    hostname    ``socket.gethostname()``
    gpus        the names of the GPUs this process sees ([] without one)
    seed        the last ``seed_everything`` value of this process, or null
    packages    {distribution name: version} of every installed distribution (``importlib.metadata``,
                the first one on ``sys.path`` wins, as for imports), sorted by name
    git         {"commit", "branch", "remote", "dirty", ...} of the code (see below), absent when unknown
    time        when the record was made (ISO 8601, UTC)

``git`` comes from ``$RUNYARD_CODE_DIR/.runyard/git.json`` (written by ``runyard submit`` into a
code snapshot) when ``RUNYARD_CODE_DIR`` is set, else from ``$RUNYARD_RUN_DIR/code/.runyard/git.json``
when that file exists (a worker's code run), else from ``git`` run in the working directory when it
is inside a repository. Credentials in a remote URL (``https://user:token@host/...``) are removed.

Cost: the first call in a process reads the installed distributions' metadata (tens of ms with a
few hundred packages; cached for the process) and runs ``git`` three times (a few ms each); later calls cost the git
calls only. :func:`collect` never raises: a field that cannot be found is null (or, for ``git``,
absent).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 5.0
MAX_GIT_JSON_BYTES = 1 << 20

_STATIC: dict[str, Any] | None = None
_PACKAGES: dict[str, str] | None = None
_LOCK = threading.Lock()


def collect() -> dict[str, Any]:
    """The reproducibility record of this process, now (see the module's docstring)."""
    record: dict[str, Any] = {"command": _safe(_command), "cwd": _safe(os.getcwd)}
    record.update(_safe(_static) or {})
    record["seed"] = _safe(_seed)
    record["packages"] = _safe(packages) or {}
    git = _safe(git_info)
    if git is not None:
        record["git"] = git
    record["time"] = _safe(lambda: datetime.now(UTC).isoformat())
    return record


def packages(refresh: bool = False) -> dict[str, str]:
    """``{name: version}`` of the installed distributions, read once per process."""
    global _PACKAGES
    with _LOCK:
        if _PACKAGES is None or refresh:
            _PACKAGES = _read_packages()
        return dict(_PACKAGES)


def git_info(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The git record of the code: from a snapshot's ``.runyard/git.json`` (``RUNYARD_CODE_DIR``,
    else ``RUNYARD_RUN_DIR/code``), else from ``git`` in ``cwd`` (default: the working
    directory). ``None`` when there is none (no repository, no git binary, git failing)."""
    code_dir = os.environ.get("RUNYARD_CODE_DIR", "").strip()
    if code_dir:
        return _git_json(os.path.join(code_dir, ".runyard", "git.json"))
    run_dir = os.environ.get("RUNYARD_RUN_DIR", "").strip()
    if run_dir:
        path = os.path.join(run_dir, "code", ".runyard", "git.json")
        if os.path.isfile(path):
            return _git_json(path)
    return _git_of(os.fspath(cwd) if cwd is not None else os.getcwd())


# --------------------------------------------------------------------------- fields


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        log.debug("environment field %s failed", getattr(fn, "__name__", fn), exc_info=True)
        return None


def _command() -> list[str]:
    argv = getattr(sys, "orig_argv", None)
    if argv:
        return [str(a) for a in argv]
    return [sys.executable, *map(str, sys.argv)]


def _seed() -> int | None:
    seed_module = sys.modules.get("trainer_core.seed")
    return seed_module.last_seed() if seed_module is not None else None


def _static() -> dict[str, Any]:
    """What does not change while the process lives, computed once."""
    global _STATIC
    with _LOCK:
        if _STATIC is None:
            static: dict[str, Any] = {
                "python": platform.python_version(),
                "executable": sys.executable,
                "platform": _safe(platform.platform),
                "hostname": _safe(socket.gethostname),
            }
            static.update(_torch_fields())
            _STATIC = static
        return dict(_STATIC)


def _torch_fields() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": None, "cuda": None, "cudnn": None, "gpus": []}
    try:
        import torch
    except ImportError:
        return out
    out["torch"] = str(torch.__version__)
    out["cuda"] = getattr(torch.version, "cuda", None)
    try:
        available = bool(torch.cuda.is_available())
    except Exception:
        available = False
    if available:
        out["cudnn"] = _safe(torch.backends.cudnn.version)
        out["gpus"] = _safe(_gpu_names, torch) or []
    return out


def _gpu_names(torch: Any) -> list[str]:
    """The names of the GPUs this process sees: torch's when CUDA is initialised already, else
    NVML's (no CUDA context made in the process just to name them), else torch's."""
    if torch.cuda.is_initialized():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    names = _nvml_names()
    if names is not None:
        return names
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _nvml_names() -> list[str] | None:
    try:
        from trainer_core import sysmetrics

        handles = sysmetrics.nvml_handles()
        if handles is None:
            return None
        import pynvml

        names = []
        for _, handle in handles:
            name = pynvml.nvmlDeviceGetName(handle)
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    except Exception:
        return None


def _read_packages() -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {}
    try:
        dists = metadata.distributions()
        for dist in dists:
            try:
                name = dist.metadata["Name"]
                version = dist.version
            except Exception:  # a broken .dist-info
                continue
            if not name or version is None:
                continue
            found.setdefault(str(name), str(version))  # sys.path order: the one imports would use
    except Exception:
        log.debug("listing the installed distributions failed", exc_info=True)
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


# --------------------------------------------------------------------------- git

_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def scrub_remote(url: str | None) -> str | None:
    """A remote URL without credentials (``https://user:token@host/x`` -> ``https://host/x``)."""
    if not url:
        return url
    return _CREDENTIALS.sub(r"\1", str(url))


def _git_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_GIT_JSON_BYTES + 1)
        if len(data) > MAX_GIT_JSON_BYTES:
            return None
        record = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("remote"), str):
        record["remote"] = scrub_remote(record["remote"])
    return record


def _git(cwd: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        env=env,
        errors="replace",
    )
    return proc.returncode, proc.stdout


def _git_of(cwd: str) -> dict[str, Any] | None:
    try:
        rc, out = _git(cwd, "rev-parse", "--show-prefix")
        if rc != 0:
            return None  # not a repository (or git refuses it, e.g. dubious ownership)
        prefix = out.strip().rstrip("/")
        # one call for the commit, the branch and the dirty flag (untracked, not ignored files count)
        rc, out = _git(cwd, "status", "--porcelain=v2", "--branch", "--untracked-files=normal")
        commit = branch = dirty = None
        if rc == 0:
            changes = []
            for line in out.splitlines():
                if line.startswith("# branch.oid "):
                    oid = line.split(" ", 2)[2].strip()
                    commit = None if oid == "(initial)" else oid
                elif line.startswith("# branch.head "):
                    head = line.split(" ", 2)[2].strip()
                    branch = None if head == "(detached)" else head
                elif line and not line.startswith("#"):
                    changes.append(line)
            dirty = bool(changes)
        remote = None
        rc, out = _git(cwd, "config", "--get-regexp", r"^remote\..*\.url$")
        if rc == 0:
            urls = {}
            for line in out.splitlines():
                key, _, value = line.partition(" ")
                urls[key[len("remote.") : -len(".url")]] = value.strip()
            remote = urls.get("origin") or next(iter(urls.values()), None)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None  # no git binary, a hung git
    return {
        "commit": commit,
        "branch": branch,
        "remote": scrub_remote(remote),
        "dirty": dirty,
        "root": prefix,
    }


__all__ = ["collect", "git_info", "packages", "scrub_remote"]
