"""2 CPU processes (gloo): ``Tuner.lr_find`` and ``Tuner.scale_batch_size`` under DDP, then a ``fit``.

Usage: ``tuner.py FRAMEWORK MODE TASKS ROOT``
- FRAMEWORK: ``core`` (``import trainer_core as L``) or ``lightning`` (``import lightning.pytorch as L``);
- MODE: ``ddp`` (the script runs again for rank 1), ``spawn`` (``ddp_spawn``) or ``single`` (one process on rank
  0's shard of the data: the reference);
- TASKS: comma-separated, in order: ``lr`` (``Tuner.lr_find``), ``bs`` (``Tuner.scale_batch_size``, binsearch with
  a simulated out-of-memory error above 24 samples per batch on every rank and above 20 on rank 1 alone), ``lrcb`` (the ``LearningRateFinder`` callback
  during a fit), ``fit`` / ``bsfit`` (a fit of 2 epochs afterwards).

The data is chosen so that a 2-rank run steps exactly the weights a single process steps on rank 0's shard: every
sample is there twice, at 2i and 2i+1, so the unshuffled ``DistributedSampler`` hands both ranks the same batches
and the averaged gradient is rank 0's. Rank 1's reported loss is skewed (a detached term: no effect on the
gradients) so that on its own it would suggest another lr and stop the range test early; the tuner must take rank
0's decisions on every rank.

Every rank prints JSON lines ``{"rank": r, "phase": ..., ...}`` (after each task: its result, the module's lr /
batch size, the optimizer's lr, a hash of the weights, the tuner's files left in ROOT); under ``spawn`` the ranks
print from ``teardown`` and the main process prints ``{"rank": "main", ...}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

FRAMEWORK, MODE, TASKS, ROOT = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
if FRAMEWORK == "lightning":
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import LearningRateFinder
    from lightning.pytorch.tuner import Tuner
else:
    import trainer_core as L  # type: ignore[no-redef]
    from trainer_core.callbacks import LearningRateFinder  # type: ignore[assignment]
    from trainer_core.tuner import Tuner  # type: ignore[assignment]

SEED = 3
N_SHARD = 96  # samples per rank
OOM_ABOVE = 24  # during the batch size search, a batch larger than this "runs out of memory" on every rank
RANK1_OOM_ABOVE = 20  # ... and on rank 1 a batch larger than this


def _shard() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SHARD, 3, generator=g)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.1 * torch.randn(N_SHARD, 1, generator=g)
    return x, y


def dataset() -> TensorDataset:
    x, y = _shard()
    if MODE == "single":
        return TensorDataset(x, y)
    return TensorDataset(x.repeat_interleave(2, 0), y.repeat_interleave(2, 0))  # sample i at 2i and 2i+1


def weights_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tuner_files() -> list[str]:
    return sorted(f for f in os.listdir(ROOT) if f.startswith((".lr_find", ".scale_batch_size")))


class Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.lr = 1e-3
        self.batch_size = 16
        self.losses: list[float] = []
        self.oom_above: int | None = None

    def train_dataloader(self) -> DataLoader:
        data = dataset()
        if MODE == "single":
            return DataLoader(data, batch_size=self.batch_size)
        # an unshuffled sampler of our own: both frameworks keep it (Lightning shuffles the one it would add)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        if self.oom_above is not None and len(x) > self.oom_above:
            raise RuntimeError("CUDA out of memory. (simulated)")
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.losses.append(float(loss.detach()))
        if self.global_rank == 1:
            # rank 1 reports another loss with the same gradient: a bump that would move its suggestion, and a
            # jump at step 20 that would stop its range test (it must not: rank 0 decides)
            skew = 0.3 * (self.global_step % 3) + (1e3 if self.global_step >= 20 else 0.0)
            loss = loss + torch.tensor(skew)
        return loss

    def on_train_end(self) -> None:
        # rank 1 alone runs out of memory above 20 samples, after the trial's last step (past every collective
        # of the trial): all ranks must still agree on one batch size
        if self.oom_above is not None and self.global_rank == 1 and self.batch_size > RANK1_OOM_ABOVE:
            raise RuntimeError("CUDA out of memory. (simulated, rank 1 only)")

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def make_trainer(**kw: Any) -> Any:
    strategy = {"ddp": "ddp", "spawn": "ddp_spawn", "single": "auto"}[MODE]
    return L.Trainer(
        default_root_dir=ROOT, accelerator="cpu", devices=1 if MODE == "single" else 2, strategy=strategy,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, **kw,
    )


def emit(phase: str, rank: Any, module: Any, trainer: Any, **extra: Any) -> None:
    optimizers = getattr(trainer, "optimizers", None) or []
    record = {
        "rank": rank, "phase": phase, "lr": module.lr, "batch_size": module.batch_size,
        "optimizer_lr": optimizers[0].param_groups[0]["lr"] if optimizers else None,
        "weights": weights_hash(module), "files": tuner_files(), "global_step": trainer.global_step, **extra,
    }
    print(json.dumps(record), flush=True)


def finder_result(trainer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cb in trainer.callbacks:
        if hasattr(cb, "optimal_lr") and cb.optimal_lr is not None:
            out["suggestion"] = cb.optimal_lr.suggestion()
            out["n_results"] = len(cb.optimal_lr.results["lr"])
        if hasattr(cb, "optimal_batch_size"):
            out["optimal_batch_size"] = cb.optimal_batch_size
    return out


class Report(L.Callback):
    """Under spawn: each rank reports after the run (the tuner ends it; ``teardown`` still runs)."""

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        extra = finder_result(trainer)
        if self.phase in ("fit", "bsfit"):
            extra["losses_first_last"] = [pl_module.losses[0], pl_module.losses[-1]] if pl_module.losses else []
        emit(self.phase, trainer.global_rank, pl_module, trainer, **extra)


def main() -> None:
    L.seed_everything(SEED)
    model = Model()
    emit("start", "main" if MODE == "spawn" else _rank(), model, make_trainer())
    for task in TASKS:
        cbs: list[Any] = [Report(task)] if MODE == "spawn" else []
        if task == "lrcb":
            cbs.insert(0, LearningRateFinder(min_lr=1e-4, max_lr=1.0, num_training_steps=30))
        trainer = make_trainer(callbacks=cbs, max_epochs=2 if task in ("fit", "bsfit") else 10)
        extra: dict[str, Any] = {}
        if task == "lr":
            finder = Tuner(trainer).lr_find(model, min_lr=1e-4, max_lr=1.0, num_training=30)
            extra = {"suggestion": finder.suggestion() if finder is not None else None,
                     "n_results": len(finder.results["lr"]) if finder is not None else None,
                     "lrs": finder.results["lr"] if finder is not None else None}
        elif task == "bs":
            model.oom_above = OOM_ABOVE
            extra = {"returned": Tuner(trainer).scale_batch_size(
                model, mode="binsearch", init_val=2, steps_per_trial=2, margin=0.0
            )}
            model.oom_above = None
        elif task in ("fit", "lrcb", "bsfit"):
            model.losses = []
            trainer.fit(model)
            extra = finder_result(trainer)
            if model.losses:
                extra["losses_first_last"] = [model.losses[0], model.losses[-1]]
        emit(task, "main" if MODE == "spawn" else trainer.global_rank, model, trainer, **extra)


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # every rank says how it failed
        print(json.dumps({"rank": _rank() if MODE != "spawn" else "main", "phase": "error",
                          "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise
