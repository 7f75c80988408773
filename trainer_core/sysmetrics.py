"""System metrics of a run: CPU, RAM, the process tree's RSS and, through NVML, each GPU.

A :class:`SystemSampler` runs a daemon thread that, every ``interval`` seconds, takes one sample
and hands it to ``emit(step, wall_time, metrics)``: ``step`` is the sample's number (0, 1, ...),
``wall_time`` the time it was taken (``time.time()``), ``metrics`` a dict of floats::

    system/cpu_percent          the machine's CPU use since the previous sample, 0-100
    system/ram_percent          the machine's RAM in use (total - available), 0-100
    system/ram_used_gb          the same in GiB
    system/process_rss_mb       resident memory of the process and all its descendants, MiB
    system/gpu{i}/utilization   per GPU this process sees (``CUDA_VISIBLE_DEVICES`` order, i as in
    system/gpu{i}/memory_used_mb    ``cuda:i``), from NVML: utilisation %, memory used (MiB) and
    system/gpu{i}/memory_percent    in %, temperature (°C). Only with ``pynvml`` (the
    system/gpu{i}/temperature_c     ``nvidia-ml-py`` package) and a driver; otherwise no GPU series.

psutil is used when installed, else ``/proc`` (Linux); both imported on first use, so importing
this module costs nothing (``pip install runyard`` alone has no psutil). Without either, the CPU,
RAM and RSS series are skipped with one warning. A value that cannot be read is left out of the
sample, never made up.

``RunyardLogger`` starts one for its run (the interval from :func:`interval_from_env`:
``RUNYARD_SYSTEM_METRICS_INTERVAL``, default 5 s; ``RUNYARD_SYSTEM_METRICS=0`` or an interval of 0
turns it off). A worker's run process can sample a child's process tree with ``pid=child.pid``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
MIN_FINAL_SAMPLE_S = 1.0  # stop() takes a last sample when the previous one is at least this old
_OFF = ("0", "false", "no", "off")
_MIB = float(1 << 20)
_GIB = float(1 << 30)

Emit = Callable[[int, float, dict[str, float]], Any]


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between samples as the environment says: 0 (off) with ``RUNYARD_SYSTEM_METRICS=0``,
    else ``RUNYARD_SYSTEM_METRICS_INTERVAL`` (default ``default``)."""
    if os.environ.get("RUNYARD_SYSTEM_METRICS", "").strip().lower() in _OFF:
        return 0.0
    raw = os.environ.get("RUNYARD_SYSTEM_METRICS_INTERVAL", "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        log.warning(
            "RUNYARD_SYSTEM_METRICS_INTERVAL=%r is not a number of seconds; sampling every %g s", raw, default
        )
        return float(default)
    return value if value > 0 and value == value else 0.0


# --------------------------------------------------------------------------- NVML

_NVML_LOCK = threading.Lock()
_NVML: Any = None  # None: not tried yet; False: not there; else the pynvml module (initialised)


def _nvml() -> Any:
    """The initialised ``pynvml`` module, or None (not installed, no driver, no GPU). Tried once
    per process."""
    global _NVML
    with _NVML_LOCK:
        if _NVML is None:
            _NVML = False
            try:
                import pynvml

                pynvml.nvmlInit()
                _NVML = pynvml
            except Exception as exc:  # ImportError, NVMLError (no driver), anything
                log.debug("no NVML: %s", exc)
        return _NVML or None


def _reset_nvml() -> None:
    """Forget what :func:`_nvml` found (tests)."""
    global _NVML
    with _NVML_LOCK:
        _NVML = None


