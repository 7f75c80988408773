"""What happens when a run ends with an exception (Lightning's ``trainer/call.py``)."""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer

log = logging.getLogger(__name__)


def interrupt(trainer: Trainer, model: LightningModule, exc: BaseException, status: str) -> None:
    """Lightning's ``_interrupt``: status ``interrupted``, ``on_exception`` on the callbacks and the datamodule,
    the loggers finalized with ``status``; no ``teardown`` hook runs after a failure."""
    from trainer_core.trainer.states import TrainerStatus

    trainer.state.status = TrainerStatus.INTERRUPTED
    for hook in trainer._hooks.callbacks.get("on_exception", ()):
        try:
            hook(trainer, model, exc)
        except Exception:  # keep the original error
            log.exception("on_exception hook failed")
    try:
        datamodule = trainer.datamodule
        if datamodule is not None and callable(getattr(datamodule, "on_exception", None)):
            datamodule.on_exception(exc)
        for logger in trainer.loggers:
            logger.finalize(status)
    except Exception:
        log.exception("shutting down after an error failed")


def handle_keyboard_interrupt(trainer: Trainer, model: LightningModule, exc: KeyboardInterrupt) -> NoReturn:
    """Lightning's graceful shutdown on Ctrl-C: more SIGINTs are ignored meanwhile, the handler is restored, then
    ``SystemExit(1)``. Loggers are finalized ``"interrupted"`` (Lightning: ``"failed"``), so a Runyard run ends
    cancelled, not failed."""
    log.info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
    previous = _set_sigint(signal.SIG_IGN)
    try:
        interrupt(trainer, model, exc, "interrupted")
    finally:
        if previous is not None:
            _set_sigint(previous)
    sys.exit(1)


def _set_sigint(handler: Any) -> Any:
    """Set the SIGINT handler, returning the previous one (None outside the main thread, where it cannot be set)."""
    try:
        return signal.signal(signal.SIGINT, handler)
    except (ValueError, TypeError):
        return None
