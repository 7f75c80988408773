"""System metrics (trainer_core.sysmetrics): real samples of this machine and of a process tree.

No GPU here: the GPU series are checked absent for real, and their mapping with a stand-in
``pynvml`` module put in ``sys.modules`` (the one stand-in in these tests).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

from trainer_core import sysmetrics
from trainer_core.sysmetrics import SystemSampler, interval_from_env

BASE_KEYS = {"system/cpu_percent", "system/ram_percent", "system/ram_used_gb", "system/process_rss_mb"}
# a sampler's very first read has no CPU share yet (it is over the time since the previous read)
FIRST_KEYS = BASE_KEYS - {"system/cpu_percent"}


def first_keys(metrics: dict) -> set[str]:
    return set(metrics) - {"system/cpu_percent"}


def wait_for(predicate, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def no_nvml():
    """This machine's NVML state, found again (and forgotten after)."""
    sysmetrics._reset_nvml()
    yield
    sysmetrics._reset_nvml()


def total_ram_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 2**30
    raise AssertionError("no MemTotal")


def own_rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(i * i for i in range(1000))


@pytest.mark.parametrize("use_psutil", [True, False], ids=["psutil", "proc"])
def test_the_sampler_produces_every_series_with_sane_values(use_psutil, no_nvml):
    got: queue.Queue = queue.Queue()
    sampler = SystemSampler(interval=0.05, emit=lambda *a: got.put(a), psutil=use_psutil).start()
    try:
        samples = []
        while len(samples) < 3:
            burn(0.02)  # some CPU to measure
            try:
                samples.append(got.get(timeout=0.5))
            except queue.Empty:
                pass
    finally:
        sampler.stop(final=False)
    steps = [s[0] for s in samples]
    assert steps == list(range(len(samples)))  # step = the sample's number
    times = [s[1] for s in samples]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 30
    gpus = len(sysmetrics.nvml_handles() or [])
    for _, _, metrics in samples:
        if gpus == 0:
            assert set(metrics) == BASE_KEYS, metrics  # no GPU series: no GPU (or no pynvml) here
        else:  # a machine with NVML and GPUs
            assert BASE_KEYS <= set(metrics) and all(
                k in BASE_KEYS or k.split("/")[1] in {f"gpu{i}" for i in range(gpus)} for k in metrics
            )
        assert all(isinstance(v, float) for v in metrics.values())
        assert 0.0 <= metrics["system/cpu_percent"] <= 100.0
        assert 0.0 < metrics["system/ram_percent"] < 100.0
        assert 0.0 < metrics["system/ram_used_gb"] < total_ram_gb()
        assert 0.5 * own_rss_mb() < metrics["system/process_rss_mb"] < 4 * own_rss_mb() + 100
    assert max(m["system/cpu_percent"] for _, _, m in samples) > 0.0  # this test kept a CPU busy


CHILD = textwrap.dedent("""
    import sys, time
    block = bytearray(int(sys.argv[1]) * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touched: resident
    print("ready", flush=True)
    sys.stdin.read()
""")


