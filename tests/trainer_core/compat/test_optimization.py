"""Compatibility (issue 12, point 3): optimization behaviour as Lightning 2.6.

Each scenario ``_scenario_*(L, root)`` runs under both ``trainer_core`` and ``lightning.pytorch`` and returns plain
values; the tests compare trainer_core's with literals recorded from real Lightning 2.6.6 (torch 2.14, CPU) by the
same functions. Re-record with (repository root)::

    python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
from tests.trainer_core.compat import test_optimization as m; pprint.pprint(m.record_all(L, tempfile.mkdtemp()))"
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


def _L() -> Any:
    import trainer_core

    return trainer_core


def _trainer(L: Any, root: str, **kw: Any) -> Any:
    kw.setdefault("max_epochs", 1)
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=kw.pop("num_sanity_val_steps", 0),
        **kw,
    )


def _loader(n: int = 12, batch_size: int = 2, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def _base(L: Any) -> type:
    class Base(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def loss(self, batch):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def training_step(self, batch, batch_idx):
            return self.loss(batch)

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Base


def _optimizer_kind(opt: Any) -> str:
    if isinstance(opt, torch.optim.Optimizer) and type(opt) is torch.optim.SGD:
        return "SGD"
    return (
        "LightningOptimizer"
        if hasattr(opt, "_optimizer") or hasattr(opt, "optimizer")
        else type(opt).__name__
    )


# --------------------------------------------------------------------------------------------- manual optimization
def _scenario_manual_hooks(L: Any, root: str) -> list[str]:
    calls: list[str] = []

    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            loss = self.loss(batch)
            calls.append(f"training_step({batch_idx}) manual_backward")
            self.manual_backward(loss)
            calls.append("opt.step")
            opt.step()
            calls.append("after opt.step")

        def on_before_backward(self, loss):
            calls.append(f"on_before_backward({type(loss).__name__})")

        def on_after_backward(self):
            calls.append("on_after_backward")

        def on_before_optimizer_step(self, optimizer):
            calls.append(f"on_before_optimizer_step({_optimizer_kind(optimizer)})")

        def on_before_zero_grad(self, optimizer):
            calls.append("on_before_zero_grad")

    class CB(L.Callback):
        def on_before_backward(self, trainer, pl_module, loss):
            calls.append(f"Callback.on_before_backward({type(loss).__name__})")

        def on_after_backward(self, trainer, pl_module):
            calls.append("Callback.on_after_backward")

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            calls.append(f"Callback.on_before_optimizer_step({_optimizer_kind(optimizer)})")

        def on_before_zero_grad(self, trainer, pl_module, optimizer):
            calls.append("Callback.on_before_zero_grad")

    _trainer(L, root, limit_train_batches=1, callbacks=[CB()]).fit(M(), _loader())
    return calls


def test_manual_optimization_fires_backward_and_step_hooks(tmp_path):
    """Lightning 2.6: in manual optimization, self.manual_backward(loss) calls Callback.on_before_backward(loss) then
    the module's, backward, then Callback/module on_after_backward (core/module.py manual_backward -> strategy.backward
    -> precision pre_backward/post_backward); opt.step() calls Callback/module on_before_optimizer_step with the raw
    torch optimizer (precision._after_closure -> call._call_callback_hooks 'on_before_optimizer_step'). opt.zero_grad()
    fires no on_before_zero_grad."""
    assert _scenario_manual_hooks(_L(), str(tmp_path)) == [
        "training_step(0) manual_backward",
        "Callback.on_before_backward(Tensor)",
        "on_before_backward(Tensor)",
        "Callback.on_after_backward",
        "on_after_backward",
        "opt.step",
        "Callback.on_before_optimizer_step(SGD)",
        "on_before_optimizer_step(SGD)",
        "after opt.step",
    ]


def _scenario_optimizer_wrappers(L: Any, root: str) -> dict:
    seen: dict = {}
    lightning_optimizer = importlib.import_module(f"{L.__name__}.core.optimizer").LightningOptimizer

    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            raw = self.optimizers(use_pl_optimizer=False)
            seen.update(
                isinstance_sgd=isinstance(opt, torch.optim.SGD),
                isinstance_optimizer=isinstance(opt, torch.optim.Optimizer),
                isinstance_lightning_optimizer=isinstance(opt, lightning_optimizer),
                type_name=type(opt).__name__,
                wrapped_is_raw=opt.optimizer is raw,
                raw_type=type(raw).__name__,
                raw_is_trainer_optimizer=raw is self.trainer.optimizers[0],
                raw_isinstance_lightning_optimizer=isinstance(raw, lightning_optimizer),
                param_groups_shared=opt.param_groups is raw.param_groups,
            )
            opt.zero_grad()
            self.manual_backward(self.loss(batch))
            opt.step()

    _trainer(L, root, limit_train_batches=1).fit(M(), _loader())
    return seen


def test_optimizers_are_lightning_optimizers_passing_isinstance(tmp_path):
    """Lightning 2.6 (core/optimizer.py, LightningOptimizer.__init__): self.optimizers() returns a LightningOptimizer
    whose __class__ is a dynamic subclass 'Lightning' + wrapped class name of both LightningOptimizer and the wrapped
    optimizer class, so isinstance(opt, torch.optim.SGD) holds; .optimizer is the raw optimizer;
    self.optimizers(use_pl_optimizer=False) returns trainer.optimizers[0], the plain torch.optim.SGD."""
    assert _scenario_optimizer_wrappers(_L(), str(tmp_path)) == {
        "isinstance_sgd": True,
        "isinstance_optimizer": True,
        "isinstance_lightning_optimizer": True,
        "type_name": "LightningSGD",
        "wrapped_is_raw": True,
        "raw_type": "SGD",
        "raw_is_trainer_optimizer": True,
        "raw_isinstance_lightning_optimizer": False,
        "param_groups_shared": True,
    }


# --------------------------------------------------------------------------------------------------- clipping
def _scenario_clipping_args(L: Any, root: str, **trainer_kw: Any) -> list:
    seen: list = []

    class M(_base(L)):
        def configure_gradient_clipping(
            self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
        ):
            seen.append((_optimizer_kind(optimizer), gradient_clip_val, gradient_clip_algorithm))
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    _trainer(L, root, limit_train_batches=1, **trainer_kw).fit(M(), _loader())
    return seen


def test_configure_gradient_clipping_default_arguments(tmp_path):
    """Lightning 2.6 (loops/optimization/automatic.py -> call._call_lightning_module_hook('configure_gradient_clipping',
    optimizer, gradient_clip_val=trainer.gradient_clip_val, gradient_clip_algorithm=trainer.gradient_clip_algorithm)
    in precision._clip_gradients): without Trainer clipping arguments the hook gets (raw optimizer, None, None)."""
    assert _scenario_clipping_args(_L(), str(tmp_path)) == [("SGD", None, None)]


def test_configure_gradient_clipping_with_trainer_value(tmp_path):
    """Lightning 2.6: Trainer(gradient_clip_val=0.5) passes (optimizer, 0.5, None): trainer.gradient_clip_algorithm stays
    None when not given (the 'norm' default is applied later, inside LightningModule.clip_gradients)."""
    assert _scenario_clipping_args(_L(), str(tmp_path), gradient_clip_val=0.5) == [("SGD", 0.5, None)]


def test_configure_gradient_clipping_with_trainer_algorithm(tmp_path):
    """Lightning 2.6: Trainer(gradient_clip_val=0.5, gradient_clip_algorithm='value') passes (optimizer, 0.5, 'value')
    (a GradClipAlgorithmType.VALUE, a str enum equal to 'value')."""
    got = _scenario_clipping_args(_L(), str(tmp_path), gradient_clip_val=0.5, gradient_clip_algorithm="value")
    assert got == [("SGD", 0.5, "value")]


def _scenario_clip_conflict(L: Any, root: str, trainer_kw: dict | None = None, **clip_kw: Any) -> dict:
    class M(_base(L)):
        def configure_gradient_clipping(
            self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
        ):
            self.clip_gradients(optimizer, **clip_kw)

    try:
        kw = trainer_kw or {"gradient_clip_val": 0.5}
        _trainer(L, root, limit_train_batches=1, **kw).fit(M(), _loader())
    except Exception as e:  # the exception is the behaviour recorded
        return {"raises": type(e).__name__, "message": str(e)}
    return {"raises": None}


def test_clip_gradients_value_conflicting_with_trainer(tmp_path):
    """Lightning 2.6 (core/module.py, LightningModule.clip_gradients): Trainer(gradient_clip_val=0.5) and
    self.clip_gradients(optimizer, gradient_clip_val=0.1) raise MisconfigurationException with this message."""
    assert _scenario_clip_conflict(_L(), str(tmp_path), gradient_clip_val=0.1) == {
        "raises": "MisconfigurationException",
        "message": "You have set `Trainer(gradient_clip_val=0.5)` and have passed `clip_gradients(gradient_clip_val=0.1)`."
        " Please use only one of them.",
    }


def test_clip_gradients_algorithm_without_trainer_algorithm_is_fine(tmp_path):
    """Lightning 2.6: Trainer(gradient_clip_val=0.5) without gradient_clip_algorithm and
    self.clip_gradients(optimizer, gradient_clip_algorithm='value') raise nothing (the Trainer's algorithm is None)."""
    assert _scenario_clip_conflict(_L(), str(tmp_path), gradient_clip_algorithm="value") == {"raises": None}


def test_clip_gradients_algorithm_conflicting_with_trainer(tmp_path):
    """Lightning 2.6 (core/module.py, LightningModule.clip_gradients): Trainer(gradient_clip_val=0.5,
    gradient_clip_algorithm='norm') and self.clip_gradients(optimizer, gradient_clip_algorithm='value') raise
    MisconfigurationException with this message (sic: no '.' after the closing backtick)."""
    trainer_kw = {"gradient_clip_val": 0.5, "gradient_clip_algorithm": "norm"}
    assert _scenario_clip_conflict(_L(), str(tmp_path), trainer_kw, gradient_clip_algorithm="value") == {
        "raises": "MisconfigurationException",
        "message": "You have set `Trainer(gradient_clip_algorithm='norm')` and have passed"
        " `clip_gradients(gradient_clip_algorithm='value') Please use only one of them.",
    }


def test_clip_gradients_same_value_as_trainer_is_fine(tmp_path):
    """Lightning 2.6: calling self.clip_gradients with the Trainer's own value (0.5) raises nothing."""
    assert _scenario_clip_conflict(_L(), str(tmp_path), gradient_clip_val=0.5) == {"raises": None}


# ------------------------------------------------------------------------------------- estimated_stepping_batches
ESTIMATE_CASES = {
    "max_epochs=2": {"max_epochs": 2},
    "max_epochs=3,accumulate=2": {"max_epochs": 3, "accumulate_grad_batches": 2},
    "max_epochs=1,accumulate=4": {"max_epochs": 1, "accumulate_grad_batches": 4},
    "max_epochs=3,limit_train_batches=2": {"max_epochs": 3, "limit_train_batches": 2},
    "max_epochs=2,limit_train_batches=0.5": {"max_epochs": 2, "limit_train_batches": 0.5},
    "max_steps=5,max_epochs=10": {"max_steps": 5, "max_epochs": 10},
    "max_steps=50,max_epochs=2": {"max_steps": 50, "max_epochs": 2},
    "max_epochs=-1,max_steps=-1": {"max_epochs": -1, "max_steps": -1, "max_time": {"seconds": 0.5}},
}


def _scenario_estimated_stepping_batches(L: Any, root: str, case: str) -> Any:
    seen: dict = {}

    class M(_base(L)):
        def configure_optimizers(self):
            seen["estimate"] = self.trainer.estimated_stepping_batches
            return super().configure_optimizers()

        def training_step(self, batch, batch_idx):
            if seen["estimate"] == float("inf"):
                self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

    _trainer(L, os.path.join(root, case.replace(",", "_")), **ESTIMATE_CASES[case]).fit(M(), _loader(12, 2))
    return seen["estimate"]


# recorded from Lightning 2.6.6 (12 samples, batch_size 2: 6 train batches)
ESTIMATE_EXPECTED = {
    "max_epochs=2": 12,
    "max_epochs=3,accumulate=2": 9,
    "max_epochs=1,accumulate=4": 2,
    "max_epochs=3,limit_train_batches=2": 6,
    "max_epochs=2,limit_train_batches=0.5": 6,
    "max_steps=5,max_epochs=10": 5,
    "max_steps=50,max_epochs=2": 12,
    "max_epochs=-1,max_steps=-1": float("inf"),
}


@pytest.mark.parametrize("case", list(ESTIMATE_CASES))
def test_estimated_stepping_batches_inside_configure_optimizers(tmp_path, case):
    """Lightning 2.6 (trainer/trainer.py, Trainer.estimated_stepping_batches): available inside configure_optimizers
    (the train dataloader is set up first in that property via fit_loop.setup_data()); min(max_steps,
    max_epochs * ceil(num_training_batches / accumulate_grad_batches)), max_steps alone when epochs are unbounded,
    float('inf') when both are -1."""
    got = _scenario_estimated_stepping_batches(_L(), str(tmp_path), case)
    assert got == ESTIMATE_EXPECTED[case]
    assert type(got) is type(ESTIMATE_EXPECTED[case])


def _scenario_one_cycle(L: Any, root: str) -> dict:
    class M(_base(L)):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            total = self.trainer.estimated_stepping_batches
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    trainer = _trainer(L, root, max_epochs=2, accumulate_grad_batches=2)
    trainer.fit(M(), _loader(12, 2))
    sched = trainer.lr_scheduler_configs[0].scheduler
    return {
        "total_steps": sched.total_steps,
        "last_epoch": sched.last_epoch,
        "global_step": trainer.global_step,
    }


def test_one_cycle_lr_with_estimated_stepping_batches(tmp_path):
    """Lightning 2.6: OneCycleLR(total_steps=trainer.estimated_stepping_batches) in configure_optimizers works:
    2 epochs x ceil(6 / accumulate 2) = 6 total steps, stepped once per optimizer step (interval 'step')."""
    assert _scenario_one_cycle(_L(), str(tmp_path)) == {"total_steps": 6, "last_epoch": 6, "global_step": 6}


# ---------------------------------------------------------------------------------------- ReduceLROnPlateau
def _scenario_plateau(L: Any, root: str, manual: bool) -> dict:
    class M(_base(L)):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = not manual

        def training_step(self, batch, batch_idx):
            if not manual:
                return super().training_step(batch, batch_idx)
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self.loss(batch))
            opt.step()

        def on_train_epoch_end(self):
            if manual:
                self.lr_schedulers().step(1.0)  # constant metric: plateau after patience 0

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": sched}

    try:
        trainer = _trainer(L, root, max_epochs=3, limit_train_batches=1)
        trainer.fit(M(), _loader())
    except Exception as e:
        return {"raises": type(e).__name__, "message": str(e)}
    return {"raises": None, "lr": trainer.optimizers[0].param_groups[0]["lr"]}


