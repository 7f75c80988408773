"""Shared test setup: one torch thread per process (2-core machine), service requirements."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Starlette's TestClient sends "Host: testserver" (and one test https://runyard.test): allow them next to
# the loopback names every server of the tests listens on. tests/server/test_webguard.py checks the real
# defaults (this variable unset) and the refusals.
os.environ.setdefault("RUNYARD_ALLOWED_HOSTS", "testserver,runyard.test,localhost,127.0.0.1,::1")

REQUIRE_SERVICES = os.environ.get("RUNYARD_REQUIRE_SERVICES") == "1"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_service(name: str, available: bool, why: str = "") -> None:
    """Skip when a service is missing, or fail under RUNYARD_REQUIRE_SERVICES=1 (CI)."""
    if available:
        return
    message = f"{name} is not available{': ' + why if why else ''}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (RUNYARD_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="module")
def browser():
    """Chromium (Playwright) for one test module; tests/webui/conftest.py keeps one per session."""
    from tests.helpers.chromium import chromium_browser, need_chromium

    with chromium_browser(need_chromium()) as b:
        yield b


@pytest.fixture
def mnist_root(tmp_path_factory: pytest.TempPathFactory):
    from tests.helpers.mnist import write_mnist

    return write_mnist(tmp_path_factory.mktemp("mnist"))
