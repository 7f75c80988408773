"""What the tuners need from a running ``Trainer``, in one place: the run's dataloaders, running the fit and
evaluation loops with other callbacks, restoring from the temporary checkpoint; and Lightning's helpers for the
batch size / learning rate attribute (``lightning_hasattr`` ...), OOM errors and RNG isolation."""

from __future__ import annotations

import copy
import gc
import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from trainer_core.checkpoint_io import load_checkpoint

if TYPE_CHECKING:
    from trainer_core.callbacks.callback import Callback
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer


# ---------------------------------------------------------------- attributes (Lightning's utilities/parsing.py)
def _has_own_attr(obj: Any, name: str) -> bool:
    """``hasattr`` without the module's fallback to its saved hyperparameters (those count as ``hparams``)."""
    try:
        inspect.getattr_static(obj, name)
        return True
    except AttributeError:
        d = vars(obj)
        return any(name in d.get(store, ()) for store in ("_parameters", "_buffers", "_modules"))


def _attr_holders(model: LightningModule, attribute: str, datamodule: Any = None) -> list[Any]:
    """Everything holding ``attribute``: the model, its hparams, the datamodule (the trainer's, or
    ``datamodule``) and its hparams (in that order)."""
    holders: list[Any] = []
    if _has_own_attr(model, attribute):
        holders.append(model)
    hparams = getattr(model, "hparams", None)
    if isinstance(hparams, Mapping) and attribute in hparams:
        holders.append(hparams)
    trainer = getattr(model, "_trainer", None)
    dm = datamodule if datamodule is not None else getattr(trainer, "datamodule", None) if trainer is not None else None
    if dm is not None:
        if _has_own_attr(dm, attribute):
            holders.append(dm)
        dm_hparams = getattr(dm, "hparams", None)
        if isinstance(dm_hparams, Mapping) and attribute in dm_hparams:
            holders.append(dm_hparams)
    return holders


def lightning_hasattr(model: LightningModule, attribute: str) -> bool:
    return bool(_attr_holders(model, attribute))


def lightning_getattr(model: LightningModule, attribute: str) -> Any:
    """The value from the last holder (datamodule over hparams over model, as Lightning)."""
    holders = _attr_holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the datamodule."
        )
    holder = holders[-1]
    return holder[attribute] if isinstance(holder, Mapping) else getattr(holder, attribute)


def lightning_setattr(model: LightningModule, attribute: str, value: Any, datamodule: Any = None) -> None:
    """Sets ``attribute`` on every holder."""
    holders = _attr_holders(model, attribute, datamodule)
    if not holders:
        raise AttributeError(
            f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the datamodule."
        )
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)


# ---------------------------------------------------------------- memory and RNG
def is_oom_error(exception: BaseException) -> bool:
    """``torch.OutOfMemoryError``, or Lightning's CUDA / cuDNN / CPU allocator out-of-memory messages."""
    if isinstance(exception, torch.OutOfMemoryError):
        return True
    if (
        not isinstance(exception, RuntimeError)
        or len(exception.args) != 1
        or not isinstance(exception.args[0], str)
    ):
        return False
    msg = exception.args[0]
    return (
        ("CUDA" in msg and "out of memory" in msg)
        or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in msg
        or "DefaultCPUAllocator: can't allocate memory" in msg
    )


def garbage_collection_cuda(after_oom: bool = False) -> None:
    """Free what a trial left behind: a garbage collection and CUDA's cache when CUDA is in use, and a garbage
    collection after an out-of-memory error. (Lightning collects before every trial; a full collection costs
    ~0.1-0.5 s in a large process, and frees no device memory on a CPU-only run.)"""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    if cuda or after_oom:
        gc.collect()
    if cuda:
        try:
            torch.cuda.empty_cache()
        except RuntimeError as exc:  # the cache flush itself can run out of memory
            if not is_oom_error(exc):
                raise


@contextmanager
def isolate_rng() -> Iterator[None]:
    """The global RNG states (torch, CUDA, Python, NumPy) are as before when the block ends."""
    from trainer_core.seed import capture_rng_state, restore_rng_state

    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def dataset_length(loaders: Any) -> int | None:
    """The longest dataset among ``loaders``; None when one has no length (iterable datasets)."""
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    elif not isinstance(loaders, Sequence):
        loaders = [loaders]
    lengths = []
    for loader in loaders:
        try:
            lengths.append(len(loader.dataset))
        except (AttributeError, TypeError, NotImplementedError):
            return None
    return max(lengths) if lengths else None


# ---------------------------------------------------------------- the running Trainer
def run_dataloaders(trainer: Trainer) -> dict[str, Any]:
    """The dataloaders passed to the current ``fit``/``validate``/... (``train``, ``val``, ``test``, ``predict``)."""
    kw: dict[str, Any] = getattr(trainer, "_run_dataloaders", None) or {}
    return kw


def setup_fit_data(trainer: Trainer) -> None:
    """The fit's loader sources again: the fit loop requests the train loader, and the val loader when it first
    validates, anew (with the Trainer's current limits and the model's batch size)."""
    kw = run_dataloaders(trainer)
    trainer._data_connector.setup_fit_data(trainer.lightning_module, kw.get("train"), kw.get("val"))


