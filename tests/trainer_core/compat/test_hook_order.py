"""Compatibility (issue 12, point 6): the full hook call order of module, datamodule and callbacks, as Lightning 2.6.

Every hook of the module (no prefix), the datamodule (``DM.``) and one callback (``Callback.``) appends
``name(args)`` when it is entered (so ``optimizer_step`` appears before the ``training_step`` its closure runs); trainer/module arguments of callback hooks are left out, tensors print as ``T``,
optimizers as ``opt``, schedulers as ``sched``, callables as ``fn``, dicts as ``{key:value}``, checkpoints as
``ckpt(epoch=..,global_step=..)``. The expected sequences below were recorded from real Lightning 2.6.6
(torch 2.14, CPU) with ``record()`` in this module. Re-record one case with (from the repository root)::

    python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
from tests.trainer_core.compat.test_hook_order import record; pprint.pprint(record(L,'fit_auto',tempfile.mkdtemp()))"

(cases: ``fit_auto``, ``fit_auto_ckpt``, ``fit_manual``, ``validate``, ``test``, ``predict``). Sizes: 4 train
samples in batches of 2 (2 train batches), 2 val/test/predict samples (1 batch), 2 epochs, sanity check 1 step,
``accumulate_grad_batches=1``, SGD + an epoch StepLR. This module imports neither pytest nor lightning at top
level so that the same ``record()`` runs under both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

MODULE_HOOKS = (
    "configure_callbacks prepare_data setup configure_model configure_optimizers teardown "
    "on_fit_start on_fit_end on_train_start on_train_end on_validation_start on_validation_end "
    "on_test_start on_test_end on_predict_start on_predict_end "
    "on_train_epoch_start on_train_epoch_end on_validation_epoch_start on_validation_epoch_end "
    "on_test_epoch_start on_test_epoch_end on_predict_epoch_start on_predict_epoch_end "
    "on_train_batch_start on_train_batch_end on_validation_batch_start on_validation_batch_end "
    "on_test_batch_start on_test_batch_end on_predict_batch_start on_predict_batch_end "
    "on_validation_model_zero_grad on_validation_model_eval on_validation_model_train "
    "on_test_model_eval on_test_model_train on_predict_model_eval "
    "on_before_batch_transfer transfer_batch_to_device on_after_batch_transfer "
    "training_step validation_step test_step predict_step "
    "on_before_zero_grad optimizer_zero_grad on_before_backward backward on_after_backward manual_backward "
    "on_before_optimizer_step configure_gradient_clipping optimizer_step lr_scheduler_step "
    "on_save_checkpoint on_load_checkpoint"
).split()

DATAMODULE_HOOKS = (
    "prepare_data setup teardown train_dataloader val_dataloader test_dataloader predict_dataloader "
    "state_dict load_state_dict on_save_checkpoint on_load_checkpoint"
).split()

CALLBACK_HOOKS = (
    "setup teardown on_fit_start on_fit_end on_sanity_check_start on_sanity_check_end "
    "on_train_start on_train_end on_validation_start on_validation_end on_test_start on_test_end "
    "on_predict_start on_predict_end on_train_epoch_start on_train_epoch_end "
    "on_validation_epoch_start on_validation_epoch_end on_test_epoch_start on_test_epoch_end "
    "on_predict_epoch_start on_predict_epoch_end on_train_batch_start on_train_batch_end "
    "on_validation_batch_start on_validation_batch_end on_test_batch_start on_test_batch_end "
    "on_predict_batch_start on_predict_batch_end on_before_zero_grad on_before_backward on_after_backward "
    "on_before_optimizer_step on_save_checkpoint on_load_checkpoint state_dict load_state_dict on_exception"
).split()


def _fmt(value: Any, L: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "T"
    if isinstance(value, torch.optim.Optimizer) or type(value).__name__ == "LightningOptimizer":
        return "opt"
    if isinstance(value, torch.optim.lr_scheduler.LRScheduler):
        return "sched"
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, dict):
        if "state_dict" in value and "global_step" in value:
            return f"ckpt(epoch={value.get('epoch')},global_step={value.get('global_step')})"
        return "{" + ",".join(f"{k}:{_fmt(v, L)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v, L) for v in value) + "]"
    if isinstance(value, str):  # TrainerFn / RunningStage enums print as their string value
        return repr(str(getattr(value, "value", value)))
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if callable(value):
        return "fn"
    return type(value).__name__


def _recording(L: Any, base: type, names: list[str], prefix: str, skip: int) -> type:
    """A subclass of ``base`` whose hooks ``names`` append ``prefix+name(args)`` to ``self.calls``."""

    def make(name: str):
        parent = getattr(base, name)

        def hook(self, *args, **kwargs):
            shown = list(args[skip:]) + list(kwargs.values())
            self.calls.append(f"{prefix}{name}(" + ", ".join(_fmt(a, L) for a in shown) + ")")
            return parent(self, *args, **kwargs)

        hook.__name__ = name
        return hook

    ns = {name: make(name) for name in names if hasattr(base, name)}
    return type(f"Recording{base.__name__}", (base,), ns)


def _classes(L: Any, calls: list[str], manual: bool = False):
    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.calls = calls
            self.layer = torch.nn.Linear(2, 1)
            self.automatic_optimization = not manual

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).sum()
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
            return {"loss": loss}

        def validation_step(self, batch, batch_idx):
            return {"x": self.layer(batch[0]).sum()}

        def test_step(self, batch, batch_idx):
            return {"y": self.layer(batch[0]).sum()}

        def predict_step(self, batch, batch_idx):
            return self.layer(batch[0])

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1)]

        def configure_callbacks(self):
            return []

        def configure_model(self):
            pass

    class DM(L.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.calls = calls

        def _loader(self, n):
            g = torch.Generator().manual_seed(0)
            return DataLoader(TensorDataset(torch.randn(n, 2, generator=g)), batch_size=2)

        def train_dataloader(self):
            return self._loader(4)

        def val_dataloader(self):
            return self._loader(2)

        def test_dataloader(self):
            return self._loader(2)

        def predict_dataloader(self):
            return self._loader(2)

    class CB(L.Callback):
        def __init__(self):
            self.calls = calls

    model_cls = _recording(L, Model, MODULE_HOOKS, "", 0)
    dm_cls = _recording(L, DM, DATAMODULE_HOOKS, "DM.", 0)
    cb_cls = _recording(L, CB, CALLBACK_HOOKS, "Callback.", 2)
    # Callback.state_dict/load_state_dict/on_exception take no (trainer, module) pair first
    for name, skip in (("state_dict", 0), ("load_state_dict", 0), ("on_exception", 2)):
        setattr(cb_cls, name, _recording(L, CB, [name], "Callback.", skip).__dict__[name])
    return model_cls, dm_cls, cb_cls


def record(L: Any, case: str, root: str) -> list[str]:
    """The hook calls of one run (``case``) under the training library ``L`` (lightning.pytorch or trainer_core)."""
    calls: list[str] = []
    model_cls, dm_cls, cb_cls = _classes(L, calls, manual=case == "fit_manual")
    model, dm = model_cls(), dm_cls()
    trainer = L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        num_sanity_val_steps=1,
        accumulate_grad_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=case == "fit_auto_ckpt",
        callbacks=[cb_cls()],
    )
    if case.startswith("fit"):
        trainer.fit(model, datamodule=dm)
    elif case == "validate":
        trainer.validate(model, datamodule=dm, verbose=False)
    elif case == "test":
        trainer.test(model, datamodule=dm, verbose=False)
    elif case == "predict":
        trainer.predict(model, datamodule=dm)
    else:
        raise ValueError(case)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# Expected sequences, recorded from Lightning 2.6.6 with record(lightning.pytorch, case, tmpdir).
# ---------------------------------------------------------------------------------------------------------------

EXPECTED: dict[str, list[str]] = {
    "fit_auto": [
        "configure_callbacks()",
        "DM.prepare_data()",
        "prepare_data()",
        "DM.setup('fit')",
        "Callback.setup('fit')",
        "setup('fit')",
        "configure_model()",
        "configure_optimizers()",
        "Callback.on_fit_start()",
        "on_fit_start()",
        "Callback.on_sanity_check_start()",
        "DM.val_dataloader()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_sanity_check_end()",
        "DM.train_dataloader()",
        "Callback.on_train_start()",
        "on_train_start()",
        "Callback.on_train_epoch_start()",
        "on_train_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 0)",
        "on_train_batch_start([T], 0)",
        "optimizer_step(0, 0, opt, fn)",
        "training_step([T], 0)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(0, 0, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 0)",
        "on_train_batch_end({loss:T}, [T], 0)",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 1)",
        "on_train_batch_start([T], 1)",
        "optimizer_step(0, 1, opt, fn)",
        "training_step([T], 1)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(0, 1, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "lr_scheduler_step(sched, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 1)",
        "on_train_batch_end({loss:T}, [T], 1)",
        "on_validation_model_zero_grad()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_train_epoch_end()",
        "on_train_epoch_end()",
        "Callback.on_train_epoch_start()",
        "on_train_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 0)",
        "on_train_batch_start([T], 0)",
        "optimizer_step(1, 0, opt, fn)",
        "training_step([T], 0)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(1, 0, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 0)",
        "on_train_batch_end({loss:T}, [T], 0)",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 1)",
        "on_train_batch_start([T], 1)",
        "optimizer_step(1, 1, opt, fn)",
        "training_step([T], 1)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(1, 1, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "lr_scheduler_step(sched, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 1)",
        "on_train_batch_end({loss:T}, [T], 1)",
        "on_validation_model_zero_grad()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_train_epoch_end()",
        "on_train_epoch_end()",
        "Callback.on_train_end()",
        "on_train_end()",
        "Callback.on_fit_end()",
        "on_fit_end()",
        "DM.teardown('fit')",
        "Callback.teardown('fit')",
        "teardown('fit')",
    ],
    "fit_auto_ckpt": [
        "configure_callbacks()",
        "DM.prepare_data()",
        "prepare_data()",
        "DM.setup('fit')",
        "Callback.setup('fit')",
        "setup('fit')",
        "configure_model()",
        "configure_optimizers()",
        "Callback.on_fit_start()",
        "on_fit_start()",
        "Callback.on_sanity_check_start()",
        "DM.val_dataloader()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_sanity_check_end()",
        "DM.train_dataloader()",
        "Callback.on_train_start()",
        "on_train_start()",
        "Callback.on_train_epoch_start()",
        "on_train_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 0)",
        "on_train_batch_start([T], 0)",
        "optimizer_step(0, 0, opt, fn)",
        "training_step([T], 0)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(0, 0, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 0)",
        "on_train_batch_end({loss:T}, [T], 0)",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 1)",
        "on_train_batch_start([T], 1)",
        "optimizer_step(0, 1, opt, fn)",
        "training_step([T], 1)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(0, 1, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "lr_scheduler_step(sched, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 1)",
        "on_train_batch_end({loss:T}, [T], 1)",
        "on_validation_model_zero_grad()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_train_epoch_end()",
        "on_train_epoch_end()",
        "Callback.state_dict()",
        "DM.state_dict()",
        "Callback.on_save_checkpoint(ckpt(epoch=0,global_step=2))",
        "on_save_checkpoint(ckpt(epoch=0,global_step=2))",
        "Callback.on_train_epoch_start()",
        "on_train_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 0)",
        "on_train_batch_start([T], 0)",
        "optimizer_step(1, 0, opt, fn)",
        "training_step([T], 0)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(1, 0, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 0)",
        "on_train_batch_end({loss:T}, [T], 0)",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 1)",
        "on_train_batch_start([T], 1)",
        "optimizer_step(1, 1, opt, fn)",
        "training_step([T], 1)",
        "Callback.on_before_zero_grad(opt)",
        "on_before_zero_grad(opt)",
        "optimizer_zero_grad(1, 1, opt)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "configure_gradient_clipping(opt, None, None)",
        "lr_scheduler_step(sched, None)",
        "Callback.on_train_batch_end({loss:T}, [T], 1)",
        "on_train_batch_end({loss:T}, [T], 1)",
        "on_validation_model_zero_grad()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_train_epoch_end()",
        "on_train_epoch_end()",
        "Callback.state_dict()",
        "DM.state_dict()",
        "Callback.on_save_checkpoint(ckpt(epoch=1,global_step=4))",
        "on_save_checkpoint(ckpt(epoch=1,global_step=4))",
        "Callback.on_train_end()",
        "on_train_end()",
        "Callback.on_fit_end()",
        "on_fit_end()",
        "DM.teardown('fit')",
        "Callback.teardown('fit')",
        "teardown('fit')",
    ],
    "fit_manual": [
        "configure_callbacks()",
        "DM.prepare_data()",
        "prepare_data()",
        "DM.setup('fit')",
        "Callback.setup('fit')",
        "setup('fit')",
        "configure_model()",
        "configure_optimizers()",
        "Callback.on_fit_start()",
        "on_fit_start()",
        "Callback.on_sanity_check_start()",
        "DM.val_dataloader()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_sanity_check_end()",
        "DM.train_dataloader()",
        "Callback.on_train_start()",
        "on_train_start()",
        "Callback.on_train_epoch_start()",
        "on_train_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 0)",
        "on_train_batch_start([T], 0)",
        "training_step([T], 0)",
        "manual_backward(T)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "Callback.on_train_batch_end({loss:T}, [T], 0)",
        "on_train_batch_end({loss:T}, [T], 0)",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 1)",
        "on_train_batch_start([T], 1)",
        "training_step([T], 1)",
        "manual_backward(T)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "Callback.on_train_batch_end({loss:T}, [T], 1)",
        "on_train_batch_end({loss:T}, [T], 1)",
        "on_validation_model_zero_grad()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_train_epoch_end()",
        "on_train_epoch_end()",
        "Callback.on_train_epoch_start()",
        "on_train_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 0)",
        "on_train_batch_start([T], 0)",
        "training_step([T], 0)",
        "manual_backward(T)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "Callback.on_train_batch_end({loss:T}, [T], 0)",
        "on_train_batch_end({loss:T}, [T], 0)",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_train_batch_start([T], 1)",
        "on_train_batch_start([T], 1)",
        "training_step([T], 1)",
        "manual_backward(T)",
        "Callback.on_before_backward(T)",
        "on_before_backward(T)",
        "backward(T)",
        "Callback.on_after_backward()",
        "on_after_backward()",
        "Callback.on_before_optimizer_step(opt)",
        "on_before_optimizer_step(opt)",
        "Callback.on_train_batch_end({loss:T}, [T], 1)",
        "on_train_batch_end({loss:T}, [T], 1)",
        "on_validation_model_zero_grad()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "Callback.on_train_epoch_end()",
        "on_train_epoch_end()",
        "Callback.on_train_end()",
        "on_train_end()",
        "Callback.on_fit_end()",
        "on_fit_end()",
        "DM.teardown('fit')",
        "Callback.teardown('fit')",
        "teardown('fit')",
    ],
    "validate": [
        "configure_callbacks()",
        "DM.prepare_data()",
        "prepare_data()",
        "DM.setup('validate')",
        "Callback.setup('validate')",
        "setup('validate')",
        "configure_model()",
        "DM.val_dataloader()",
        "on_validation_model_eval()",
        "Callback.on_validation_start()",
        "on_validation_start()",
        "Callback.on_validation_epoch_start()",
        "on_validation_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_validation_batch_start([T], 0)",
        "on_validation_batch_start([T], 0)",
        "validation_step([T], 0)",
        "Callback.on_validation_batch_end({x:T}, [T], 0)",
        "on_validation_batch_end({x:T}, [T], 0)",
        "Callback.on_validation_epoch_end()",
        "on_validation_epoch_end()",
        "Callback.on_validation_end()",
        "on_validation_end()",
        "on_validation_model_train()",
        "DM.teardown('validate')",
        "Callback.teardown('validate')",
        "teardown('validate')",
    ],
    "test": [
        "configure_callbacks()",
        "DM.prepare_data()",
        "prepare_data()",
        "DM.setup('test')",
        "Callback.setup('test')",
        "setup('test')",
        "configure_model()",
        "DM.test_dataloader()",
        "on_test_model_eval()",
        "Callback.on_test_start()",
        "on_test_start()",
        "Callback.on_test_epoch_start()",
        "on_test_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_test_batch_start([T], 0)",
        "on_test_batch_start([T], 0)",
        "test_step([T], 0)",
        "Callback.on_test_batch_end({y:T}, [T], 0)",
        "on_test_batch_end({y:T}, [T], 0)",
        "Callback.on_test_epoch_end()",
        "on_test_epoch_end()",
        "Callback.on_test_end()",
        "on_test_end()",
        "on_test_model_train()",
        "DM.teardown('test')",
        "Callback.teardown('test')",
        "teardown('test')",
    ],
    "predict": [
        "configure_callbacks()",
        "DM.prepare_data()",
        "prepare_data()",
        "DM.setup('predict')",
        "Callback.setup('predict')",
        "setup('predict')",
        "configure_model()",
        "DM.predict_dataloader()",
        "on_predict_model_eval()",
        "Callback.on_predict_start()",
        "on_predict_start()",
        "Callback.on_predict_epoch_start()",
        "on_predict_epoch_start()",
        "on_before_batch_transfer([T], 0)",
        "transfer_batch_to_device([T], cpu, 0)",
        "on_after_batch_transfer([T], 0)",
        "Callback.on_predict_batch_start([T], 0)",
        "on_predict_batch_start([T], 0)",
        "predict_step([T], 0)",
        "Callback.on_predict_batch_end(T, [T], 0)",
        "on_predict_batch_end(T, [T], 0)",
        "Callback.on_predict_epoch_end()",
        "on_predict_epoch_end()",
        "Callback.on_predict_end()",
        "on_predict_end()",
        "DM.teardown('predict')",
        "Callback.teardown('predict')",
        "teardown('predict')",
    ],
}


def _check(case: str, tmp_path) -> None:
    import trainer_core as L

    got = record(L, case, str(tmp_path))
    expected = EXPECTED[case]
    for i, (g, e) in enumerate(zip(got, expected, strict=False)):
        assert g == e, (
            f"first difference at call {i}: got {g!r}, Lightning 2.6 calls {e!r}\ncontext: {expected[max(0, i - 3) : i + 3]}"
        )
    assert len(got) == len(expected), (
        f"{len(got)} calls, Lightning 2.6 makes {len(expected)}; tail {got[len(expected) :] or expected[len(got) :]}"
    )


def test_hook_order_fit_automatic_optimization(tmp_path):
    """Lightning 2.6: fit with automatic optimization (2 epochs x 2 batches, 1 val batch, sanity 1 step):
    configure_callbacks, prepare_data, setup, configure_model, configure_optimizers, on_fit_start, then val_dataloader
    requested inside sanity check start, train_dataloader after sanity check end; per batch the transfer hooks, then
    on_train_batch_start, training_step, on_before_zero_grad/optimizer_zero_grad, backward hooks,
    on_before_optimizer_step, configure_gradient_clipping(opt, None, None), optimizer_step, lr_scheduler_step at the last
    batch of the epoch (before on_train_batch_end)."""
    _check("fit_auto", tmp_path)


def test_hook_order_fit_with_checkpointing(tmp_path):
    """Lightning 2.6: as fit_auto, plus the default ModelCheckpoint saving each epoch after on_train_epoch_end:
    Callback.state_dict, DM.state_dict, Callback.on_save_checkpoint, on_save_checkpoint (module) with the checkpoint dict."""
    _check("fit_auto_ckpt", tmp_path)


def test_hook_order_fit_manual_optimization(tmp_path):
    """Lightning 2.6: manual optimization: no on_before_zero_grad/optimizer_zero_grad/optimizer_step hooks by the loop;
    manual_backward fires on_before_backward, backward, on_after_backward; opt.step() fires on_before_optimizer_step and
    configure_gradient_clipping is NOT called; lr schedulers are not stepped by Lightning."""
    _check("fit_manual", tmp_path)


def test_hook_order_validate(tmp_path):
    """Lightning 2.6: Trainer.validate: prepare_data, setup('validate'), configure_model, val_dataloader, model eval hook,
    validation epoch/batch hooks, teardown('validate')."""
    _check("validate", tmp_path)


def test_hook_order_test(tmp_path):
    """Lightning 2.6: Trainer.test: prepare_data, setup('test'), configure_model, test_dataloader, test epoch/batch hooks,
    on_test_model_train at the end, teardown('test')."""
    _check("test", tmp_path)


def test_hook_order_predict(tmp_path):
    """Lightning 2.6: Trainer.predict: prepare_data, setup('predict'), configure_model, predict_dataloader, predict
    epoch/batch hooks, teardown('predict')."""
    _check("predict", tmp_path)
