"""The run's own process, through a real server and a real Celery worker (SQLite stack):
failures end the run with their reason and the worker takes the next run; the process sees only
its run token; resume, transfer learning, trainer arguments and checkpoints over HTTP."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import torch

from tests.worker.stack import Stack

TINY = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "limit_test_batches": 1,
        "log_every_n_steps": 1}


def logs(stack: Stack, run_id: int) -> list[dict]:
    return stack.client.get(f"/api/v1/runs/{run_id}/logs?tail=500").json()["lines"]


@pytest.mark.slow
@pytest.mark.parametrize("how, reason", [
    ("exception", "ValueError: the recipe broke on purpose"),
    ("exit3", "exited with code 3"),
    ("segfault", "killed by SIGSEGV"),
    ("sigkill", "killed by SIGKILL"),
])
def test_a_crash_in_the_run_fails_only_that_run(sqlite_stack: Stack, how: str, reason: str) -> None:
    run = sqlite_stack.submit("crash", {"how": how}, TINY)
    done = sqlite_stack.wait_status(run["id"], ("failed", "succeeded"), timeout=120)
    assert done["status"] == "failed" and reason in done["error"], done
    if how == "exception":
        assert "Traceback" in done["error"]
        assert any(line["stream"] == "stderr" and "broke on purpose" in line["text"]
                   for line in logs(sqlite_stack, run["id"]))
    # the worker survived and takes the next run
    nxt = sqlite_stack.submit("crash", {"how": "none"}, TINY)
    assert sqlite_stack.wait_status(nxt["id"], ("succeeded", "failed"), timeout=120)["status"] == "succeeded"


@pytest.mark.slow
def test_the_run_process_sees_its_run_token_and_no_credentials(sqlite_stack: Stack) -> None:
    run = sqlite_stack.submit("crash", {"how": "env"}, TINY)
    assert sqlite_stack.wait_status(run["id"], ("succeeded", "failed"), timeout=120)["status"] == "succeeded"
    texts = [line["text"] for line in logs(sqlite_stack, run["id"])]
    env = json.loads(next(t for t in texts if t.startswith("ENV "))[4:])
    assert {"RUNYARD_URL", "RUNYARD_TOKEN", "RUNYARD_RUN_ID", "RUNYARD_RUN_DIR"} <= set(env), env
    assert not {"RUNYARD_BROKER_URL", "RUNYARD_DATABASE_URL", "CELERY_BROKER_URL"} & set(env), env
    assert any(t == "TOKEN-KIND ryr_" for t in texts), texts  # a run token, not the worker's


@pytest.mark.slow
def test_cross_field_checks_run_in_the_run_process_and_fail_the_run(sqlite_stack: Stack) -> None:
    run = sqlite_stack.submit("transfer_learning", {"source_run_id": 999}, TINY)
    done = sqlite_stack.wait_status(run["id"], ("failed", "succeeded"), timeout=120)
    assert done["status"] == "failed" and "run 999 has no checkpoint" in done["error"], done
    both = sqlite_stack.submit("transfer_learning", {"source_run_id": 1, "source_checkpoint_id": 1}, TINY)
    done = sqlite_stack.wait_status(both["id"], ("failed", "succeeded"), timeout=120)
    assert done["status"] == "failed" and "exactly one of source_run_id" in done["error"], done


@pytest.mark.slow
def test_transfer_learning_downloads_the_source_checkpoint(sqlite_stack: Stack) -> None:
    source = sqlite_stack.submit("mnist_autoencoder", {"batch_size": 16, "latent_dim": 5}, TINY)
    assert sqlite_stack.wait_status(source["id"], ("succeeded", "failed"), timeout=180)["status"] == "succeeded"
    run = sqlite_stack.submit("transfer_learning", {"source_run_id": source["id"], "batch_size": 16}, TINY)
    done = sqlite_stack.wait_status(run["id"], ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded", done
    assert "test_acc" in sqlite_stack.metrics(run["id"])
    last = next(c for c in sqlite_stack.client.get(f"/api/v1/runs/{run['id']}/checkpoints").json() if c["is_last"])
    src = sqlite_stack.client.get(f"/api/v1/runs/{source['id']}/checkpoints").json()
    src_ckpt = next(c for c in src if c["is_best"] or c["is_last"])
    model_state = torch.load(io.BytesIO(sqlite_stack.client.get(last["download_url"]).content), weights_only=True)
    source_state = torch.load(io.BytesIO(sqlite_stack.client.get(src_ckpt["download_url"]).content),
                              weights_only=True)
    # the feature extractor is the source's encoder, untouched by training (frozen)
    assert torch.equal(model_state["state_dict"]["feature_extractor.encoder.l1.0.weight"],
                       source_state["state_dict"]["encoder.l1.0.weight"])


@pytest.mark.slow
def test_resume_from_another_runs_checkpoint_continues_its_steps(sqlite_stack: Stack) -> None:
    first = sqlite_stack.submit("digits_classifier", {}, {**TINY, "max_epochs": 2})
    assert sqlite_stack.wait_status(first["id"], ("succeeded", "failed"), timeout=120)["status"] == "succeeded"
    r = sqlite_stack.client.post(f"/api/v1/runs/{first['id']}/resume", json={})
    assert r.status_code == 201, r.text
    resumed = r.json()
    ckpt = next(c for c in sqlite_stack.client.get(f"/api/v1/runs/{first['id']}/checkpoints").json()
                if c["id"] == resumed["resume_checkpoint_id"])
    assert ckpt["step"] == 6 and ckpt["resumable"]
    done = sqlite_stack.wait_status(resumed["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done
    steps = sqlite_stack.metrics(resumed["id"], "train_loss")["train_loss"]["steps"]
    assert steps == list(range(6))  # max_epochs 2 reached already: the copied history, nothing lost


@pytest.mark.slow
def test_trainer_precision_and_accelerator_are_honoured(sqlite_stack: Stack) -> None:
    run = sqlite_stack.submit("digits_classifier", {}, {**TINY, "accelerator": "cpu", "precision": "bf16-mixed"})
    done = sqlite_stack.wait_status(run["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded" and done["device"] == "cpu", done
    texts = [line["text"] for line in logs(sqlite_stack, run["id"])]
    assert any("precision bf16-mixed" in t and "(cpu," in t for t in texts), texts
    if torch.cuda.is_available():
        return
    gpu = sqlite_stack.submit("digits_classifier", {}, {**TINY, "accelerator": "gpu"})
    done = sqlite_stack.wait_status(gpu["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "failed" and ("GPU" in done["error"] or "CUDA" in done["error"])


@pytest.mark.slow
def test_checkpoint_monitor_top_k_and_early_stopping_over_http(sqlite_stack: Stack) -> None:
    trainer = {**TINY, "max_epochs": 4, "limit_val_batches": 2, "checkpoint_monitor": "val_loss",
               "checkpoint_save_top_k": 2, "early_stopping_monitor": "val_loss", "early_stopping_patience": 10}
    run = sqlite_stack.submit("digits_classifier", {}, trainer)
    done = sqlite_stack.wait_status(run["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done
    rows = sqlite_stack.client.get(f"/api/v1/runs/{run['id']}/checkpoints").json()
    val = sqlite_stack.metrics(run["id"], "val_loss")["val_loss"]
    scored = [r for r in rows if r["monitor"] == "val_loss" and not r["resumable"]]
    assert len(scored) == 2, rows  # top 2 of 4 epochs kept, the others deleted on the server too
    best = next(r for r in rows if r["is_best"])
    assert best["score"] == pytest.approx(min(val["values"]))
    for row in rows:
        got = sqlite_stack.client.get(row["download_url"])
        assert got.status_code == 200 and got.headers["x-checksum-sha256"] == row["sha256"]


def test_missing_mnist_fails_at_once_naming_the_folder(tmp_path: Path) -> None:
    import trainer_core as L
    from worker.recipes import RecipeContext, get_recipe
    from worker.recipes.data import DatasetMissing

    built = get_recipe("mnist_classifier").build({}, RecipeContext(data_dir=str(tmp_path / "empty"), download=False))
    started = time.monotonic()
    with pytest.raises(DatasetMissing) as info:
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False).fit(built.model, datamodule=built.datamodule)
    assert time.monotonic() - started < 30
    assert str(tmp_path / "empty" / "MNIST" / "raw") in str(info.value)
    assert "train-images-idx3-ubyte" in str(info.value) and "RUNYARD_DATA_DIR" in str(info.value)


def test_missing_mnist_with_downloads_on_but_no_mirror_reachable(tmp_path: Path, monkeypatch) -> None:
    import trainer_core as L
    import worker.recipes.data as data
    from worker.recipes import RecipeContext, get_recipe

    monkeypatch.setattr(data, "_can_reach_mnist_mirror", lambda timeout=3.0: False)
    built = get_recipe("mnist_autoencoder").build({}, RecipeContext(data_dir=str(tmp_path / "offline"), download=True))
    with pytest.raises(data.DatasetMissing) as info:
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False).fit(built.model, datamodule=built.datamodule)
    assert "no MNIST mirror is reachable" in str(info.value)
    assert str(tmp_path / "offline" / "MNIST" / "raw") in str(info.value)
