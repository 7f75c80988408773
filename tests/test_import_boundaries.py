"""Point 1 of the run-process design: only the server opens the database.

Each package is imported in a fresh interpreter (every module of it, as a worker or a run's
process would load it) and the modules that came along are checked: ``worker/`` and
``trainer_core/`` load nothing that opens Runyard's database (``server.db``, ``server.store``,
``server.models``, the API, SQLAlchemy's ORM, psycopg), and ``server/`` loads nothing of ``worker/``.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATABASE_MODULES = ("server.db", "server.store", "server.models", "server.app", "server.api", "server.auth",
                    "sqlalchemy.orm", "psycopg", "alembic", "migrations")


def modules_of(package: str) -> list[str]:
    path = ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        names.append(info.name)
    return names


def loaded_after_importing(names: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env_code = ["env", "-u", "RUNYARD_RECIPES"]
    out = subprocess.run([*env_code, sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _offenders(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("package", ["worker", "trainer_core"])
def test_workers_and_trainer_core_load_nothing_that_opens_the_database(package: str) -> None:
    names = [n for n in modules_of(package) if n != "worker.tasks" and n != "worker.celery_app"]
    assert names, package
    offenders = _offenders(loaded_after_importing(names), DATABASE_MODULES)
    assert offenders == [], f"importing {package} loads database modules: {offenders}"


def test_the_celery_worker_app_loads_nothing_that_opens_the_database(tmp_path: Path) -> None:
    # worker.celery_app builds the Celery app at import (a broker URL is needed, not a database)
    code = (
        "import json, sys\n"
        "import worker.tasks, worker.celery_app, worker.agent, worker.run_process\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "RUNYARD_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    # kombu's SQLAlchemy transport (the embedded *broker*, server.queue) loads sqlalchemy itself;
    # nothing of Runyard's database comes with it.
    assert _offenders(loaded, tuple(m for m in DATABASE_MODULES if m != "sqlalchemy.orm")) == []


def test_the_server_loads_nothing_from_worker() -> None:
    names = modules_of("server")
    loaded = loaded_after_importing(names)
    assert _offenders(loaded, ("worker",)) == []
    assert "torch" not in loaded, "the API process must not load torch (it came with recipe code before)"


def test_trainer_core_imports_neither_server_nor_worker() -> None:
    loaded = loaded_after_importing(modules_of("trainer_core"))
    assert _offenders(loaded, ("server", "worker")) == []


def test_the_check_itself_catches_a_violation() -> None:
    # The walk must see what a module drags in: importing server.store does load sqlalchemy.orm.
    assert _offenders(loaded_after_importing(["server.store"]), DATABASE_MODULES)
