"""The recipe registry: schemas from signatures, validation, user recipes from RUNYARD_RECIPES
modules and the ``runyard.recipes`` entry-point group."""

from __future__ import annotations

import sys
import textwrap

import pytest
from pydantic import ValidationError

from worker import recipes
from worker.recipes import Recipe, get_registry, trainer_schema, validate_trainer


def test_builtin_recipes_and_their_schemas() -> None:
    registry = get_registry("")
    assert {"mnist_autoencoder", "mnist_classifier", "digits_classifier", "transfer_learning"} <= set(registry)
    schema = registry["mnist_autoencoder"].params_schema()
    props = schema["properties"]
    # model __init__ and DataModule __init__ both contribute; worker-supplied arguments do not
    assert {"hidden_dim", "latent_dim", "lr", "batch_size", "val_fraction", "dataset"} <= set(props)
    assert "data_dir" not in props and "download" not in props
    assert props["hidden_dim"]["type"] == "integer" and props["hidden_dim"]["default"] == 64
    assert props["hidden_dim"]["minimum"] == 1 and props["lr"]["exclusiveMinimum"] == 0
    assert schema["additionalProperties"] is False
    assert "backbone" not in registry["transfer_learning"].params_schema()["properties"]
    for recipe in registry.values():
        assert recipe.description


def test_validate_params_fills_defaults_and_rejects_bad_values() -> None:
    recipe = get_registry("")["digits_classifier"]
    params = recipe.validate_params({"hidden_dim": "32"})
    assert params["hidden_dim"] == 32 and params["lr"] == 0.01 and params["dataset"] == "digits"
    for bad in ({"hidden_dim": 0}, {"hidden_dim": "wide"}, {"unknown": 1}, {"dataset": "mnist"}):
        with pytest.raises(ValidationError):
            recipe.validate_params(bad)


def test_cross_parameter_rules_are_validation_errors() -> None:
    recipe = get_registry("")["transfer_learning"]
    assert recipe.validate_params({"source_run_id": 3})["source_run_id"] == 3
    for bad in ({}, {"source_run_id": 3, "source_checkpoint_id": 4}):
        with pytest.raises(ValidationError, match="exactly one"):
            recipe.validate_params(bad)


def test_trainer_whitelist_and_schema() -> None:
    schema = trainer_schema()
    for name in ("max_epochs", "max_steps", "precision", "accelerator", "devices", "limit_train_batches",
                 "limit_val_batches", "limit_test_batches", "fast_dev_run", "val_check_interval",
                 "check_val_every_n_epoch", "accumulate_grad_batches", "gradient_clip_val", "log_every_n_steps",
                 "deterministic", "early_stopping_monitor", "early_stopping_patience", "early_stopping_mode",
                 "checkpoint_monitor", "checkpoint_save_top_k", "checkpoint_every_n_train_steps"):
        assert name in schema["properties"], name
    assert validate_trainer({"max_epochs": "3", "precision": "bf16-mixed"}) == {"max_epochs": 3, "precision": "bf16-mixed"}
    for bad in ({"callbacks": []}, {"default_root_dir": "/"}, {"precision": "8-bit"}, {"max_epochs": -5},
                {"limit_train_batches": -1}):
        with pytest.raises(ValidationError):
            validate_trainer(bad)


def test_user_recipes_from_module_and_entry_point(tmp_path, monkeypatch) -> None:
    (tmp_path / "team_recipes.py").write_text(textwrap.dedent('''
        from worker.recipes import Recipe
        from worker.recipes.builtin import DigitsClassifier
        from worker.recipes.data import digits_dataloaders

        RECIPES = [Recipe("team_digits", DigitsClassifier, digits_dataloaders, description="ours")]
    '''))
    (tmp_path / "plugin_recipes.py").write_text(textwrap.dedent('''
        from typing import Annotated
        from pydantic import Field
        from worker.recipes import Recipe
        from worker.recipes.builtin import LitAutoEncoder
        from worker.recipes.data import MNISTDataModule

        plugin = Recipe("plugin_autoencoder", LitAutoEncoder, MNISTDataModule)
    '''))
    dist = tmp_path / "runyard_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runyard-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[runyard.recipes]\nplugin = plugin_recipes:plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = get_registry("team_recipes")
        assert registry["team_digits"].description == "ours"
        assert "plugin_autoencoder" in registry
        assert "hidden_dim" in registry["plugin_autoencoder"].params_schema()["properties"]
    finally:
        for name in ("team_digits", "plugin_autoencoder"):
            recipes._registry.pop(name, None)
        recipes._loaded_from = None
        sys.modules.pop("team_recipes", None)
        sys.modules.pop("plugin_recipes", None)


def test_a_recipe_from_any_lightning_module_and_factory() -> None:
    import torch

    import trainer_core as L

    class Tiny(L.LightningModule):
        def __init__(self, width: int = 3, scale: float = 1.0) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(width, 1)

    def loaders(batch_size: int = 4, data_dir: str = ""):
        return [torch.zeros(1)], None, None

    recipe = Recipe("tiny", Tiny, loaders)
    assert set(recipe.params_schema()["properties"]) == {"width", "scale", "batch_size"}
    from worker.recipes import RecipeContext

    built = recipe.build({"width": 5}, RecipeContext(data_dir="/nowhere"))
    assert built.model.layer.in_features == 5 and built.train_dataloaders == [torch.zeros(1)] and not built.has_test
