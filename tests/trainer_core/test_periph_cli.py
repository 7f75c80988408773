"""LightningCLI: subcommands, --model.*/--data.*/--trainer.*, --config, --print_config, seeding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

import trainer_core as L

pytest.importorskip("jsonargparse")

from trainer_core.cli import LightningCLI


class RegressionModel(L.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.01):
        """A two-layer regressor.

        Args:
            hidden: width of the hidden layer
            lr: SGD learning rate
        """
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch):
        return F.mse_loss(self(batch), batch.sum(1, keepdim=True))

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class RandomData(L.LightningDataModule):
    def __init__(self, batch_size: int = 4, size: int = 32):
        super().__init__()
        self.batch_size = batch_size
        self.size = size

    def _loader(self):
        return DataLoader(
            torch.randn(self.size, 4, generator=torch.Generator().manual_seed(0)), self.batch_size
        )

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()

    def predict_dataloader(self):
        return self._loader()


QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_fit_with_model_data_and_trainer_options(tmp_path):
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        args=[
            "fit",
            "--model.hidden=16",
            "--model.lr=0.05",
            "--data.batch_size=8",
            "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--seed_everything=7",
            *QUIET,
        ],
    )
    assert cli.subcommand == "fit"
    assert isinstance(cli.model, RegressionModel) and cli.model.net[0].out_features == 16
    assert cli.model.hparams.lr == 0.05 and cli.datamodule.batch_size == 8
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 8
    assert cli.config.fit.seed_everything == 7
    # the parsed config is saved next to the logs
    saved = yaml.safe_load(open(os.path.join(cli.trainer.log_dir, "config.yaml")))
    assert saved["model"] == {"hidden": 16, "lr": 0.05}
    assert saved["trainer"]["max_epochs"] == 2 and saved["seed_everything"] == 7


def test_config_file_and_command_line_override(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"hidden": 3},
                "data": {"size": 16},
                "trainer": {"max_epochs": 1, "default_root_dir": str(tmp_path), "logger": False},
            }
        )
    )
    cli = LightningCLI(
        RegressionModel, RandomData, args=["fit", "--config", str(cfg), "--model.lr=0.2", *QUIET]
    )
    assert cli.model.net[0].out_features == 3 and cli.model.hparams.lr == 0.2
    assert cli.trainer.global_step == 4  # 16 samples / batch 4


def test_validate_test_predict_subcommands(tmp_path):
    def common(name):
        # without a logger the log_dir is default_root_dir; config.yaml is never overwritten
        return [f"--trainer.default_root_dir={tmp_path / name}", "--trainer.logger=false", *QUIET]

    cli = LightningCLI(RegressionModel, RandomData, args=["validate", *common("validate")])
    assert cli.trainer.state.fn == "validate" and "val_loss" in cli.trainer.callback_metrics
    assert (tmp_path / "validate" / "config.yaml").is_file()
    cli = LightningCLI(RegressionModel, RandomData, args=["test", *common("test")])
    assert "test_loss" in cli.trainer.callback_metrics
    with pytest.raises(RuntimeError, match="to NOT exist"):
        LightningCLI(RegressionModel, RandomData, args=["test", *common("test")])

    class PredictCLI(LightningCLI):
        def after_predict(self):
            self.predictions = self.trainer.predict(self.model, datamodule=self.datamodule)

    cli = PredictCLI(RegressionModel, RandomData, args=["predict", *common("predict")])
    assert len(cli.predictions) == 8 and cli.predictions[0].shape == (4, 1)


def test_fit_then_test_from_checkpoint(tmp_path):
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        args=["fit", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}", *QUIET],
    )
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    assert os.path.isfile(ckpt)
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        args=[
            "test",
            f"--ckpt_path={ckpt}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            *QUIET,
        ],
    )
    assert "test_loss" in cli.trainer.callback_metrics


def test_optimizer_and_scheduler_from_the_command_line(tmp_path):
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        args=[
            "fit",
            "--optimizer=Adam",
            "--optimizer.lr=0.003",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=1",
            "--trainer.max_epochs=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
        ],
    )
    (opt,) = cli.trainer.optimizers
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 0.003
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.StepLR)


def test_print_config_and_unknown_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        LightningCLI(RegressionModel, RandomData, args=["fit", "--model.hidden=5", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"] == {"hidden": 5, "lr": 0.01}
    assert printed["data"] == {"batch_size": 4, "size": 32}
    assert printed["trainer"]["max_epochs"] is None and "seed_everything" in printed

    with pytest.raises(SystemExit) as exit_info:
        LightningCLI(RegressionModel, RandomData, args=["fit", "--model.width=5"])
    assert exit_info.value.code != 0
    assert "width" in capsys.readouterr().err


def test_run_false_only_instantiates(tmp_path):
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        run=False,
        args=["--model.hidden=2", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1"],
    )
    assert cli.model.net[0].out_features == 2 and cli.trainer.global_step == 0
    assert cli.subcommand is None


SCRIPT = """
import torch
from tests.trainer_core.test_periph_cli import RandomData, RegressionModel
from trainer_core.cli import LightningCLI

