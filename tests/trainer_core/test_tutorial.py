"""Every code sample of ../shared/seed/lightning_tutorial.md, run with ``import trainer_core as L``.

The samples are copied as written, with three kinds of changes only: ``lightning`` imports
become ``trainer_core`` ones; MNIST comes from a small local copy in its real IDX format
(``download=True`` finds the files and downloads nothing); and runs are kept short with
``max_epochs``/``limit_*_batches`` (a bare ``Trainer()`` trains for 1000 epochs, as Lightning's).
Where the tutorial leaves ``...``, the gap is filled with the smallest code that makes it run.
"""

from __future__ import annotations

import glob
import os
import re
from argparse import ArgumentParser

import pytest
import torch
import torch.nn.functional as F
import torch.utils.data as data
import torchvision.models as models
import torchvision.transforms as transforms
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.datasets import MNIST

import trainer_core as L
from tests.helpers.mnist import write_mnist
from trainer_core import LightningModule, Trainer
from trainer_core.callbacks.early_stopping import EarlyStopping

# -- the tutorial's models ("定义PyTorch模型", "定义LightningModule") ------------------------------


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
    """The tutorial's module with its training, test and validation steps merged into one class."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def training_step(self, batch, batch_idx):
        # training_step defines the train loop.
        x, y = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        loss = F.mse_loss(x_hat, x)
        return loss

    def test_step(self, batch, batch_idx):
        # this is the test loop
        x, y = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        test_loss = F.mse_loss(x_hat, x)
        self.log("test_loss", test_loss)

    def validation_step(self, batch, batch_idx):
        # this is the validation loop
        x, y = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        val_loss = F.mse_loss(x_hat, x)
        self.log("val_loss", val_loss)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return optimizer


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The tutorial works in the current directory (``os.getcwd()``, ``lightning_logs/``, ``MNIST/``)."""
    monkeypatch.chdir(tmp_path)
    write_mnist(tmp_path, n_train=160, n_test=40)  # ./MNIST/raw for MNIST(os.getcwd())
    write_mnist(tmp_path / "MNIST", n_train=160, n_test=40)  # ./MNIST/MNIST/raw for MNIST(root="MNIST")
    return tmp_path


def checkpoints_under(root) -> list[str]:
    return sorted(glob.glob(os.path.join(str(root), "**", "*.ckpt"), recursive=True))


# -- 训练模型 -------------------------------------------------------------------------------------


def test_train_model_on_mnist(workdir, capsys):
    dataset = MNIST(os.getcwd(), download=True, transform=transforms.ToTensor())
    train_loader = DataLoader(dataset)
    assert len(dataset) == 160

    # model
    autoencoder = LitAutoEncoder(Encoder(), Decoder())

    # train model
    trainer = L.Trainer(max_epochs=1, limit_train_batches=20)
    trainer.fit(model=autoencoder, train_dataloaders=train_loader)
    assert trainer.global_step == 20
    assert checkpoints_under(workdir / "lightning_logs") == [
        str(workdir / "lightning_logs" / "version_0" / "checkpoints" / "epoch=0-step=20.ckpt")
    ]
    # "Print LightningModule weights summary": printed when fit starts
    out = capsys.readouterr().out
    assert "  | Name    | Type    | Params | Mode " in out
    assert "0 | encoder | Encoder | 50.4 K | train" in out
    assert "Trainable params" in out and "Total estimated model params size (MB)" in out


def test_what_the_trainer_does_for_us(workdir):
    dataset = MNIST(os.getcwd(), download=True, transform=transforms.ToTensor())
    train_loader = DataLoader(dataset)
    autoencoder = LitAutoEncoder(Encoder(), Decoder())
    optimizer = autoencoder.configure_optimizers()

    before = [p.detach().clone() for p in autoencoder.parameters()]
    for batch_idx, batch in enumerate(train_loader):
        loss = autoencoder.training_step(batch, batch_idx)

        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if batch_idx == 9:
            break
    assert any(not torch.equal(b, p) for b, p in zip(before, autoencoder.parameters(), strict=True))


# -- 验证和测试循环, 保存和加载模型: the full autoencoder flow ---------------------------------------


