"""System-metrics sampler cost: prints figures, asserts nothing.

1. One sample's CPU time (``SystemSampler.read()``: CPU, RAM, the process tree's RSS, GPUs when
   NVML is there), with psutil and with the /proc fallback: median of blocks, µs per sample.
2. Training speed of the tutorial's autoencoder (batch 64, MNIST-shaped random data) with a
   ``RunyardLogger`` against a real server, its sampler at a 0.5 s interval vs off, in alternating
   blocks (ABBA order, so machine load hits both alike). A callback stamps every batch end; per
   block the mean wall and CPU (``process_time``: all threads, the sampler's and the sender's
   included) per step after a warm-up. Reported: median steps/s of each, the median per-pair
   ratio, and the cost as a % of a step.
3. The cost at the default 5 s interval: the 0.5 s cost scaled by 0.5/5, and the per-sample CPU
   time over the interval; with ``--measure-default`` also measured the same way as 2 (longer
   blocks, and within noise).

    OMP_NUM_THREADS=1 .venv/bin/python bench/system_metrics.py [--rounds 6] [--block-s 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout: this tree's trainer_core

import httpx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import trainer_core as L  # noqa: E402
from trainer_core import sysmetrics  # noqa: E402
from trainer_core.loggers.runyard import RunyardLogger  # noqa: E402
from trainer_core.sysmetrics import SystemSampler  # noqa: E402

torch.set_num_threads(1)


class LitAutoEncoder(L.LightningModule):
    """The tutorial's autoencoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))

    def training_step(self, batch, batch_idx):
        x, _ = batch
        x = x.view(x.size(0), -1)
        loss = F.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def thread_cpu(thread) -> float:
    """CPU seconds a live thread of this process has used."""
    if thread is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class StepTimer(L.Callback):
    def __init__(self, logger: RunyardLogger) -> None:
        self.logger = logger
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.samples = 0
        self.sampler_cpu = 0.0
        self.sender_cpu = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def on_train_end(self, trainer, pl_module):
        sampler = self.logger._sampler
        if sampler is not None:
            self.samples = sampler.samples
            self.sampler_cpu = thread_cpu(sampler._thread)
        self.sender_cpu = thread_cpu(self.logger._thread)


# --------------------------------------------------------------------------- 1. one sample


def sample_cost(n: int, use_psutil: bool) -> float:
    """Median over 5 blocks of the CPU µs one ``read()`` takes."""
    sampler = SystemSampler(interval=1, psutil=use_psutil)
    sampler.read()
    blocks = []
    for _ in range(5):
        c0 = time.process_time()
        for _ in range(n):
            sampler.read()
        blocks.append((time.process_time() - c0) / n * 1e6)
    return statistics.median(blocks)


