"""The runs query language (issue 14): parsing, 422 with the column, and every kind of field,
sort and column, against the real API on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from server.query import QueryError, compile_query


def _run(client, project, name, params=None, hyper=None, tags=None, metrics=None, status=None):
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": name, "project": project,
                                          "params": params or {}, "hyperparameters": hyper or {},
                                          "tags": tags or []})
    assert r.status_code == 201, r.text
    run = r.json()
    if metrics:
        points = [{"key": k, "step": i, "value": v} for k, vs in metrics.items() for i, v in enumerate(vs)]
        r = client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points})
        assert r.status_code == 200, r.text
    if status:
        assert client.patch(f"/api/v1/runs/{run['id']}", json={"status": status}).status_code == 200
    return run["id"]


@pytest.fixture(scope="module")
def world(client):
    project = f"q-{uuid.uuid4().hex[:8]}"
    ids = {
        "a": _run(client, project, "alpha-resnet", {"lr": 0.001, "opt": {"name": "adam"}}, {"batch": 32},
                  ["baseline"], {"val_loss": [0.5, 0.05, 0.2], "acc": [0.9]}, "succeeded"),
        "b": _run(client, project, "beta-resnet", {"lr": 0.1, "opt": {"name": "sgd"}}, {"batch": 64},
                  ["baseline", "wide"], {"val_loss": [0.9, 0.3]}, "failed"),
        "c": _run(client, project, "gamma-vit", {"lr": 0.005, "opt": {"name": "adam"}}, {"batch": 32},
                  [], {"val_loss": [0.4]}),
        "d": _run(client, project, "delta", {"lr": 0.02, "flag": True}, {}, ["other"]),
    }
    return project, ids


def _names(client, project, q, sort="name", **extra):
    r = client.get("/api/v1/runs", params={"project": project, "q": q, "sort": sort, **extra})
    assert r.status_code == 200, r.text
    return [i["name"] for i in r.json()["items"]]


def test_parser_errors_name_the_column():
    for text, column in [("params.lr <", 12), ("bogus.x = 1", 1), ("a and (b", 9), ("name ~ x$", 9),
                         ("lr = 1 and", 11), ("metrics.loss < abc", 16), ("created_at > notadate", 14)]:
        with pytest.raises(QueryError) as info:
            compile_query(text, "sqlite")
        assert info.value.column == column, (text, info.value.column, info.value.message)
    compile_query("params.lr < 0.01 and (tag:baseline or metrics.val_loss.min < 0.1) and status in (succeeded, "
                  "failed)", "postgresql")
    compile_query("  ", "sqlite")


def test_queries_over_params_hparams_tags_metrics_and_fields(client, world):
    project, _ = world
    assert _names(client, project, "resnet") == ["alpha-resnet", "beta-resnet"]  # a bare word: name contains
    assert _names(client, project, '"VIT"') == ["gamma-vit"]
    assert _names(client, project, "alpha-res") == ["alpha-resnet"]
    assert _names(client, project, "a-resnet  ") == ["alpha-resnet", "beta-resnet"]  # plain text, as before
    assert _names(client, project, "50%") == []
    assert _names(client, project, "params.lr < 0.01") == ["alpha-resnet", "gamma-vit"]
    assert _names(client, project, "params.opt.name = adam") == ["alpha-resnet", "gamma-vit"]
    assert _names(client, project, "params.opt.name ~ GD") == ["beta-resnet"]
    assert _names(client, project, "params.flag = true") == ["delta"]
    assert _names(client, project, "hparams.batch = 64") == ["beta-resnet"]
    assert _names(client, project, "hparams.batch = null") == ["delta"]
    assert _names(client, project, "tag:baseline") == ["alpha-resnet", "beta-resnet"]
    assert _names(client, project, "tags = wide or tags ~ OTH") == ["beta-resnet", "delta"]
    assert _names(client, project, "not tag:baseline") == ["delta", "gamma-vit"]
    assert _names(client, project, "metrics.val_loss.min < 0.1") == ["alpha-resnet"]
    assert _names(client, project, "metrics.val_loss < 0.25") == ["alpha-resnet"]  # last
    assert _names(client, project, "metrics.val_loss.max >= 0.9") == ["beta-resnet"]
    assert _names(client, project, "metrics.acc = null") == ["beta-resnet", "delta", "gamma-vit"]
    assert _names(client, project, "status in (succeeded, failed)") == ["alpha-resnet", "beta-resnet"]
    assert _names(client, project, "status != running") == ["alpha-resnet", "beta-resnet"]
    assert _names(client, project, "params.lr < 0.01 and (tag:baseline or metrics.val_loss.min < 0.1) and "
                                   "status in (succeeded, failed)") == ["alpha-resnet"]
    assert _names(client, project, f"project = {project} and name ~ ta") == ["beta-resnet", "delta"]
    assert _names(client, project, "created_at > \"2000-01-01\" and id > 0 and duration >= 0") == \
        ["alpha-resnet", "beta-resnet", "delta", "gamma-vit"]


def test_a_bad_query_is_422_with_the_column(client, world):
    project, _ = world
    for q, column in [("params.lr <", 12), ("nosuch.field = 3", 1), ("(tag:x", 7)]:
        r = client.get("/api/v1/runs", params={"project": project, "q": q})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["field"] == "q" and body["column"] == column, body
        assert f"column {column}" in body["detail"]
    for params, field in [({"sort": "bogus"}, "sort"), ({"sort": "tags"}, "sort"), ({"columns": "x.y"}, "columns"),
                          ({"status": "nope"}, "status")]:
        r = client.get("/api/v1/runs", params={"project": project, **params})
        assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_sort_and_columns(client, world):
    project, _ = world
    assert _names(client, project, "", sort="-metrics.val_loss.min") == \
        ["gamma-vit", "beta-resnet", "alpha-resnet", "delta"]  # NULLs last
    assert _names(client, project, "", sort="metrics.val_loss.min") == \
        ["alpha-resnet", "beta-resnet", "gamma-vit", "delta"]
    assert _names(client, project, "", sort="params.lr") == ["alpha-resnet", "gamma-vit", "delta", "beta-resnet"]
    assert _names(client, project, "", sort="-metric:val_loss") == ["gamma-vit", "beta-resnet", "alpha-resnet",
                                                                     "delta"]
    r = client.get("/api/v1/runs", params={"project": project, "sort": "name", "columns":
                                           "params.lr,hparams.batch,metrics.val_loss.max,metrics.val_loss,tags,"
                                           "status,project"})
    assert r.status_code == 200, r.text
    first = r.json()["items"][0]
    assert first["tags"] == ["baseline"]
    assert first["values"] == {"params.lr": 0.001, "hparams.batch": 32, "metrics.val_loss.max": 0.5,
                               "metrics.val_loss": 0.2, "tags": ["baseline"], "status": "succeeded",
                               "project": project}
    assert r.json()["items"][2]["values"]["metrics.val_loss"] is None


def test_keys_and_groups(client, world):
    project, _ = world
    r = client.get("/api/v1/runs/keys", params={"project": project})
    assert r.status_code == 200, r.text
    keys = r.json()
    assert keys["params"] == ["flag", "lr", "opt.name"]
    assert keys["hparams"] == ["batch"]
    assert keys["metrics"] == ["acc", "val_loss"]
    assert keys["tags"] == ["baseline", "other", "wide"]
    assert "status" in keys["fields"] and "name" in keys["fields"]
    r = client.get("/api/v1/runs/groups", params={"project": project, "group_by": "params.opt.name",
                                                  "columns": "metrics.val_loss.min,params.lr,name"})
    assert r.status_code == 200, r.text
    groups = {g["value"]: g for g in r.json()["groups"]}
    assert groups["adam"]["count"] == 2 and groups["sgd"]["count"] == 1 and groups[None]["count"] == 1
    agg = groups["adam"]["aggregates"]
    assert agg["metrics.val_loss.min"] == {"mean": pytest.approx(0.225), "min": 0.05, "max": 0.4}
    assert agg["params.lr"]["max"] == pytest.approx(0.005)
    assert "name" not in agg
    r = client.get("/api/v1/runs/groups", params={"project": project, "group_by": "status", "q": "tag:baseline"})
    assert {g["value"]: g["count"] for g in r.json()["groups"]} == {"succeeded": 1, "failed": 1}
    r = client.get("/api/v1/runs/groups", params={"project": project, "group_by": "tags"})
    assert {g["value"]: g["count"] for g in r.json()["groups"]} == {"baseline": 2, "wide": 1, "other": 1, None: 1}
    for params, field in [({"group_by": "zzz"}, "group_by"), ({"group_by": "status", "q": "a ="}, "q")]:
        r = client.get("/api/v1/runs/groups", params={"project": project, **params})
        assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_summaries_follow_a_history_cut(client, world):
    """Points deleted after a step (what a resume does) are no longer in the summaries."""
    from server import store
    from server.db import session_factory

    project, ids = world
    factory = session_factory(client.app.state.engine)
    with factory() as session:
        store.delete_metric_points_after(session, ids["a"], 0)
    assert _names(client, project, "metrics.val_loss.min < 0.1") == []
    assert _names(client, project, "metrics.val_loss = 0.5") == ["alpha-resnet"]


def test_hyperparameters_logged_later_are_queryable(client, world):
    project, ids = world
    r = client.put(f"/api/v1/runs/{ids['d']}/hyperparameters", json={"batch": 128, "opt": {"beta": 0.9}})
    assert r.status_code == 200, r.text
    assert _names(client, project, "hparams.batch = 128 and hparams.opt.beta > 0.5") == ["delta"]
    r = client.put(f"/api/v1/runs/{ids['d']}/hyperparameters?merge=true", json={"batch": 256})
    assert _names(client, project, "hparams.batch >= 128") == ["delta"]
    assert _names(client, project, "hparams.batch = 128") == []
    assert "opt.beta" in client.get("/api/v1/runs/keys", params={"project": project}).json()["hparams"]


def test_the_migration_backfills_existing_runs(tmp_path):
    """Runs stored before migration 0010 get their params, hyperparameters, metric summaries and keys."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from migrations import upgrade_database
    from server import runs_query

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_database(url, "0009")
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'old', '2026-01-01 00:00:00')"))
        c.execute(text(
            "INSERT INTO runs (id, name, project_id, recipe, params, trainer, hyperparameters, status, created_at, "
            "updated_at, attempt, max_attempts, cancel_requested, queue) VALUES (7, 'legacy', 1, 'external', "
            "'{\"lr\": 0.5, \"opt\": {\"name\": \"sgd\"}}', '{}', '{\"batch\": 8}', 'succeeded', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00', 1, 1, 0, 'runyard')"))
        for i, (step, value) in enumerate([(0, 0.9), (1, 0.1), (2, 0.4)], start=1):
            c.execute(text("INSERT INTO metric_points (id, run_id, key, step, value, wall_time) VALUES "
                           f"({i}, 7, 'val_loss', {step}, {value}, 1.0)"))
    engine.dispose()
    upgrade_database(url)
    engine = create_engine(url)
    with Session(engine) as session:
        def names(q: str) -> list[str]:
            return [r.name for r in runs_query.list_runs(session, project="old", q=q, sort="name", limit=10, offset=0,
                                                         project_ids=None)[0]]

        assert names("params.lr = 0.5 and params.opt.name = sgd and hparams.batch = 8") == ["legacy"]
        assert names("metrics.val_loss.min = 0.1 and metrics.val_loss.max = 0.9 and metrics.val_loss = 0.4") == \
            ["legacy"]
        keys = runs_query.list_keys(session, project="old", project_ids=None)
        assert (keys["params"], keys["hparams"], keys["metrics"]) == (["lr", "opt.name"], ["batch"], ["val_loss"])
    engine.dispose()