if __name__ == "__main__":
    cli = LightningCLI(RegressionModel, RandomData)
    print("GLOBAL_STEP", cli.trainer.global_step)
"""


def test_script_from_the_shell(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(SCRIPT))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS="1")
    cfg = tmp_path / "cfg.yaml"
    printed = subprocess.run(
        [sys.executable, str(script), "fit", "--trainer.max_epochs=1", "--print_config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    cfg.write_text(printed)
    done = subprocess.run(
        [sys.executable, str(script), "fit", "--config", str(cfg), "--data.size=8", *QUIET],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GLOBAL_STEP 2" in done.stdout
    assert os.path.isfile(tmp_path / "lightning_logs" / "version_0" / "config.yaml")


def test_missing_jsonargparse_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['jsonargparse'] = None\n"
        "from trainer_core.cli import LightningCLI\n"
        "try:\n    LightningCLI(None)\nexcept ImportError as e:\n    print(e)\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=repo,
        env=dict(os.environ, PYTHONPATH=repo),
    )
    assert "pip install runyard[cli]" in out.stdout, out.stderr[-2000:]


def test_callbacks_and_logger_by_short_name(tmp_path):
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        args=[
            "fit",
            "--trainer.max_epochs=5",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks+=EarlyStopping",
            "--trainer.callbacks.monitor=val_loss",
            "--trainer.callbacks.patience=1",
            "--trainer.callbacks.stopping_threshold=1e9",  # any value stops at the first check
            "--trainer.callbacks+=LearningRateMonitor",
            "--trainer.logger=CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            "--trainer.logger.name=csv",
            *QUIET,
        ],
    )
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "EarlyStopping" in names and "LearningRateMonitor" in names
    assert cli.trainer.current_epoch == 1  # stopped by the threshold after epoch 0
    (logger,) = cli.trainer.loggers
    assert type(logger).__name__ == "CSVLogger" and logger.log_dir == str(tmp_path / "csv" / "version_0")
    saved = yaml.safe_load(open(os.path.join(logger.log_dir, "config.yaml")))
    assert saved["trainer"]["callbacks"][0]["class_path"].endswith("EarlyStopping")
    assert saved["trainer"]["logger"]["init_args"]["name"] == "csv"
    # the saved config reproduces the run's classes
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        args=[
            "fit",
            "--config",
            os.path.join(logger.log_dir, "config.yaml"),
            "--trainer.logger.version=again",
        ],
    )
    assert cli.trainer.current_epoch == 1 and cli.trainer.loggers[0].version == "again"


def test_args_as_dict_and_trainer_defaults(tmp_path):
    from trainer_core.callbacks.lr_monitor import LearningRateMonitor

    monitor = LearningRateMonitor()
    cli = LightningCLI(
        RegressionModel,
        RandomData,
        trainer_defaults={"max_epochs": 1, "default_root_dir": str(tmp_path), "callbacks": [monitor]},
        seed_everything_default=3,
        args={"fit": {"model": {"hidden": 6}, "trainer": {"enable_progress_bar": False}}},
    )
    assert cli.model.net[0].out_features == 6 and cli.trainer.current_epoch == 1
    assert monitor in cli.trainer.callbacks and cli.config.fit.seed_everything == 3
    assert monitor.lrs == {"lr-SGD": [0.01]}  # logged at the start of the only epoch
