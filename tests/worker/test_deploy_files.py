"""docker-compose.yml and the Dockerfile are not run here (no Docker): they are checked by reading."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Set by `runyard worker` for the Celery processes it starts, never by hand.
SET_BY_THE_CLI = {"RUNYARD_WORKER_GPU", "RUNYARD_WORKER_SLOT",
                  # the host's GPU pool the slots share (issue 13: `runyard worker --gpus`)
                  "RUNYARD_WORKER_GPUS", "RUNYARD_GPU_SEATS", "RUNYARD_GPU_POOL"}


def settings_variables() -> set[str]:
    return {f"RUNYARD_{name.upper()}" for name in Settings.model_fields}


WORKER_NEEDS = {"RUNYARD_URL", "RUNYARD_TOKEN", "RUNYARD_BROKER_URL", "RUNYARD_HOME", "RUNYARD_DATA_DIR",
                "RUNYARD_RECIPES", "RUNYARD_DOWNLOAD_DATA", "RUNYARD_HEARTBEAT_TIMEOUT", "RUNYARD_WORKER_NAME"}


def test_compose_parses_and_names_every_service_and_variable(monkeypatch) -> None:
    monkeypatch.setenv("RUNYARD_WORKER_TOKEN", "ryw_test")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "server", "worker"} <= set(services)
    server_env = services["server"]["environment"]
    missing = settings_variables() - set(server_env)
    assert not missing, f"server lacks {sorted(missing)}"
    assert server_env["RUNYARD_DATABASE_URL"].startswith("postgresql://") and "@postgres:" in server_env["RUNYARD_DATABASE_URL"]
    assert server_env["RUNYARD_BROKER_URL"].startswith("redis://redis:")
    assert "runyard-data:/data" in services["server"]["volumes"]
    assert server_env["RUNYARD_ARTIFACT_ROOT"].startswith("/data")
    # the worker: only the server's URL, a token, the broker and its own folder (issue 8)
    worker_env = services["worker"]["environment"]
    assert WORKER_NEEDS <= set(worker_env), sorted(WORKER_NEEDS - set(worker_env))
    assert "RUNYARD_DATABASE_URL" not in worker_env and "RUNYARD_ARTIFACT_ROOT" not in worker_env
    assert worker_env["RUNYARD_URL"] == "http://server:8000" and "RUNYARD_WORKER_TOKEN" in worker_env["RUNYARD_TOKEN"]
    assert worker_env["RUNYARD_BROKER_URL"].startswith("redis://redis:")
    assert "runyard-data:/data" not in services["worker"]["volumes"]
    # every RUNYARD_ variable the worker package reads is one the worker service sets or a default
    read_by_worker = {n for path in (ROOT / "worker").rglob("*.py")
                      for n in re.findall(r"\bRUNYARD_[A-Z][A-Z0-9_]*\b", path.read_text())} - SET_BY_THE_CLI
    assert read_by_worker - set(worker_env) <= {"RUNYARD_DATABASE_URL", "RUNYARD_BROKER_URL", "RUNYARD_TOKEN",
                                                 "RUNYARD_RUN_ID", "RUNYARD_RUN_DIR", "RUNYARD_ARTIFACT_URL",
                                                 "RUNYARD_URL", "RUNYARD_RECIPES",
                                                 # set by the run's process for a code run's child
                                                 "RUNYARD_AUTO_LOGGER", "RUNYARD_CAPTURE", "RUNYARD_CODE_DIR",
                                                 "RUNYARD_SYSTEM_METRICS", "RUNYARD_HEARTBEAT_INTERVAL",
                                                 # set by the agent for each rank of a multi-process run
                                                 "RUNYARD_RANK"}
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker"]["command"][:2] == ["runyard", "worker"]
    assert services["server"]["command"][:2] == ["runyard", "server"]
    assert "runyard-data" in compose["volumes"] and "worker-data" in compose["volumes"]


def test_dockerfile_installs_the_package_and_runs_runyard() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    for folder in ("trainer_core", "server", "worker", "migrations", "webui"):
        assert f"COPY {folder}" in text
    assert 'CMD ["runyard", "server"]' in text and "EXPOSE 8000" in text
