"""Compatibility (issue 12, point 4): Trainer features as Lightning 2.6.

Each scenario ``_scenario_*(L, root)`` runs under both ``trainer_core`` and ``lightning.pytorch`` and returns plain
values; the tests compare trainer_core's with literals recorded from real Lightning 2.6.6 (torch 2.14, CPU) by the
same functions. Re-record with (repository root)::

    python -c "import sys,tempfile,pprint,lightning.pytorch as L; sys.path.insert(0,'.'); \
from tests.trainer_core.compat import test_trainer_features as m; pprint.pprint(m.record_all(L, tempfile.mkdtemp()))"
"""

from __future__ import annotations

import importlib
import os
import signal
import warnings
from datetime import timedelta
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset


def _L() -> Any:
    import trainer_core

    return trainer_core


def _trainer(L: Any, root: str, **kw: Any) -> Any:
    kw.setdefault("max_epochs", 1)
    kw.setdefault("num_sanity_val_steps", 0)
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )


class _Ids(Dataset):
    """Sample i is (i + offset, features): training_step sees which samples each batch holds."""

    def __init__(self, n: int = 8, offset: int = 0):
        self.n, self.offset = n, offset
        self.x = torch.randn(n, 3, generator=torch.Generator().manual_seed(offset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return i + self.offset, self.x[i]


def _ids(batch: Any) -> Any:
    """The sample ids of a (possibly nested) batch as plain lists."""
    if batch is None:
        return None
    if isinstance(batch, dict):
        return {k: _ids(v) for k, v in batch.items()}
    if (
        isinstance(batch, (list, tuple))
        and len(batch) == 2
        and isinstance(batch[0], torch.Tensor)
        and (batch[0].dtype == torch.int64)
    ):
        return batch[0].tolist()
    if isinstance(batch, (list, tuple)):
        return [_ids(b) for b in batch]
    return type(batch).__name__


def _features(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        return torch.cat([_features(v) for v in batch.values() if v is not None])
    if isinstance(batch[0], torch.Tensor) and batch[0].dtype == torch.int64:
        return batch[1]
    return torch.cat([_features(b) for b in batch if b is not None])


def _base(L: Any) -> type:
    class Base(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)
            self.train_ids: list = []
            self.val_ids: list = []

        def training_step(self, batch, batch_idx):
            self.train_ids.append((self.current_epoch, _ids(batch)))
            return self.net(_features(batch)).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.val_ids.append((self.current_epoch, _ids(batch)))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Base


def _warnings_matching(caught: list, *needles: str) -> list[str]:
    return sorted({str(w.message) for w in caught if any(n in str(w.message) for n in needles)})


# ---------------------------------------------------------------------------------------------- overfit_batches
def _scenario_overfit(L: Any, root: str, overfit: Any) -> dict:
    model = _base(L)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(L, root, max_epochs=2, overfit_batches=overfit)
        trainer.fit(
            model,
            DataLoader(_Ids(8), batch_size=2, shuffle=True),
            DataLoader(_Ids(8, offset=100), batch_size=2),
        )
    return {
        "train": model.train_ids,
        "val": model.val_ids,
        "num_training_batches": trainer.num_training_batches,
        "warnings": _warnings_matching(caught, "overfit", "shuffl"),
    }


def test_overfit_batches_int(tmp_path):
    """Lightning 2.6 (trainer/connectors/data_connector.py _resolve_overfit_batches, called from
    loops/fit_loop.py setup_data): overfit_batches=2 trains on the first 2 batches of the train loader with
    shuffling turned off (a SequentialSampler replaces the RandomSampler, with the warning below), in the same order
    each epoch; the validation loop runs the val loader limited to 2 batches (Lightning 2.6 does not swap in the train
    loader for validation)."""
    assert _scenario_overfit(_L(), str(tmp_path), 2) == LIGHTNING_OVERFIT_INT


def test_overfit_batches_float(tmp_path):
    """Lightning 2.6: overfit_batches=0.25 of the 4 train batches is 1 batch (samples 0, 1), shuffling off, same
    warning; the same fraction limits the 4 val batches to 1."""
    assert _scenario_overfit(_L(), str(tmp_path), 0.25) == LIGHTNING_OVERFIT_FLOAT


# --------------------------------------------------------------------------------- reload_dataloaders_every_n_epochs
def _scenario_reload(L: Any, root: str, n: int) -> list[str]:
    calls: list[str] = []

    class M(_base(L)):
        def train_dataloader(self):
            calls.append(f"train_dataloader@{self.trainer.current_epoch}")
            return DataLoader(_Ids(4), batch_size=2)

        def val_dataloader(self):
            calls.append(f"val_dataloader@{self.trainer.current_epoch}")
            return DataLoader(_Ids(2, offset=100), batch_size=2)

    _trainer(L, root, max_epochs=4, num_sanity_val_steps=1, reload_dataloaders_every_n_epochs=n).fit(M())
    return calls


@pytest.mark.parametrize("n", [0, 1, 2])
def test_reload_dataloaders_every_n_epochs(tmp_path, n):
    """Lightning 2.6 (loops/fit_loop.py setup_data/_should_reload_train_dl, loops/evaluation_loop.py
    _should_reload_val_dl): with n>0 train_dataloader is requested again at the start of every n-th epoch and
    val_dataloader again before the validation of every n-th epoch (the sanity check request counts for epoch 0);
    n=0 requests each once. 4 epochs, sanity check on."""
    assert _scenario_reload(_L(), str(tmp_path), n) == LIGHTNING_RELOAD[n]


def _scenario_reload_no_sanity(L: Any, root: str, n: int) -> list[str]:
    calls: list[str] = []

    class M(_base(L)):
        def train_dataloader(self):
            calls.append(f"train_dataloader@{self.trainer.current_epoch}")
            return DataLoader(_Ids(4), batch_size=2)

        def val_dataloader(self):
            calls.append(f"val_dataloader@{self.trainer.current_epoch}")
            return DataLoader(_Ids(2, offset=100), batch_size=2)

    trainer = _trainer(
        L, root, max_epochs=3, num_sanity_val_steps=0, check_val_every_n_epoch=2, reload_dataloaders_every_n_epochs=n
    )
    trainer.fit(M())
    return calls


@pytest.mark.parametrize("n", [0, 1])
def test_reload_without_sanity_check_requests_val_when_first_validating(tmp_path, n):
    """Lightning 2.6 (loops/fit_loop.py on_run_start loads the val loaders only when the first epoch validates;
    loops/evaluation_loop.py setup_data): without a sanity check and with check_val_every_n_epoch=2, the val loader is
    first requested before epoch 1's validation; with n=1 the train loader is requested at every epoch start."""
    assert _scenario_reload_no_sanity(_L(), str(tmp_path), n) == LIGHTNING_RELOAD_NO_SANITY[n]


def _scenario_overfit_shuffled_val(L: Any, root: str) -> dict:
    model = _base(L)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(L, root, max_epochs=1, overfit_batches=1)
        trainer.fit(
            model,
            DataLoader(_Ids(8), batch_size=2),
            DataLoader(_Ids(8, offset=100), batch_size=2, shuffle=True),
        )
    return {"train": model.train_ids, "val": model.val_ids, "warnings": _warnings_matching(caught, "overfit", "shuffl")}


def test_overfit_batches_turns_off_val_shuffling(tmp_path):
    """Lightning 2.6 (loops/evaluation_loop.py setup_data -> _resolve_overfit_batches in fit): a shuffled val loader
    gets a SequentialSampler too, with the val variant of the warning (and no 'shuffling enabled' warning, which
    _process_dataloader would give afterwards for the original sampler)."""
    assert _scenario_overfit_shuffled_val(_L(), str(tmp_path)) == {
        "train": [(0, [0, 1])],
        "val": [(0, [100, 101])],
        "warnings": [
            "You requested to overfit but enabled val dataloader shuffling. We are turning off the val dataloader"
            " shuffling for you."
        ],
    }


# ------------------------------------------------------------------------------------------ val_check_interval time
def _scenario_val_check_time(L: Any, root: str, interval: Any) -> dict:
    model = _base(L)()
    try:
        trainer = _trainer(L, root, max_epochs=2, val_check_interval=interval)
        trainer.fit(model, DataLoader(_Ids(6), batch_size=2), DataLoader(_Ids(2, offset=100), batch_size=2))
    except Exception as e:  # the exception is the behaviour recorded
        return {"raises": type(e).__name__, "message": str(e)}
    return {"raises": None, "val_runs": [e for e, _ in model.val_ids]}


@pytest.mark.parametrize(
    "interval",
    [timedelta(seconds=0), "00:00:00:00", {"seconds": 0}, timedelta(days=1), {"days": 1}],
    ids=["timedelta0", "str0", "dict0", "timedelta1d", "dict1d"],
)
def test_val_check_interval_as_time(tmp_path, interval):
    """Lightning 2.6 (trainer/trainer.py Trainer(val_check_interval: int | float | str | timedelta | dict), parsed in
    trainer/connectors/data_connector.py / loops/training_epoch_loop.py _should_check_val_fx via
    trainer._val_check_time_interval): a time interval validates after the batch at which the wall-clock time since the
    last validation exceeds it (zero: after every batch, 3 batches x 2 epochs); the time check replaces the epoch-end
    check, so a day-long interval never validates in this short run."""
    key = interval if isinstance(interval, str) else repr(interval)
    assert _scenario_val_check_time(_L(), str(tmp_path), interval) == LIGHTNING_VAL_CHECK_TIME[key]


# ------------------------------------------------------------------------------------------------ max_time dict
def _scenario_max_time(L: Any, root: str, max_time: Any) -> dict:
    model = _base(L)()
    trainer = _trainer(L, root, max_epochs=3, max_time=max_time)
    timer = [c for c in trainer.callbacks if type(c).__name__ == "Timer"]
    before = timer[0].time_remaining() if timer else None
    trainer.fit(model, DataLoader(_Ids(4), batch_size=2))
    return {
        "timer_callbacks": len(timer),
        "time_remaining_before_fit": before,
        "global_step": trainer.global_step,
    }


@pytest.mark.parametrize(
    ("max_time", "expected"),
    [
        # recorded from Lightning 2.6.6
        (
            {"days": 1, "hours": 2},
            {"timer_callbacks": 1, "time_remaining_before_fit": 93600.0, "global_step": 6},
        ),
        ({"seconds": 0}, {"timer_callbacks": 1, "time_remaining_before_fit": 0.0, "global_step": 0}),
        ("00:01:00:00", {"timer_callbacks": 1, "time_remaining_before_fit": 3600.0, "global_step": 6}),
    ],
)
def test_max_time_dict_and_string(tmp_path, max_time, expected):
    """Lightning 2.6 (trainer/connectors/callback_connector.py _configure_timer_callback, callbacks/timer.py): max_time
    as a timedelta kwargs dict or 'DD:HH:MM:SS' adds one Timer callback whose time_remaining() before fit is the full
    duration in seconds; a zero duration stops fit before the first optimizer step (global_step 0; Timer sets
    trainer.should_stop, logging 'Time limit reached. Elapsed time is 0:00:00. Signaling Trainer to stop.')."""
    assert _scenario_max_time(_L(), str(tmp_path), max_time) == expected


# --------------------------------------------------------------------------------------- validation_step = None
def _scenario_validation_step_none(L: Any, root: str) -> dict:
    model = _base(L)()
    model.validation_step = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(L, root, max_epochs=1, num_sanity_val_steps=2)
        trainer.fit(model, DataLoader(_Ids(4), batch_size=2), DataLoader(_Ids(2, offset=100), batch_size=2))
    return {
        "val_ids": model.val_ids,
        "global_step": trainer.global_step,
        "warnings": _warnings_matching(caught, "validation_step", "val_dataloader"),
    }


def test_validation_step_none_skips_validation(tmp_path):
    """Lightning 2.6 (utilities/model_helpers.py is_overridden returns False for a None attribute;
    trainer/configuration_validator.py __verify_train_val_loop_configuration): model.validation_step = None with a val
    loader skips sanity check and validation and warns 'You passed in a `val_dataloader` but have no
    `validation_step`. Skipping val loop.'"""
    assert _scenario_validation_step_none(_L(), str(tmp_path)) == {
        "val_ids": [],
        "global_step": 2,
        "warnings": ["You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop."],
    }


# -------------------------------------------------------------------------------- several train dataloaders
def _scenario_multiple_train_loaders(L: Any, root: str, how: str) -> Any:
    a = DataLoader(_Ids(8), batch_size=2)  # 4 batches
    b = DataLoader(_Ids(4, offset=100), batch_size=2)  # 2 batches
    if how == "dict":
        loaders: Any = {"a": a, "b": b}
    elif how == "list":
        loaders = [a, b]
    else:
        combined = importlib.import_module(f"{L.__name__}.utilities").CombinedLoader
        loaders = combined({"a": a, "b": b}, mode=how)
    model = _base(L)()
    try:
        trainer = _trainer(L, root, max_epochs=1)
        trainer.fit(model, loaders)
    except Exception as e:
        return {"raises": type(e).__name__, "message": str(e)}
    return {
        "batches": [ids for _, ids in model.train_ids],
        "num_training_batches": trainer.num_training_batches,
    }


@pytest.mark.parametrize("how", ["dict", "list", "max_size_cycle", "min_size", "max_size", "sequential"])
def test_several_train_dataloaders(tmp_path, how):
    """Lightning 2.6 (utilities/combined_loader.py CombinedLoader, default mode 'max_size_cycle' for a dict/list passed
    as train_dataloaders): training_step gets one batch from every loader per step, as a dict or list of the loaders'
    batches; max_size_cycle cycles the shorter loader (4 steps), min_size stops with the shortest (2 steps), max_size
    pads exhausted loaders with None (4 steps); sequential is refused for training (recorded message)."""
    assert _scenario_multiple_train_loaders(_L(), str(tmp_path), how) == LIGHTNING_MULTI_TRAIN[how]


# -------------------------------------------------------------------------------------------------- torch.compile
def _scenario_compiled(L: Any, root: str) -> dict:
    model = _base(L)()
    compiled = torch.compile(model, backend="eager")
    trainer = _trainer(L, root, max_epochs=1)
    trainer.fit(compiled, DataLoader(_Ids(4), batch_size=2))
    return {
        "global_step": trainer.global_step,
        "lightning_module_is_original": trainer.lightning_module is model,
        "steps_seen_by_original": len(model.train_ids),
    }


def test_fit_on_torch_compiled_module(tmp_path):
    """Lightning 2.6 (trainer/trainer.py fit -> _maybe_unwrap_optimized in utilities/compile.py / from_compiled): fit
    accepts a torch.compile'd LightningModule (an OptimizedModule), trains the original module (it is
    trainer.lightning_module) and re-applies the compile to its forward."""
    assert _scenario_compiled(_L(), str(tmp_path)) == {
        "global_step": 2,
        "lightning_module_is_original": True,
        "steps_seen_by_original": 2,
    }


# ---------------------------------------------------------------------------------------------- KeyboardInterrupt
def _scenario_keyboard_interrupt(L: Any, root: str) -> dict:
    calls: list[str] = []

    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

        def on_train_end(self):
            calls.append("on_train_end")

        def on_fit_end(self):
            calls.append("on_fit_end")

        def teardown(self, stage):
            calls.append(f"teardown({stage})")

    class CB(L.Callback):
        def on_exception(self, trainer, pl_module, exception):
            calls.append(f"Callback.on_exception({type(exception).__name__})")

        def teardown(self, trainer, pl_module, stage):
            calls.append(f"Callback.teardown({stage})")

    trainer = _trainer(L, root, max_epochs=1, callbacks=[CB()])
    escaped = None
    # start from Python's own handler, whatever this process inherited (a shell's background job starts
    # with SIGINT ignored), so "restored after the shutdown" is what is checked
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        try:
            trainer.fit(M(), DataLoader(_Ids(8), batch_size=2))
        except BaseException as e:  # what escapes is the behaviour recorded
            escaped = {"type": type(e).__name__, "code": getattr(e, "code", None)}
        sigint_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    return {
        "escaped": escaped,
        "status": getattr(trainer.state.status, "value", trainer.state.status),
        "interrupted": trainer.interrupted,
        "global_step": trainer.global_step,
        "calls": calls,
        "sigint_ignored_after": sigint_ignored,
    }


def test_keyboard_interrupt_in_training_step(tmp_path):
    """Lightning 2.6 (trainer/call.py _call_and_handle_interrupt): a KeyboardInterrupt inside fit logs 'Detected
    KeyboardInterrupt, attempting graceful shutdown ...' (rank_zero_info), sets SIGINT to SIG_IGN for the shutdown,
    sets state.status 'interrupted', calls Callback.on_exception(KeyboardInterrupt) (and datamodule.on_exception), runs
    no teardown/on_train_end/on_fit_end hooks, trainer._teardown() restores the SIGINT handler, then sys.exit(1):
    SystemExit(1) escapes Trainer.fit."""
    assert _scenario_keyboard_interrupt(_L(), str(tmp_path)) == {
        "escaped": {"type": "SystemExit", "code": 1},
        "status": "interrupted",
        "interrupted": True,
        "global_step": 1,
        "calls": ["Callback.on_exception(KeyboardInterrupt)"],
        "sigint_ignored_after": False,
    }


# -------------------------------------------------------------------------------------------------- state enums
def _scenario_states(L: Any, root: str) -> dict:
    states = importlib.import_module(f"{L.__name__}.trainer.states")
    seen: dict = {}

    def snap(trainer: Any) -> dict:
        s = trainer.state
        return {
            "fn": s.fn,
            "stage": s.stage,
            "status": s.status,
            "types": (
                type(s.fn).__name__ if s.fn is not None else None,
                type(s.stage).__name__ if s.stage is not None else None,
                type(s.status).__name__,
            ),
        }

    class M(_base(L)):
        def training_step(self, batch, batch_idx):
            seen.setdefault("train", snap(self.trainer))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            key = "sanity" if self.trainer.sanity_checking else "val"
            seen.setdefault(key, snap(self.trainer))

        def test_step(self, batch, batch_idx):
            seen.setdefault("test", snap(self.trainer))

    trainer = _trainer(L, root, max_epochs=1, num_sanity_val_steps=1)
    seen["init"] = snap(trainer)
    model = M()
    trainer.fit(model, DataLoader(_Ids(2), batch_size=2), DataLoader(_Ids(2, offset=100), batch_size=2))
    seen["after_fit"] = snap(trainer)
    trainer.test(model, DataLoader(_Ids(2), batch_size=2), verbose=False)
    seen["after_test"] = snap(trainer)
    out = {}
    for key, s in seen.items():
        out[key] = {
            "fn": None if s["fn"] is None else str(s["fn"].value),
            "stage": None if s["stage"] is None else str(s["stage"].value),
            "status": str(s["status"].value),
            "types": s["types"],
            "eq_str": (s["fn"] is None or s["fn"] == s["fn"].value)
            and (s["stage"] is None or s["stage"] == s["stage"].value)
            and s["status"] == s["status"].value,
            "isinstance_str": isinstance(s["status"], str),
        }
    out["enum_members"] = {
        name: sorted(m.value for m in getattr(states, name))
        for name in ("TrainerFn", "RunningStage", "TrainerStatus")
    }
    out["compare"] = [
        states.TrainerFn.FITTING == "fit",
        states.RunningStage.TRAINING == "train",
        states.TrainerStatus.FINISHED == "finished",
        states.RunningStage.VALIDATING.dataloader_prefix,
        states.RunningStage.SANITY_CHECKING.dataloader_prefix,
        states.RunningStage.TRAINING.dataloader_prefix,
    ]
    return out


def test_trainer_state_enums(tmp_path):
    """Lightning 2.6 (trainer/states.py, LightningEnum(str, Enum)): trainer.state.fn/.stage/.status are TrainerFn /
    RunningStage / TrainerStatus members equal to the strings 'fit', 'train', 'sanity_check', 'validate', 'test',
    'running', 'finished'; after fit: status 'finished', fn 'fit', stage None; the enums live in <pkg>.trainer.states."""
    assert _scenario_states(_L(), str(tmp_path)) == LIGHTNING_STATES


# --------------------------------------------------------------------------------------------------------- Tuner
def _tuner_model(L: Any, batch_size: int = 2) -> Any:
    class M(_base(L)):
        def __init__(self, lr: float = 0.01, batch_size: int = batch_size):
            super().__init__()
            self.save_hyperparameters()
            self.lr = lr
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(_Ids(64), batch_size=self.batch_size)

        def val_dataloader(self):
            return DataLoader(_Ids(4, offset=100), batch_size=self.batch_size)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    return M()


def _scenario_lr_find(L: Any, root: str) -> dict:
    tuner_cls = importlib.import_module(f"{L.__name__}.tuner").Tuner
    L.seed_everything(0)
    model = _tuner_model(L)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(L, root, max_epochs=2)
    finder = tuner_cls(trainer).lr_find(
        model, min_lr=1e-4, max_lr=1.0, num_training=30, early_stop_threshold=None
    )
    suggestion = finder.suggestion()
    restored = all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    return {
        "results_keys": sorted(finder.results),
        "n_results": (len(finder.results["lr"]), len(finder.results["loss"])),
        "lr_increasing": all(
            x < y for x, y in zip(finder.results["lr"], finder.results["lr"][1:], strict=False)
        ),
        "first_lr": finder.results["lr"][0],
        "suggestion_type": type(suggestion).__name__,
        "model_lr_is_suggestion": model.lr == suggestion,
        "weights_restored": restored,
        "global_step_after": trainer.global_step,
        "ckpt_files_left": sorted(f for f in os.listdir(root) if f.endswith(".ckpt")),
    }


def test_tuner_lr_find(tmp_path):
    """Lightning 2.6 (tuner/tuning.py Tuner.lr_find, tuner/lr_finder.py _lr_find): runs num_training steps with an
    exponentially increasing lr from min_lr, returns an _LRFinder with .results {'lr': [...], 'loss': [...]} of
    num_training entries and .suggestion() a float, sets model.lr to the suggestion (update_attr=True), restores the
    weights and the trainer (global_step 0) from a temporary checkpoint it deletes afterwards."""
    got = _scenario_lr_find(_L(), str(tmp_path))
    assert got == {
        "results_keys": ["loss", "lr"],
        "n_results": (30, 30),
        "lr_increasing": True,
        "first_lr": pytest.approx(LIGHTNING_FIRST_LR),
        "suggestion_type": "float",
        "model_lr_is_suggestion": True,
        "weights_restored": True,
        "global_step_after": 0,
        "ckpt_files_left": [],
    }


def _scenario_scale_batch_size(L: Any, root: str) -> dict:
    tuner_cls = importlib.import_module(f"{L.__name__}.tuner").Tuner
    L.seed_everything(0)
    model = _tuner_model(L)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(L, root, max_epochs=2)
    found = tuner_cls(trainer).scale_batch_size(
        model, mode="power", init_val=2, max_trials=3, steps_per_trial=1
    )
    return {
        "found": found,
        "model.batch_size": model.batch_size,
        "hparams.batch_size": model.hparams.batch_size,
        "power_of_two": found & (found - 1) == 0,
        "weights_restored": all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)),
        "global_step_after": trainer.global_step,
        "ckpt_files_left": sorted(f for f in os.listdir(root) if f.endswith(".ckpt")),
    }


def test_tuner_scale_batch_size_power(tmp_path):
    """Lightning 2.6 (tuner/batch_size_scaling.py _scale_batch_size/_run_power_scaling): without OOM the power mode
    doubles the batch size each trial (init_val 2, max_trials 3: 2 -> 4 -> 8, logging 'Batch size 2 succeeded, trying
    batch size 4' ...), returns 8, writes it to model.batch_size and model.hparams.batch_size, and restores weights and
    trainer state (global_step 0) from a temporary '.scale_batch_size_<uuid>.ckpt' it deletes."""
    assert _scenario_scale_batch_size(_L(), str(tmp_path)) == LIGHTNING_SCALE_BATCH_SIZE


# ---------------------------------------------------------------------------------------------------------------
# Literals recorded from Lightning 2.6.6 with record_all(lightning.pytorch, tmpdir) (see the module docstring).
_OVERFIT_WARNING = (
    "You requested to overfit but enabled train dataloader shuffling. We are turning off the train dataloader"
    " shuffling for you."
)
LIGHTNING_OVERFIT_INT = {
    "num_training_batches": 2,
    "train": [(0, [0, 1]), (0, [2, 3]), (1, [0, 1]), (1, [2, 3])],
    "val": [(0, [100, 101]), (0, [102, 103]), (1, [100, 101]), (1, [102, 103])],
    "warnings": [_OVERFIT_WARNING],
}
LIGHTNING_OVERFIT_FLOAT = {
    "num_training_batches": 1,
    "train": [(0, [0, 1]), (1, [0, 1])],
    "val": [(0, [100, 101]), (1, [100, 101])],
    "warnings": [_OVERFIT_WARNING],
}
LIGHTNING_RELOAD = {
    0: ["val_dataloader@0", "train_dataloader@0"],
    1: [
        "val_dataloader@0",
        "train_dataloader@0",
        "train_dataloader@1",
        "val_dataloader@1",
        "train_dataloader@2",
        "val_dataloader@2",
        "train_dataloader@3",
        "val_dataloader@3",
    ],
    2: ["val_dataloader@0", "train_dataloader@0", "train_dataloader@2", "val_dataloader@2"],
}
LIGHTNING_RELOAD_NO_SANITY = {
    0: ["train_dataloader@0", "val_dataloader@1"],
    1: ["train_dataloader@0", "train_dataloader@1", "val_dataloader@1", "train_dataloader@2"],
}
LIGHTNING_VAL_CHECK_TIME = {
    "datetime.timedelta(0)": {"raises": None, "val_runs": [0, 0, 0, 1, 1, 1]},
    "00:00:00:00": {"raises": None, "val_runs": [0, 0, 0, 1, 1, 1]},
    "{'seconds': 0}": {"raises": None, "val_runs": [0, 0, 0, 1, 1, 1]},
    # a time interval replaces the epoch-end check: a day-long interval never validates in a short run
    "datetime.timedelta(days=1)": {"raises": None, "val_runs": []},
    "{'days': 1}": {"raises": None, "val_runs": []},
}
LIGHTNING_MULTI_TRAIN = {
    "dict": {
        "batches": [
            {"a": [0, 1], "b": [100, 101]},
            {"a": [2, 3], "b": [102, 103]},
            {"a": [4, 5], "b": [100, 101]},
            {"a": [6, 7], "b": [102, 103]},
        ],
        "num_training_batches": 4,
    },
    "list": {
        "batches": [[[0, 1], [100, 101]], [[2, 3], [102, 103]], [[4, 5], [100, 101]], [[6, 7], [102, 103]]],
        "num_training_batches": 4,
    },
    "max_size_cycle": {
        "batches": [
            {"a": [0, 1], "b": [100, 101]},
            {"a": [2, 3], "b": [102, 103]},
            {"a": [4, 5], "b": [100, 101]},
            {"a": [6, 7], "b": [102, 103]},
        ],
        "num_training_batches": 4,
    },
    "min_size": {
        "batches": [{"a": [0, 1], "b": [100, 101]}, {"a": [2, 3], "b": [102, 103]}],
        "num_training_batches": 2,
    },
    "max_size": {
        "batches": [
            {"a": [0, 1], "b": [100, 101]},
            {"a": [2, 3], "b": [102, 103]},
            {"a": [4, 5], "b": None},
            {"a": [6, 7], "b": None},
        ],
        "num_training_batches": 4,
    },
    "sequential": {
        "raises": "ValueError",
        "message": '`_FitLoop` does not support the `CombinedLoader(mode="sequential")` mode. The available modes are:'
        " ['min_size', 'max_size_cycle', 'max_size']",
    },
}
_RUNNING = ("TrainerFn", "RunningStage", "TrainerStatus")
_DONE = ("TrainerFn", None, "TrainerStatus")
LIGHTNING_STATES = {
    "init": {
        "fn": None,
        "stage": None,
        "status": "initializing",
        "types": (None, None, "TrainerStatus"),
        "eq_str": True,
        "isinstance_str": True,
    },
    "sanity": {
        "fn": "fit",
        "stage": "sanity_check",
        "status": "running",
        "types": _RUNNING,
        "eq_str": True,
        "isinstance_str": True,
    },
    "train": {
        "fn": "fit",
        "stage": "train",
        "status": "running",
        "types": _RUNNING,
        "eq_str": True,
        "isinstance_str": True,
    },
    "val": {
        "fn": "fit",
        "stage": "validate",
        "status": "running",
        "types": _RUNNING,
        "eq_str": True,
        "isinstance_str": True,
    },
    "after_fit": {
        "fn": "fit",
        "stage": None,
        "status": "finished",
        "types": _DONE,
        "eq_str": True,
        "isinstance_str": True,
    },
    "test": {
        "fn": "test",
        "stage": "test",
        "status": "running",
        "types": _RUNNING,
        "eq_str": True,
        "isinstance_str": True,
    },
    "after_test": {
        "fn": "test",
        "stage": None,
        "status": "finished",
        "types": _DONE,
        "eq_str": True,
        "isinstance_str": True,
    },
    "enum_members": {
        "RunningStage": ["predict", "sanity_check", "test", "train", "validate"],
        "TrainerFn": ["fit", "predict", "test", "validate"],
        "TrainerStatus": ["finished", "initializing", "interrupted", "running"],
    },
    "compare": [True, True, True, "val", "val", "train"],
}
LIGHTNING_FIRST_LR = 0.0001
LIGHTNING_SCALE_BATCH_SIZE = {
    "found": 8,
    "model.batch_size": 8,
    "hparams.batch_size": 8,
    "power_of_two": True,
    "weights_restored": True,
    "global_step_after": 0,
    "ckpt_files_left": [],
}


def record_all(L: Any, root: str) -> dict:
    sub = lambda name: os.path.join(root, name)  # noqa: E731
    return {
        "overfit_int": _scenario_overfit(L, sub("o1"), 2),
        "overfit_float": _scenario_overfit(L, sub("o2"), 0.25),
        "reload": {n: _scenario_reload(L, sub(f"r{n}"), n) for n in (0, 1, 2)},
        "reload_no_sanity": {n: _scenario_reload_no_sanity(L, sub(f"rn{n}"), n) for n in (0, 1)},
        "overfit_shuffled_val": _scenario_overfit_shuffled_val(L, sub("ov")),
        "val_check_time": {
            (i if isinstance(i, str) else repr(i)): _scenario_val_check_time(L, sub("v"), i)
            for i in [timedelta(seconds=0), "00:00:00:00", {"seconds": 0}, timedelta(days=1), {"days": 1}]
        },
        "max_time": [
            _scenario_max_time(L, sub("m"), t)
            for t in ({"days": 1, "hours": 2}, {"seconds": 0}, "00:01:00:00")
        ],
        "validation_step_none": _scenario_validation_step_none(L, sub("vn")),
        "multi_train": {
            h: _scenario_multiple_train_loaders(L, sub(h), h)
            for h in ["dict", "list", "max_size_cycle", "min_size", "max_size", "sequential"]
        },
        "compiled": _scenario_compiled(L, sub("c")),
        "keyboard_interrupt": _scenario_keyboard_interrupt(L, sub("k")),
        "states": _scenario_states(L, sub("s")),
        "lr_find": _scenario_lr_find(L, sub("lr")),
        "scale_batch_size": _scenario_scale_batch_size(L, sub("bs")),
    }
