"""Submit through the API -> a real Celery worker process trains -> everything lands in the store."""

from __future__ import annotations

import io
import time

import pytest
import torch

from tests.worker.stack import Stack

pytestmark = pytest.mark.slow

TINY = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "limit_test_batches": 2,
        "log_every_n_steps": 1}


def check_succeeded_run(stack: Stack, recipe: str, params: dict, trainer: dict) -> dict:
    submitted = stack.submit(recipe, params, trainer)
    run = stack.wait_status(submitted["id"], "succeeded", timeout=120)
    run_id = run["id"]
    assert run["attempt"] == 1 and run["device"] == "cpu" and run["worker_host"]
    assert run["started_at"] and run["ended_at"] and run["error"] is None

    series = stack.metrics(run_id)
    assert {"train_loss", "val_loss", "test_loss"} <= set(series) or {"train_loss", "val_loss", "test_acc"} <= set(series)
    steps = series["train_loss"]["steps"]
    assert steps == sorted(set(steps)) and len(steps) == trainer["max_epochs"] * trainer["limit_train_batches"]

    summary = stack.client.get(f"/api/v1/runs/{run_id}/summary").json()
    assert summary and summary.get("total_params", 0) > 0, summary

    logs = stack.client.get(f"/api/v1/runs/{run_id}/logs?tail=200").json()["lines"]
    assert any(f"run {run_id} attempt 1" in line["text"] for line in logs), logs

    hparams = stack.client.get(f"/api/v1/runs/{run_id}/hyperparameters").json()
    assert hparams.get("lr") is not None, hparams

    checkpoints = stack.client.get(f"/api/v1/runs/{run_id}/checkpoints").json()
    assert checkpoints, "no checkpoint registered"
    assert sum(c["is_last"] for c in checkpoints) == 1 and sum(c["is_best"] for c in checkpoints) == 1
    for ckpt in checkpoints:
        assert ckpt["path"].startswith(f"{run_id}/checkpoints/") and ckpt["size"] > 0 and len(ckpt["sha256"]) == 64
    last = next(c for c in checkpoints if c["is_last"])
    assert last["step"] == trainer["max_epochs"] * trainer["limit_train_batches"]
    return {"run": run, "checkpoints": checkpoints, "series": series}


def download(stack: Stack, checkpoint_id: int) -> bytes:
    response = stack.client.get(f"/api/v1/checkpoints/{checkpoint_id}/download")
    assert response.status_code == 200
    return response.content


def test_mnist_autoencoder_end_to_end_on_sqlite(sqlite_stack: Stack) -> None:
    result = check_succeeded_run(sqlite_stack, "mnist_autoencoder", {"batch_size": 16, "hidden_dim": 16}, TINY)
    best = next(c for c in result["checkpoints"] if c["is_best"])
    data = download(sqlite_stack, best["id"])
    import hashlib

    assert hashlib.sha256(data).hexdigest() == best["sha256"]
    checkpoint = torch.load(io.BytesIO(data), weights_only=True)
    assert checkpoint["global_step"] == best["step"] and checkpoint["hyper_parameters"]["hidden_dim"] == 16

    from worker.recipes.builtin import LitAutoEncoder

    path = sqlite_stack.env["RUNYARD_HOME"] + "/downloaded.ckpt"
    with open(path, "wb") as f:
        f.write(data)
    model = LitAutoEncoder.load_from_checkpoint(path)
    assert model.hparams.hidden_dim == 16
    assert torch.equal(model.encoder.l1[0].weight, checkpoint["state_dict"]["encoder.l1.0.weight"])


def test_digits_classifier_end_to_end_on_sqlite(sqlite_stack: Stack) -> None:
    result = check_succeeded_run(sqlite_stack, "digits_classifier", {"batch_size": 32}, TINY)
    assert result["run"]["params"]["dataset"] == "digits"
    assert "test_acc" in result["series"]


@pytest.mark.postgres
@pytest.mark.redis
def test_end_to_end_on_postgres_and_redis(pg_redis_stack: Stack) -> None:
    result = check_succeeded_run(pg_redis_stack, "mnist_autoencoder", {"batch_size": 16}, TINY)
    last = next(c for c in result["checkpoints"] if c["is_last"])
    torch.load(io.BytesIO(download(pg_redis_stack, last["id"])), weights_only=True)


def broker_messages(stack: Stack) -> int:
    import sqlite3

    with sqlite3.connect(f"{stack.env['RUNYARD_HOME']}/broker.db") as db:
        return db.execute("select count(*) from kombu_message").fetchone()[0]


def queued_messages(stack: Stack) -> list[dict]:
    """The task messages waiting in the embedded (SQLite) broker, decoded: what a worker would get."""
    import base64
    import json
    import sqlite3

    with sqlite3.connect(f"{stack.env['RUNYARD_HOME']}/broker.db") as db:
        rows = db.execute("select payload from kombu_message where visible = 1").fetchall()
    out = []
    for (payload,) in rows:
        message = json.loads(payload)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        out.append({"task": message["headers"]["task"], "id": message["headers"]["id"], "args": args,
                    "kwargs": kwargs, "content_type": message["content-type"]})
    return out


def test_recipes_endpoint_serves_schemas_from_signatures_including_user_recipes(sqlite_stack: Stack) -> None:
    recipes = {r["name"]: r for r in sqlite_stack.client.get("/api/v1/recipes").json()}
    assert {"mnist_autoencoder", "mnist_classifier", "digits_classifier", "transfer_learning"} <= set(recipes)
    # slow_regression comes from RUNYARD_RECIPES=tests.worker.recipes_for_tests: model __init__ + factory
    slow = recipes["slow_regression"]
    props = slow["params_schema"]["properties"]
    assert set(props) == {"step_delay", "lr", "n", "batch_size", "fail", "num_workers"}
    assert props["step_delay"]["type"] == "number" and props["step_delay"]["maximum"] == 5
    assert props["n"]["type"] == "integer" and props["n"]["minimum"] == 8 and props["n"]["default"] == 512
    assert props["fail"]["type"] == "boolean"
    assert slow["description"] == "Test recipe: slow linear regression."
    assert "precision" in slow["trainer_schema"]["properties"]


def test_unknown_recipe_and_bad_params_are_422_and_queue_nothing(sqlite_stack: Stack) -> None:
    before = sqlite_stack.client.get("/api/v1/runs?limit=1000").json()["total"]
    messages = broker_messages(sqlite_stack)
    cases = [
        {"recipe": "rm_rf", "params": {}},
        # names of code anywhere else are just unknown recipes: nothing is imported or called
        {"recipe": "os.system", "params": {"command": "touch /tmp/runyard-pwned"}},
        {"recipe": "tests.worker.recipes_for_tests:SlowRegressor", "params": {}},
        {"recipe": "tests.worker.recipes_for_tests.regression_data", "params": {}},
        {"recipe": "__import__('os').system('true')", "params": {}},
        {"recipe": "mnist_autoencoder", "params": {"hidden_dim": -3}},
        {"recipe": "mnist_autoencoder", "params": {"no_such_param": 1}},
        {"recipe": "mnist_autoencoder", "params": {"hidden_dim": "wide"}},
        {"recipe": "mnist_autoencoder", "trainer": {"callbacks": "os.system"}},
        {"recipe": "mnist_autoencoder", "trainer": {"max_epochs": "many"}},
    ]
    for body in cases:
        response = sqlite_stack.client.post("/api/v1/runs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"]
    time.sleep(0.5)
    assert sqlite_stack.client.get("/api/v1/runs?limit=1000").json()["total"] == before
    assert broker_messages(sqlite_stack) == messages
