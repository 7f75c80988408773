"""Every ``configure_optimizers`` return form, scheduler intervals/frequency/monitor, manual optimization."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import trainer_core as L


def _data(n=8, bs=2):
    return DataLoader(torch.ones(n, 2), batch_size=bs)


class Base(L.LightningModule):
    def __init__(self, make):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.make = make

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch).pow(2).mean())

    def configure_optimizers(self):
        return self.make(self)


def _fit(tmp_path, make, epochs=2, val=False, **kw):
    model = Base(make)
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, **kw,
    )
    trainer.fit(model, _data(), _data() if val else None)
    return trainer, model


def _sgd(m, lr=1.0):
    return torch.optim.SGD(m.parameters(), lr=lr)


def test_single_optimizer(tmp_path):
    trainer, _ = _fit(tmp_path, _sgd)
    assert len(trainer.optimizers) == 1 and trainer.lr_scheduler_configs == []
    assert trainer.global_step == 8


def test_list_of_one_optimizer(tmp_path):
    trainer, _ = _fit(tmp_path, lambda m: [_sgd(m)])
    assert len(trainer.optimizers) == 1


def test_lists_of_optimizers_and_schedulers_default_epoch_interval(tmp_path):
    def make(m):
        opt = _sgd(m)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    trainer, _ = _fit(tmp_path, make, epochs=3)
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "epoch" and config.frequency == 1
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.125)


def test_dict_with_scheduler_config_step_interval_and_frequency(tmp_path):
    def make(m):
        opt = _sgd(m)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2, "name": "s"}}

    trainer, _ = _fit(tmp_path, make, epochs=1)  # 4 steps, every 2nd -> 2 scheduler steps
    assert trainer.lr_scheduler_configs[0].name == "s"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)


def test_dict_with_bare_scheduler(tmp_path):
    def make(m):
        opt = _sgd(m)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, 0.1)}

    trainer, _ = _fit(tmp_path, make, epochs=2)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)


def test_dict_without_scheduler(tmp_path):
    trainer, _ = _fit(tmp_path, lambda m: {"optimizer": _sgd(m)})
    assert trainer.lr_scheduler_configs == []


def test_reduce_lr_on_plateau_with_monitor(tmp_path):
    def make(m):
        opt = _sgd(m, lr=1e-3)  # small lr: the loss cannot improve by 50%, so the plateau triggers
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.5)
        return {"optimizer": opt, "lr_scheduler": sched, "monitor": "val_loss"}

    trainer, _ = _fit(tmp_path, make, epochs=3, val=True)
    config = trainer.lr_scheduler_configs[0]
    assert config.reduce_on_plateau and config.monitor == "val_loss"
    # epoch 0 sets the best, epochs 1 and 2 do not improve by 50% -> two halvings
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25e-3)


def test_reduce_lr_on_plateau_monitor_in_config_and_on_train_metric(tmp_path):
    def make(m):
        opt = _sgd(m, lr=1e-3)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.1, threshold=0.5)
        return [{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "train_loss_epoch"}}]

    trainer, _ = _fit(tmp_path, make, epochs=2)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


def test_reduce_lr_on_plateau_requires_monitor(tmp_path):
    def make(m):
        opt = _sgd(m)
        return [opt], [torch.optim.lr_scheduler.ReduceLROnPlateau(opt)]

    with pytest.raises(ValueError, match="must include a monitor"):
        _fit(tmp_path, make)


def test_reduce_lr_on_plateau_missing_metric(tmp_path):
    def make(m, strict=True):
        opt = _sgd(m)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "nope", "strict": strict}}

    with pytest.raises(RuntimeError, match="Available metrics are"):
        _fit(tmp_path, make, epochs=1)
    with pytest.warns(RuntimeWarning, match="Skipping learning rate update"):
        _fit(tmp_path, lambda m: make(m, strict=False), epochs=1)


def test_bad_interval_and_unknown_form(tmp_path):
    def bad_interval(m):
        opt = _sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "interval": "x"}}

    with pytest.raises(ValueError, match='must be "step" or "epoch"'):
        _fit(tmp_path, bad_interval)
    with pytest.raises(ValueError, match="Unknown configuration for model optimizers"):
        _fit(tmp_path, lambda m: "adam")


def test_none_runs_without_optimizer(tmp_path):
    with pytest.warns(UserWarning, match="returned `None`"):
        trainer, model = _fit(tmp_path, lambda m: None, epochs=1)
    assert trainer.global_step == 4


def test_multiple_optimizers_need_manual_optimization(tmp_path):
    with pytest.raises(RuntimeError, match="manual optimization"):
        _fit(tmp_path, lambda m: [_sgd(m), _sgd(m)])


def test_manual_optimization_with_two_optimizers(tmp_path):
    class GAN(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.g = nn.Linear(2, 2)
            self.d = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            opt_g, opt_d = self.optimizers()
            sched_g, _ = self.lr_schedulers()
            loss_d = self.d(batch).mean()
            opt_d.zero_grad()
            self.manual_backward(loss_d)
            opt_d.step()
            loss_g = self.d(self.g(batch)).mean()
            opt_g.zero_grad()
            self.manual_backward(loss_g)
            opt_g.step()
            sched_g.step()
            self.log("loss_g", loss_g)

        def configure_optimizers(self):
            og = torch.optim.SGD(self.g.parameters(), lr=0.1)
            od = torch.optim.SGD(self.d.parameters(), lr=0.1)
            return [og, od], [torch.optim.lr_scheduler.StepLR(og, 1, 0.5), torch.optim.lr_scheduler.StepLR(od, 1, 0.5)]

    model = GAN()
    before = model.g.weight.detach().clone()
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, _data())
    assert trainer.global_step == 8  # two optimizer steps per batch, as in Lightning
    assert not torch.equal(before, model.g.weight)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.1)  # not stepped automatically


def test_accumulate_grad_batches_and_clipping(tmp_path):
    seen = []

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append(pl_module.layer.weight.grad.norm().item())

    trainer, model = _fit(
        tmp_path, lambda m: _sgd(m, 0.1), epochs=1, accumulate_grad_batches=2, callbacks=[Spy()],
        gradient_clip_val=1e-3,
    )
    assert trainer.global_step == 2 and len(seen) == 2

    class ClipCheck(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(pl_module.layer.weight.grad.norm().item())

    seen.clear()
    _fit(tmp_path, lambda m: _sgd(m, 0.1), epochs=1, callbacks=[ClipCheck()], gradient_clip_val=1e-3)
    assert all(n <= 1e-3 + 1e-6 for n in seen)
    seen.clear()
    _fit(tmp_path, lambda m: _sgd(m, 0.1), epochs=1, callbacks=[ClipCheck()], gradient_clip_val=1e-3,
         gradient_clip_algorithm="value")
    assert all(n <= 1e-3 * 3**0.5 + 1e-6 for n in seen)


def test_optimizer_step_and_zero_grad_overrides(tmp_path):
    calls = []

    class Custom(Base):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            calls.append(("step", epoch, batch_idx))
            optimizer.step(closure=optimizer_closure)

        def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
            calls.append(("zero", epoch, batch_idx))
            optimizer.zero_grad()

    model = Custom(_sgd)
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, _data(n=4))
    assert calls == [("zero", 0, 0), ("step", 0, 0), ("zero", 0, 1), ("step", 0, 1)] or calls == [
        ("step", 0, 0), ("zero", 0, 0), ("step", 0, 1), ("zero", 0, 1)
    ]
    assert trainer.global_step == 2


def test_lbfgs_closure(tmp_path):
    trainer, model = _fit(tmp_path, lambda m: torch.optim.LBFGS(m.parameters(), lr=0.1, max_iter=3), epochs=1)
    assert trainer.global_step == 4
