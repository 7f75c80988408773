"""REST API tests against the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from tests.conftest import need_service


def post_json(client, path, body):
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def external_run(client, name="r", project="default"):
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": name, "project": project})
    assert r.status_code == 201, r.text
    return r.json()


def test_healthz_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    doc = client.get("/openapi.json").json()
    assert "/api/v1/runs/{run_id}/metrics" in doc["paths"]
    assert client.get("/docs").status_code == 200


def test_external_run_lifecycle(client):
    run = external_run(client, "life", project="proj-a")
    assert run["status"] == "running" and run["project"] == "proj-a" and run["recipe"] == "external"
    rid = run["id"]
    assert client.get(f"/api/v1/runs/{rid}").json()["name"] == "life"
    r = client.put(f"/api/v1/runs/{rid}/hyperparameters", json={"lr": 0.1, "layers": [1, 2]})
    assert r.json() == {"lr": 0.1, "layers": [1, 2]}
    client.put(f"/api/v1/runs/{rid}/hyperparameters?merge=true", json={"bs": 8})
    assert client.get(f"/api/v1/runs/{rid}/hyperparameters").json() == {"lr": 0.1, "layers": [1, 2], "bs": 8}
    summary = {"layers": [{"name": "l1", "type": "Linear", "params": 10}], "total_params": 10}
    assert client.get(f"/api/v1/runs/{rid}/summary").status_code == 404
    client.put(f"/api/v1/runs/{rid}/summary", json=summary)
    assert client.get(f"/api/v1/runs/{rid}/summary").json() == summary
    r = client.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and r.json()["ended_at"]
    # finished: a second different final status and a cancel are wrong states
    r = client.patch(f"/api/v1/runs/{rid}", json={"status": "failed"})
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]
    assert client.post(f"/api/v1/runs/{rid}/cancel").status_code == 409
    assert any(p["name"] == "proj-a" for p in client.get("/api/v1/projects").json())


def test_unknown_ids_are_404_with_sentences(client):
    for method, path in [("get", "/api/v1/runs/999999"), ("get", "/api/v1/runs/999999/metrics"),
                         ("post", "/api/v1/runs/999999/cancel"), ("delete", "/api/v1/runs/999999"),
                         ("get", "/api/v1/checkpoints/999999/download"), ("get", "/api/v1/runs/999999/logs")]:
        r = getattr(client, method)(path)
        assert r.status_code == 404, (path, r.text)
        assert "does not exist" in r.json()["detail"]
    r = post_json(client, "/api/v1/runs/999999/metrics", {"points": [{"key": "a", "step": 1, "value": 1}]})
    assert r.status_code == 404


def test_metrics_roundtrip_with_non_finite(client):
    rid = external_run(client)["id"]
    body = '{"points": [{"key": "loss", "step": 0, "value": NaN}, {"key": "loss", "step": 1, "value": Infinity},' \
           ' {"key": "loss", "step": 2, "value": "-Infinity"}, {"key": "loss", "step": 3, "value": 0.5, "epoch": 1},' \
           ' {"key": "acc", "step": 3, "value": 1}]}'
    r = client.post(f"/api/v1/runs/{rid}/metrics", content=body, headers={"Content-Type": "application/json"})
    assert r.json() == {"accepted": 5}
    series = client.get(f"/api/v1/runs/{rid}/metrics?keys=loss").json()["series"]
    assert list(series) == ["loss"]
    assert series["loss"]["values"] == ["NaN", "Infinity", "-Infinity", 0.5]
    assert series["loss"]["steps"] == [0, 1, 2, 3] and series["loss"]["epochs"][3] == 1
    keys = {k["key"]: k for k in client.get(f"/api/v1/runs/{rid}/metric-keys").json()}
    assert keys["loss"] == {"key": "loss", "last_value": 0.5, "last_step": 3, "count": 4}
    assert keys["acc"]["last_value"] == 1.0
    ranged = client.get(f"/api/v1/runs/{rid}/metrics?keys=loss&min_step=1&max_step=2").json()["series"]["loss"]
    assert ranged["steps"] == [1, 2]


def test_metrics_limits_and_garbage(client):
    rid = external_run(client)["id"]
    too_many = {"points": [{"key": "x", "step": i, "value": 1.0} for i in range(10_001)]}
    r = post_json(client, f"/api/v1/runs/{rid}/metrics", too_many)
    assert r.status_code == 413 and "10000" in r.json()["detail"]
    bad = [
        b"{not json", b"[]", b'{"points": 3}', b'{"points": [1]}',
        b'{"points": [{"key": "", "step": 1, "value": 1}]}',
        b'{"points": [{"key": "a", "step": -1, "value": 1}]}',
        b'{"points": [{"key": "a", "step": 99999999999999999999999, "value": 1}]}',
        b'{"points": [{"key": "a", "step": 1, "value": "abc"}]}',
        b'{"points": [{"key": "a", "step": 1, "value": ' + b"9" * 400 + b"}]}",
        b'{"points": [{"key": "a", "step": 1, "value": true}]}',
        b'{"points": [{"key": "a", "step": 1, "value": 1, "epoch": 99999999999}]}',
        b'{"points": [{"key": "a", "step": "1", "value": 1}]}',
        b'{"points": [{"key": 5, "step": 1, "value": 1}]}',
        b"\xff\xfe garbage",
        b"[" * 100000,
    ]
    for body in bad:
        r = client.post(f"/api/v1/runs/{rid}/metrics", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (413, 422), (body[:60], r.status_code, r.text)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"].endswith(".")
    assert client.get(f"/api/v1/runs/{rid}/metrics").json()["series"] == {}  # nothing half-stored
    # an overflowing literal parses as inf: stored as Infinity, not an error
    r = client.post(f"/api/v1/runs/{rid}/metrics", content=b'{"points": [{"key": "a", "step": 1, "value": 1e999}]}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert client.get(f"/api/v1/runs/{rid}/metrics").json()["series"]["a"]["values"] == ["Infinity"]
    for query in ["max_points=1", "max_points=abc", "min_step=-5", "min_step=99999999999999999999999"]:
        r = client.get(f"/api/v1/runs/{rid}/metrics?{query}")
        assert r.status_code == 422 and r.json()["field"], query


@pytest.mark.parametrize("body", [
    {"recipe": 5}, {"recipe": "external", "project": ""}, {"recipe": "external", "params": "x"},
    {"recipe": "external", "unknown_field": 1}, {}, [], "x", None,
])
def test_run_create_rejects_garbage(client, body):
    r = post_json(client, "/api/v1/runs", body)
    assert r.status_code == 422, r.text
    assert r.json()["message"] and r.json()["detail"]


def test_garbage_everywhere_is_never_500(client):
    rid = external_run(client)["id"]
    for method, path, body in [
        ("patch", f"/api/v1/runs/{rid}", {"status": "flying"}),
        ("patch", f"/api/v1/runs/{rid}", {"name": 5}),
        ("put", f"/api/v1/runs/{rid}/hyperparameters", [1, 2]),
        ("put", f"/api/v1/runs/{rid}/summary", "text"),
        ("post", f"/api/v1/runs/{rid}/logs", {"lines": [{"text": None}]}),
        ("post", f"/api/v1/runs/{rid}/checkpoints", {"path": 5}),
        ("post", f"/api/v1/runs/{rid}/resume", {"checkpoint_id": "x"}),
        ("post", f"/api/v1/runs/{rid}/resume", {"checkpoint_id": 99999999999999999999999}),
    ]:
        r = client.request(method.upper(), path, content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (path, body, r.text)
    for path in ["/api/v1/runs/abc", "/api/v1/runs/99999999999999999999999", "/api/v1/runs?limit=0",
                 "/api/v1/runs?sort=bogus", "/api/v1/runs?status=zzz", "/api/v1/runs?offset=-1"]:
        r = client.get(path)
        assert r.status_code in (404, 422), (path, r.text)
    # stored data is intact after all of that
    assert client.get(f"/api/v1/runs/{rid}").json()["status"] == "running"


def test_list_filters_sort_and_pagination(client):
    project = "listing"
    ids = []
    for i, final in enumerate([0.3, 0.1, 0.2]):
        rid = external_run(client, f"list-{i}-{'alpha' if i == 1 else 'beta'}", project=project)["id"]
        post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "val_loss", "step": 0, "value": 9},
                                                                    {"key": "val_loss", "step": 1, "value": final}]})
        ids.append(rid)
    client.patch(f"/api/v1/runs/{ids[2]}", json={"status": "failed", "error": "Traceback: boom"})
    page = client.get(f"/api/v1/runs?project={project}&sort=metric:val_loss").json()
    assert [r["id"] for r in page["items"]] == [ids[1], ids[2], ids[0]] and page["total"] == 3
    assert page["items"][0]["last_metrics"] == {"val_loss": 0.1}
    page = client.get(f"/api/v1/runs?project={project}&sort=-metric:val_loss&limit=1&offset=1").json()
    assert [r["id"] for r in page["items"]] == [ids[2]] and page["total"] == 3
    assert client.get(f"/api/v1/runs?project={project}&status=failed").json()["items"][0]["error"] == "Traceback: boom"
    assert [r["id"] for r in client.get(f"/api/v1/runs?project={project}&q=alpha").json()["items"]] == [ids[1]]
    assert client.get(f"/api/v1/runs?project={project}&recipe=external&sort=-id").json()["items"][0]["id"] == ids[2]


def test_logs_tail_and_cursor(client):
    rid = external_run(client)["id"]
    r = client.post(f"/api/v1/runs/{rid}/logs", json={"lines": [{"text": f"line {i}"} for i in range(5)]})
    assert r.status_code == 201
    tail = client.get(f"/api/v1/runs/{rid}/logs?tail=2").json()
    assert [ln["text"] for ln in tail["lines"]] == ["line 3", "line 4"]
    first = client.get(f"/api/v1/runs/{rid}/logs?after=0&limit=3").json()
    rest = client.get(f"/api/v1/runs/{rid}/logs?after={first['cursor']}").json()
    assert [ln["text"] for ln in first["lines"] + rest["lines"]] == [f"line {i}" for i in range(5)]


def test_checkpoint_upload_download_range_and_traversal(client, app_settings):
    rid = external_run(client)["id"]
    payload = bytes(range(256)) * 1000
    r = client.put(f"/api/v1/runs/{rid}/checkpoints/upload?filename=epoch=1-step=10.ckpt&epoch=1&step=10&is_last=true",
                   content=payload)
    assert r.status_code == 201, r.text
    ckpt = r.json()
    assert ckpt["sha256"] == hashlib.sha256(payload).hexdigest() and ckpt["size"] == len(payload)
    assert ckpt["path"] == f"{rid}/checkpoints/epoch=1-step=10.ckpt"
    full = client.get(ckpt["download_url"])
    assert full.content == payload and full.headers["content-length"] == str(len(payload))
    assert full.headers["x-checksum-sha256"] == ckpt["sha256"] and full.headers["accept-ranges"] == "bytes"
    part = client.get(ckpt["download_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == payload[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(payload)}"
    assert client.get(ckpt["download_url"], headers={"Range": "bytes=-10"}).content == payload[-10:]
    assert client.get(ckpt["download_url"], headers={"Range": "bytes=999999999-"}).status_code == 416
    assert [c["id"] for c in client.get(f"/api/v1/runs/{rid}/checkpoints").json()] == [ckpt["id"]]
    # traversal: registering, uploading or serving outside the artifact root is refused
    secret = app_settings.artifact_root.parent / "secret.txt"
    secret.write_text("top secret")
    for path in ["../secret.txt", "/etc/passwd", f"{rid}/../../secret.txt", "."]:
        r = client.post(f"/api/v1/runs/{rid}/checkpoints", json={"path": path})
        assert r.status_code == 422 and r.json()["field"] == "path", (path, r.text)
    for name in ["../x.ckpt", "a/b.ckpt", "..", ".hidden"]:
        assert client.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": name},
                          content=b"x").status_code == 422
    from server import store
    from server.db import get_engine, session_scope

    with session_scope(get_engine(app_settings.database_url)) as s:
        evil = store.add_checkpoint(s, rid, "../secret.txt")
    r = client.get(f"/api/v1/checkpoints/{evil.id}/download")
    assert r.status_code == 403 and b"top secret" not in r.content
    # a registered file inside the root gets its size and sha256 computed
    inside = app_settings.artifact_root / str(rid) / "manual.ckpt"
    inside.write_bytes(b"abc")
    r = client.post(f"/api/v1/runs/{rid}/checkpoints", json={"path": f"{rid}/manual.ckpt", "step": 5})
    assert r.status_code == 201 and r.json()["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_delete_removes_rows_and_files(client, app_settings):
    rid = external_run(client)["id"]
    post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "a", "step": 1, "value": 1}]})
    client.post(f"/api/v1/runs/{rid}/logs", json={"lines": [{"text": "x"}]})
    client.put(f"/api/v1/runs/{rid}/checkpoints/upload?filename=a.ckpt", content=b"data")
    client.put(f"/api/v1/runs/{rid}/summary", json={"a": 1})
    folder = app_settings.artifact_root / str(rid)
    assert folder.is_dir()
    r = client.delete(f"/api/v1/runs/{rid}")
    assert r.status_code == 409 and "cancel" in r.json()["detail"]
    client.patch(f"/api/v1/runs/{rid}", json={"status": "cancelled"})
    assert client.delete(f"/api/v1/runs/{rid}").status_code == 204
    assert client.get(f"/api/v1/runs/{rid}").status_code == 404
    assert not folder.exists()
    from sqlalchemy import func, select

    from server.db import get_engine, session_scope
    from server.models import Checkpoint, LogLine, MetricBlock, MetricPoint, ModelSummary

    with session_scope(get_engine(app_settings.database_url)) as s:
        for model in (MetricPoint, MetricBlock, LogLine, Checkpoint, ModelSummary):
            assert s.scalar(select(func.count()).select_from(model).where(model.run_id == rid)) == 0


def test_downsampling_keeps_first_last_min_max(client):
    rid = external_run(client)["id"]
    n = 30_000
    values = [math.sin(i / 500.0) for i in range(n)]
    values[12_345] = -50.0
    values[23_456] = 70.0
    values[777] = float("nan")
    for start in range(0, n, 10_000):
        body = {"points": [{"key": "s", "step": i, "value": "NaN" if math.isnan(values[i]) else values[i]}
                           for i in range(start, start + 10_000)]}
        assert post_json(client, f"/api/v1/runs/{rid}/metrics", body).status_code == 200
    for query, lo, hi in [("", 0, n - 1), ("&min_step=1000&max_step=29000", 1000, 29000),
                          ("&min_step=100&max_step=5000", 100, 5000)]:
        s = client.get(f"/api/v1/runs/{rid}/metrics?keys=s&max_points=200{query}").json()["series"]["s"]
        assert s["downsampled"] and len(s["steps"]) <= 200 and s["total_points"] == hi - lo + 1
        assert s["steps"][0] == lo and s["steps"][-1] == hi and s["steps"] == sorted(s["steps"])
        window = [v for v in values[lo:hi + 1] if not math.isnan(v)]
        finite = [v for v in s["values"] if isinstance(v, float)]
        assert min(finite) == min(window) and max(finite) == max(window)
    # each bucket's min and max: with 2 buckets-worth of points per bucket nothing is lost at the extremes
    s = client.get(f"/api/v1/runs/{rid}/metrics?keys=s&max_points=4000").json()["series"]["s"]
    assert 12_345 in s["steps"] and 23_456 in s["steps"]


def test_resume_copies_history_up_to_checkpoint(client, app_settings):
    need_service("Redis", app_settings.broker_url.startswith("redis://"), "the broker for queued runs")
    from server import store
    from server.db import get_engine, session_scope

    with session_scope(get_engine(app_settings.database_url)) as s:
        run = store.create_run(s, recipe="digits", name="orig", status="running")
        store.add_metric_points(s, run.id, [("loss", i, 1.0 / (i + 1), 0, 0.0) for i in range(20)])
        early = store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/a.ckpt", step=5, epoch=0)
        store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/b.ckpt", step=10, epoch=1, is_last=True)
        rid = run.id
    assert client.post(f"/api/v1/runs/{rid}/resume").status_code == 409  # still running
    assert client.post(f"/api/v1/runs/{rid}/cancel").json()["cancel_requested"] is True
    client.patch(f"/api/v1/runs/{rid}", json={"status": "cancelled"})
    r = client.post(f"/api/v1/runs/{rid}/resume", json={"checkpoint_id": 999999})
    assert r.status_code == 422 and r.json()["field"] == "checkpoint_id"
    r = client.post(f"/api/v1/runs/{rid}/resume")
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["status"] == "queued" and new["resumed_from_id"] == rid and new["resume_checkpoint_id"]
    steps = client.get(f"/api/v1/runs/{new['id']}/metrics?keys=loss").json()["series"]["loss"]["steps"]
    assert steps == list(range(11))
    r = client.post(f"/api/v1/runs/{rid}/resume", json={"checkpoint_id": early.id})
    steps = client.get(f"/api/v1/runs/{r.json()['id']}/metrics?keys=loss").json()["series"]["loss"]["steps"]
    assert steps == list(range(6))
    # cancelling a queued run cancels it at once
    c = client.post(f"/api/v1/runs/{new['id']}/cancel").json()
    assert c["status"] == "cancelled"
    ext = external_run(client)["id"]
    client.patch(f"/api/v1/runs/{ext}", json={"status": "succeeded"})
    assert client.post(f"/api/v1/runs/{ext}/resume").status_code == 409


def test_recipe_runs_are_validated_and_queued(client, app_settings):
    need_service("Redis", app_settings.broker_url.startswith("redis://"), "the broker for queued runs")
    recipes = {r["name"]: r for r in client.get("/api/v1/recipes").json()}
    assert "digits_classifier" in recipes and recipes["digits_classifier"]["params_schema"]["properties"]
    r = client.post("/api/v1/runs", json={"recipe": "no_such_recipe"})
    assert r.status_code == 422 and r.json()["field"] == "recipe" and "digits_classifier" in r.json()["detail"]
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "params": {"lr": "fast"}})
    assert r.status_code == 422 and r.json()["field"].startswith("params.lr"), r.text
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "trainer": {"max_epochs": -5}})
    assert r.status_code == 422 and r.json()["field"].startswith("trainer"), r.text
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "params": {}, "trainer": {"max_epochs": 1}})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "queued" and run["attempt"] == 0
    cancelled = client.post(f"/api/v1/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"


def test_dashboard_and_plotly_are_served(client):
    index = client.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert client.get("/runs/1").text == index.text  # deep links get the dashboard
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and len(js.content) > 1_000_000


def test_healthz_reports_unreachable_database(tmp_path):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    settings = Settings(home=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none", reaper=False)
    app = create_app(settings)
    r = TestClient(app, raise_server_exceptions=False).get("/healthz")  # no `with`: no startup migration
    assert r.status_code == 503 and r.json()["database"].startswith("unreachable")


def test_odd_but_valid_json_is_stored_or_refused_never_500(client):
    rid = external_run(client)["id"]
    deep = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
    r = client.put(f"/api/v1/runs/{rid}/hyperparameters", content=deep, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and "JSON" in r.json()["detail"]
    r = client.put(f"/api/v1/runs/{rid}/hyperparameters", content='{"a": 1e999, "b": NaN, "c": 123456789012345678901234567890}',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["a"] == "Infinity" and r.json()["b"] == "NaN"
    for method, path, body in [
        ("POST", "/api/v1/runs", {"recipe": "external", "name": "nul\x00name"}),
        ("POST", f"/api/v1/runs/{rid}/logs", {"lines": [{"text": "nul\x00text"}]}),
        ("PUT", f"/api/v1/runs/{rid}/summary", {"k\x00": "v\x00"}),
        ("POST", f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "nul\x00key", "step": 1, "value": 1}]}),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code in (200, 201, 422), (path, r.status_code, r.text)
    assert client.get(f"/api/v1/runs/{rid}").status_code == 200