def load_sets():
    # Load data sets
    transform = transforms.ToTensor()
    train_set = datasets.MNIST(root="MNIST", download=True, train=True, transform=transform)
    test_set = datasets.MNIST(root="MNIST", download=True, train=False, transform=transform)
    return train_set, test_set


def test_autoencoder_train_validate_test_checkpoint_load_predict(workdir):
    train_set, test_set = load_sets()

    # use 20% of training data for validation
    train_set_size = int(len(train_set) * 0.8)
    valid_set_size = len(train_set) - train_set_size

    # split the train set into two
    seed = torch.Generator().manual_seed(42)
    train_set, valid_set = data.random_split(train_set, [train_set_size, valid_set_size], generator=seed)
    assert (len(train_set), len(valid_set)) == (128, 32)

    train_loader = DataLoader(train_set)
    valid_loader = DataLoader(valid_set)
    model = LitAutoEncoder(Encoder(), Decoder())

    # train with both splits
    trainer = L.Trainer(max_epochs=2, limit_train_batches=16, limit_val_batches=8)
    trainer.fit(model, train_loader, valid_loader)
    assert trainer.current_epoch == 2 and trainer.global_step == 32
    assert "val_loss" in trainer.callback_metrics

    # test the model
    trainer = Trainer(limit_test_batches=10)
    results = trainer.test(model, dataloaders=DataLoader(test_set))
    assert list(results[0]) == ["test_loss"] and results[0]["test_loss"] > 0

    # checkpoint: saved automatically in lightning_logs/version_0/checkpoints
    (CKPT_PATH,) = checkpoints_under(workdir / "lightning_logs" / "version_0")
    assert CKPT_PATH.endswith("epoch=1-step=32.ckpt")

    # load the weights into plain nn.Modules ("load checkpoint到nn.Module")
    checkpoint = torch.load(CKPT_PATH)
    encoder_weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    decoder_weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("decoder.")}
    encoder = Encoder()
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in encoder_weights.items()})
    decoder = Decoder()
    decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in decoder_weights.items()})
    assert torch.equal(encoder.l1[0].weight, model.encoder.l1[0].weight)

    # the checkpoint holds what the tutorial lists
    for key in (
        "epoch",
        "global_step",
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "callbacks",
        "loops",
    ):
        assert key in checkpoint, key

    # load the LightningModule (its init args are modules, passed again) and predict
    restored = LitAutoEncoder.load_from_checkpoint(CKPT_PATH, encoder=Encoder(), decoder=Decoder())
    restored.eval()
    x, _ = test_set[0]
    with torch.no_grad():
        z = restored.encoder(x.view(1, -1))
    assert z.shape == (1, 3)
    assert torch.equal(restored.decoder.l1[2].bias, model.decoder.l1[2].bias)


def test_default_root_dir_and_disabled_checkpointing(workdir):
    train_set, _ = load_sets()
    loader = DataLoader(train_set, batch_size=16)

    # saves checkpoints to 'some/path/' at every epoch end
    trainer = Trainer(default_root_dir="some/path/", max_epochs=2, limit_train_batches=2)
    trainer.fit(LitAutoEncoder(Encoder(), Decoder()), loader)
    assert [os.path.basename(p) for p in checkpoints_under(workdir / "some" / "path")] == [
        "epoch=1-step=4.ckpt"
    ]

    trainer = Trainer(
        enable_checkpointing=False, max_epochs=1, limit_train_batches=2, default_root_dir="nockpt"
    )
    trainer.fit(LitAutoEncoder(Encoder(), Decoder()), loader)
    assert checkpoints_under(workdir / "nockpt") == []


def test_resume_training_from_checkpoint(workdir):
    train_set, _ = load_sets()
    loader = DataLoader(train_set, batch_size=16)
    first = Trainer(max_epochs=1, limit_train_batches=3)
    first.fit(LitAutoEncoder(Encoder(), Decoder()), loader)
    (ckpt,) = checkpoints_under(workdir)

    model = LitAutoEncoder(Encoder(), Decoder())
    trainer = Trainer(max_epochs=2, limit_train_batches=3)

    # automatically restores model, epoch, step, LR schedulers, etc...
    trainer.fit(model, loader, ckpt_path=ckpt)
    assert trainer.current_epoch == 2 and trainer.global_step == 6