def nvml_handles() -> list[tuple[int, Any]] | None:
    """``[(cuda index, NVML handle)]`` of the GPUs this process sees (``CUDA_VISIBLE_DEVICES``:
    indices or UUIDs, in its order, up to the first it cannot find, as CUDA does); None without NVML."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        out = []
        for i in range(count):
            try:
                out.append((i, nvml.nvmlDeviceGetHandleByIndex(i)))
            except Exception:  # a device NVML cannot open (lost, no permission)
                continue
        return out
    handles: list[tuple[int, Any]] = []
    for token in (t.strip() for t in visible.split(",")):
        if not token:
            break
        try:
            if token.lstrip("-").isdigit():
                index = int(token)
                if not 0 <= index < count:
                    break
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            else:
                handle = _handle_by_uuid(nvml, token, count)
                if handle is None:
                    break
        except Exception:
            break
        handles.append((len(handles), handle))
    return handles


def _handle_by_uuid(nvml: Any, token: str, count: int) -> Any:
    try:
        return nvml.nvmlDeviceGetHandleByUUID(token)
    except Exception:  # CUDA also takes a unique prefix of the UUID
        pass
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        if uuid.startswith(token) or uuid.startswith("GPU-" + token):
            return handle
    return None


def _gpu_sample(out: dict[str, float], handles: list[tuple[int, Any]]) -> None:
    nvml = _nvml()
    if nvml is None:
        return
    for i, handle in handles:
        prefix = f"system/gpu{i}/"
        try:
            out[prefix + "utilization"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # e.g. a MIG instance has no utilisation counter
            pass
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            out[prefix + "memory_used_mb"] = float(mem.used) / _MIB
            if mem.total:
                out[prefix + "memory_percent"] = 100.0 * float(mem.used) / float(mem.total)
        except Exception:
            pass
        try:
            out[prefix + "temperature_c"] = float(
                nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            )
        except Exception:
            pass


# --------------------------------------------------------------------------- CPU, RAM, RSS


def _psutil() -> Any:
    try:
        import psutil

        return psutil
    except ImportError:
        return None


_WARNED_NO_SOURCE = False


def _warn_no_source() -> None:
    """Once per process: neither psutil nor /proc (not Linux) to read CPU, RAM and RSS from."""
    global _WARNED_NO_SOURCE
    if not _WARNED_NO_SOURCE:
        _WARNED_NO_SOURCE = True
        log.warning("system metrics: CPU, RAM and process memory are skipped (no psutil and no /proc here); "
                    "pip install psutil (it comes with runyard[worker])")


def _cpu_times_proc() -> tuple[float, float]:
    """(total, idle) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    values = [float(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: counted in user/nice already]
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return total, idle


def _cpu_times_psutil(psutil: Any) -> tuple[float, float]:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total, idle


def _memory_proc() -> tuple[float, float]:
    """(total, available) bytes from /proc/meminfo."""
    info: dict[str, float] = {}
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            key, _, rest = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable", b"MemFree", b"Buffers", b"Cached"):
                info[key.decode()] = float(rest.split()[0]) * 1024.0
    available = info.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = info.get("MemFree", 0.0) + info.get("Buffers", 0.0) + info.get("Cached", 0.0)
    return info["MemTotal"], available


_PAGE = None


def _tree_rss_proc(pid: int) -> float | None:
    """RSS bytes of ``pid`` and its descendants, from /proc/*/stat."""
    global _PAGE
    if _PAGE is None:
        _PAGE = os.sysconf("SC_PAGE_SIZE")
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = data[data.rfind(b")") + 2 :].split()
        try:
            parents[int(name)] = int(fields[1])
            rss[int(name)] = int(fields[21])
        except (IndexError, ValueError):
            continue
    if pid not in rss:
        return None
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += rss.get(p, 0)
        todo.extend(children.get(p, ()))
    return float(total * _PAGE)


def _tree_rss_psutil(psutil: Any, pid: int) -> float | None:
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        children = proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    for child in children:
        try:
            total += child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # ended meanwhile
    return float(total)


# --------------------------------------------------------------------------- the sampler


class SystemSampler:
    """Sample the machine and a process tree every ``interval`` seconds on a daemon thread.

    Args:
        pid: the root of the process tree whose RSS is reported (default: this process).
        interval: seconds between samples (default :func:`interval_from_env`); 0 turns it off
            (:meth:`start` does nothing).
        emit: ``emit(step, wall_time, metrics)`` for each sample, called on the sampler's thread;
            an exception there is logged once and sampling goes on.
        gpus: report the GPUs (through NVML) too.
        psutil: use psutil when it is installed (False: always /proc).
    """

    def __init__(
        self,
        pid: int | None = None,
        interval: float | None = None,
        emit: Emit | None = None,
        *,
        gpus: bool = True,
        psutil: bool = True,
    ) -> None:
        self.pid = os.getpid() if pid is None else int(pid)
        self.interval = interval_from_env() if interval is None else max(0.0, float(interval))
        self.emit = emit
        self.gpus = gpus
        self.samples = 0  # the number of the next sample (its step)
        self._use_psutil = psutil
        self._ps: Any = None
        self._ready = False
        self._handles: list[tuple[int, Any]] | None = None
        self._cpu_prev: tuple[float, float] | None = None
        self._last_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._emit_failed = False

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _prepare(self) -> None:
        if self._ready:
            return
        self._ready = True
        self._ps = _psutil() if self._use_psutil else None
        if self._ps is None and not os.path.exists("/proc/stat"):
            _warn_no_source()
        self._handles = (nvml_handles() or []) if self.gpus else []
        self._cpu_prev = self._safe(self._cpu_times)
        self._last_at = time.monotonic()

    @staticmethod
    def _safe(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # a value not read is left out
            return None

    def _cpu_times(self) -> tuple[float, float]:
        return _cpu_times_psutil(self._ps) if self._ps is not None else _cpu_times_proc()

    def read(self) -> dict[str, float]:
        """One sample's values, now (the CPU share is over the time since the previous read)."""
        with self._lock:
            self._prepare()
            out: dict[str, float] = {}
            cpu = self._safe(self._cpu_times)
            prev, self._cpu_prev = self._cpu_prev, cpu
            if cpu is not None and prev is not None and cpu[0] > prev[0]:
                busy = (cpu[0] - prev[0]) - (cpu[1] - prev[1])
                out["system/cpu_percent"] = min(100.0, max(0.0, 100.0 * busy / (cpu[0] - prev[0])))
            ps = self._ps
            mem = (
                self._safe(lambda: (lambda v: (v.total, v.available))(ps.virtual_memory()))
                if ps is not None
                else self._safe(_memory_proc)
            )
            if mem is not None and mem[0] > 0:
                used = mem[0] - mem[1]
                out["system/ram_percent"] = 100.0 * used / mem[0]
                out["system/ram_used_gb"] = used / _GIB
            rss = (
                self._safe(_tree_rss_psutil, ps, self.pid)
                if ps is not None
                else self._safe(_tree_rss_proc, self.pid)
            )
            if rss is not None:
                out["system/process_rss_mb"] = rss / _MIB
            if self._handles:
                _gpu_sample(out, self._handles)
            self._last_at = time.monotonic()
            return out

    def sample(self) -> tuple[int, float, dict[str, float]]:
        """Take the next sample and hand it to ``emit``: ``(step, wall_time, metrics)``."""
        metrics = self.read()
        now = time.time()
        with self._lock:
            step = self.samples
            self.samples += 1
        if self.emit is not None and metrics:
            try:
                self.emit(step, now, metrics)
            except Exception:
                if not self._emit_failed:
                    self._emit_failed = True
                    log.warning("system metrics: handing a sample on failed", exc_info=True)
        return step, now, metrics

    def start(self) -> SystemSampler:
        """Start sampling (the first sample one interval from now); a no-op when disabled or running."""
        if not self.enabled or self.running:
            return self
        self._stop.clear()
        self._prepare()  # the CPU baseline: the first sample's share is over its first interval
        self._thread = threading.Thread(target=self._loop, name=f"runyard-sysmetrics-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self, final: bool = True, timeout: float | None = 5.0) -> None:
        """Stop sampling; ``final``: take one last sample first when the previous one is at least
        a second old (so a run shorter than the interval still has its values)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        if final and time.monotonic() - self._last_at >= min(MIN_FINAL_SAMPLE_S, self.interval):
            self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # the thread must survive anything
                log.debug("system metrics sample failed", exc_info=True)


__all__ = ["DEFAULT_INTERVAL_S", "SystemSampler", "interval_from_env", "nvml_handles"]
