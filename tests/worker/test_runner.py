"""The run task's body (``worker.runner.execute_run``) in this process, on a real SQLite store:
recipes that fail, transfer learning from an earlier run, resuming from another run's checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from sqlalchemy.orm import Session

from server import store
from server.db import get_engine, upgrade_database
from server.settings import Settings
from worker.runner import execute_run

TINY = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "limit_test_batches": 1,
        "log_every_n_steps": 1}


@pytest.fixture
def settings(tmp_path: Path, small_mnist: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", data_dir=small_mnist, download_data=False, heartbeat_timeout=5)
    settings.ensure_dirs()
    upgrade_database(settings.database_url)
    return settings


def new_run(settings: Settings, recipe: str, params: dict, trainer: dict, **extra) -> int:
    from worker.recipes import get_recipe

    r = get_recipe(recipe)
    with Session(get_engine(settings.database_url)) as s:
        return store.create_run(s, recipe=recipe, params=r.validate_params(params), trainer=r.validate_trainer(trainer),
                                **extra).id


def get(settings: Settings, run_id: int):
    with Session(get_engine(settings.database_url)) as s:
        return store.require_run(s, run_id)


def test_missing_mnist_fails_at_once_naming_the_folder(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"data_dir": tmp_path / "empty"})
    run_id = new_run(settings, "mnist_classifier", {}, TINY)
    started = time.monotonic()
    assert execute_run(run_id, settings) == "failed"
    assert time.monotonic() - started < 30
    run = get(settings, run_id)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in run.error
    assert "train-images-idx3-ubyte" in run.error and "RUNYARD_DATA_DIR" in run.error


def test_missing_mnist_with_downloads_on_but_no_mirror_reachable(settings: Settings, tmp_path: Path,
                                                                 monkeypatch) -> None:
    import worker.recipes.data as data

    monkeypatch.setattr(data, "_can_reach_mnist_mirror", lambda timeout=3.0: False)
    settings = settings.model_copy(update={"data_dir": tmp_path / "offline", "download_data": True})
    run_id = new_run(settings, "mnist_autoencoder", {}, TINY)
    started = time.monotonic()
    assert execute_run(run_id, settings) == "failed"
    assert time.monotonic() - started < 30
    error = get(settings, run_id).error
    assert "no MNIST mirror is reachable" in error and str(tmp_path / "offline" / "MNIST" / "raw") in error
    assert "Traceback" not in error  # a sentence for the user, not a stack


def test_an_exception_fails_the_run_with_its_traceback_and_a_second_delivery_is_skipped(settings: Settings) -> None:
    run_id = new_run(settings, "transfer_learning", {"source_run_id": 999}, TINY)
    assert execute_run(run_id, settings) == "failed"
    run = get(settings, run_id)
    assert "run 999 does not exist" in run.error and "Traceback" in run.error and run.attempt == 1
    assert run.status == "failed" and run.ended_at is not None
    with Session(get_engine(settings.database_url)) as s:
        lines = store.get_log_lines(s, run_id, tail=200)[0]
    # the traceback went to stderr, which is captured into the run's log lines too
    assert any(line.stream == "stderr" and "run 999 does not exist" in line.text for line in lines)
    assert execute_run(run_id, settings) == "skipped"


def test_transfer_learning_from_an_autoencoder_run(settings: Settings) -> None:
    source = new_run(settings, "mnist_autoencoder", {"batch_size": 16, "latent_dim": 5}, TINY)
    assert execute_run(source, settings) == "succeeded"
    run_id = new_run(settings, "transfer_learning", {"source_run_id": source, "batch_size": 16}, TINY)
    assert execute_run(run_id, settings) == "succeeded", get(settings, run_id).error
    with Session(get_engine(settings.database_url)) as s:
        last = store.last_checkpoint(s, run_id)
        source_ckpt = store.last_checkpoint(s, source)
        assert "test_acc" in store.read_metrics(s, run_id)
    from worker.recipes.builtin import TransferLearningClassifier

    model = TransferLearningClassifier.load_from_checkpoint(settings.artifact_root / last.path)
    source_state = torch.load(settings.artifact_root / source_ckpt.path, weights_only=True)["state_dict"]
    # the feature extractor is the source's encoder, untouched by training (frozen)
    assert torch.equal(model.feature_extractor.encoder.l1[0].weight, source_state["encoder.l1.0.weight"])
    assert model.classifier.in_features == 5


def test_resume_from_another_runs_checkpoint_continues_its_steps(settings: Settings) -> None:
    first = new_run(settings, "digits_classifier", {}, {**TINY, "max_epochs": 2})
    assert execute_run(first, settings) == "succeeded"
    with Session(get_engine(settings.database_url)) as s:
        ckpt = store.last_checkpoint(s, first)
        assert ckpt.step == 6
    resumed = new_run(settings, "digits_classifier", {}, {**TINY, "max_epochs": 3}, resumed_from_id=first,
                      resume_checkpoint_id=ckpt.id)
    assert execute_run(resumed, settings) == "succeeded", get(settings, resumed).error
    with Session(get_engine(settings.database_url)) as s:
        steps = store.read_metrics(s, resumed, ["train_loss"])["train_loss"]["steps"]
    assert steps == [6, 7, 8]


def test_trainer_precision_and_accelerator_are_honoured(settings: Settings) -> None:
    run_id = new_run(settings, "digits_classifier", {}, {**TINY, "accelerator": "cpu", "precision": "bf16-mixed"})
    assert execute_run(run_id, settings) == "succeeded", get(settings, run_id).error
    run = get(settings, run_id)
    assert run.device == "cpu"
    with Session(get_engine(settings.database_url)) as s:
        texts = [line.text for line in store.get_log_lines(s, run_id, tail=200)[0]]
    assert any("precision bf16-mixed" in t and "(cpu," in t for t in texts), texts

    if torch.cuda.is_available():
        return
    gpu_run = new_run(settings, "digits_classifier", {}, {**TINY, "accelerator": "gpu"})
    assert execute_run(gpu_run, settings) == "failed"
    assert "GPU" in get(settings, gpu_run).error or "CUDA" in get(settings, gpu_run).error


def test_checkpoint_monitor_and_early_stopping_arguments(settings: Settings) -> None:
    trainer = {**TINY, "max_epochs": 4, "limit_val_batches": 2, "checkpoint_monitor": "val_loss",
               "checkpoint_save_top_k": 2, "early_stopping_monitor": "val_loss", "early_stopping_patience": 10}
    run_id = new_run(settings, "digits_classifier", {}, trainer)
    assert execute_run(run_id, settings) == "succeeded", get(settings, run_id).error
    with Session(get_engine(settings.database_url)) as s:
        rows = store.list_checkpoints(s, run_id)
        val = store.read_metrics(s, run_id, ["val_loss"])["val_loss"]
    scored = [r for r in rows if r.monitor == "val_loss"]
    assert len(scored) == 2  # top 2 of 4 epochs kept, the others deleted (files and rows)
    best = next(r for r in rows if r.is_best)
    assert best.score == pytest.approx(min(val["values"]))
    assert sum(r.is_last for r in rows) == 1
    for row in rows:
        assert (settings.artifact_root / row.path).is_file()
    files = sorted(p.name for p in (settings.artifact_root / str(run_id) / "checkpoints").iterdir())
    assert len(files) == len(rows), files
