"""Compatibility (issue 12, point 1): no silent differences in results from Lightning 2.6.

Each scenario is a function ``_scenario_*(L, root)`` that runs under both ``trainer_core`` and ``lightning.pytorch``
and returns plain values; each test compares what trainer_core gives with the literal recorded from real Lightning
2.6.6 (torch 2.14, CPU) by running the same scenario function. Re-record everything with (repository root)::

    python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
from tests.trainer_core.compat import test_results as m; pprint.pprint(m.record_all(L, tempfile.mkdtemp()))"
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


def _trainer(L: Any, root: str, **kw: Any) -> Any:
    kw.setdefault("max_epochs", 1)
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=kw.pop("enable_checkpointing", False),
        **kw,
    )


def _data(n: int = 12, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


class _Indexed(Dataset):
    """Returns its own index with a feature vector, so training_step sees which samples it got."""

    def __init__(self, n: int = 16):
        self.x = torch.randn(n, 3, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return i, self.x[i]


def _regressor(L: Any, **extra: Any) -> Any:
    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return type("Regressor", (Regressor,), extra)


# ----------------------------------------------------------------------------------------------------------- (a)
def _scenario_accumulate_with_val(L: Any, root: str) -> dict:
    """accumulate_grad_batches=3, val_check_interval=2 vs. the same run without validation."""
    weights = []
    for with_val in (True, False):
        L.seed_everything(0)
        model = _regressor(L)()
        trainer = _trainer(
            L,
            os.path.join(root, str(with_val)),
            accumulate_grad_batches=3,
            max_epochs=2,
            val_check_interval=2 if with_val else 1.0,
            limit_val_batches=1 if with_val else 0,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, DataLoader(_data(), batch_size=2), DataLoader(_data(4, 1), batch_size=2))
        weights.append([p.detach().clone() for p in model.parameters()])
    return {
        "equal": all(torch.equal(a, b) for a, b in zip(*weights, strict=True)),
        "global_step": trainer.global_step,
    }


def test_validation_inside_accumulation_window_keeps_gradients(tmp_path):
    """Lightning 2.6: validation after every 2nd batch, i.e. inside 3-batch accumulation windows (6 batches, 2 epochs),
    leaves the accumulated gradients alone (loops/training_epoch_loop.py on_advance_end calls
    on_validation_model_zero_grad only when not accumulating): final weights torch.equal those of the run without
    validation; global_step 4."""
    assert _scenario_accumulate_with_val(_L(), str(tmp_path)) == {"equal": True, "global_step": 4}


# ----------------------------------------------------------------------------------------------------------- (b)
def _scenario_16_mixed_cpu(L: Any, root: str) -> dict:
    seen = {}

    class M(_regressor(L)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self.net(x)
            seen["dtype"] = str(out.dtype)
            seen["autocast_dtype"] = str(torch.get_autocast_dtype("cpu"))
            seen["autocast_enabled"] = torch.is_autocast_enabled("cpu")
            return torch.nn.functional.mse_loss(out.float(), y)

    records: list[str] = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = H()
    for name in ("lightning.pytorch", "trainer_core", L.__name__):
        logging.getLogger(name).addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            trainer = _trainer(L, root, precision="16-mixed", limit_train_batches=1)
            trainer.fit(M(), DataLoader(_data(), batch_size=4))
    finally:
        for name in ("lightning.pytorch", "trainer_core", L.__name__):
            logging.getLogger(name).removeHandler(handler)
    precision_warnings = sorted({str(x.message) for x in w if "precision" in str(x.message)})
    return {
        **seen,
        "trainer.precision": str(trainer.precision),
        "warnings": precision_warnings,
        "amp_info": sorted({r for r in records if "Mixed Precision" in r}),
    }


def test_16_mixed_on_cpu_autocasts_to_bfloat16(tmp_path):
    """Lightning 2.6 (trainer/connectors/accelerator_connector.py, _check_and_init_precision): precision='16-mixed' with
    accelerator='cpu' warns and switches to 'bf16-mixed'; training_step runs under CPU autocast with bfloat16 and
    Lightning logs (rank_zero_info) 'Using bfloat16 Automatic Mixed Precision (AMP)'."""
    assert _scenario_16_mixed_cpu(_L(), str(tmp_path)) == {
        "dtype": "torch.bfloat16",
        "autocast_dtype": "torch.bfloat16",
        "autocast_enabled": True,
        "trainer.precision": "bf16-mixed",
        "warnings": [
            "You passed `Trainer(accelerator='cpu', precision='16-mixed')` but AMP with fp16 is not supported on CPU. "
            "Using `precision='bf16-mixed'` instead."
        ],
        "amp_info": ["Using bfloat16 Automatic Mixed Precision (AMP)"],
    }


# ----------------------------------------------------------------------------------------------------------- (c)
def _scenario_scheduler_with_batch_start_minus_one(L: Any, root: str) -> dict:
    seen = []

    class M(_regressor(L)):
        def on_train_batch_start(self, batch, batch_idx):
            if batch_idx == 1:
                return -1

        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, batch_idx))
            return super().training_step(batch, batch_idx)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    model = M()
    trainer = _trainer(L, root, max_epochs=3)
    trainer.fit(model, DataLoader(_data(), batch_size=2))
    return {
        "lr": trainer.optimizers[0].param_groups[0]["lr"],
        "last_epoch": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
        "seen": seen,
        "current_epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }


def test_epoch_scheduler_steps_when_batch_start_returns_minus_one(tmp_path):
    """Lightning 2.6: on_train_batch_start returning -1 ends the epoch (training_epoch_loop.advance raises StopIteration
    after increment_processed); the fit loop still steps the 'epoch' schedulers in on_advance_end: 3 epochs of StepLR
    (gamma 0.5) from lr 1.0 give 0.125; only batch 0 of each epoch trains."""
    assert _scenario_scheduler_with_batch_start_minus_one(_L(), str(tmp_path)) == {
        "lr": 0.125,
        "last_epoch": 3,
        "seen": [(0, 0), (1, 0), (2, 0)],
        "current_epoch": 3,
        "global_step": 3,
    }


# ----------------------------------------------------------------------------------------------------------- (d)
def _scenario_add_dataloader_idx_false(L: Any, root: str, same_key: bool) -> Any:
    class M(_regressor(L)):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            name = "loss" if same_key else f"loss_{dataloader_idx}"
            self.log(name, loss + dataloader_idx, add_dataloader_idx=False)
            self.log("plain", loss)

    L.seed_everything(0)
    loaders = [DataLoader(_data(4, 1), batch_size=2), DataLoader(_data(4, 2), batch_size=2)]
    try:
        results = _trainer(L, root).test(M(), loaders, verbose=False)
    except Exception as e:  # the exception is the recorded behaviour
        return {"raises": type(e).__name__, "message": str(e)}
    return [sorted(r) for r in results]


def test_add_dataloader_idx_false_keys_with_two_test_loaders(tmp_path):
    """Lightning 2.6: with two test loaders, add_dataloader_idx=False keeps the name as given, the default appends
    '/dataloader_idx_N'; trainer.test returns one dict per loader holding only that loader's metrics."""
    assert _scenario_add_dataloader_idx_false(_L(), str(tmp_path), same_key=False) == [
        ["loss_0", "plain/dataloader_idx_0"],
        ["loss_1", "plain/dataloader_idx_1"],
    ]


