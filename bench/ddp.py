"""DDP overhead: trainer_core ``strategy="ddp"`` vs a hand-written ``torch.distributed`` + ``DistributedDataParallel``
loop on the same job, and the scaling of 2 processes against 1 (issue 13, point 8).

The bench starts the ranks itself with torchrun's variables (``TORCHELASTIC_RUN_ID``, ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so both variants run in the same processes
and the same process group (gloo on the CPU, nccl with ``--device cuda``), in alternating rounds so machine load hits
them alike:
  (a) hand-written: ``init_process_group``, ``DistributedSampler``, ``DistributedDataParallel``, forward, backward,
      ``optimizer.step``, ``zero_grad``;
  (b) trainer_core: ``Trainer(strategy="ddp", devices=N)`` joining those ranks, progress bar, logger,
      checkpointing and summary off (``use_distributed_sampler`` on: the Trainer puts the DistributedSampler in).
Each round makes ``--steps`` optimizer steps on each rank, from the same initial weights; the time per step is
taken from the end of step ``--warmup`` to the end of the last step (steady state: process start, the rendezvous
and ``fit``'s setup are not in it). Reported: median ms per step over the rounds and the ratio (b)/(a).
Scaling: the same variants in one process without DDP (``devices=1``), same per-process batch; the 2-process
step time against the 1-process one (1.00 = perfect weak scaling; this machine's 2 cores are shared).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ddp.py [--rounds 7] [--steps 200] [--batch 64]
    .venv/bin/python bench/ddp.py --device cuda [--world N]   # a GPU machine: nccl, one rank per GPU
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout: this tree's trainer_core

_DIST_VARS = ("TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "NODE_RANK", "GROUP_RANK")


# ---------------------------------------------------------------------------------------------- one rank
def _worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    import trainer_core as L

    torch.set_num_threads(1)
    distributed = "TORCHELASTIC_RUN_ID" in os.environ
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = args.device == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(784, args.width), nn.ReLU(), nn.Linear(args.width, args.width), nn.ReLU(),
                             nn.Linear(args.width, 10))

    g = torch.Generator().manual_seed(1)
    n = args.batch * args.steps * world
    data = TensorDataset(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))

    def hand() -> tuple[float, float]:
        model = net().to(device)
        ddp: nn.Module = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None) if distributed \
            else model
        sampler: DistributedSampler[Any] | None = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False) if distributed else None
        loader = DataLoader(data, batch_size=args.batch, sampler=sampler)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        start = cpu_start = 0.0
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i + 1 == args.warmup:
                sync()
                start, cpu_start = time.perf_counter(), time.process_time()
        sync()
        steps = args.steps - args.warmup
        return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.start = self.end = self.cpu_start = self.cpu_end = 0.0

        def on_train_batch_end(self, trainer: Any, *rest: Any) -> None:
            if trainer.global_step == args.warmup:
                sync()
                self.start, self.cpu_start = time.perf_counter(), time.process_time()
            elif trainer.global_step == args.steps:
                sync()
                self.end, self.cpu_end = time.perf_counter(), time.process_time()

    def trainer_core() -> tuple[float, float]:
        clock = Clock()
        trainer = L.Trainer(
            strategy="ddp" if distributed else "auto", devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
            accelerator="gpu" if cuda else "cpu", max_epochs=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
        )
        trainer.fit(Module(), DataLoader(data, batch_size=args.batch))
        assert trainer.global_step == args.steps, trainer.global_step
        steps = args.steps - args.warmup
        return (clock.end - clock.start) / steps, (clock.cpu_end - clock.cpu_start) / steps

    times: dict[str, list[float]] = {"hand": [], "trainer_core": [], "hand_cpu": [], "trainer_core_cpu": []}
    variants = [("hand", hand), ("trainer_core", trainer_core)]
    for r in range(args.rounds):
        for name, fn in variants if r % 2 == 0 else variants[::-1]:
            if distributed:
                dist.barrier()
            wall, cpu = fn()
            times[name].append(wall)
            times[f"{name}_cpu"].append(cpu)
    if rank == 0:
        print("BENCH " + json.dumps(times), flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- the bench
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(args: argparse.Namespace, world: int, distributed: bool) -> dict[str, list[float]]:
    base = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    base["OMP_NUM_THREADS"] = "1"
    port = str(_free_port())
    command = [sys.executable, os.path.abspath(__file__), "--worker", *sys.argv[1:]]
    procs = []
    for rank in range(world):
        env = dict(base)
        if distributed:
            env.update(TORCHELASTIC_RUN_ID="bench-ddp", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                       LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=3600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a rank failed: {[p.returncode for p in procs]}")
    for line in outputs[0].splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line[6:]))
    raise SystemExit("rank 0 printed no figures")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--world", type=int, default=None, help="processes (default: 2 on the CPU, every GPU)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    import torch

    world = args.world or (max(torch.cuda.device_count(), 1) if args.device == "cuda" else 2)
    backend = "nccl" if args.device == "cuda" else "gloo"
    what = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {what}; {backend}, {world} process(es); batch {args.batch} per process, "
          f"MLP 784-{args.width}-{args.width}-10; {args.steps} steps ({args.warmup} warm-up) x {args.rounds} rounds")
    many = _launch(args, world, distributed=True)
    one = _launch(args, 1, distributed=False)

    def med(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    print(f"\n{'':30}{'wall ms/step':>13}{'ratio':>8}{'CPU ms/step':>13}{'ratio':>8}   wall rounds (ms)")
    for label, res in ((f"{world} processes (DDP, {backend})", many), ("1 process (no DDP)", one)):
        print(label)
        for name, title in (("hand", "hand-written loop"), ("trainer_core", "trainer_core")):
            wall, cpu = med(res[name]), med(res[f"{name}_cpu"])
            ratios = "" if name == "hand" else f"{wall / med(res['hand']):7.3f}x"
            cpu_ratio = "" if name == "hand" else f"{cpu / med(res['hand_cpu']):7.3f}x"
            print(f"  {title:28}{wall:13.3f}{ratios:>8}{cpu:13.3f}{cpu_ratio:>8}   "
                  f"{' '.join(f'{x * 1000:.2f}' for x in res[name])}")
    paired = [t / h for t, h in zip(many["trainer_core"], many["hand"], strict=True)]
    print(f"\ntrainer_core DDP / hand-written DDP: wall {med(many['trainer_core']) / med(many['hand']):.3f}x "
          f"(median of per-round ratios {statistics.median(paired):.3f}x), rank 0 CPU "
          f"{med(many['trainer_core_cpu']) / med(many['hand_cpu']):.3f}x; target <= 1.05x")
    for name in ("hand", "trainer_core"):
        t_many, t_one = med(many[name]), med(one[name])
        print(f"scaling, {name}: {world} processes {t_many:.3f} ms/step vs 1 process {t_one:.3f} ms/step -> "
              f"{t_many / t_one:.2f}x the step time for {world}x the samples "
              f"({world * t_one / t_many:.2f}x the throughput)")


if __name__ == "__main__":
    main()
