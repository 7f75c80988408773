"""Point 9: a worker on "another machine" shares nothing with the server but the broker and the
HTTP port. The server and each worker get their own RUNYARD_HOME (no shared database file, no
shared artifact folder, no database URL in the worker's environment). Submit, train, checkpoint,
SIGKILL the worker mid-run; a second worker with its own empty folder resumes the run from the
checkpoint the server holds, and the metric history has no gap and no duplicate. On SQLite with
the embedded broker, and on PostgreSQL + Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import need_service, port_open
from tests.worker.conftest import PG_ADMIN_URL
from tests.worker.stack import Stack, stack_env

pytestmark = pytest.mark.slow


@pytest.fixture
def own_postgres_and_redis(redis_url: str):
    """A database and a Redis database of this test's own: no other stack's worker may take its runs."""
    import psycopg
    import redis

    need_service("PostgreSQL", port_open("127.0.0.1", 5432), "127.0.0.1:5432")
    name = f"runyard_split_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    used = int(redis_url.rsplit("/", 1)[1])
    for db in range(1, 15):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if db != used and client.dbsize() == 0 and client.set("runyard-split-tests", "1", nx=True):
            break
        client.close()
    else:
        pytest.fail("no empty Redis database among 1..14")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}", f"redis://127.0.0.1:6379/{db}"
    finally:
        client.flushdb()
        client.close()
        from server.db import dispose_engine

        dispose_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres_redis", marks=[pytest.mark.postgres, pytest.mark.redis])])
def split_stack(request: pytest.FixtureRequest, tmp_path: Path, small_mnist: Path):
    extra = {}
    if request.param == "postgres_redis":
        database_url, broker_url = request.getfixturevalue("own_postgres_and_redis")
        extra = {"database_url": database_url, "broker_url": broker_url}
    stack = Stack(stack_env(tmp_path / "server-home", small_mnist, **extra), tmp_path / "logs")
    try:
        stack.start_server()
        yield stack
    finally:
        stack.close()


def test_a_worker_with_its_own_folder_resumes_a_run_killed_on_another(split_stack: Stack, tmp_path: Path) -> None:
    stack = split_stack
    homes = [tmp_path / f"worker-home-{i}" for i in (1, 2)]
    stack.start_worker("far-worker-1", home=homes[0])
    total = 150
    run_id = stack.submit(
        "slow_regression", {"step_delay": 0.03, "n": total * 8},
        {"max_epochs": 1, "log_every_n_steps": 1, "checkpoint_every_n_train_steps": 20, "limit_val_batches": 1},
    )["id"]
    stack.wait_status(run_id, "running", timeout=60)
    last = stack.wait_last_checkpoint(run_id, 40, timeout=90)
    stack.wait_metric(run_id, "train_loss", last["step"] + 5)
    stack.kill_workers()  # SIGKILL the whole worker: no cleanup, no ack, no final status
    # the resume checkpoint lives on the server: in its artifact folder, not the worker's
    # (read again: newer ones replaced it while the run went on)
    [last] = [c for c in stack.client.get(f"/api/v1/runs/{run_id}/checkpoints").json() if c["is_last"]]
    server_home = Path(stack.env["RUNYARD_HOME"])
    assert (server_home / "artifacts" / str(run_id) / "checkpoints" / last["filename"]).is_file()
    assert not list(homes[0].rglob("runyard.db")), "the worker must not have a database"

    stack.start_worker("far-worker-2", home=homes[1])
    run = stack.wait_status(run_id, "succeeded", timeout=150)
    assert run["attempt"] == 2 and run["worker_host"] != ""
    steps = stack.metrics(run_id, "train_loss")["train_loss"]["steps"]
    assert steps == list(range(total)), f"duplicates or gaps: {len(steps)} points"
    logs = stack.client.get(f"/api/v1/runs/{run_id}/logs?tail=1000").json()["lines"]
    assert any("attempt 2: resuming from its own checkpoint" in line["text"] for line in logs), logs[-20:]
    assert not list(homes[1].rglob("runyard.db")) and not (homes[1] / "artifacts" / str(run_id)).exists()


def test_the_worker_token_never_shows_in_logs_or_answers(split_stack: Stack, tmp_path: Path) -> None:
    stack = split_stack
    stack.start_worker(f"w-{uuid.uuid4().hex[:6]}", home=tmp_path / "wh")
    token = stack.worker_token()
    run = stack.submit("slow_regression", {"n": 64}, {"max_epochs": 1, "log_every_n_steps": 1})
    done = stack.wait_status(run["id"], ("succeeded", "failed"), timeout=90)
    assert done["status"] == "succeeded", done
    answers = [stack.client.get(f"/api/v1/runs/{run['id']}").text,
               stack.client.get(f"/api/v1/runs/{run['id']}/logs?tail=1000").text,
               stack.client.get("/api/v1/workers").text, stack.client.get("/api/v1/runs").text]
    for text in answers + [path.read_text(errors="replace") for path in stack.logs.glob("*.log")]:
        assert token not in text
        assert "ryr_" not in text  # nor any run token
