"""Global seeding, as Lightning's ``seed_everything``."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import torch

log = logging.getLogger(__name__)

_MAX_SEED = 2**32 - 1
_LAST_SEED: int | None = None  # what the last seed_everything applied in this process


def last_seed() -> int | None:
    """The seed the last :func:`seed_everything` call of this process applied, ``None`` when it was
    never called. Lightning keeps it in ``PL_GLOBAL_SEED`` (set here too, for dataloader workers and
    :func:`reset_seed`); an inherited ``PL_GLOBAL_SEED`` alone is no seed this process applied."""
    return _LAST_SEED


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python, numpy and torch; with ``workers=True`` dataloader workers get derived seeds too."""
    global _LAST_SEED
    if seed is None:
        env_seed = os.environ.get("PL_GLOBAL_SEED")
        if env_seed is None:
            seed = random.randint(0, _MAX_SEED)
        else:
            try:
                seed = int(env_seed)
            except ValueError as err:
                raise ValueError(f"PL_GLOBAL_SEED={env_seed!r} is not an integer.") from err
    elif not isinstance(seed, int):
        seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed_everything(seed={seed}) is out of bounds: a seed must be between 0 and {_MAX_SEED}.")
    if verbose:
        log.info("Seed set to %d", seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)
    _LAST_SEED = seed
    return seed


def reset_seed() -> None:
    """Re-apply the seed from ``seed_everything`` (a no-op when it was never called)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        seed_everything(int(seed), workers=bool(int(os.environ.get("PL_SEED_WORKERS", "0"))), verbose=False)


def pl_worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """Seed each dataloader worker differently, from the process seed, the worker id and the rank."""
    global_rank = rank if rank is not None else 0
    process_seed = torch.initial_seed()
    base_seed = process_seed - worker_id
    seed_sequence = [base_seed & 0xFFFFFFFF, worker_id, global_rank]
    try:
        import numpy as np

        ss = np.random.SeedSequence(seed_sequence)
        torch_ss, stdlib_ss = ss.spawn(2)
        torch.manual_seed(int(torch_ss.generate_state(1, dtype=np.uint64)[0]))
        stdlib_seed = int((stdlib_ss.generate_state(2, dtype=np.uint64).astype(object) * [1 << 64, 1]).sum())
        random.seed(stdlib_seed)
        np.random.seed(ss.generate_state(4))
    except ImportError:  # pragma: no cover
        seed = hash(tuple(seed_sequence)) & 0xFFFFFFFF
        torch.manual_seed(seed)
        random.seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as plain values and tensors (``torch.load(weights_only=True)`` safe)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _to_plain(random.getstate())}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = [kind, torch.from_numpy(np.asarray(keys).astype("int64")), int(pos), int(has_gauss), float(cached)]
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value
