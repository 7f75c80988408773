"""Model summary: Lightning's numbers, table layout, sizes from example_input_array, JSON form."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import trainer_core as L
from trainer_core.callbacks.model_summary import ModelSummary
from trainer_core.summary import format_summary, get_human_readable_count, summarize


class Net(nn.Module):
    """The tutorial's summary example: net / net.0 Linear 131 K / net.1 BatchNorm1d 1.0 K."""

    def __init__(self, example: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512))
        if example:
            self.example_input_array = torch.zeros(4, 256)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0  "),
        (12, "12  "),
        (999, "999  "),
        (1024, "1.0 K"),
        (131_584, "131 K"),
        (2_100_000, "2.1 M"),
        (3 * 10**9, "3.0 B"),
    ],
)
def test_human_readable_count(count, text):
    assert get_human_readable_count(count) == text


def test_table_matches_lightning_layout():
    text = format_summary(summarize(Net(), max_depth=2))
    assert text.splitlines() == [
        "  | Name  | Type        | Params | Mode ",
        "-" * 43,
        "0 | net   | Sequential  | 132 K  | train",
        "1 | net.0 | Linear      | 131 K  | train",
        "2 | net.1 | BatchNorm1d | 1.0 K  | train",
        "-" * 43,
        "132 K     Trainable params",
        "0         Non-trainable params",
        "132 K     Total params",
        "0.530     Total estimated model params size (MB)",
        "3         Modules in train mode",
        "0         Modules in eval mode",
    ]


def test_depth_one_lists_children_only_and_zero_lists_none():
    assert [layer.name for layer in summarize(Net(), max_depth=1).layers] == ["net"]
    assert summarize(Net(), max_depth=0).layers == []
    assert [layer.name for layer in summarize(Net(), max_depth=-1).layers] == ["net", "net.0", "net.1"]
    with pytest.raises(ValueError, match="max_depth"):
        summarize(Net(), max_depth=-2)


def test_frozen_and_eval_modules_are_counted():
    model = Net()
    model.net[0].weight.requires_grad_(False)
    model.net[1].eval()
    data = summarize(model, max_depth=2)
    assert data.trainable_params == 512 + 1024
    assert data.non_trainable_params == 256 * 512
    assert (data.train_modules, data.eval_modules) == (2, 1)
    assert [layer.mode for layer in data.layers] == ["train", "train", "eval"]


def test_sizes_from_example_input_array_restore_modes_and_grad():
    model = Net(example=True)
    model.net[1].eval()
    data = summarize(model, max_depth=2)
    assert [(layer.in_size, layer.out_size) for layer in data.layers] == [
        ([4, 256], [4, 512]),
        ([4, 256], [4, 512]),
        ([4, 512], [4, 512]),
    ]
    # training flags are as before, no hooks left behind, batch norm stats untouched (ran in eval)
    assert model.training and model.net.training and model.net[0].training and not model.net[1].training
    assert not model.net[0]._forward_hooks
    assert torch.equal(model.net[1].running_mean, torch.zeros(512))
    lines = format_summary(data).splitlines()
    assert lines[0] == "  | Name  | Type        | Params | Mode  | In sizes | Out sizes"
    assert lines[4] == "2 | net.1 | BatchNorm1d | 1.0 K  | eval  | [4, 512] | [4, 512] "


def test_to_dict_is_json_serialisable_and_complete():
    data = summarize(Net(example=True), max_depth=2).to_dict()
    again = json.loads(json.dumps(data))
    assert again["layers"][1] == {
        "name": "net.0",
        "type": "Linear",
        "params": 131_584,
        "mode": "train",
        "in_size": [4, 256],
        "out_size": [4, 512],
    }
    assert again["total_params"] == 132_608 and again["trainable_params"] == 132_608
    assert again["non_trainable_params"] == 0
    assert again["size_mb"] == pytest.approx(132_608 * 4 / 1e6)
    assert again["max_depth"] == 2 and again["has_sizes"] is True
    assert (again["train_modules"], again["eval_modules"]) == (3, 0)


def test_unknown_sizes_for_layers_not_called():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(2, 2)
            self.example_input_array = (torch.zeros(1, 3),)

        def forward(self, x):
            return self.used(x)

    data = summarize(Partial())
    assert data.layers[1].in_size == "?" and data.layers[1].out_size == "?"
    assert data.layers[0].in_size == [1, 3]


def test_example_input_is_cast_to_the_weights_dtype():
    model = Net(example=True).to(torch.bfloat16)  # what precision="bf16-true" does to the module
    data = summarize(model, max_depth=1)
    assert data.layers[0].in_size == [4, 256] and data.layers[0].out_size == [4, 512]


def test_a_failing_example_forward_warns_and_leaves_sizes_unknown():
    model = Net()
    model.example_input_array = torch.zeros(4, 3)  # wrong width: Linear(256, ...) fails
    with pytest.warns(UserWarning, match="could not run `example_input_array`"):
        data = summarize(model, max_depth=2)
    assert all(layer.in_size == "?" and layer.out_size == "?" for layer in data.layers)
    assert model.training and not model.net[0]._forward_hooks


class LitNet(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512))
        self.example_input_array = torch.zeros(2, 256)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, **kwargs):
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
    trainer.fit(LitNet(), DataLoader(torch.randn(8, 256), batch_size=4))
    return trainer


def test_model_summary_callback_prints_at_fit_start(tmp_path, capsys):
    callback = ModelSummary(max_depth=2)
    _fit(tmp_path, callbacks=[callback])
    out = capsys.readouterr().out
    assert "  | Name  | Type        | Params | Mode  | In sizes | Out sizes" in out
    assert "2 | net.1 | BatchNorm1d | 1.0 K  | train | [2, 512] | [2, 512] " in out
    assert "132 K     Total params" in out
    assert callback.last_summary is not None and len(callback.last_summary.layers) == 3


def test_model_summary_off(tmp_path, capsys):
    _fit(tmp_path, callbacks=[ModelSummary(max_depth=0)])
    assert "Total params" not in capsys.readouterr().out
    _fit(tmp_path, enable_model_summary=False)
    assert "Total params" not in capsys.readouterr().out
    _fit(tmp_path)  # the default: depth 1
    out = capsys.readouterr().out
    assert "0 | net  | Sequential | 132 K  | train" in out and "net.0" not in out
    with pytest.raises(ValueError, match="max_depth"):
        ModelSummary(max_depth=-3)
