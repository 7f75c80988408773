"""Alembic migrations for Runyard; ``upgrade_database(url)`` runs them to head from Python."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).resolve().parent
ALEMBIC_INI = HERE / "alembic.ini"

_lock = threading.Lock()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    from server.db import normalize_url

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(HERE))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    from alembic import command

    with _lock:
        command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from server.db import get_engine

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
