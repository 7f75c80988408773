"""docker-compose.yml and the Dockerfile are not run here (no Docker): they are checked by reading."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Set by `runyard worker` for the Celery processes it starts, never by hand.
SET_BY_THE_CLI = {"RUNYARD_WORKER_GPU", "RUNYARD_WORKER_SLOT"}


def settings_variables() -> set[str]:
    return {f"RUNYARD_{name.upper()}" for name in Settings.model_fields}


def variables_the_code_reads() -> set[str]:
    names = settings_variables()
    for folder in ("server", "worker"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\bRUNYARD_[A-Z][A-Z0-9_]*\b", path.read_text()))
    return names - SET_BY_THE_CLI


def test_compose_parses_and_names_every_service_and_variable() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "server", "worker"} <= set(services)
    for name in ("server", "worker"):
        env = services[name]["environment"]
        wanted = variables_the_code_reads() if name == "worker" else settings_variables()
        missing = wanted - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["RUNYARD_DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["RUNYARD_DATABASE_URL"]
        assert env["RUNYARD_BROKER_URL"].startswith("redis://redis:")
        assert "runyard-data:/data" in services[name]["volumes"]
        assert env["RUNYARD_ARTIFACT_ROOT"].startswith("/data") and env["RUNYARD_DATA_DIR"].startswith("/data")
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker"]["command"][:2] == ["runyard", "worker"]
    assert services["server"]["command"][:2] == ["runyard", "server"]
    assert "runyard-data" in compose["volumes"]


def test_dockerfile_installs_the_package_and_runs_runyard() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    for folder in ("trainer_core", "server", "worker", "migrations", "webui"):
        assert f"COPY {folder}" in text
    assert 'CMD ["runyard", "server"]' in text and "EXPOSE 8000" in text