def test_add_dataloader_idx_false_same_key_from_two_loaders(tmp_path):
    """Lightning 2.6 (trainer/connectors/logger_connector/result.py, _ResultCollection.log): logging the same name with
    add_dataloader_idx=False from two dataloaders raises MisconfigurationException with this message."""
    assert _scenario_add_dataloader_idx_false(_L(), str(tmp_path), same_key=True) == LIGHTNING_SAME_KEY


# recorded from Lightning 2.6.6
LIGHTNING_SAME_KEY = {
    "raises": "MisconfigurationException",
    "message": "You called `self.log(loss, ...)` twice in `test_step` with different arguments. This is not allowed",
}


# ----------------------------------------------------------------------------------------------------------- (e)
def _scenario_removed_hook(L: Any, root: str, hook: str, fn: str) -> dict:
    def legacy(self, outputs=None):
        pass

    model = _regressor(L, **{hook: legacy, "test_step": lambda self, b, i: None})()
    trainer = _trainer(L, root, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1)
    train, val = DataLoader(_data(), batch_size=4), DataLoader(_data(4, 1), batch_size=2)
    try:
        if fn == "fit":
            trainer.fit(model, train, val)
        else:
            getattr(trainer, fn)(model, val, verbose=False)
    except Exception as e:
        return {"raises": type(e).__name__, "message": str(e)}
    return {"raises": None}


