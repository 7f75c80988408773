"""Migrations: head matches the models, downgrade/upgrade round-trips, on both backends."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from migrations import alembic_config, current_revision, upgrade_database


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    import secrets

    import psycopg

    base = request.getfixturevalue("pg_url").rsplit("/", 1)[0]
    name = f"runyard_mig_{secrets.token_hex(4)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    from server.db import dispose_engine

    dispose_engine(f"{base}/{name}")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_upgrade_matches_models_and_round_trips(fresh_url):
    upgrade_database(fresh_url)
    config = alembic_config(fresh_url)
    head = ScriptDirectory.from_config(config).get_current_head()
    assert current_revision(fresh_url) == head
    command.check(config)  # raises when the models and the migrations disagree
    command.downgrade(config, "base")
    assert current_revision(fresh_url) is None
    upgrade_database(fresh_url)
    upgrade_database(fresh_url)  # idempotent
    assert current_revision(fresh_url) == head
