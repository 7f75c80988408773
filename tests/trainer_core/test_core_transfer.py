"""The tutorial's transfer learning: a frozen pretrained LightningModule and a torchvision resnet as backbones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer_core as L


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 100))

    def forward(self, x):
        return self.l1(x.flatten(1))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(100, 32), nn.ReLU(), nn.Linear(32, 3 * 8 * 8))

    def forward(self, x):
        return self.l1(x)


class AutoEncoder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def forward(self, x):
        return self.encoder(x)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        return F.mse_loss(self.decoder(self.encoder(x)), x.flatten(1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _images(n=16, size=8):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


def _trainer(tmp_path, **kw):
    return L.Trainer(
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False, **kw
    )


def test_frozen_pretrained_lightning_module_as_feature_extractor(tmp_path):
    pre = _trainer(tmp_path / "pre", max_epochs=1)
    pre.fit(AutoEncoder(), DataLoader(_images(), batch_size=4))
    path = pre.checkpoint_callback.best_model_path

    class CIFAR10Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.feature_extractor = AutoEncoder.load_from_checkpoint(path)
            self.feature_extractor.freeze()
            self.classifier = nn.Linear(100, 10)

        def forward(self, x):
            return self.classifier(self.feature_extractor(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.classifier.parameters(), lr=0.1)

    model = CIFAR10Classifier()
    frozen_before = {k: v.clone() for k, v in model.feature_extractor.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    assert not any(p.requires_grad for p in model.feature_extractor.parameters())
    assert not model.feature_extractor.training
    _trainer(tmp_path / "ft", max_epochs=2, enable_checkpointing=False).fit(model, DataLoader(_images(), batch_size=4))
    for k, v in model.feature_extractor.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    assert not torch.equal(head_before, model.classifier.weight)
    model.feature_extractor.unfreeze()
    assert all(p.requires_grad for p in model.feature_extractor.parameters()) and model.feature_extractor.training


def test_resnet18_backbone_transfer_and_reload(tmp_path):
    import torchvision.models as models

    class ImagenetTransferLearning(L.LightningModule):
        def __init__(self, num_target_classes: int = 10):
            super().__init__()
            self.save_hyperparameters()
            backbone = models.resnet18(weights=None)
            num_filters = backbone.fc.in_features
            layers = list(backbone.children())[:-1]
            self.feature_extractor = nn.Sequential(*layers)
            self.feature_extractor.eval()
            self.classifier = nn.Linear(num_filters, num_target_classes)

        def forward(self, x):
            with torch.no_grad():
                representations = self.feature_extractor(x).flatten(1)
            return self.classifier(representations)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.classifier.parameters(), lr=1e-3)

    class WithVal(ImagenetTransferLearning):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", F.cross_entropy(self(x), y))

    model = WithVal()
    backbone_before = model.feature_extractor[0].weight.detach().clone()
    bn_before = model.feature_extractor[1].running_mean.clone()
    trainer = _trainer(tmp_path, max_epochs=2)
    data = DataLoader(_images(n=4, size=32), batch_size=2)
    trainer.fit(model, data, data)
    assert torch.equal(backbone_before, model.feature_extractor[0].weight)
    # the backbone stays in eval mode through validation, so its BatchNorm statistics never move
    assert not model.feature_extractor.training and model.classifier.training
    assert torch.equal(bn_before, model.feature_extractor[1].running_mean)

    loaded = WithVal.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    loaded.freeze()
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.allclose(loaded(x), model(x))
    assert loaded.hparams.num_target_classes == 10