def test_reduce_lr_on_plateau_without_monitor_in_manual_optimization(tmp_path):
    """Lightning 2.6 (core/optimizer.py, _configure_schedulers_manual_opt): in manual optimization a ReduceLROnPlateau
    without 'monitor' is accepted (the user steps it): stepped with a constant 1.0 at each of 3 epoch ends, patience 0,
    factor 0.5: lr 1.0 -> 0.25 (the first step sets the best value)."""
    assert _scenario_plateau(_L(), str(tmp_path), manual=True) == {"raises": None, "lr": 0.25}


def test_reduce_lr_on_plateau_without_monitor_in_automatic_optimization_raises(tmp_path):
    """Lightning 2.6 (core/optimizer.py, _configure_schedulers_automatic_opt): the same configuration under automatic
    optimization raises MisconfigurationException with this message."""
    assert _scenario_plateau(_L(), str(tmp_path), manual=False) == {
        "raises": "MisconfigurationException",
        "message": "`configure_optimizers` must include a monitor when a `ReduceLROnPlateau` scheduler is used. For"
        ' example: {"optimizer": optimizer, "lr_scheduler": scheduler, "monitor": "metric_to_track"}',
    }


# ------------------------------------------------------------------------------- epoch scheduler, short epochs
def _scenario_short_epoch_scheduler(L: Any, root: str, how: str) -> dict:
    batches: list = []

    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            batches.append((self.current_epoch, batch_idx))
            return super().training_step(batch, batch_idx)

        def on_train_batch_start(self, batch, batch_idx):
            if how == "minus_one" and batch_idx == 2:
                return -1

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)]

    kw = {"limit_train_batches": 2} if how == "limit" else {}
    trainer = _trainer(L, root, max_epochs=2, **kw)
    trainer.fit(M(), _loader())
    return {
        "lr": round(trainer.optimizers[0].param_groups[0]["lr"], 10),
        "last_epoch": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
        "batches": batches,
    }


