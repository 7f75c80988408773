"""What a code run costs before it trains: packing, the server's check, unpacking, uploading
once, and the requirements environment, each next to its baseline in the same script.

1. ``pack`` (ignore rules, deterministic tar.gz, sha256) of a project-sized folder vs a plain
   ``tarfile`` gzip of the same files (no rules, not deterministic): the baseline.
2. the server's ``inspect`` (every member checked, file list) and the worker's ``extract``
   (every path checked, files created with O_EXCL|O_NOFOLLOW) vs ``tarfile.extractall``.
3. re-submitting the same folder (pack, then the project's ``GET /snapshots?sha256=`` hit) vs the
   first submission (pack + ``PUT`` of the bytes) against a real server on loopback.
4. the requirements env: first build (venv + pip install of a local wheel, offline) vs reuse.
5. submit -> first logged metric on a real server + worker (embedded broker): the tutorial's
   autoencoder as the built-in ``mnist_autoencoder`` recipe (baseline), as a ``--model`` code run
   (download + unpack + import in the run's process) and as a command run (a child Python that
   imports torch itself), interleaved.

Prints medians and ratios; asserts nothing. Usage: ``python bench/code_runs.py [--files 2000]``
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server import snapshots  # noqa: E402


def make_folder(root: Path, n_files: int) -> Path:
    """A project-sized folder: n small source files in packages, a few larger ones, ignored noise."""
    rng = __import__("random").Random(0)
    for i in range(n_files):
        pkg = root / f"pkg{i % 20}"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / f"mod{i}.py").write_text("".join(f"x{j} = {rng.random()!r}\n" for j in range(60)))
    for i in range(4):
        (root / f"table{i}.csv").write_bytes(bytes(rng.getrandbits(8) for _ in range(256 * 1024)))
    (root / "data").mkdir()
    (root / "data" / "ignored.bin").write_bytes(b"\0" * (8 * 2**20))
    (root / ".gitignore").write_text("data/\n*.log\n")
    (root / ".runyardignore").write_text("notebooks/\n")
    return root


def plain_tar(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "data" not in path.relative_to(root).parts:
                tar.add(path, arcname=path.relative_to(root).as_posix())
    return buf.getvalue()


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_REAPER": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app", "--port", str(port),
                             "--log-level", "warning"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def tiny_wheel(folder: Path) -> Path:
    """A pure-python wheel made by hand (zip + METADATA + RECORD): installable offline."""
    name, version = "runyard_bench_dep", "0.1"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", record)
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind for measurement 5")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runyard-bench-code-"))
    try:
        folder = make_folder(work / "proj", args.files)
        packed = snapshots.pack(folder)
        assert snapshots.pack(folder).sha256 == packed.sha256  # deterministic
        unpacked = sum(f["size"] for f in packed.files)
        print(f"folder: {len(packed.files)} files, {unpacked / 2**20:.1f} MiB packed into "
              f"{len(packed.data) / 2**20:.2f} MiB (8 MiB under data/ ignored)")

        t_pack = timed(lambda: snapshots.pack(folder), args.repeat)
        t_plain = timed(lambda: plain_tar(folder), args.repeat)
        print(f"1. pack                {t_pack * 1000:8.1f} ms   plain tarfile {t_plain * 1000:8.1f} ms   "
              f"ratio {t_pack / t_plain:.2f}x")

        t_inspect = timed(lambda: snapshots.inspect(packed.data), args.repeat)
        n = iter(range(10**6))

        def ours() -> None:
            snapshots.extract(packed.data, work / f"x{next(n)}")

        def theirs() -> None:
            with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r:gz") as tar:
                tar.extractall(work / f"y{next(n)}", filter="data")

        t_extract = timed(ours, args.repeat)
        t_stdlib = timed(theirs, args.repeat)
        print(f"2. inspect (server)    {t_inspect * 1000:8.1f} ms")
        print(f"   extract (worker)    {t_extract * 1000:8.1f} ms   tarfile.extractall(filter='data') "
              f"{t_stdlib * 1000:8.1f} ms   ratio {t_extract / t_stdlib:.2f}x")

        proc, base = start_server(work / "home")
        try:
            client = httpx.Client(base_url=base, timeout=60)
            firsts, agains = [], []
            for i in range(args.repeat):
                (folder / "pkg0" / "mod0.py").write_text(f"x = {i}\n")  # new content: a real upload
                start = time.perf_counter()
                p = snapshots.pack(folder)
                found = client.get("/api/v1/snapshots", params={"project": "bench", "sha256": p.sha256}).json()
                assert not found["items"]
                r = client.put(f"/api/v1/snapshots/{p.sha256}", params={"project": "bench"}, content=p.data,
                               headers={"Content-Type": "application/gzip"})
                assert r.status_code == 201, r.text
                firsts.append(time.perf_counter() - start)
                start = time.perf_counter()
                p2 = snapshots.pack(folder)
                found = client.get("/api/v1/snapshots", params={"project": "bench", "sha256": p2.sha256}).json()
                assert found["items"], found
                agains.append(time.perf_counter() - start)
            t_first, t_again = statistics.median(firsts), statistics.median(agains)
            print(f"3. first submission    {t_first * 1000:8.1f} ms   re-submission (nothing sent) "
                  f"{t_again * 1000:8.1f} ms   ratio {t_first / t_again:.2f}x")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        from worker.codeenv import ensure_env

        code = work / "code"
        code.mkdir()
        wheels = code / "wheels"
        wheels.mkdir()
        tiny_wheel(wheels)
        (code / "requirements.txt").write_text("--no-index\n--find-links wheels\nrunyard_bench_dep==0.1\n")
        builds, reuses = [], []
        for i in range(3):
            home = work / f"envhome{i}"
            start = time.perf_counter()
            env = ensure_env(code, home, out=lambda _line: None)
            builds.append(time.perf_counter() - start)
            assert env is not None and not env.reused
            start = time.perf_counter()
            env = ensure_env(code, home, out=lambda _line: None)
            reuses.append(time.perf_counter() - start)
            assert env is not None and env.reused
        t_build, t_reuse = statistics.median(builds), statistics.median(reuses)
        print(f"4. requirements env    build {t_build:.2f} s   reuse {t_reuse * 1000:.2f} ms   "
              f"ratio {t_build / t_reuse:.0f}x")
        startup(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def startup(work: Path, runs: int) -> None:
    from datetime import datetime

    from tests.helpers.mnist import write_mnist
    from tests.worker.stack import Stack, stack_env

    data = write_mnist(work / "mnist", 64, 16)
    stack = Stack(stack_env(work / "stackhome", data), work / "logs")
    project = REPO / "tests" / "helpers" / "autoencoder_project"
    trainer = {"max_steps": 3, "limit_val_batches": 0, "log_every_n_steps": 1}
    try:
        stack.start_server()
        stack.start_worker()
        p = snapshots.pack(project)
        snap = stack.client.put(f"/api/v1/snapshots/{p.sha256}", params={"project": "default"}, content=p.data,
                                headers={"Content-Type": "application/gzip"}).json()
        module = {"kind": "module", "model": "pkg/models.py:LitAutoEncoder", "data": "pkg/data.py:MNISTData"}
        command = {"kind": "command", "command": ["python", "train.py"]}
        kinds = {
            "recipe mnist_autoencoder": lambda: stack.submit("mnist_autoencoder", {}, trainer),
            "code run, --model": lambda: stack.submit(
                "code", {"data_dir": str(data)}, trainer, code={"snapshot_id": snap["id"], "entry": module}),
            "code run, command": lambda: stack.submit(
                "code", {"--data-dir": str(data), "--max-steps": "3"}, {},
                code={"snapshot_id": snap["id"], "entry": command}),
        }
        for submit in kinds.values():  # warm-up: forkserver, first import of the snapshot
            run = submit()
            stack.wait_status(run["id"], "succeeded", 180)
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for _ in range(runs):
            for name, submit in kinds.items():
                time.sleep(0.5)  # an idle worker
                t0 = time.time()
                run = submit()
                done = stack.wait_status(run["id"], "succeeded", 180)
                started = datetime.fromisoformat(done["started_at"].replace("Z", "+00:00")).timestamp()
                series = stack.metrics(run["id"], "train_loss")["train_loss"]
                results[name].append((started - t0, min(series["wall_times"]) - t0))
        base = statistics.median(b for _, b in results["recipe mnist_autoencoder"])
        print(f"5. submit -> first metric, median of {runs} (submit -> running in brackets):")
        for name, values in results.items():
            first = statistics.median(b for _, b in values)
            running = statistics.median(a for a, _ in values)
            print(f"   {name:26s} {first:6.3f} s  [{running:.3f} s]   ratio {first / base:.2f}x")
    finally:
        stack.close()


if __name__ == "__main__":
    main()