@pytest.mark.parametrize(
    ("hook", "fn"),
    [
        ("training_epoch_end", "fit"),
        ("validation_epoch_end", "fit"),
        ("validation_epoch_end", "validate"),
        ("test_epoch_end", "test"),
    ],
)
def test_lightning_1x_epoch_end_hooks_raise(tmp_path, hook, fn):
    """Lightning 2.6 (trainer/configuration_validator.py, __verify_train_val_loop_configuration /
    __verify_eval_loop_configuration): a module defining a 1.x `*_epoch_end` hook raises NotImplementedError before
    any hook runs, with this exact message (class name 'Regressor')."""
    on = (
        "on_validation_epoch_end"
        if hook == "validation_epoch_end"
        else ("on_train_epoch_end" if hook == "training_epoch_end" else "on_test_epoch_end")
    )
    expected = {
        "raises": "NotImplementedError",
        "message": f"Support for `{hook}` has been removed in v2.0.0. `Regressor` implements this method. You can use"
        f" the `{on}` hook instead. To access outputs, save them in-memory as instance attributes. You can find"
        " migration examples in https://github.com/Lightning-AI/pytorch-lightning/pull/16520.",
    }
    assert _scenario_removed_hook(_L(), str(tmp_path), hook, fn) == expected


def test_on_epoch_start_is_not_checked(tmp_path):
    """Lightning 2.6: only training_epoch_end/validation_epoch_end/test_epoch_end are checked; a leftover 1.x
    `on_epoch_start` on the module raises nothing (it is simply never called)."""
    assert _scenario_removed_hook(_L(), str(tmp_path), "on_epoch_start", "fit") == {"raises": None}


# ----------------------------------------------------------------------------------------------------------- (f)
def _scenario_seeded_order(L: Any, root: str) -> dict:
    seen: list[int] = []

    class M(_regressor(L)):
        def training_step(self, batch, batch_idx):
            idx, x = batch
            seen.extend(idx.tolist())
            return self.net(x).sum()

    L.seed_everything(123)
    model = M()
    loader = DataLoader(_Indexed(), batch_size=4, shuffle=True)
    _trainer(L, root).fit(model, loader)

    L.seed_everything(123)
    M()  # the same RNG draws as above before iterating
    plain = [i for idx, _ in DataLoader(_Indexed(), batch_size=4, shuffle=True) for i in idx.tolist()]
    return {"trainer": seen, "plain": plain}


def test_seeded_shuffle_order_equals_plain_dataloader(tmp_path):
    """Lightning 2.6: with seed_everything(123) and shuffle=True, the first epoch sees the samples in exactly the
    order a plain DataLoader gives after the same seed and the same model init (Lightning keeps the user's
    RandomSampler on one device: no sampler re-injection, no extra RNG draws before the first iter())."""
    got = _scenario_seeded_order(_L(), str(tmp_path))
    assert got["trainer"] == got["plain"]
    # recorded from Lightning 2.6.6 / torch 2.14 (both lists)
    assert got["trainer"] == LIGHTNING_SEEDED_ORDER


LIGHTNING_SEEDED_ORDER = [13, 12, 10, 2, 14, 7, 3, 4, 9, 8, 5, 15, 1, 6, 11, 0]


# ----------------------------------------------------------------------------------------------------------- (g)
def _scenario_mid_epoch_resume(L: Any, root: str) -> dict:
    """Kill after global step 5 (epoch 1, batch 2 of 3), checkpoint every 2 steps, resume from step 4."""

    def loaders():
        return DataLoader(_data(12), batch_size=4, shuffle=True)

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 5:
                raise KeyboardInterrupt

    L.seed_everything(7)
    ref = _regressor(L)()
    _trainer(L, os.path.join(root, "ref"), max_epochs=3).fit(ref, loaders())

    L.seed_everything(7)
    model = _regressor(L)()
    ck = L.callbacks.ModelCheckpoint(dirpath=os.path.join(root, "ck"), every_n_train_steps=2, save_top_k=-1)
    trainer = _trainer(
        L, os.path.join(root, "a"), max_epochs=3, callbacks=[ck, Crash()], enable_checkpointing=True
    )
    try:
        trainer.fit(model, loaders())
    except (KeyboardInterrupt, SystemExit):
        pass
    path = os.path.join(root, "ck", "epoch=1-step=4.ckpt")

    torch.manual_seed(999)
    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch_idx))

    model2 = _regressor(L)()
    t2 = _trainer(L, os.path.join(root, "b"), max_epochs=3, callbacks=[Spy()])
    t2.fit(model2, loaders(), ckpt_path=path)
    return {
        "resumed_batches": seen,
        "global_step": t2.global_step,
        "weights_equal": all(
            torch.equal(a, b) for a, b in zip(ref.parameters(), model2.parameters(), strict=True)
        ),
    }


