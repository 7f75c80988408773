"""A pytest plugin for re-checking the recorded values against Lightning itself, never loaded by ``make test``.

In a virtualenv with ``lightning==2.6.6`` (and torchmetrics, pytest) installed, from the repository root::

    PYTHONPATH=tests/trainer_core/compat python -m pytest -p _lightning_alias tests/trainer_core/compat/test_module.py

makes every ``import trainer_core`` in the tests give ``lightning.pytorch``, so the same file runs on Lightning.
Product code and the test suite never import lightning.
"""

import sys

import lightning.pytorch

sys.modules["trainer_core"] = lightning.pytorch
