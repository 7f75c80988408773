"""Exceptions raised where Lightning raises them."""

from __future__ import annotations


class MisconfigurationException(ValueError):
    """A setting or a combination of settings cannot work (Lightning's ``MisconfigurationException``).

    A subclass of ``ValueError``, so code that caught the ``ValueError`` raised before keeps working.
    """


class _MisconfigurationRuntimeError(MisconfigurationException, RuntimeError):
    """Where Lightning raises ``MisconfigurationException`` and trainer_core raised ``RuntimeError``: both, so
    ``except RuntimeError`` in existing code keeps working."""


class _TunerExitException(Exception):
    """Raised by the tuner callbacks to end ``Trainer.fit``/``validate``/... once the search is done; the Trainer
    finishes the run without an error (Lightning's ``_TunerExitException``)."""


class SIGTERMException(SystemExit):
    """Raised by the loops when the process receives ``SIGTERM``; ``Callback.on_exception`` can react to it."""


__all__ = ["MisconfigurationException", "SIGTERMException"]