def test_the_rss_of_a_child_process_tree_is_counted(tmp_path):
    """A 200 MiB child (and its own 100 MiB child) count toward the parent's tree; sampling the
    child by pid gives the child's tree alone."""
    script = tmp_path / "hog.py"
    script.write_text(CHILD)
    grand = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, {str(script)!r}, "100"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        block = bytearray(200 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("ready", flush=True)
        sys.stdin.read()
        child.stdin.close()
        child.wait()
    """)
    mine = SystemSampler(interval=1)
    before = mine.read()["system/process_rss_mb"]
    proc = subprocess.Popen(
        [sys.executable, "-c", grand], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        for use_psutil in (True, False):
            tree = SystemSampler(interval=1, psutil=use_psutil).read()["system/process_rss_mb"]
            assert tree - before > 290, (use_psutil, before, tree)  # 200 + 100 MiB below this process
            child_tree = SystemSampler(pid=proc.pid, interval=1, psutil=use_psutil).read()[
                "system/process_rss_mb"
            ]
            assert 300 < child_tree < 300 + 200, child_tree  # two interpreters' own memory on top
    finally:
        proc.stdin.close()
        proc.wait(30)
    # the process is gone: no RSS value rather than a made-up one
    assert "system/process_rss_mb" not in SystemSampler(pid=proc.pid, interval=1).read()


def test_interval_zero_and_the_environment_turn_it_off(monkeypatch):
    monkeypatch.delenv("RUNYARD_SYSTEM_METRICS", raising=False)
    monkeypatch.delenv("RUNYARD_SYSTEM_METRICS_INTERVAL", raising=False)
    assert interval_from_env() == 5.0
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS_INTERVAL", "0.25")
    assert interval_from_env() == 0.25 and SystemSampler().interval == 0.25
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS_INTERVAL", "0")
    assert interval_from_env() == 0.0
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS_INTERVAL", "soon")
    assert interval_from_env() == 5.0  # a warning, and the default
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS_INTERVAL", "1")
    monkeypatch.setenv("RUNYARD_SYSTEM_METRICS", "0")
    assert interval_from_env() == 0.0
    threads = set(threading.enumerate())
    calls = []
    off = SystemSampler(emit=lambda *a: calls.append(a))
    assert not off.enabled and off.start() is off and not off.running
    off.stop()
    assert set(threading.enumerate()) == threads and calls == []


def test_stop_takes_a_last_sample_and_the_thread_ends(no_nvml):
    got = []
    sampler = SystemSampler(interval=3600, emit=lambda *a: got.append(a)).start()
    assert sampler.running
    wait_for(lambda: time.monotonic() - sampler._last_at >= 1.0, what="a second to pass")
    sampler.stop()
    assert not sampler.running and [s[0] for s in got] == [0] and set(got[0][2]) == BASE_KEYS
    quick = SystemSampler(interval=3600, emit=lambda *a: got.append(a)).start()
    quick.stop()  # under a second since the start: nothing worth a sample
    assert len(got) == 1


def test_an_emit_that_fails_does_not_stop_sampling(no_nvml):
    calls = []

    def emit(step, wall_time, metrics):
        calls.append(step)
        raise RuntimeError("full")

    sampler = SystemSampler(interval=0.02, emit=emit).start()
    try:
        wait_for(lambda: len(calls) >= 3, what="three samples")
    finally:
        sampler.stop(final=False)
    assert calls[:3] == [0, 1, 2]


# --------------------------------------------------------------------------- GPUs through pynvml


class NVMLError(Exception):
    pass


def fake_pynvml(devices: list[dict], *, init_fails: bool = False) -> types.ModuleType:
    """A ``pynvml`` with nvidia-ml-py's names, answering for ``devices``."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = NVMLError
    mod.NVML_TEMPERATURE_GPU = 0
    mod.calls = []

    def init():
        mod.calls.append("init")
        if init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def by_index(i):
        if not 0 <= i < len(devices):
            raise NVMLError("Invalid Argument")
        return devices[i]

    def by_uuid(uuid):
        for d in devices:
            if d["uuid"] == uuid:
                return d
        raise NVMLError("Not Found")

    def utilization(h):
        if h.get("util") is None:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=h["util"], memory=0)

    def temperature(h, sensor):
        assert sensor == mod.NVML_TEMPERATURE_GPU
        return h["temp"]

    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: None
    mod.nvmlDeviceGetCount = lambda: len(devices)
    mod.nvmlDeviceGetHandleByIndex = by_index
    mod.nvmlDeviceGetHandleByUUID = by_uuid
    mod.nvmlDeviceGetUUID = lambda h: h["uuid"]
    mod.nvmlDeviceGetName = lambda h: h["name"]
    mod.nvmlDeviceGetUtilizationRates = utilization
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        used=h["used"], total=h["total"], free=h["total"] - h["used"]
    )
    mod.nvmlDeviceGetTemperature = temperature
    return mod


DEVICES = [
    {
        "uuid": "GPU-aaaa-1111",
        "name": "NVIDIA H100 80GB HBM3",
        "util": 87,
        "used": 40 * 2**30,
        "total": 80 * 2**30,
        "temp": 61,
    },
    {
        "uuid": "GPU-bbbb-2222",
        "name": "NVIDIA A10",
        "util": None,
        "used": 6 * 2**30,
        "total": 24 * 2**30,
        "temp": 45,
    },
]


@pytest.fixture
def with_pynvml(monkeypatch, no_nvml):
    def install(mod):
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        sysmetrics._reset_nvml()
        return mod

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return install