# -- 保存超参数 -------------------------------------------------------------------------------------


class MyLightningModule(LightningModule):
    def __init__(self, learning_rate, another_parameter, *args, **kwargs):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        return self(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


def test_save_hyperparameters_and_load(workdir):
    trainer = Trainer(max_epochs=1, limit_train_batches=2, logger=False)
    trainer.fit(MyLightningModule(0.01, "value"), DataLoader(torch.randn(8, 4), batch_size=4))
    (checkpoint,) = checkpoints_under(workdir)

    checkpoint = torch.load(checkpoint, map_location=lambda storage, loc: storage)
    print(checkpoint["hyper_parameters"])
    assert checkpoint["hyper_parameters"] == {"learning_rate": 0.01, "another_parameter": "value"}

    (path,) = checkpoints_under(workdir)
    model = MyLightningModule.load_from_checkpoint(path)
    print(model.learning_rate)
    assert model.learning_rate == 0.01 and model.hparams.another_parameter == "value"

    # disable randomness, dropout, etc...
    model.eval()

    # predict with the model
    x = torch.randn(3, 4)
    y_hat = model(x)
    assert y_hat.shape == (3, 2)


# -- Early Stopping -------------------------------------------------------------------------------


class LitModel(LightningModule):
    """A regression model with its own dataloaders, so ``trainer.fit(model)`` runs as written."""

    def __init__(self, in_dim: int = 64, noise: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(in_dim, 1)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, in_dim, generator=g)
        self.y = self.x.sum(dim=1, keepdim=True)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("val_loss", loss)
        self.log("val_accuracy", -loss + self.hparams.noise * batch_idx)

    def train_dataloader(self):
        return DataLoader(list(zip(self.x, self.y, strict=True)), batch_size=8)

    def val_dataloader(self):
        return DataLoader(list(zip(self.x, self.y, strict=True)), batch_size=16)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # nothing improves: early stopping must trigger


def test_early_stopping(workdir):
    model = LitModel()
    trainer = Trainer(callbacks=[EarlyStopping(monitor="val_loss", mode="min")], max_epochs=50, logger=False)
    trainer.fit(model)
    # patience=3 by default: the first check sets the best, three more without improvement stop
    assert trainer.should_stop and trainer.current_epoch == 4

    early_stop_callback = EarlyStopping(
        monitor="val_accuracy", min_delta=0.00, patience=3, verbose=False, mode="max"
    )
    trainer = Trainer(callbacks=[early_stop_callback], max_epochs=50, logger=False, default_root_dir="second")
    trainer.fit(LitModel())
    assert trainer.current_epoch == 4 and early_stop_callback.wait_count == 3


# -- 迁移学习 -------------------------------------------------------------------------------------


class AutoEncoder(LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 100))
        self.decoder = nn.Linear(100, 3 * 32 * 32)

    def forward(self, x):
        return self.encoder(x)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        return F.mse_loss(self.decoder(self(x)), x.flatten(1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class CIFAR10Classifier(LightningModule):
    def __init__(self, path):
        super().__init__()
        # init the pretrained LightningModule
        self.feature_extractor = AutoEncoder.load_from_checkpoint(path)
        self.feature_extractor.freeze()

        # the autoencoder outputs a 100-dim representation and CIFAR-10 has 10 classes
        self.classifier = nn.Linear(100, 10)

    def forward(self, x):
        representations = self.feature_extractor(x)
        x = self.classifier(representations)
        return x

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.classifier.parameters(), lr=1e-2)


def cifar_like(n=32):
    g = torch.Generator().manual_seed(0)
    return list(
        zip(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), strict=True)
    )