def test_mid_epoch_resume_is_exact_with_seeded_shuffle(tmp_path):
    """trainer_core property kept from tests/trainer_core/test_core_resume.py (exact resume beats Lightning): a run
    interrupted mid-epoch and resumed from its step-4 checkpoint (epoch 1, batch 1 done) continues at (1, 1) and ends
    torch.equal to the uninterrupted run. Lightning 2.6 also continues at (1, 1) with global_step 9, but its final
    weights differ (weights_equal False: a plain RandomSampler is re-shuffled on resume, not fast-forwarded)."""
    got = _scenario_mid_epoch_resume(_L(), str(tmp_path))
    assert got["resumed_batches"] == LIGHTNING_MID_EPOCH_RESUME["resumed_batches"]
    assert got["global_step"] == LIGHTNING_MID_EPOCH_RESUME["global_step"]
    assert got["weights_equal"] is True  # trainer_core's exact resume (Lightning gives False here)


# recorded from Lightning 2.6.6 (weights_equal was False there)
LIGHTNING_MID_EPOCH_RESUME = {"global_step": 9, "resumed_batches": [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]}


# ----------------------------------------------------------------------------------------------------------- (h)
def _scenario_should_stop_resume(L: Any, root: str) -> dict:
    path = os.path.join(root, "stop.ckpt")
    first = []

    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            first.append((trainer.current_epoch, batch_idx))
            if trainer.current_epoch == 0 and batch_idx == 2:
                trainer.should_stop = True
                trainer.save_checkpoint(path)

    L.seed_everything(0)
    t1 = _trainer(L, os.path.join(root, "a"), max_epochs=2, callbacks=[StopAt()])
    t1.fit(_regressor(L)(), DataLoader(_data(12), batch_size=2))
    ck = torch.load(path, weights_only=False)
    try:
        progress = dict(ck["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"])
    except (KeyError, TypeError):
        progress = None
    state_after_stop = {
        "current_epoch": t1.current_epoch,
        "global_step": t1.global_step,
        "ckpt_epoch": ck["epoch"],
        "ckpt_global_step": ck["global_step"],
        "ckpt_batch_progress": progress,
    }

    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch_idx))

    t2 = _trainer(L, os.path.join(root, "b"), max_epochs=2, callbacks=[Spy()])
    t2.fit(_regressor(L)(), DataLoader(_data(12), batch_size=2), ckpt_path=path)
    return {
        "first_run": first,
        **state_after_stop,
        "resumed": seen,
        "final_epoch": t2.current_epoch,
        "final_global_step": t2.global_step,
    }


def test_should_stop_mid_epoch_resume_continues_same_epoch(tmp_path):
    """Lightning 2.6: trainer.should_stop=True set in on_train_batch_end at batch 2 of epoch 0 (6 batches/epoch)
    ends fit after that batch (trainer.current_epoch is then 1); trainer.save_checkpoint in that hook stores epoch 0,
    global_step 3 and loops.fit_loop['epoch_loop.batch_progress'].current = ready/started/processed 3, completed 2;
    fit(ckpt_path=) resumes in epoch 0 at batch 3 and runs to the end of epoch 1 (global_step 12)."""
    assert _scenario_should_stop_resume(_L(), str(tmp_path)) == LIGHTNING_SHOULD_STOP


# recorded from Lightning 2.6.6
LIGHTNING_SHOULD_STOP = {
    "first_run": [(0, 0), (0, 1), (0, 2)],
    "current_epoch": 1,  # Lightning counts the stopped epoch as finished in trainer.current_epoch
    "global_step": 3,
    "ckpt_epoch": 0,
    "ckpt_global_step": 3,
    "ckpt_batch_progress": {"ready": 3, "started": 3, "processed": 3, "completed": 2},
    "resumed": [(0, 3), (0, 4), (0, 5), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)],
    "final_epoch": 2,
    "final_global_step": 12,
}


# ---------------------------------------------------------------------------------------------------------------
def _L() -> Any:
    import trainer_core

    return trainer_core


def record_all(L: Any, root: str) -> dict:
    sub = lambda name: os.path.join(root, name)  # noqa: E731
    return {
        "a": _scenario_accumulate_with_val(L, sub("a")),
        "b": _scenario_16_mixed_cpu(L, sub("b")),
        "c": _scenario_scheduler_with_batch_start_minus_one(L, sub("c")),
        "d": _scenario_add_dataloader_idx_false(L, sub("d"), same_key=False),
        "d_same": _scenario_add_dataloader_idx_false(L, sub("d2"), same_key=True),
        "e": {
            f"{h}/{fn}": _scenario_removed_hook(L, sub(f"e{h}{fn}"), h, fn)
            for h, fn in [
                ("training_epoch_end", "fit"),
                ("validation_epoch_end", "fit"),
                ("validation_epoch_end", "validate"),
                ("test_epoch_end", "test"),
                ("on_epoch_start", "fit"),
            ]
        },
        "f": _scenario_seeded_order(L, sub("f")),
        "g": _scenario_mid_epoch_resume(L, sub("g")),
        "h": _scenario_should_stop_resume(L, sub("h")),
    }
