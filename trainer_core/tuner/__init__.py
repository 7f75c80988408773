"""Tuning: ``Tuner(trainer).lr_find(model)`` and ``Tuner(trainer).scale_batch_size(model)`` (Lightning's tuner)."""

from trainer_core.tuner.tuning import Tuner

__all__ = ["Tuner"]