@pytest.mark.parametrize("how", ["limit", "minus_one"])
def test_epoch_scheduler_steps_when_epoch_is_cut_short(tmp_path, how):
    """Lightning 2.6 (loops/fit_loop.py, on_advance_end -> epoch_loop.update_lr_schedulers('epoch')): an epoch cut to
    2 batches by limit_train_batches=2 or by on_train_batch_start returning -1 at batch 2 still steps the epoch StepLR:
    2 epochs, gamma 0.1 -> lr 0.01, last_epoch 2."""
    assert _scenario_short_epoch_scheduler(_L(), str(tmp_path), how) == {
        "lr": 0.01,
        "last_epoch": 2,
        "batches": [(0, 0), (0, 1), (1, 0), (1, 1)],
    }


# ------------------------------------------------------------------------------- validation in accumulation
def _scenario_val_in_accumulation(L: Any, root: str, with_val: bool) -> dict:
    events: list[str] = []
    grads: list[float] = []

    class M(_base(L)):
        def on_before_optimizer_step(self, optimizer):
            grads.append(round(float(self.net.weight.grad.norm()), 6))

        def on_validation_start(self):
            events.append(f"val@{self.trainer.global_step}")

    L.seed_everything(0)
    model = M()
    trainer = _trainer(
        L,
        root,
        accumulate_grad_batches=3,
        val_check_interval=2 if with_val else 1.0,
        limit_val_batches=1 if with_val else 0,
    )
    trainer.fit(model, _loader(12, 2), _loader(4, 2, seed=1))
    return {"events": events, "grads": grads, "global_step": trainer.global_step}