def test_gpu_series_come_from_nvml_per_device(with_pynvml):
    nvml = with_pynvml(fake_pynvml(DEVICES))
    metrics = SystemSampler(interval=1).read()
    gpu = {k: v for k, v in metrics.items() if k.startswith("system/gpu")}
    assert gpu == {
        "system/gpu0/utilization": 87.0,
        "system/gpu0/memory_used_mb": 40 * 1024.0,
        "system/gpu0/memory_percent": 50.0,
        "system/gpu0/temperature_c": 61.0,
        # the second has no utilisation counter (e.g. a MIG slice): that series is left out, not faked
        "system/gpu1/memory_used_mb": 6 * 1024.0,
        "system/gpu1/memory_percent": 25.0,
        "system/gpu1/temperature_c": 45.0,
    }
    assert FIRST_KEYS <= set(metrics)
    SystemSampler(interval=1).read()
    assert nvml.calls == ["init"]  # NVML is initialised once per process


def test_gpu_series_follow_cuda_visible_devices(with_pynvml, monkeypatch):
    with_pynvml(fake_pynvml(DEVICES))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = {k for k in SystemSampler(interval=1).read() if k.startswith("system/gpu")}
    assert gpu == {"system/gpu0/memory_used_mb", "system/gpu0/memory_percent", "system/gpu0/temperature_c"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,1")  # a UUID prefix, as CUDA takes it
    metrics = SystemSampler(interval=1).read()
    assert metrics["system/gpu0/utilization"] == 87.0 and metrics["system/gpu1/temperature_c"] == 45.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not any(k.startswith("system/gpu") for k in SystemSampler(interval=1).read())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7,1")  # CUDA stops at the first device that is not there
    assert {k.split("/")[1] for k in SystemSampler(interval=1).read() if k.startswith("system/gpu")} == {
        "gpu0"
    }


def test_no_gpu_series_without_a_driver_or_without_pynvml(with_pynvml, monkeypatch):
    nvml = with_pynvml(fake_pynvml(DEVICES, init_fails=True))
    assert first_keys(SystemSampler(interval=1).read()) == FIRST_KEYS
    SystemSampler(interval=1).read()
    assert nvml.calls == ["init"]  # not retried every sample
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    sysmetrics._reset_nvml()
    assert first_keys(SystemSampler(interval=1).read()) == FIRST_KEYS
    assert sysmetrics.nvml_handles() is None


def test_real_gpus_when_this_machine_has_them(no_nvml):
    handles = sysmetrics.nvml_handles()
    if not handles:
        pytest.skip("no GPU through NVML here (pynvml not installed, or no driver)")
    metrics = SystemSampler(interval=1).read()
    for i, _ in handles:
        assert 0 <= metrics[f"system/gpu{i}/memory_percent"] <= 100
        assert metrics[f"system/gpu{i}/memory_used_mb"] >= 0
        assert 0 < metrics[f"system/gpu{i}/temperature_c"] < 120
        if f"system/gpu{i}/utilization" in metrics:
            assert 0 <= metrics[f"system/gpu{i}/utilization"] <= 100


def test_importing_sysmetrics_loads_neither_psutil_nor_pynvml():
    # torch.cuda itself imports pynvml when it is installed (runyard[gpu]): only what sysmetrics adds counts
    code = ("import sys, torch; before = set(sys.modules); import trainer_core.sysmetrics; "
            "added = set(sys.modules) - before; print('psutil' in sys.modules, 'pynvml' in added)")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_without_psutil_and_proc_the_series_are_skipped_with_one_warning(no_nvml, monkeypatch, caplog):
    # `pip install runyard` alone has no psutil; on a system without /proc there is nothing to read
    monkeypatch.setattr(sysmetrics, "_psutil", lambda: None)
    monkeypatch.setattr(sysmetrics, "_WARNED_NO_SOURCE", False)
    real_exists = os.path.exists
    monkeypatch.setattr(sysmetrics.os.path, "exists", lambda p: False if p == "/proc/stat" else real_exists(p))
    monkeypatch.setattr(sysmetrics, "_cpu_times_proc", lambda: (_ for _ in ()).throw(OSError("no /proc")))
    monkeypatch.setattr(sysmetrics, "_memory_proc", lambda: (_ for _ in ()).throw(OSError("no /proc")))
    monkeypatch.setattr(sysmetrics, "_tree_rss_proc", lambda pid: (_ for _ in ()).throw(OSError("no /proc")))
    with caplog.at_level("WARNING", logger="trainer_core.sysmetrics"):
        first = SystemSampler(interval=1, gpus=False).read()
        second = SystemSampler(interval=1, gpus=False).read()
    assert first == {} and second == {}
    warnings = [r for r in caplog.records if "psutil" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
