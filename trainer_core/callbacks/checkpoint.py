"""``Checkpoint``: the base class of checkpointing callbacks (the trainer finds them by this type)."""

from __future__ import annotations

from trainer_core.callbacks.callback import Callback


class Checkpoint(Callback):
    """Base class for callbacks that save checkpoints (``ModelCheckpoint``, ``OnExceptionCheckpoint``)."""


__all__ = ["Checkpoint"]