def test_transfer_learning_with_pretrained_lightning_module(workdir):
    pre = Trainer(max_epochs=1, limit_train_batches=2, logger=False, default_root_dir="pre")
    pre.fit(AutoEncoder(), DataLoader(cifar_like(), batch_size=8))
    (PATH,) = checkpoints_under(workdir / "pre")

    model = CIFAR10Classifier(PATH)
    frozen = {k: v.clone() for k, v in model.feature_extractor.state_dict().items()}
    trainer = Trainer(max_epochs=1, limit_train_batches=3, logger=False, default_root_dir="clf")
    trainer.fit(model, DataLoader(cifar_like(), batch_size=8))
    assert all(not p.requires_grad for p in model.feature_extractor.parameters())
    assert all(torch.equal(frozen[k], v) for k, v in model.feature_extractor.state_dict().items())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


class ImagenetTransferLearning(LightningModule):
    def __init__(self):
        super().__init__()

        # init a pretrained resnet (weights=None here: nothing can be downloaded in tests;
        # resnet18 instead of resnet50 keeps the checkpoint small, the pattern is the same)
        backbone = models.resnet18(weights=None)
        num_filters = backbone.fc.in_features
        layers = list(backbone.children())[:-1]
        self.feature_extractor = nn.Sequential(*layers)
        self.feature_extractor.eval()

        # use the pretrained model to classify cifar-10 (10 image classes)
        num_target_classes = 10
        self.classifier = nn.Linear(num_filters, num_target_classes)

    def forward(self, x):
        with torch.no_grad():
            representations = self.feature_extractor(x).flatten(1)
        x = self.classifier(representations)
        return x

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def train_dataloader(self):
        return DataLoader(cifar_like(16), batch_size=8)

    def configure_optimizers(self):
        return torch.optim.Adam(self.classifier.parameters(), lr=1e-2)


def test_imagenet_style_transfer_learning_with_resnet(workdir):
    model = ImagenetTransferLearning()
    backbone_before = model.feature_extractor[0].weight.clone()
    trainer = Trainer(max_epochs=1, limit_train_batches=2, logger=False)
    trainer.fit(model)
    assert torch.equal(model.feature_extractor[0].weight, backbone_before)
    (PATH,) = checkpoints_under(workdir)

    model = ImagenetTransferLearning.load_from_checkpoint(PATH)
    model.freeze()

    x = torch.rand(4, 3, 32, 32)  # some_images_from_cifar10()
    predictions = model(x)
    assert predictions.shape == (4, 10) and not predictions.requires_grad


# -- 设置超参数: ArgumentParser ---------------------------------------------------------------------


class MyModel(LightningModule):
    def __init__(self, layer_1_dim=128):
        super().__init__()
        self.save_hyperparameters()
        self.layer_1 = nn.Linear(28 * 28, layer_1_dim)

    def forward(self, x):
        return self.layer_1(x)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch)


def test_argument_parser(workdir):
    parser = ArgumentParser()

    # Trainer arguments
    parser.add_argument("--devices", type=int, default=2)

    # Hyperparameters for the model
    parser.add_argument("--layer_1_dim", type=int, default=128)

    # Parse the user inputs and defaults (returns a argparse.Namespace)
    args = parser.parse_args(
        ["--layer_1_dim", "64", "--devices", "1"]
    )  # python trainer.py --layer_1_dim 64 --devices 1

    # Use the parsed arguments in your program
    trainer = Trainer(devices=args.devices)
    model = MyModel(layer_1_dim=args.layer_1_dim)
    assert model.layer_1.out_features == 64 and model.hparams.layer_1_dim == 64
    assert trainer.predict(model, DataLoader(torch.randn(4, 28 * 28), batch_size=2))[0].shape == (2, 64)


# -- Debug model ------------------------------------------------------------------------------------


class CountingModel(LitAutoEncoder):
    """The autoencoder with a predict step, counting the batches each stage sees."""

    def __init__(self):
        super().__init__(Encoder(), Decoder())
        self.seen = {"train": 0, "val": 0, "test": 0, "predict": 0}

    def training_step(self, batch, batch_idx):
        self.seen["train"] += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.seen["val"] += 1
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self.seen["test"] += 1
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen["predict"] += 1
        x, _ = batch
        return self.encoder(x.view(x.size(0), -1))


