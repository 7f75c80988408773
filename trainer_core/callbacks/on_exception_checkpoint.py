"""``OnExceptionCheckpoint``: save a checkpoint when fit ends with an exception (Lightning's fault tolerance)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from trainer_core.callbacks.checkpoint import Checkpoint

if TYPE_CHECKING:
    from trainer_core.trainer.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` from ``on_exception``; ``teardown`` removes it again.

    As in Lightning, a run that ends normally leaves no file, and one that fails (or is interrupted) leaves
    a checkpoint to resume from with ``trainer.fit(..., ckpt_path=callback.ckpt_path)``.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename
        self._saved = False


    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path)
        self._saved = True

    def teardown(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        # Lightning calls Callback.teardown only after a run that did not fail; the checkpoint written by
        # on_exception must survive even where a trainer tears callbacks down after the failure too
        if self._saved:
            self._saved = False
            return
        if os.path.isfile(self.ckpt_path):
            os.remove(self.ckpt_path)


__all__ = ["OnExceptionCheckpoint"]
