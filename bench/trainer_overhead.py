"""Trainer overhead: trainer_core vs a hand-written PyTorch loop on the tutorial's autoencoder.

Variants, run in alternating rounds in one process so machine load hits them alike:
  (a) hand-written loop: forward, backward, optimizer.step, zero_grad over the same DataLoader;
  (b) trainer_core with its defaults on: progress bar (rendered to a devnull stream), CSV
      logger, checkpointing, model summary;
  (c) trainer_core with progress bar, logger, checkpointing and summary off.
Each variant makes the same number of optimizer steps on MNIST-shaped random data, from the
same initial weights. Reported: median µs per step over the rounds (whole ``fit`` wall time,
setup included, divided by steps) and the ratio to (a). Then ``import torch`` vs
``import trainer_core`` in fresh interpreters.

    OMP_NUM_THREADS=1 .venv/bin/python bench/trainer_overhead.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout: this tree's trainer_core

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import trainer_core as L  # noqa: E402
from trainer_core.loggers import CSVLogger  # noqa: E402

torch.set_num_threads(1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, x):
        return self.l1(x)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))

    def forward(self, x):
        return self.l1(x)


class LitAutoEncoder(L.LightningModule):
    """The tutorial's module, unchanged."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        loss = F.mse_loss(x_hat, x)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def make_loader(batch_size: int, steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = batch_size * steps
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Tiny(L.LightningModule):
    """One parameter and next to no arithmetic: what remains of a step is the loop's own cost."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


MODEL = {"autoencoder": lambda: LitAutoEncoder(Encoder(), Decoder()), "tiny": Tiny}
_model_kind = "autoencoder"


def fresh_model() -> L.LightningModule:
    torch.manual_seed(0)
    return MODEL[_model_kind]()


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``start``."""
    wall, cpu = _now()
    return wall - start[0], cpu - start[1]


def run_plain(loader: DataLoader, steps: int) -> tuple[float, float]:
    model = fresh_model()
    start = _now()
    model.train()
    optimizer = model.configure_optimizers()
    for batch_idx, batch in enumerate(loader):
        loss = model.training_step(batch, batch_idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return _since(start)


def run_trainer(loader: DataLoader, steps: int, extras: bool, root: str) -> tuple[float, float]:
    model = fresh_model()
    start = _now()
    if extras:
        # defaults (progress bar, checkpointing, summary) plus the CSV logger; the bar renders into devnull
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            trainer = L.Trainer(
                max_epochs=1,
                default_root_dir=root,
                logger=CSVLogger(root),
                accelerator="cpu",
                devices=1,
            )
            trainer.fit(model, train_dataloaders=loader)
    else:
        trainer = L.Trainer(
            max_epochs=1,
            default_root_dir=root,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(model, train_dataloaders=loader)
    elapsed = _since(start)
    if trainer.global_step != steps:
        raise RuntimeError(f"trainer made {trainer.global_step} optimizer steps, expected {steps}")
    return elapsed


ORDERS = [
    ("a", "b", "c"),
    ("b", "c", "a"),
    ("c", "a", "b"),
    ("c", "b", "a"),
    ("a", "c", "b"),
    ("b", "a", "c"),
]


def bench_batch_size(batch_size: int, steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per clock ("cpu", "wall"): median µs/step of each variant and median per-round ratios to (a)."""
    loader = make_loader(batch_size, steps)
    runs: list[dict[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as root:
        for r in range(rounds + 1):  # round 0 warms up caches and allocators, not counted
            result = {}
            for variant in ORDERS[r % len(ORDERS)]:
                if variant == "a":
                    result["a"] = run_plain(loader, steps)
                else:
                    result[variant] = run_trainer(loader, steps, variant == "b", os.path.join(root, f"r{r}"))
            if r:
                runs.append(result)
    out: dict[str, dict[str, float]] = {}
    # CPU: the fastest round of each variant (timeit's rule: slower rounds are other processes'
    # interference, not the code); wall: medians, and median per-round ratios
    for clock, i, pick in (("cpu min", 1, min), ("wall med", 0, statistics.median)):
        stats = {k: pick(run[k][i] for run in runs) / steps * 1e6 for k in "abc"}
        for k in "bc":
            if pick is min:
                stats[k + "/a"] = stats[k] / stats["a"]
            else:
                stats[k + "/a"] = statistics.median(run[k][i] / run["a"][i] for run in runs)
        out[clock] = stats
    return out


def import_time(statement: str) -> float:
    """Seconds ``statement`` (timed from after ``import time``) takes in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO
    )
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, not for the record)")
    args = parser.parse_args(argv)
    plan = [(1, 200 if args.quick else 3000), (64, 50 if args.quick else 800)]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(
        "µs per optimizer step and ratio to (a). 'cpu min': this process's CPU time, fastest of the rounds; "
        "'wall med': elapsed time, median of the rounds and median per-round ratio."
    )
    print(
        f"{'batch':>5} {'steps':>6} {'clock':>8} | {'(a) plain':>10} | {'(b) defaults':>20} | {'(c) all off':>20}"
    )
    for batch_size, steps in plan:
        result = bench_batch_size(batch_size, steps, args.rounds)
        for clock, r in result.items():
            print(
                f"{batch_size:>5} {steps:>6} {clock:>8} | {r['a']:>10.1f} | {r['b']:>10.1f} ({r['b/a']:.3f}x) |"
                f" {r['c']:>10.1f} ({r['c/a']:.3f}x)",
                flush=True,
            )
    global _model_kind
    _model_kind = "tiny"
    tiny_steps = 300 if args.quick else 3000
    r = bench_batch_size(1, tiny_steps, args.rounds)["cpu min"]
    print(
        f"framework cost per step (CPU µs), tiny one-parameter model, batch 1, {tiny_steps} steps: "
        f"(a) {r['a']:.1f}, (b) {r['b']:.1f} (+{r['b'] - r['a']:.1f}), (c) {r['c']:.1f} (+{r['c'] - r['a']:.1f})",
        flush=True,
    )
    _model_kind = "autoencoder"

    repeats = 3 if args.quick else 9
    torch_t, core_t, extra_t = [], [], []
    for _ in range(repeats):  # alternating, so changes in machine load hit both
        torch_t.append(import_time("import torch"))
        core_t.append(import_time("import trainer_core"))
        # the same difference inside one interpreter, less exposed to load: torch first, then trainer_core
        extra_t.append(import_time("import torch; t = time.perf_counter(); import trainer_core"))
    t_torch, t_core = statistics.median(torch_t), statistics.median(core_t)
    print(
        f"import torch: {t_torch:.3f} s, import trainer_core: {t_core:.3f} s (+{t_core - t_torch:.3f} s), "
        f"medians of {repeats} fresh interpreters; trainer_core after torch in one interpreter: "
        f"+{statistics.median(extra_t):.3f} s"
    )


if __name__ == "__main__":
    main()
