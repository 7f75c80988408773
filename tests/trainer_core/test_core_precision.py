"""precision="16-true" / "bf16-true" / "64-true": the module, its batches and its steps in one dtype."""

from __future__ import annotations

import math
from collections import OrderedDict, namedtuple

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L
from trainer_core.trainer import precision as precision_mod
from trainer_core.trainer.precision import cast_floating_point

DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}


class Regressor(L.LightningModule):
    """Fits y = x @ w; records what each step receives and the loss of every training step."""

    def __init__(self, manual: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.automatic_optimization = not manual
        self.losses: list[float] = []
        self.seen: dict[str, tuple] = {}

    def _loss(self, batch, stage):
        x, (y, idx) = batch["x"], batch["target"]
        created = torch.zeros(1)  # a tensor made inside the step takes the step's default dtype
        self.seen[stage] = (x.dtype, y.dtype, idx.dtype, created.dtype)
        return (self.net(x) + created - y).pow(2).mean()

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, "train")
        self.losses.append(loss.item())
        self.log("train_loss", loss)
        self.log("constant", 0.1)
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return None

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch, "val"))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch, "test"))

    def predict_step(self, batch, batch_idx):
        self._loss(batch, "predict")
        return self.net(batch["x"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader(n=64, batch_size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [1.5]])
    idx = torch.arange(n)

    def collate(items):
        xs, ys, ids = (torch.stack(t) for t in zip(*items, strict=True))
        return {"x": xs, "target": (ys, ids)}  # a dict holding a tuple, with an integer tensor inside

    return DataLoader(TensorDataset(x, y, idx), batch_size=batch_size, collate_fn=collate)


def _trainer(tmp_path, precision, **kw):
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        default_root_dir=tmp_path, precision=precision, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, **kw,
    )


@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_trains_in_the_precision_dtype(tmp_path, precision, manual):
    dtype = DTYPES[precision]
    L.seed_everything(1)
    model = Regressor(manual=manual)
    trainer = _trainer(tmp_path, precision, max_epochs=4, enable_checkpointing=True)
    trainer.fit(model, _loader(), _loader())

    assert {p.dtype for p in model.parameters()} == {dtype}
    assert trainer.global_step == 32 and len(model.losses) == 32
    assert all(math.isfinite(v) for v in model.losses)
    first, last = sum(model.losses[:8]) / 8, sum(model.losses[-8:]) / 8
    assert last < 0.5 * first, (first, last)
    # floating-point batch tensors were cast, the integer one was not; new tensors in a step took the dtype
    for stage in ("train", "val"):
        assert model.seen[stage] == (dtype, dtype, torch.int64, dtype)
    assert torch.get_default_dtype() == torch.float32  # restored after every step

    # logged values are float32 (float64 under 64-true), as Lightning keeps them
    metric_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    metrics = trainer.callback_metrics
    assert metrics["train_loss"].dtype == metrics["val_loss"].dtype == metric_dtype
    assert math.isfinite(metrics["val_loss"].item()) and metrics["constant"].item() == pytest.approx(0.1)

    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert {v.dtype for v in ckpt["state_dict"].values()} == {dtype}
    restored = Regressor.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert torch.equal(restored.net[0].weight, model.net[0].weight.float())

    (result,) = trainer.test(model, _loader(), verbose=False)
    assert math.isfinite(result["test_loss"]) and model.seen["test"][0] == dtype
    predictions = trainer.predict(model, _loader())
    assert predictions[0].dtype == dtype and model.seen["predict"][0] == dtype


def test_batch_hooks_see_the_batch_as_loaded_and_32_true_leaves_it_alone(tmp_path):
    seen = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["callback"] = batch["x"].dtype

    class Model(Regressor):
        def training_step(self, batch, batch_idx):
            seen.setdefault("step_batches", []).append(batch)
            return super().training_step(batch, batch_idx)

    trainer = _trainer(tmp_path, "bf16-true", max_steps=1, callbacks=[Spy()])
    trainer.fit(Model(), _loader())
    # as in Lightning, only the *_step methods get the converted batch
    assert seen["callback"] == torch.float32 and seen["step_batches"][0]["x"].dtype == torch.bfloat16

    seen.clear()
    batches = []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batches.append(batch)

    trainer = _trainer(tmp_path, "32-true", max_steps=1, callbacks=[Recorder()])
    trainer.fit(Model(), _loader())
    assert seen["step_batches"][0] is batches[0]  # no copy under 32-true


def test_cast_floating_point_recurses_through_collections():
    Pair = namedtuple("Pair", "a b")
    batch = {
        "x": torch.ones(2),
        "nested": [torch.ones(1, dtype=torch.float64), (torch.arange(3), Pair(torch.ones(1), "label"))],
        "mask": torch.tensor([True, False]),
        "ordered": OrderedDict(w=torch.zeros(2)),
        "n": 3,
    }
    out = cast_floating_point(batch, torch.bfloat16)
    assert out["x"].dtype == torch.bfloat16 and out["nested"][0].dtype == torch.bfloat16
    ints, pair = out["nested"][1]
    assert ints.dtype == torch.int64 and isinstance(pair, Pair) and pair.a.dtype == torch.bfloat16
    assert pair.b == "label" and out["n"] == 3 and out["mask"].dtype == torch.bool
    assert isinstance(out["ordered"], OrderedDict) and out["ordered"]["w"].dtype == torch.bfloat16
    assert batch["x"].dtype == torch.float32  # the input is not modified


def test_16_true_without_cpu_float16_matmul_says_so(monkeypatch):
    # recent torch multiplies float16 on the CPU (the training test above runs it); older builds do not
    assert precision_mod._float16_matmul_works(torch.device("cpu"))
    monkeypatch.setattr(precision_mod, "_float16_matmul_works", lambda device: False)
    with pytest.raises(RuntimeError, match=r"precision='16-true'.*CPU.*'bf16-true'"):
        L.Trainer(precision="16-true", accelerator="cpu")
    assert L.Trainer(precision="bf16-true", accelerator="cpu").precision == "bf16-true"
