"""Tokens: worker and run tokens, their scopes (403 naming what a token may do), attempt-bound
writes (409), hashed storage, and published recipes (on SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from tests.server.conftest import publish_builtin_recipes, worker_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claimed_run(client, token: str) -> tuple[dict, str]:
    run = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "trainer": {"max_epochs": 1}}).json()
    r = client.post(f"/api/v1/runs/{run['id']}/claim", json={"worker": "w1", "device": "cpu"}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json(), r.json()["token"]


def test_worker_routes_need_a_worker_token(client):
    run = client.post("/api/v1/runs", json={"recipe": "digits_classifier"}).json()
    r = client.post(f"/api/v1/runs/{run['id']}/claim", json={"worker": "w", "device": "cpu"})
    assert r.status_code == 401 and "worker token" in r.json()["detail"]
    r = client.post("/api/v1/workers", json={"name": "x"}, headers=bearer("ryw_not-a-real-token"))
    assert r.status_code == 401 and "unknown, revoked or expired" in r.json()["detail"]
    r = client.post("/api/v1/workers", json={"name": "x"}, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]


def test_a_worker_token_may_not_use_the_user_api(client):
    token = worker_token(client.app)
    run = client.post("/api/v1/runs", json={"recipe": "external"}).json()
    r = client.delete(f"/api/v1/runs/{run['id']}", headers=bearer(token))
    assert r.status_code == 403 and "worker token may only" in r.json()["detail"]
    assert client.get(f"/api/v1/runs/{run['id']}", headers=bearer(token)).status_code == 200


def test_a_run_token_may_only_touch_its_own_run_while_its_attempt_runs(client):
    token = worker_token(client.app)
    claim, run_token = claimed_run(client, token)
    run_id = claim["run"]["id"]
    assert claim["attempt"] == 1 and run_token.startswith("ryr_") and claim["resume"] is None
    other = client.post("/api/v1/runs", json={"recipe": "external"}).json()["id"]
    own = bearer(run_token)
    # its own run: read, write
    assert client.get(f"/api/v1/runs/{run_id}", headers=own).status_code == 200
    r = client.post(f"/api/v1/runs/{run_id}/metrics", json={"points": [{"key": "loss", "step": 0, "value": 1.0}]},
                    headers=own)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert client.post(f"/api/v1/runs/{run_id}/heartbeat", json={}, headers=own).json()["stop"] is False
    # anything else: 403 naming what it may do
    for method, path, body in [("GET", f"/api/v1/runs/{other}", None),
                               ("POST", f"/api/v1/runs/{other}/metrics", {"points": []}),
                               ("DELETE", f"/api/v1/runs/{run_id}", None),
                               ("POST", f"/api/v1/runs/{run_id}/cancel", None),
                               ("GET", "/api/v1/runs", None),
                               ("POST", "/api/v1/runs", {"recipe": "external"})]:
        r = client.request(method, path, json={} if body is None and method == "POST" else body, headers=own)
        assert r.status_code == 403, (method, path, r.text)
        assert f"belongs to run {run_id}" in r.json()["detail"] and "metrics" in r.json()["detail"]
    # the token never shows again: not in the run, its params, or any list
    for text in (client.get(f"/api/v1/runs/{run_id}").text, client.get("/api/v1/runs").text,
                 client.get("/api/v1/workers").text):
        assert run_token not in text and token not in text
    # finishing ends the token: later writes are refused
    r = client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "succeeded"}, headers=own)
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    r = client.post(f"/api/v1/runs/{run_id}/metrics", json={"points": [{"key": "loss", "step": 1, "value": 1.0}]},
                    headers=own)
    assert r.status_code == 401  # revoked with its attempt


def test_a_stale_attempt_cannot_write_after_the_run_was_requeued(client, app_settings):
    from server import store
    from server.db import get_engine, session_scope

    token = worker_token(client.app)
    claim, first = claimed_run(client, token)
    run_id = claim["run"]["id"]
    with session_scope(get_engine(app_settings.database_url)) as s:
        assert store.requeue_after_shutdown(s, run_id, 1) is not None
    r = client.post(f"/api/v1/runs/{run_id}/claim", json={"worker": "w2", "device": "cpu"}, headers=bearer(token))
    second = r.json()["token"]
    assert r.json()["attempt"] == 1  # a warm shutdown costs no attempt
    r = client.post(f"/api/v1/runs/{run_id}/heartbeat", json={}, headers=bearer(first))
    assert r.status_code == 401  # the first attempt's token was revoked when the run left running
    assert client.post(f"/api/v1/runs/{run_id}/heartbeat", json={}, headers=bearer(second)).status_code == 200
    # the worker reports a dead process for the attempt it ran, not another
    r = client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "failed", "error": "x", "attempt": 7},
                    headers=bearer(token))
    assert r.status_code == 409
    r = client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "failed", "error": "killed by SIGSEGV",
                                                            "attempt": 1}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["error"] == "killed by SIGSEGV"


def test_tokens_are_stored_hashed(client, app_settings):
    from server.db import get_engine, session_scope
    from server.models import Token

    token = worker_token(client.app)
    with session_scope(get_engine(app_settings.database_url)) as s:
        rows = s.scalars(select(Token)).all()
    assert rows and all(token not in (t.secret_hash + t.prefix + t.name) for t in rows)
    assert any(t.prefix == token[:10] for t in rows)


def test_anonymous_callers_cannot_finish_or_heartbeat_a_workers_run(client):
    run = client.post("/api/v1/runs", json={"recipe": "digits_classifier"}).json()
    assert client.post(f"/api/v1/runs/{run['id']}/finish", json={"status": "succeeded"}).status_code == 403
    assert client.post(f"/api/v1/runs/{run['id']}/heartbeat", json={}).status_code == 403
    assert client.patch(f"/api/v1/runs/{run['id']}", json={"status": "succeeded"}).status_code == 409


def test_published_recipes_validate_submissions_and_unserved_ones_queue_with_a_warning(client):
    name = f"w-{uuid.uuid4().hex[:6]}"
    token = publish_builtin_recipes(client, name=name, queues=("runyard",))
    recipes = {r["name"]: r for r in client.get("/api/v1/recipes").json()}
    assert recipes["digits_classifier"]["available"] is True and "runyard" in recipes["digits_classifier"]["queues"]
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "params": {"batch_size": "big"}})
    assert r.status_code == 422 and r.json()["field"] == "params.batch_size"
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "params": {"no_such": 1}})
    assert r.status_code == 422 and r.json()["field"] == "params.no_such"
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "trainer": {"max_epochs": -5}})
    assert r.status_code == 422 and r.json()["field"] == "trainer.max_epochs"
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "params": {}})
    assert r.status_code == 201 and r.json()["params"]["batch_size"] == 32  # defaults filled in
    # a recipe no live worker serves: shown unavailable, a submission is queued with a warning
    bare = {"name": f"lonely_{uuid.uuid4().hex[:6]}", "description": "", "params_schema": {"type": "object"},
            "trainer_schema": {}}
    client.post("/api/v1/workers", json={"name": f"{name}-gone", "queues": ["elsewhere"], "recipes": [bare]},
                headers=bearer(token))
    r = client.post("/api/v1/runs", json={"recipe": bare["name"]})
    assert r.status_code == 201 and r.json()["status"] == "queued"
    assert any("queue 'runyard'" in w for w in r.json()["warnings"]), r.json()
    r = client.post("/api/v1/runs", json={"recipe": "never_published"})
    assert r.status_code == 422 and r.json()["field"] == "recipe"


def test_a_retried_batch_is_stored_once(client):
    run = client.post("/api/v1/runs", json={"recipe": "external"}).json()["id"]
    body = {"points": [{"key": "loss", "step": i, "value": float(i)} for i in range(10)]}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post(f"/api/v1/runs/{run}/metrics", json=body, headers=key).json()
    again = client.post(f"/api/v1/runs/{run}/metrics", json=body, headers=key).json()
    assert first == {"accepted": 10, "duplicate": False} and again == {"accepted": 10, "duplicate": True}
    assert client.get(f"/api/v1/runs/{run}/metric-keys").json()[0]["count"] == 10
    lines = {"lines": [{"text": "hello"}]}
    assert client.post(f"/api/v1/runs/{run}/logs", json=lines, headers=key).status_code == 201
    assert client.post(f"/api/v1/runs/{run}/logs", json=lines, headers=key).json()["duplicate"] is True
    assert len(client.get(f"/api/v1/runs/{run}/logs").json()["lines"]) == 1
    r = client.post(f"/api/v1/runs/{run}/metrics", json=body, headers={"Idempotency-Key": "x" * 101})
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key"
    # a client_key makes creation retry-safe
    ck = uuid.uuid4().hex
    a = client.post("/api/v1/runs", json={"recipe": "external", "client_key": ck})
    b = client.post("/api/v1/runs", json={"recipe": "external", "client_key": ck})
    assert a.status_code == 201 and b.status_code == 200 and a.json()["id"] == b.json()["id"]
