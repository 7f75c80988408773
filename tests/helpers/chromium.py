"""Debian's Chromium driven through Playwright, started the one way every browser test starts it
(the module-scoped ``browser`` fixture of tests/conftest.py, the session one of tests/webui/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import need_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> str:
    """The browser's path; skip (or fail under RUNYARD_REQUIRE_SERVICES=1) without it."""
    need_service("chromium", os.path.exists(CHROMIUM), "install Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@contextmanager
def chromium_browser(executable: str = CHROMIUM) -> Iterator[Any]:
    """A launched Playwright browser, closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()