@pytest.mark.parametrize(("flag", "n"), [(True, 1), (7, 7)])
def test_fast_dev_run(workdir, flag, n):
    train_set, test_set = load_sets()
    model = CountingModel()
    trainer = Trainer(fast_dev_run=flag)
    trainer.fit(model, DataLoader(train_set, batch_size=4), DataLoader(test_set, batch_size=4))
    trainer.test(model, DataLoader(test_set, batch_size=4))
    predictions = trainer.predict(model, DataLoader(test_set, batch_size=4))
    assert model.seen == {"train": n, "val": n, "test": n, "predict": n}
    assert len(predictions) == n
    # no checkpoints, no logs
    assert checkpoints_under(workdir) == [] and not (workdir / "lightning_logs").exists()


def test_shorten_the_epoch(workdir):
    train_set, _ = load_sets()  # 160 images
    train_loader = DataLoader(train_set, batch_size=4)  # 40 batches
    val_loader = DataLoader(train_set, batch_size=1)  # 160 batches

    # use only 10% of training data and 1% of val data
    trainer = Trainer(limit_train_batches=0.1, limit_val_batches=0.01, max_epochs=1, num_sanity_val_steps=0)
    model = CountingModel()
    trainer.fit(model, train_loader, val_loader)
    assert (model.seen["train"], model.seen["val"]) == (4, 1)

    # use 10 batches of train and 5 batches of val
    trainer = Trainer(limit_train_batches=10, limit_val_batches=5, max_epochs=1, num_sanity_val_steps=0)
    model = CountingModel()
    trainer.fit(model, train_loader, val_loader)
    assert (model.seen["train"], model.seen["val"]) == (10, 5)


# -- 可视化metrics ----------------------------------------------------------------------------------


class MetricsModel(LitAutoEncoder):
    def __init__(self):
        super().__init__(Encoder(), Decoder())

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        value = loss.detach() * 2
        self.log("some_value", value)
        acc, metric_n = 1 - loss.detach(), loss.detach() / 2
        values = {"loss": loss, "acc": acc, "metric_n": metric_n}  # add more items if needed
        self.log_dict(values, prog_bar=True)
        return loss


def test_track_metrics_progress_bar_and_tensorboard(workdir, capsys):
    train_set, _ = load_sets()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=8, log_every_n_steps=2)
    trainer.fit(MetricsModel(), DataLoader(train_set, batch_size=4))
    assert {"some_value", "loss", "acc", "metric_n"} <= set(trainer.logged_metrics)
    out = capsys.readouterr().out
    # Epoch 0: 100%|███| 8/8 [00:00<00:00, 289.04it/s, v_num=0, loss=0.198, acc=0.802, metric_n=0.0990]
    assert re.search(
        r"Epoch 0: 100%\|[█ ]*\| 8/8 \[[0-9:]+<[0-9:]+, +[0-9.]+it/s, v_num=0, loss=[0-9.]+, acc=[0-9.]+, metric_n=[0-9.]+\]",
        out,
    ), out[-600:]

    # tensorboard --logdir=lightning_logs/  (TensorBoard is the default logger when installed)
    pytest.importorskip("tensorboard")
    events = glob.glob(str(workdir / "lightning_logs" / "version_0" / "events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(workdir / "lightning_logs" / "version_0"))
    acc.Reload()
    assert {"some_value", "loss", "acc", "metric_n"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [1, 3, 5, 7]


# -- Load model and predict ------------------------------------------------------------------------


def test_load_model_and_predict(workdir):
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(LitModel())
    trainer.save_checkpoint("best_model.ckpt")

    model = LitModel.load_from_checkpoint("best_model.ckpt")
    model.eval()
    x = torch.randn(1, 64)

    with torch.no_grad():
        y_hat = model(x)
    assert y_hat.shape == (1, 1)


def test_predict_step(workdir):
    class MyModel(LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(28 * 28, 10)

        def forward(self, x):
            return self.layer(x)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch)

    data_loader = DataLoader(torch.randn(10, 28 * 28), batch_size=4)
    model = MyModel()
    trainer = Trainer()
    predictions = trainer.predict(model, data_loader)
    assert [p.shape for p in predictions] == [(4, 10), (4, 10), (2, 10)]
    assert torch.allclose(torch.cat(predictions), model(torch.cat(list(data_loader))).detach())
