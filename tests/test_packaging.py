"""``pip install runyard`` is trainer_core alone (issue 12, point 9).

The wheel is built from a copy of the source (``pip wheel --no-deps --no-build-isolation``, the
setuptools already in this venv: no new tool, nothing fetched to build), installed *without
extras* into a fresh venv with no system site packages, and then:

* its ``Requires-Dist`` without an extra marker is exactly torch, tqdm and PyYAML;
* none of the server's or worker's packages (FastAPI, SQLAlchemy, Celery, psycopg, plotly,
  scikit-learn, numpy, psutil, ...) came along;
* the tutorial's ``LitAutoEncoder`` trains with ``import trainer_core as L`` there;
* the ``runyard`` command says which extra it needs instead of a traceback.

pip resolves torch, tqdm and PyYAML from the indexes configured on the machine (torch and its CUDA
libraries are several GB of wheels, installed from this machine's disk): the test takes about
2 minutes on an idle machine here (build + install 87 s, of 108 s) and up to 5 under load, most of
it pip unpacking torch, hence the ``slow`` mark and its own timeout. The ~5 GB venv is removed after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "trainer_core", "server", "worker", "migrations", "webui")
BASE_REQUIREMENTS = {"torch", "tqdm", "pyyaml"}
# what the extras bring and a bare install must not: import names
NOT_INSTALLED = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "pydantic_settings",
                 "celery", "kombu", "psycopg", "plotly", "sklearn", "jsonschema", "authlib", "httpx",
                 "pathspec", "psutil", "torchvision", "tensorboard", "jsonargparse", "boto3", "pynvml")

TRAIN = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset
    import trainer_core as L


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))

        def forward(self, x):
            return self.l1(x)


    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))

        def forward(self, x):
            return self.l1(x)


    class LitAutoEncoder(L.LightningModule):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder = encoder
            self.decoder = decoder

        def training_step(self, batch, batch_idx):
            x, y = batch
            x = x.view(x.size(0), -1)
            z = self.encoder(x)
            x_hat = self.decoder(z)
            loss = F.mse_loss(x_hat, x)
            return loss

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
            return optimizer


    L.seed_everything(0)
    images = torch.rand(64, 1, 28, 28)  # MNIST-shaped
    labels = torch.randint(0, 10, (64,))
    train_loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    autoencoder = LitAutoEncoder(Encoder(), Decoder())
    before = [p.detach().clone() for p in autoencoder.parameters()]
    trainer = L.Trainer(max_epochs=2, enable_progress_bar=False)
    trainer.fit(model=autoencoder, train_dataloaders=train_loader)
    changed = any(not torch.equal(a, b) for a, b in zip(before, autoencoder.parameters()))
    print(json.dumps({
        "global_step": trainer.global_step,
        "changed": changed,
        "trainer_core": L.__file__,
        "modules": sorted({m.partition(".")[0] for m in sys.modules}),
    }))
    """
)


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_wheel_without_extras_is_trainer_core_alone(tmp_path: Path) -> None:
    try:
        _build_install_and_train(tmp_path)
    finally:  # the venv is ~5 GB (torch and its CUDA libraries): not left behind in pytest's tmp dirs
        shutil.rmtree(tmp_path / "venv", ignore_errors=True)


def _build_install_and_train(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PIP_NO_INPUT"] = "1"

    started = time.monotonic()
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                  str(src)], tmp_path, env, 600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("runyard-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 300)
    assert made.returncode == 0, made.stderr[-3000:]
    py = str(venv / "bin" / "python")
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg

    installed = _run([py, "-m", "pip", "install", "-q", str(wheels[0])], tmp_path, env, 1200)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    install_s = time.monotonic() - started

    # packaging is not installed there (no extra brings it): read Requires-Dist by hand
    probe = textwrap.dedent(
        f"""
        import json, importlib.util, re
        from importlib import metadata
        reqs = metadata.requires("runyard") or []
        base = sorted(re.split(r"[\\s\\[<>=!~;(]", r, maxsplit=1)[0].lower() for r in reqs if "extra ==" not in r)
        extras = sorted(metadata.metadata("runyard").get_all("Provides-Extra") or [])
        present = [m for m in {NOT_INSTALLED!r} if importlib.util.find_spec(m) is not None]
        dists = sorted(d.metadata["Name"].lower() for d in metadata.distributions())
        print(json.dumps({{"base": base, "extras": extras, "present": present, "dists": dists}}))
        """
    )
    out = _run([py, "-c", probe], tmp_path, env, 300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(found["base"]) == BASE_REQUIREMENTS, found["base"]
    assert {"server", "worker", "all"} <= set(found["extras"]), found["extras"]
    assert found["present"] == [], f"a bare install brought {found['present']} (installed: {found['dists']})"

    work = tmp_path / "work"
    work.mkdir()
    trained = _run([py, "-c", TRAIN], work, env, 600)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert result["global_step"] == 16, result
    assert result["changed"], result
    assert str(venv) in result["trainer_core"], result  # the installed wheel, not this checkout
    assert not set(result["modules"]) & set(NOT_INSTALLED), result["modules"]
    assert "Traceback" not in trained.stderr, trained.stderr[-3000:]

    cli = _run([str(venv / "bin" / "runyard"), "server"], work, env, 300)
    assert cli.returncode == 2, (cli.returncode, cli.stdout, cli.stderr)
    assert "Traceback" not in cli.stderr, cli.stderr
    assert "needs the server extra" in cli.stderr and "pip install 'runyard[server]'" in cli.stderr, cli.stderr
    print(f"build + fresh install without extras: {install_s:.0f} s")


@pytest.mark.parametrize("missing", ["celery", "pydantic_settings", "fastapi"])
def test_the_runyard_command_names_the_missing_extra(missing: str, tmp_path: Path) -> None:
    # the fast half of the check above: a package of the server extra absent (None in sys.modules
    # makes its import raise ModuleNotFoundError, as when it is not installed). celery and
    # pydantic-settings are imported with server.cli, fastapi only by `runyard server` itself.
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "from server.cli import main\n"
            "sys.exit(main(['server']))\n")
    env = {**os.environ, "RUNYARD_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    what = "runyard server" if missing == "fastapi" else "the runyard command"
    assert f"{what} needs the server extra ({missing} is not installed): pip install 'runyard[server]'" in out.stderr
