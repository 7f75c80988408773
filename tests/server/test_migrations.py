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


# The columns issue 3 (point 2) asks of each table.
REQUIRED_COLUMNS = {
    "projects": {"id", "name", "created_at"},
    "runs": {"id", "name", "project_id", "recipe", "params", "trainer", "hyperparameters", "status", "created_at",
             "started_at", "ended_at", "error", "worker_host", "device", "attempt", "resumed_from_id"},
    "metric_points": {"id", "run_id", "key", "step", "epoch", "value", "wall_time"},
    "checkpoints": {"id", "run_id", "path", "epoch", "step", "monitor", "score", "size", "sha256", "is_best",
                    "is_last"},
    "model_summaries": {"run_id", "summary"},
    "log_lines": {"id", "run_id", "stream", "time", "text"},
}


def assert_schema_at_head(url: str) -> None:
    from sqlalchemy import inspect

    from server.db import get_engine

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head
    inspector = inspect(get_engine(url))
    for table, columns in REQUIRED_COLUMNS.items():
        assert columns <= {c["name"] for c in inspector.get_columns(table)}, table
    # one key of one run read by step: an index that starts with (run_id, key, step)
    assert any(ix["column_names"][:3] == ["run_id", "key", "step"] for ix in inspector.get_indexes("metric_points"))
    foreign = {(fk["referred_table"], tuple(fk["constrained_columns"])) for fk in inspector.get_foreign_keys("runs")}
    assert {("projects", ("project_id",)), ("runs", ("resumed_from_id",))} <= foreign


def test_server_start_brings_a_fresh_database_to_head(fresh_url, tmp_path):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    assert current_revision(fresh_url) is None
    app = create_app(Settings(home=tmp_path, database_url=fresh_url, broker_url="memory://", reaper=False))
    with TestClient(app) as client:  # startup runs the migrations
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "artifacts": "ok", "uploads": "ok"}
        assert_schema_at_head(fresh_url)
        assert client.post("/api/v1/runs", json={"recipe": "external"}).status_code == 201


def test_runyard_db_upgrade_by_hand(fresh_url, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "RUNYARD_DATABASE_URL": fresh_url, "RUNYARD_HOME": str(tmp_path)}
    script = Path(sys.executable).parent / "runyard"  # the console script pyproject.toml installs
    command_line = ([str(script)] if script.exists() else
                    [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())"]) + ["db", "upgrade"]
    done = subprocess.run(command_line, env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "up to date" in done.stdout, done.stderr[-2000:]
    assert_schema_at_head(fresh_url)
    again = subprocess.run(command_line, env=env, capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[2])
    assert again.returncode == 0  # idempotent


def test_upgrading_a_database_with_data_keeps_every_row(fresh_url):
    # Batch mode on SQLite rebuilds `runs` (copy, DROP, rename); with foreign keys on, the DROP
    # cascaded and 0003 -> head deleted every metric point, log line and checkpoint.
    from sqlalchemy import text

    from server.db import get_engine

    upgrade_database(fresh_url, "0003")
    engine = get_engine(fresh_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', CURRENT_TIMESTAMP)"))
        conn.execute(text(
            "INSERT INTO runs (id, name, project_id, recipe, params, trainer, hyperparameters, status, created_at, "
            "updated_at, attempt, max_attempts, cancel_requested, queue) VALUES (1, 'r', 1, 'external', '{}', '{}', "
            "'{}', 'succeeded', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, 1, false, 'runyard')"))
        conn.execute(text("INSERT INTO metric_points (run_id, key, step, epoch, value, wall_time) "
                          "VALUES (1, 'loss', 0, 0, 1.5, 0.0), (1, 'loss', 1, 0, 1.25, 0.0)"))
        conn.execute(text("INSERT INTO log_lines (run_id, stream, time, text) VALUES (1, 'stdout', CURRENT_TIMESTAMP, 'hello')"))
        conn.execute(text("INSERT INTO checkpoints (run_id, path, epoch, step, size, sha256, is_best, is_last, "
                          "created_at) VALUES (1, '1/checkpoints/a.ckpt', 0, 1, 3, 'x', false, true, CURRENT_TIMESTAMP)"))
    upgrade_database(fresh_url)
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                  for t in ("runs", "metric_points", "log_lines", "checkpoints")}
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on for the app
    assert counts == {"runs": 1, "metric_points": 2, "log_lines": 1, "checkpoints": 1}