def train_dataloader(trainer: Trainer) -> Any:
    """The train loader, requested now (Lightning's ``fit_loop.setup_data``)."""
    trainer._data_connector.setup_train_data()
    return trainer.train_dataloader


def running_fn(trainer: Trainer) -> str:
    """The entry point running: "fit", "validate", "test" or "predict"."""
    return str(getattr(trainer.state.fn, "value", trainer.state.fn))


def eval_stage(trainer: Trainer) -> tuple[str, str]:
    """(dataloader prefix, entry point) of the running evaluation: ("val", "validate"), ("test", "test") ..."""
    fn = running_fn(trainer)
    return {"validate": "val", "test": "test", "predict": "predict"}[fn], fn


def _eval_loop(trainer: Trainer) -> Any:
    prefix, _ = eval_stage(trainer)
    return {"val": trainer.validate_loop, "test": trainer.test_loop, "predict": trainer.predict_loop}[prefix]


def setup_eval_data(trainer: Trainer) -> tuple[Any, list[Any], list[int | float]]:
    prefix, fn = eval_stage(trainer)
    return trainer._data_connector.setup_eval_data(prefix, fn, run_dataloaders(trainer).get(prefix))


@contextmanager
def only_callbacks(trainer: Trainer, callbacks: list[Callback]) -> Iterator[None]:
    """Hooks go to ``callbacks`` (and the module) only inside the block; the run's own callbacks afterwards."""
    from trainer_core.trainer.hooks import HookDispatcher

    saved_callbacks, saved_hooks = trainer.callbacks, trainer._hooks
    trainer.callbacks = callbacks
    trainer._hooks = HookDispatcher(trainer, callbacks, trainer.lightning_module, trainer._logger_connector)
    try:
        yield
    finally:
        trainer.callbacks, trainer._hooks = saved_callbacks, saved_hooks


def run_fit_loop(trainer: Trainer, loop_state: dict[str, Any]) -> None:
    """The fit loop from the progress in ``loop_state`` (after ``setup_fit_data``: it requests its loaders)."""
    loop = trainer.fit_loop
    loop.load_state_dict(copy.deepcopy(loop_state))
    metrics = trainer._logger_connector
    metrics.results = metrics.train_results
    loop.run(trainer._loop_context())


def run_eval_loop(trainer: Trainer, loop_state: dict[str, Any], limit: int) -> None:
    """The running evaluation's loop again, on freshly requested loaders of at most ``limit`` batches each."""
    _, loaders, limits = setup_eval_data(trainer)
    limits = [min(n, limit) for n in limits]
    loop = _eval_loop(trainer)
    loop.load_state_dict(copy.deepcopy(loop_state))
    if running_fn(trainer) == "predict":
        loop.run(trainer._loop_context(), loaders, limits, False)
    else:
        loop.run(trainer._loop_context(), loaders, limits, verbose=False)


def active_loop_state(trainer: Trainer) -> dict[str, Any]:
    """A copy of the running loop's progress (fit's, or the evaluation's)."""
    loop: Any = trainer.fit_loop if running_fn(trainer) == "fit" else _eval_loop(trainer)
    state: dict[str, Any] = copy.deepcopy(loop.state_dict())
    return state


def restore_checkpoint(trainer: Trainer, ckpt_path: str, loop_state: dict[str, Any] | None = None) -> None:
    """Model, datamodule, callbacks, optimizers, schedulers and loop progress from ``ckpt_path``, then delete it.

    Like Lightning's ``trainer._checkpoint_connector.restore`` in the tuners; the fit loop does not count as
    restarting afterwards (the next ``fit`` starts from this progress, with the global RNG as it is then). Under
    DDP every rank loads the file rank 0 wrote, meets the others at a barrier (Lightning's ``resume_end``), and
    rank 0 removes it (``trainer.strategy.remove_checkpoint``).
    """
    strategy = trainer.strategy
    try:
        checkpoint = load_checkpoint(ckpt_path, map_location="cpu")
        connector = trainer._checkpoint_connector
        connector.restore_modules_and_callbacks(checkpoint)
        if trainer.optimizers:
            connector.restore_training_state(checkpoint)
        elif checkpoint.get("loops", {}).get("fit_loop") is not None:
            trainer.fit_loop.load_state_dict(checkpoint["loops"]["fit_loop"])
        if loop_state is not None and running_fn(trainer) != "fit":
            _eval_loop(trainer).load_state_dict(copy.deepcopy(loop_state))
        trainer.fit_loop._restore = (
            None  # not a resume: the next fit keeps the RNG and sampler state it finds
        )
        trainer.should_stop = False
    finally:
        strategy.barrier("tuner.restore_checkpoint")  # no rank still reads it when rank 0 removes it
        strategy.remove_checkpoint(ckpt_path)
        strategy.barrier("tuner.remove_checkpoint")  # and it is gone for every rank when the tuner returns


def tuner_checkpoint_path(trainer: Trainer, prefix: str) -> str:
    """A fresh temporary checkpoint path in ``default_root_dir``; under DDP rank 0's, so that every rank restores
    the file rank 0 writes (Lightning's ``trainer.strategy.broadcast(ckpt_path)``)."""
    import uuid

    path = os.path.join(trainer.default_root_dir, f".{prefix}_{uuid.uuid4()}.ckpt")
    return trainer.strategy.broadcast(path)
