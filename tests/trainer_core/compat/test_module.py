"""Compatibility (issue 12, point 5): ``LightningModule`` behaviour as in Lightning 2.6.

Expected values were recorded by running the same code under ``lightning`` 2.6.6; each test's docstring says
which Lightning behaviour it checks.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any
from unittest.mock import Mock

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L


def _loader(n: int = 8, batch_size: int = 4) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), batch_size=batch_size)


def _trainer(tmp_path: Any, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, max_epochs=1,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 3)
        self.l2 = nn.Linear(3, 1)
        self.example_input_array = torch.randn(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


# ---------------------------------------------------------------- export


def test_to_torchscript_script_and_trace(tmp_path: Any) -> None:
    """Lightning: ``to_torchscript()`` scripts the module (``method="trace"`` traces ``example_input_array``),
    returns a ScriptModule computing the same outputs, saves it when ``file_path`` is given, restores the
    train/eval mode, and warns (LightningDeprecationWarning, Lightning 2.6) that TorchScript is deprecated."""
    model = Net()
    x = model.example_input_array
    with pytest.warns(DeprecationWarning, match="to_torchscript` has been deprecated"):
        scripted = model.to_torchscript(file_path=tmp_path / "m.pt")
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert model.training
    torch.testing.assert_close(scripted(x), model(x))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    torch.testing.assert_close(loaded(x), model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = model.to_torchscript(method="trace")
    assert isinstance(traced, torch.jit.ScriptModule)
    torch.testing.assert_close(traced(x), model(x))


def test_to_torchscript_errors() -> None:
    """Lightning: an unknown ``method`` and ``method="trace"`` without any example input raise ValueError."""
    model = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="only supports 'script' or 'trace'"):
            model.to_torchscript(method="compile")
        model.example_input_array = None
        with pytest.raises(ValueError, match="requires either `example_inputs`"):
            model.to_torchscript(method="trace")


def test_to_torchscript_of_a_fitted_model(tmp_path: Any) -> None:
    """Lightning: a module attached to a Trainer still scripts (``trainer`` and friends are not compiled)."""
    model = Net()
    _trainer(tmp_path).fit(model, _loader())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = model.to_torchscript()
    torch.testing.assert_close(scripted(model.example_input_array), model(model.example_input_array))


def test_to_onnx(tmp_path: Any) -> None:
    """Lightning: ``to_onnx(path)`` exports with ``torch.onnx.export`` using ``example_input_array`` (or
    ``input_sample``), restores the train/eval mode; with no input at all it raises ValueError."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = Net()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.to_onnx(path)
        assert model.training
        onnx.checker.check_model(onnx.load(str(path)))
        model.to_onnx(tmp_path / "n.onnx", input_sample=torch.randn(5, 4))
    assert (tmp_path / "n.onnx").is_file()
    model.example_input_array = None
    with pytest.raises(ValueError, match="neither `input_sample` nor"):
        model.to_onnx(tmp_path / "x.onnx")


def test_all_gather_is_identity_on_one_process() -> None:
    """Lightning: with world size 1, ``all_gather`` returns each tensor as it is (no extra dimension);
    numbers become tensors; collections keep their structure."""
    model = Net()
    t = torch.arange(6.0).reshape(2, 3)
    torch.testing.assert_close(model.all_gather(t), t)
    out = model.all_gather({"a": 1, "b": [2.0, torch.ones(2)]})
    assert set(out) == {"a", "b"}
    assert isinstance(out["a"], torch.Tensor) and out["a"].item() == 1
    assert isinstance(out["b"], list) and out["b"][0].item() == 2.0
    torch.testing.assert_close(out["b"][1], torch.ones(2))


# ---------------------------------------------------------------- hyperparameters