# --------------------------------------------------------------------------- 2. training with and without


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_REAPER": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "server.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def make_loader(batches: int = 200) -> DataLoader:
    """MNIST-shaped random images, ``batches`` batches of 64 (epochs repeat it up to max_steps)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batches * 64, 1, 28, 28, generator=g)
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=64)


_LOADER = make_loader()


def fit(url: str, tmp: str, steps: int, interval: float, warmup: int) -> dict[str, float]:
    logger = RunyardLogger(
        url=url,
        project="bench-sysmetrics",
        save_dir=tmp,
        capture=False,
        system_metrics=interval if interval > 0 else False,
    )
    timer = StepTimer(logger)
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
        default_root_dir=tmp,
    )
    trainer.fit(LitAutoEncoder(), _LOADER)
    n = len(timer.wall) - 1 - warmup
    return {
        "wall": (timer.wall[-1] - timer.wall[warmup]) / n,
        "cpu": (timer.cpu[-1] - timer.cpu[warmup]) / n,
        "samples": timer.samples,
        "train_s": timer.wall[-1] - timer.wall[0],
        "sampler_cpu": timer.sampler_cpu,
        "sender_cpu": timer.sender_cpu,
    }


def ab(url: str, tmp: str, interval: float, steps: int, rounds: int, warmup: int) -> dict[str, float]:
    off: list[dict] = []
    on: list[dict] = []
    for r in range(rounds):
        order = [0.0, interval] if r % 2 == 0 else [interval, 0.0]
        for value in order:
            (on if value else off).append(fit(url, tmp, steps, value, warmup))
    wall_ratio = [b["wall"] / a["wall"] for a, b in zip(off, on, strict=True)]
    cpu_ratio = [b["cpu"] / a["cpu"] for a, b in zip(off, on, strict=True)]
    return {
        "off_steps_s": statistics.median(1 / x["wall"] for x in off),
        "on_steps_s": statistics.median(1 / x["wall"] for x in on),
        "wall_ratio": statistics.median(wall_ratio),
        "wall_q": statistics.quantiles(wall_ratio, n=4, method="inclusive")
        if len(wall_ratio) > 1
        else [0, 0, 0],
        "cpu_ratio": statistics.median(cpu_ratio),
        "step_us": statistics.median(x["wall"] for x in off) * 1e6,
        "samples": statistics.median(x["samples"] for x in on),
        # threads' own CPU per second of training: the sampler's, and what the sender spends more
        "sampler_share": statistics.median(x["sampler_cpu"] / x["train_s"] for x in on),
        "sender_extra_share": statistics.median(x["sender_cpu"] / x["train_s"] for x in on)
        - statistics.median(x["sender_cpu"] / x["train_s"] for x in off),
        "sampler_us_per_sample": statistics.median(x["sampler_cpu"] / max(1, x["samples"]) * 1e6 for x in on),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="pairs of blocks (on, off) per interval")
    parser.add_argument("--block-s", type=float, default=5.0, help="seconds of training per block")
    parser.add_argument(
        "--measure-default", action="store_true", help="also A/B the 5 s interval (4x longer blocks)"
    )
    parser.add_argument("--quick", action="store_true", help="short blocks (a smoke run, not for the record)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.block_s = 2, 1.5
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"GPUs through NVML: {len(sysmetrics.nvml_handles() or [])}"
    )

    n = 50 if args.quick else 300
    per_sample = {}
    for use_psutil, label in ((True, "psutil"), (False, "/proc")):
        per_sample[label] = sample_cost(n, use_psutil)
    print(
        "1. one sample's CPU time: "
        + ", ".join(f"{k} {v:.0f} µs" for k, v in per_sample.items())
        + f" (this process tree: {len(os.listdir('/proc'))} /proc entries scanned for children)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "home")
        try:
            probe = fit(url, tmp, 300, 0.0, 50)  # calibrate the block length
            steps = max(300, int(args.block_s / probe["wall"]))
            warmup = min(100, steps // 10)
            print(
                f"2. autoencoder, batch 64: {steps} steps per block (~{args.block_s:g} s), {args.rounds} pairs, "
                f"RunyardLogger to a local server (log_every_n_steps=50)"
            )
            plan = [0.5] + ([5.0] if args.measure_default else [])
            measured = {}
            for interval in plan:
                block_steps = steps if interval < 1 else steps * 4
                r = ab(url, tmp, interval, block_steps, args.rounds, warmup)
                measured[interval] = r
                cost = (r["wall_ratio"] - 1) * 100
                print(
                    f"   interval {interval:g} s: off {r['off_steps_s']:.1f} steps/s, on {r['on_steps_s']:.1f} "
                    f"steps/s, wall ratio on/off {r['wall_ratio']:.4f} (quartiles {r['wall_q'][0]:.4f}.."
                    f"{r['wall_q'][2]:.4f}), CPU ratio {r['cpu_ratio']:.4f}; cost {cost:+.2f} % of a step "
                    f"({r['step_us']:.0f} µs), {r['samples']:.0f} samples per block"
                )
                share = (r["sampler_share"] + max(0.0, r["sender_extra_share"])) * 100
                print(
                    f"      threads' CPU: sampler {r['sampler_us_per_sample']:.0f} µs per sample = "
                    f"{r['sampler_share'] * 100:.3f} % of the training time, sender "
                    f"{r['sender_extra_share'] * 100:+.3f} % (on - off): {share:.3f} % of a step at most"
                )
        finally:
            proc.terminate()
            proc.wait(10)

    r = measured[0.5]
    scaled = (r["wall_ratio"] - 1) * 100 * 0.5 / 5.0
    threads = (r["sampler_share"] + max(0.0, r["sender_extra_share"])) * 100 * 0.5 / 5.0
    direct = per_sample["psutil"] / 5e6 * 100
    print(
        f"3. default 5 s interval (target <= 1 % of a step): A/B wall {scaled:+.3f} % (the 0.5 s figure x 0.1), "
        f"threads' CPU {threads:.3f} % (x 0.1), one sample's CPU over 5 s {direct:.3f} %"
    )
    if 5.0 in measured:
        m = measured[5.0]
        q1, _, q3 = m["wall_q"]
        noise = (
            "its quartiles include 1: within the blocks' noise" if q1 <= 1 <= q3 else "outside its quartiles"
        )
        print(
            f"   measured at 5 s: wall ratio {m['wall_ratio']:.4f} ({(m['wall_ratio'] - 1) * 100:+.2f} %, {noise})"
        )


if __name__ == "__main__":
    main()
