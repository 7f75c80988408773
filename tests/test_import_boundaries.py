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


# --------------------------------------------------------------------------- trainer_core alone
# `pip install runyard` without extras is torch, tqdm and PyYAML (tests/test_packaging.py installs
# it for real); here the same is held on every run, in this venv where everything is installed: an
# import hook refuses every top-level package that is neither the standard library nor torch (and
# what torch itself requires, read from its metadata), tqdm or yaml, then trainer_core is imported
# and trains a small model.

_REFUSE_OTHERS = r"""
# argv[1]: a scratch folder; argv[2]: requirement strings (JSON); argv[3]: the import names allowed
# besides the standard library and what those requirements bring (JSON)
import importlib.abc, json, os, platform, re, sys
from importlib import metadata

ROOTS, OWN = json.loads(sys.argv[2]), json.loads(sys.argv[3])
ENV = {"python_version": "%d.%d" % sys.version_info[:2], "python_full_version": platform.python_version(),
       "sys_platform": sys.platform, "platform_system": platform.system(), "platform_machine": platform.machine(),
       "os_name": os.name, "implementation_name": sys.implementation.name,
       "platform_python_implementation": platform.python_implementation()}


def _marker_ok(marker, extras):
    def _cmp(var, op, value):
        if var == "extra":
            return (value in extras) == (op == "==")
        left = ENV.get(var, "")
        if var.endswith("version"):
            left, value = tuple(map(int, left.split(".")[:3])), tuple(map(int, value.split(".")[:3]))
        return {"==": left == value, "!=": left != value, "<": left < value, "<=": left <= value,
                ">": left > value, ">=": left >= value}[op]
    expr = re.sub(r"\b(\w+)\s*(==|!=|<=|>=|<|>)\s*(['\"][^'\"]*['\"])",
                  lambda m: "_cmp(%r, %r, %s)" % (m.group(1), m.group(2), m.group(3)), marker)
    return bool(eval(expr, {"_cmp": _cmp}))


def requirements(req, seen):
    # the distributions requirement `req` ("name[extra,...] ...") needs on this interpreter, transitively
    head = req.split(";")[0].strip()
    name = re.split(r"[\s\[<>=!~(]", head, maxsplit=1)[0]
    found = re.search(r"\[([^\]]*)\]", head)
    extras = {e.strip() for e in found.group(1).split(",")} if found else set()
    key = name.lower().replace("_", "-").replace(".", "-")
    todo = [x for x in [None, *sorted(extras)] if (key, x) not in seen]
    if not todo:
        return
    seen.update((key, x) for x in todo)
    try:
        reqs = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return
    for sub in reqs:
        sub_head, _, marker = sub.partition(";")
        marker = marker.strip()
        wanted = {x for x in todo if x is not None}
        if "extra" in marker:
            if not wanted or not _marker_ok(marker, wanted):
                continue
        elif None not in todo or (marker and not _marker_ok(marker, set())):
            continue
        requirements(sub_head, seen)


seen = set()
for root in ROOTS:
    requirements(root, seen)
dists = {key for key, _ in seen}
allowed = set(sys.stdlib_module_names) | set(OWN) | {"_distutils_hack"}
for top, owners in metadata.packages_distributions().items():
    if any(o.lower().replace("_", "-").replace(".", "-") in dists for o in owners):
        allowed.add(top)
refused = []  # what the project's own code tried to import and did not get


def _importer():
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen")
                                 or "/importlib/" in frame.f_code.co_filename):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else ""


class Absent(importlib.abc.MetaPathFinder):
    # wraps each finder: a refused package is not found at all (`import` raises ModuleNotFoundError,
    # importlib.util.find_spec gives None, as when it is not installed)
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed and not top.startswith("_"):
            if any(f"/{own}/" in _importer() for own in OWN):
                refused.append(name)
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [Absent(f) for f in sys.meta_path]
"""

_ALONE = _REFUSE_OTHERS + r"""

import warnings
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import trainer_core as L

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

L.seed_everything(0)
data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
trainer = L.Trainer(max_epochs=2, default_root_dir=sys.argv[1])
trainer.fit(Tiny(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
trainer.validate(ckpt_path="best", dataloaders=DataLoader(data, batch_size=8), verbose=False)
loaded = sorted(m for m in {m.partition(".")[0] for m in sys.modules} - allowed
                if not m.startswith("_") and m != "cython_runtime")  # C-extension internals
print(json.dumps({"steps": trainer.global_step, "refused": sorted(set(refused)), "outside": loaded,
                  "dists": sorted(dists)}))
"""

BASE = ["torch", "tqdm", "pyyaml"]


def test_trainer_core_imports_and_trains_with_only_torch_tqdm_and_yaml(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUNYARD_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _ALONE, str(tmp_path), json.dumps(BASE),
                          json.dumps(["trainer_core", "torch", "tqdm", "yaml"])],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["steps"] == 8, found
    assert "torch" in found["dists"] and "tqdm" in found["dists"], found
    assert found["outside"] == [], found
    # what trainer_core's code *tried* and did without must be one of its optional integrations
    # (numpy seeding, psutil system metrics, NVML, TensorBoard as the default logger when installed);
    # anything else is a new hard dependency hiding behind a try/except
    optional = {"numpy", "psutil", "pynvml", "tensorboard", "tensorboardX"}
    assert {n.partition(".")[0] for n in found["refused"]} <= optional, found


# --------------------------------------------------------------------------- the extras
# runyard[server] and runyard[worker] (pyproject.toml) must bring what server/ and worker/ import:
# every module of each is imported with every package refused that neither the base requirements nor
# that extra's requirements (read from pyproject.toml, transitively through installed metadata) bring.
# Imports inside functions are not reached this way: those of the extras (torchvision, scikit-learn
# in the recipes, pathspec through server.snapshots, plotly, uvicorn) are listed in pyproject.toml by
# reading the code.

_IMPORT_ALL = _REFUSE_OTHERS + r"""
import importlib
for name in json.loads(sys.argv[4]):
    importlib.import_module(name)
loaded = sorted(m for m in {m.partition(".")[0] for m in sys.modules} - allowed
                if not m.startswith("_") and m != "cython_runtime")
print(json.dumps({"refused": sorted(set(refused)), "outside": loaded}))
"""


def _extra(name: str) -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"][name])


@pytest.mark.parametrize("extra", ["server", "worker"])
def test_each_extra_brings_what_its_package_imports(extra: str, tmp_path: Path) -> None:
    names = modules_of(extra)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUNYARD_HOME": str(tmp_path)}
    own = ["server", "worker", "trainer_core", "migrations", "webui"]
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL, str(tmp_path), json.dumps(BASE + _extra(extra)),
                          json.dumps(own), json.dumps(names)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, f"runyard[{extra}] lacks a package {extra}/ imports:\n{out.stderr[-4000:]}"
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["outside"] == [], found
    # lazily imported, optional and saying so when missing: S3 storage (runyard[s3]), NVML, TensorBoard
    optional = {"boto3", "botocore", "pynvml", "tensorboard", "tensorboardX", "numpy", "psutil"}
    assert {n.partition(".")[0] for n in found["refused"]} <= optional, found