class Parent(L.LightningModule):
    def __init__(self, lr: float = 0.1, batch_size: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()


class Sub(Parent):
    def __init__(self, hidden: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()


class SubNoSave(Parent):
    def __init__(self, hidden: int = 3, lr: float = 0.5) -> None:
        super().__init__(lr=lr)


class SubIgnore(Parent):
    def __init__(self, hidden: int = 3, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters(ignore="lr")


def test_save_hyperparameters_through_subclass_chain() -> None:
    """Lightning: hyperparameters accumulate over the chain, so ``Sub().hparams`` keeps the parent's ``lr`` and
    ``batch_size`` (values recorded from Lightning 2.6.6: ``{'lr': 0.1, 'batch_size': 32, 'hidden': 3}``)."""
    assert dict(Sub().hparams) == {"lr": 0.1, "batch_size": 32, "hidden": 3}
    assert list(Sub().hparams) == ["lr", "batch_size", "hidden"]
    assert dict(Sub(lr=0.2).hparams) == {"lr": 0.2, "batch_size": 32, "hidden": 3}
    assert dict(SubNoSave().hparams) == {"lr": 0.5, "batch_size": 32, "hidden": 3}
    assert Sub()._hparams_name == "kwargs"
    assert dict(Sub().hparams_initial) == {"lr": 0.1, "batch_size": 32, "hidden": 3}


def test_save_hyperparameters_ignore_drops_a_parent_hparam() -> None:
    """Lightning: ``ignore=`` in the subclass also removes a name the parent saved."""
    assert dict(SubIgnore().hparams) == {"batch_size": 32, "hidden": 3}


def test_save_hyperparameters_warns_for_modules() -> None:
    """Lightning: an ``nn.Module`` hyperparameter warns that it is saved with the weights anyway."""

    class WithModule(L.LightningModule):
        def __init__(self, act: nn.Module) -> None:
            super().__init__()
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match="Attribute 'act' is an instance of `nn.Module`"):
        WithModule(nn.ReLU())


def test_datamodule_save_hyperparameters_through_subclass_chain() -> None:
    """Lightning: the same accumulation holds for ``LightningDataModule``."""

    class DM(L.LightningDataModule):
        def __init__(self, batch_size: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()

    class SubDM(DM):
        def __init__(self, workers: int = 2, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.save_hyperparameters()

    assert dict(SubDM().hparams) == {"batch_size": 8, "workers": 2}


# ---------------------------------------------------------------- trainer attachment


class Outer(Net):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.seen: dict[str, Any] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen["inner_trainer"] = self.inner.trainer is self.trainer
        return super().training_step(batch, batch_idx)


class Inner(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(1, 1)


def test_nested_module_trainer_is_the_parents(tmp_path: Any) -> None:
    """Lightning: setting ``module.trainer`` sets it on nested LightningModules too, so ``inner.trainer`` is the
    parent's trainer inside the run (and ``None`` again when the parent is detached)."""
    model = Outer()
    trainer = _trainer(tmp_path)
    trainer.fit(model, _loader())
    assert model.seen["inner_trainer"] is True
    assert model.inner.trainer is trainer
    model.trainer = None  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="is not attached to a `Trainer`"):
        _ = model.inner.trainer


def test_deepcopy_of_optimizers(tmp_path: Any) -> None:
    """Lightning: ``copy.deepcopy(self.optimizers())`` inside a step gives a copy of the wrapped optimizer
    (no RecursionError)."""

    class CopyOpt(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            opt = self.optimizers()
            self.copied = copy.deepcopy(opt)
            return super().training_step(batch, batch_idx)

    model = CopyOpt()
    _trainer(tmp_path, max_steps=1).fit(model, _loader())
    assert model.copied.param_groups[0]["lr"] == 0.1
    assert model.copied.param_groups[0]["params"][0] is not next(model.parameters())


def test_hook_assigned_on_instance_is_called(tmp_path: Any) -> None:
    """Lightning calls the module's hooks by attribute lookup, so a hook assigned on the instance runs."""
    model = Net()
    calls: list[str] = []
    model.on_train_epoch_end = lambda: calls.append("epoch_end")  # type: ignore[method-assign]
    model.on_train_batch_end = lambda outputs, batch, batch_idx: calls.append(f"batch{batch_idx}")  # type: ignore[method-assign]
    _trainer(tmp_path).fit(model, _loader())
    assert calls == ["batch0", "batch1", "epoch_end"]


def test_mock_spec_callback_is_called(tmp_path: Any) -> None:
    """Lightning calls every callback's hooks, so ``Mock(spec=Callback)`` records the calls (values from
    Lightning 2.6.6: one ``setup``, one ``on_fit_start``, one ``on_train_batch_end`` per batch)."""
    cb = Mock(spec=L.Callback)
    trainer = _trainer(tmp_path, callbacks=[cb])
    model = Net()
    trainer.fit(model, _loader())
    assert cb.setup.call_count == 1
    assert cb.on_fit_start.call_count == 1
    assert cb.on_train_batch_end.call_count == 2
    cb.on_fit_start.assert_called_once_with(trainer, model)


# ---------------------------------------------------------------- MisconfigurationException


def test_misconfiguration_exceptions_in_the_module(tmp_path: Any) -> None:
    """Lightning raises ``MisconfigurationException`` for ``manual_backward`` under automatic optimization and
    for an unknown ``gradient_clip_algorithm``; here they also stay the RuntimeError / ValueError raised before."""
    from trainer_core.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="to use manual_backward, please disable automatic"):
        Net().manual_backward(torch.tensor(1.0, requires_grad=True))
    with pytest.raises(RuntimeError):
        Net().manual_backward(torch.tensor(1.0, requires_grad=True))

    class BadClip(Net):
        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.clip_gradients(optimizer, 1.0, "sometimes")

    with pytest.raises(MisconfigurationException, match="`gradient_clip_algorithm` sometimes is invalid"):
        _trainer(tmp_path, max_steps=1).fit(BadClip(), _loader())