def test_validation_inside_accumulation_window(tmp_path):
    """Lightning 2.6 (loops/training_epoch_loop.py, _should_check_val_fx counts batches, not optimizer steps):
    accumulate_grad_batches=3 with val_check_interval=2 over 6 batches validates after batches 2, 4 and 6 (global_step
    0, 1, 2 at on_validation_start), and the gradient reaching each of the 2 optimizer steps (weight grad norm at
    on_before_optimizer_step) is the same as in the run without validation: training_epoch_loop.on_advance_end calls
    on_validation_model_zero_grad only `if not self._should_accumulate()`."""
    L = _L()
    with_val = _scenario_val_in_accumulation(L, str(tmp_path / "v"), with_val=True)
    without = _scenario_val_in_accumulation(L, str(tmp_path / "n"), with_val=False)
    assert with_val == LIGHTNING_VAL_IN_ACCUMULATION
    assert without == {**LIGHTNING_VAL_IN_ACCUMULATION, "events": []}


# recorded from Lightning 2.6.6
LIGHTNING_VAL_IN_ACCUMULATION = {
    "events": ["val@0", "val@1", "val@2"],
    "grads": [5.724195, 3.447245],
    "global_step": 2,
}


def record_all(L: Any, root: str) -> dict:
    sub = lambda name: os.path.join(root, name)  # noqa: E731
    return {
        "manual_hooks": _scenario_manual_hooks(L, sub("mh")),
        "wrappers": _scenario_optimizer_wrappers(L, sub("w")),
        "clip_default": _scenario_clipping_args(L, sub("c1")),
        "clip_trainer": _scenario_clipping_args(L, sub("c2"), gradient_clip_val=0.5),
        "clip_conflict_val": _scenario_clip_conflict(L, sub("c3"), gradient_clip_val=0.1),
        "clip_conflict_algo": _scenario_clip_conflict(L, sub("c4"), gradient_clip_algorithm="value"),
        "clip_conflict_algo_set": _scenario_clip_conflict(
            L,
            sub("c6"),
            {"gradient_clip_val": 0.5, "gradient_clip_algorithm": "norm"},
            gradient_clip_algorithm="value",
        ),
        "clip_same": _scenario_clip_conflict(L, sub("c5"), gradient_clip_val=0.5),
        "estimate": {c: _scenario_estimated_stepping_batches(L, sub("e"), c) for c in ESTIMATE_CASES},
        "one_cycle": _scenario_one_cycle(L, sub("oc")),
        "plateau_manual": _scenario_plateau(L, sub("p1"), manual=True),
        "plateau_auto": _scenario_plateau(L, sub("p2"), manual=False),
        "short_limit": _scenario_short_epoch_scheduler(L, sub("s1"), "limit"),
        "short_minus_one": _scenario_short_epoch_scheduler(L, sub("s2"), "minus_one"),
        "val_accum": _scenario_val_in_accumulation(L, sub("va"), with_val=True),
        "val_accum_none": _scenario_val_in_accumulation(L, sub("vn"), with_val=False),
    }
