"""2 CPU processes (gloo): ranks, collectives, each rank's share of the data, and what predict/validate/test return.

Usage: ``core_ranks.py MODE ROOT`` with MODE one of
- ``ddp``: ``Trainer(strategy="ddp", devices=2)`` (the script is run again for rank 1);
- ``auto_list``: ``Trainer(strategy="auto", devices=[0, 1])`` (a device list on the CPU: 2 processes);
- ``torchrun``: ``strategy="ddp", devices=2`` in processes started by ``torchrun --nproc-per-node=2``;
- ``spawn``: ``strategy="ddp_spawn", devices=2`` (torch.multiprocessing; the main process is no rank).

Every rank prints one JSON line ``{"rank": r, ...}``; in ``spawn`` mode the ranks print from ``on_train_end`` and
the main process prints ``{"rank": "main", ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import trainer_core as L
from trainer_core.strategies import DDPStrategy
from trainer_core.utilities.exceptions import MisconfigurationException

MODE, ROOT = sys.argv[1], sys.argv[2]
SEED = 7
N_TRAIN, N_PREDICT = 16, 15


class IndexData(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Sample ``i`` is ``(x_i, i)``: the steps record which samples each rank saw."""

    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], torch.tensor(i)


class Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.seen: dict[str, list[int]] = {}
        self.ranks: dict[str, Any] = {}

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, idx = batch
        self.seen.setdefault(str(self.current_epoch), []).extend(idx.tolist())
        return self.layer(x).pow(2).mean()

    def _eval(self, prefix: str, batch: Any) -> None:
        x, idx = batch
        self.log(f"{prefix}_synced", float(self.global_rank), sync_dist=True)
        self.log(f"{prefix}_own", float(self.global_rank))
        self.log(f"{prefix}_count", float(len(idx)), reduce_fx="sum")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return batch[1]

    def on_train_end(self) -> None:
        trainer = self.trainer
        strategy = trainer.strategy
        assert isinstance(strategy, DDPStrategy)
        rank = trainer.global_rank
        marker = os.path.join(ROOT, "rank1_before_barrier")
        if rank == 1:
            time.sleep(0.5)  # rank 0 reaches the barrier first; it must wait for this file
            with open(marker, "w") as f:
                f.write("1")
        strategy.barrier("core_ranks")
        gathered = self.all_gather(torch.arange(3.0) + rank)
        self.ranks = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "num_devices": trainer.num_devices,
            "is_global_zero": trainer.is_global_zero,
            "strategy": type(strategy).__name__,
            "strategy_name": strategy.strategy_name,
            "environment": type(strategy.cluster_environment).__name__,
            "backend": torch.distributed.get_backend(),
            "marker_after_barrier": os.path.exists(marker),
            "broadcast": strategy.broadcast({"from": rank, "list": [rank] * 2}),
            "broadcast_src1": strategy.broadcast(rank * 10, src=1),
            "gather_shape": list(gathered.shape),
            "gather": gathered.tolist(),
            "gather_scalar_shape": list(self.all_gather(torch.tensor(float(rank))).shape),
            "seen": self.seen,
            "weights": _weights(self),
        }
        if MODE == "spawn":
            print("\n" + json.dumps({"rank": rank, **self.ranks}), flush=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(**kw: Any) -> L.Trainer:
    strategy, devices = {"ddp": ("ddp", 2), "auto_list": ("auto", [0, 1]), "torchrun": ("ddp", 2),
                         "spawn": ("ddp_spawn", 2)}[MODE]
    kw.setdefault("max_epochs", 2)
    return L.Trainer(
        strategy=strategy, devices=devices, accelerator="cpu", default_root_dir=ROOT, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        **kw,
    )


def _weights(model: nn.Module) -> list[float]:
    return [v for p in model.parameters() for v in p.detach().flatten().tolist()]


def _flat(predictions: Any) -> list[int]:
    return [int(i) for batch in predictions for i in batch.tolist()]


def main() -> None:
    L.seed_everything(SEED)
    train = DataLoader(IndexData(N_TRAIN), batch_size=2, shuffle=True)
    predict = DataLoader(IndexData(N_PREDICT), batch_size=4)
    model = Model()
    trainer = _trainer()
    trainer.fit(model, train)
    if MODE == "spawn":
        # Lightning: no predictions come back from spawned processes; asking for them is an error
        record: dict[str, Any] = {"rank": "main", "predict_default": trainer.predict(model, predict)}
        try:
            trainer.predict(model, predict, return_predictions=True)
            record["predict_true_error"] = None
        except MisconfigurationException as exc:
            record["predict_true_error"] = str(exc)
        record["weights"] = _weights(model)  # rank 0's, taken over by the main process
        print("\n" + json.dumps(record), flush=True)
        return
    # use_distributed_sampler=False: the loader is left as it is (every rank sees every sample, in order)
    plain = Model()
    _trainer(max_epochs=1, use_distributed_sampler=False).fit(plain, DataLoader(IndexData(N_TRAIN), batch_size=4))
    predictions = trainer.predict(model, predict)
    eval_loader = DataLoader(IndexData(N_TRAIN), batch_size=4)
    validated = trainer.validate(model, eval_loader, verbose=False)
    tested = trainer.test(model, eval_loader, verbose=False)
    record = {
        "rank": trainer.global_rank,
        **model.ranks,
        "plain_seen": plain.seen,
        "predictions": _flat(predictions),
        "validate": validated,
        "test": tested,
    }
    print("\n" + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
