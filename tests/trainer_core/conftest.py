"""A real Runyard server process per test module, for the RunyardLogger tests (test_runyard_logger*.py):
``server_home`` (its RUNYARD_HOME), ``server`` (its URL), ``api`` (an ``httpx.Client`` on
``/api/v1``) and ``proxy`` (a :class:`tests.helpers.live_server.Proxy` to it)."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.live_server import Proxy
from tests.server.conftest import serving


@pytest.fixture(scope="module")
def server_home(tmp_path_factory):
    return tmp_path_factory.mktemp("runyard-home")


@pytest.fixture(scope="module")
def server(server_home):
    with serving(server_home) as url:
        yield url


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server + "/api/v1", timeout=30) as c:
        yield c


@pytest.fixture
def proxy(server):
    p = Proxy(server)
    yield p
    p.close()
