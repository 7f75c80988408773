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
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "artifacts": "ok", "uploads": "ok"}
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
    r = client.patch(f"/api/v1/runs/{rid}", json={"hyperparameters": {"lr": 0.2}, "name": "life-2"})
    assert r.status_code == 200 and r.json()["hyperparameters"] == {"lr": 0.2} and r.json()["name"] == "life-2"
    assert r.json()["status"] == "running" and r.json()["ended_at"] is None
    r = client.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and r.json()["ended_at"]
    assert r.json()["hyperparameters"] == {"lr": 0.2} and r.json()["duration_s"] >= 0
    # finished: a second different final status and a cancel are wrong states
    r = client.patch(f"/api/v1/runs/{rid}", json={"status": "failed"})
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]
    assert client.post(f"/api/v1/runs/{rid}/cancel", json={}).status_code == 409
    assert any(p["name"] == "proj-a" for p in client.get("/api/v1/projects").json())


def test_unknown_ids_are_404_with_sentences(client):
    for method, path in [("get", "/api/v1/runs/999999"), ("get", "/api/v1/runs/999999/metrics"),
                         ("post", "/api/v1/runs/999999/cancel"), ("delete", "/api/v1/runs/999999"),
                         ("get", "/api/v1/checkpoints/999999/download"), ("get", "/api/v1/runs/999999/logs")]:
        r = getattr(client, method)(path, **({"json": {}} if method == "post" else {}))
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
    assert r.json() == {"accepted": 5, "duplicate": False}
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
    body = r.json()  # one error schema: detail is a sentence, the validation list is under errors
    assert isinstance(body["detail"], str) and body["detail"] and isinstance(body["errors"], list) and body["errors"]


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
    assert client.get(f"/api/v1/runs?project={project}&recipe=digits").json() == {"items": [], "total": 0,
                                                                                 "limit": 50, "offset": 0}
    by_name = client.get(f"/api/v1/runs?project={project}&sort=name").json()["items"]
    assert [r["name"] for r in by_name] == sorted(r["name"] for r in by_name) and len(by_name) == 3
    page = client.get(f"/api/v1/runs?project={project}&status=running&sort=id&limit=1&offset=1").json()
    assert [r["id"] for r in page["items"]] == [ids[1]] and page["total"] == 2


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
    tail = client.get(ckpt["download_url"], headers={"Range": f"bytes=1000-{10**30}"})
    assert tail.status_code == 206 and tail.content == payload[1000:]
    assert tail.headers["content-length"] == str(len(payload) - 1000)
    # ranges that cannot be served: 416 with a sentence and the size, never a 500
    for bad_range in ["bytes=999999999-", f"bytes={len(payload)}-", "bytes=5-2", "bytes=-0", "bytes=abc",
                      "items=0-1", "bytes=0-1,5-6", "bytes=-", f"bytes={'9' * 40}-", "bytes=\u00e9".encode()]:
        r = client.get(ckpt["download_url"], headers={"Range": bad_range})
        assert r.status_code == 416, (bad_range, r.status_code, r.text)
        assert r.headers["content-range"] == f"bytes */{len(payload)}" and r.json()["detail"].endswith(".")
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
    # symlinks inside the root that point outside it are refused too (registering and serving)
    run_dir = app_settings.artifact_root / str(rid)
    (run_dir / "link.ckpt").symlink_to(secret)
    r = client.post(f"/api/v1/runs/{rid}/checkpoints", json={"path": f"{rid}/link.ckpt"})
    assert r.status_code == 422 and r.json()["field"] == "path"
    with session_scope(get_engine(app_settings.database_url)) as s:
        linked = store.add_checkpoint(s, rid, f"{rid}/link.ckpt")
        absolute = store.add_checkpoint(s, rid, str(secret))
    for evil_id in (linked.id, absolute.id):
        r = client.get(f"/api/v1/checkpoints/{evil_id}/download")
        assert r.status_code == 403 and b"top secret" not in r.content
    # a run folder whose checkpoints/ is a symlink out of the root: uploads write nothing there
    other = external_run(client)["id"]
    outside = app_settings.artifact_root.parent / f"outside-{other}"
    outside.mkdir()
    (app_settings.artifact_root / str(other)).mkdir()
    (app_settings.artifact_root / str(other) / "checkpoints").symlink_to(outside, target_is_directory=True)
    r = client.put(f"/api/v1/runs/{other}/checkpoints/upload?filename=x.ckpt", content=b"x")
    assert r.status_code == 403 and list(outside.iterdir()) == []
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
        early = store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/a.ckpt", step=5, epoch=0, attempt=1)
        store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/b.ckpt", step=10, epoch=1, is_last=True, attempt=1)
        outside = store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/c.ckpt", step=15, epoch=1)
        rid = run.id
    assert client.post(f"/api/v1/runs/{rid}/resume", json={}).status_code == 409  # still running
    assert client.post(f"/api/v1/runs/{rid}/cancel", json={}).json()["cancel_requested"] is True
    # a worker's run: only its worker or run process sets the status
    assert client.patch(f"/api/v1/runs/{rid}", json={"status": "cancelled"}).status_code == 409
    with session_scope(get_engine(app_settings.database_url)) as s:
        store.finish_run(s, rid, "cancelled")
    # a checkpoint uploaded from outside the run's training is never a resume point
    r = client.post(f"/api/v1/runs/{rid}/resume", json={"checkpoint_id": outside.id})
    assert r.status_code == 422 and r.json()["field"] == "checkpoint_id"
    r = client.post(f"/api/v1/runs/{rid}/resume", json={"checkpoint_id": 999999})
    assert r.status_code == 422 and r.json()["field"] == "checkpoint_id"
    r = client.post(f"/api/v1/runs/{rid}/resume", json={})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["status"] == "queued" and new["resumed_from_id"] == rid and new["resume_checkpoint_id"]
    steps = client.get(f"/api/v1/runs/{new['id']}/metrics?keys=loss").json()["series"]["loss"]["steps"]
    assert steps == list(range(11))
    r = client.post(f"/api/v1/runs/{rid}/resume", json={"checkpoint_id": early.id})
    steps = client.get(f"/api/v1/runs/{r.json()['id']}/metrics?keys=loss").json()["series"]["loss"]["steps"]
    assert steps == list(range(6))
    # cancelling a queued run cancels it at once
    c = client.post(f"/api/v1/runs/{new['id']}/cancel", json={}).json()
    assert c["status"] == "cancelled"
    ext = external_run(client)["id"]
    client.patch(f"/api/v1/runs/{ext}", json={"status": "succeeded"})
    assert client.post(f"/api/v1/runs/{ext}/resume", json={}).status_code == 409


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
    cancelled = client.post(f"/api/v1/runs/{run['id']}/cancel", json={}).json()
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


def test_inputs_that_once_gave_500s_are_422s_and_store_nothing(client):
    """Lone surrogates (json.loads lets "\\ud800" through; UTF-8 cannot hold it), a path longer
    than the file system allows, a wall_time too large for a float."""
    rid = external_run(client)["id"]
    client.put(f"/api/v1/runs/{rid}/hyperparameters", json={"kept": 1})
    client.put(f"/api/v1/runs/{rid}/summary", json={"kept": 2})
    json_headers = {"Content-Type": "application/json"}
    for method, path, body, field in [
        ("PUT", f"/api/v1/runs/{rid}/hyperparameters", '{"k": "\\ud800"}', "hyperparameters"),
        ("PUT", f"/api/v1/runs/{rid}/hyperparameters?merge=true", '{"\\udfff": 1}', "hyperparameters"),
        ("PATCH", f"/api/v1/runs/{rid}", '{"hyperparameters": {"k": ["\\ud800"]}}', "hyperparameters"),
        ("PUT", f"/api/v1/runs/{rid}/summary", '{"layers": [{"name": "\\ud800"}]}', "summary"),
        ("POST", "/api/v1/runs", '{"recipe": "external", "params": {"a": "\\ud800"}}', "params"),
        ("POST", f"/api/v1/runs/{rid}/metrics", '{"points": [{"key": "\\ud800", "step": 1, "value": 1}]}',
         "points[0].key"),
        ("POST", f"/api/v1/runs/{rid}/metrics",
         '{"points": [{"key": "k", "step": 1, "value": 1, "wall_time": 1' + "0" * 400 + '}]}', "points[0].wall_time"),
        ("POST", f"/api/v1/runs/{rid}/checkpoints", json.dumps({"path": "x" * 999}), "path"),
        ("POST", f"/api/v1/runs/{rid}/logs", '{"lines": [{"text": "\\ud800"}]}', "lines.0.text"),
        ("POST", f"/api/v1/runs/{rid}/logs", '{"lines": [{"text": "x", "time": "9999-12-31T23:59:59-14:00"}]}',
         "lines.0.time"),
        ("POST", f"/api/v1/runs/{rid}/logs", '{"lines": [{"text": "x", "time": "0001-01-01T00:00:00+14:00"}]}',
         "lines.0.time"),
    ]:
        r = client.request(method, path, content=body.encode(), headers=json_headers)
        assert r.status_code == 422, (path, body[:60], r.status_code, r.text)
        assert r.json()["field"] == field, (path, r.json())
    run = client.get(f"/api/v1/runs/{rid}")
    assert run.status_code == 200 and run.json()["hyperparameters"] == {"kept": 1}
    assert client.get(f"/api/v1/runs/{rid}/summary").json() == {"kept": 2}
    assert client.get(f"/api/v1/runs/{rid}/metric-keys").json() == []
    assert client.get(f"/api/v1/runs/{rid}/logs").json()["lines"] == []
    assert client.get("/api/v1/runs?limit=1000").status_code == 200
    r = client.post(f"/api/v1/runs/{rid}/logs", json={"lines": [{"text": "x", "time": "2024-05-01T12:00:00+02:00"}]})
    assert r.status_code == 201
    assert client.get(f"/api/v1/runs/{rid}/logs").json()["lines"][0]["time"].startswith("2024-05-01T10:00:00")


def _events(chunks: list[str]) -> list[tuple[str, str | None, dict]]:
    out = []
    for chunk in chunks:
        fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
        out.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    return out


def test_event_pollers_on_this_backend(client):
    """The SQL behind both SSE streams, on SQLite and PostgreSQL (tests/server/test_live.py runs
    the streams themselves through uvicorn): metric points, log lines, checkpoints and status
    changes after a cursor, resuming from an event id, and run list changes."""
    from types import SimpleNamespace

    from server.api.events import RunEventPoller, RunListPoller
    from server.auth import OPEN

    request = SimpleNamespace(app=client.app, state=SimpleNamespace(principal=OPEN))
    listing = RunListPoller(request)
    assert listing.poll() == []  # the first poll takes the baseline
    rid = external_run(client, "polled")["id"]
    post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "old", "step": 0, "value": 1}]})
    poller = RunEventPoller(request, rid, None)
    first = _events(poller.poll())
    assert [e[0] for e in first] == ["status"] and first[0][2]["status"] == "running"  # no history replayed
    start = first[0][1]
    assert _events(poller.poll()) == []  # nothing new
    post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "loss", "step": 1, "value": "NaN"},
                                                                {"key": "loss", "step": 2, "value": "-Infinity"}]})
    client.post(f"/api/v1/runs/{rid}/logs", json={"lines": [{"text": "hello", "stream": "stderr"}]})
    ckpt = client.put(f"/api/v1/runs/{rid}/checkpoints/upload?filename=p.ckpt&step=2", content=b"abc").json()
    client.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
    got = _events(poller.poll())
    kinds = {e[0]: e[2] for e in got}
    assert set(kinds) == {"metrics", "log", "checkpoint", "status"}
    assert [(p["key"], p["step"], p["value"]) for p in kinds["metrics"]["points"]] == [
        ("loss", 1, "NaN"), ("loss", 2, "-Infinity")]
    assert kinds["log"]["lines"][0]["text"] == "hello" and kinds["log"]["lines"][0]["stream"] == "stderr"
    assert kinds["checkpoint"]["id"] == ckpt["id"] and kinds["status"]["status"] == "succeeded"
    end = got[-1][1]
    # resuming from the first event id replays exactly what came after it
    replay = {e[0]: e[2] for e in _events(RunEventPoller(request, rid, tuple(map(int, start.split(".")))).poll())}
    assert replay["metrics"] == kinds["metrics"] and replay["log"] == kinds["log"]
    assert replay["checkpoint"]["id"] == ckpt["id"]
    assert [e[0] for e in _events(RunEventPoller(request, rid, tuple(map(int, end.split(".")))).poll())] == ["status"]
    for bad in ["9" * 30 + ".0.0", f"0.{2**63}.0", "1.2", "a.b.c", "-1.0.0"]:  # refused before streaming
        r = client.get(f"/api/v1/runs/{rid}/events", headers={"Last-Event-ID": bad})
        assert r.status_code == 422 and r.json()["field"] == "Last-Event-ID", bad
        assert client.get(f"/api/v1/runs/{rid}/events", params={"cursor": bad}).status_code == 422
    assert client.delete(f"/api/v1/runs/{rid}").status_code == 204
    assert _events(poller.poll()) == [("deleted", None, {"id": rid})]
    assert _events(listing.poll()) == []  # created and deleted between two polls: nothing to tell
    other = external_run(client, "listed")["id"]
    assert [(e[2]["action"], e[2]["run"]["name"]) for e in _events(listing.poll())] == [("created", "listed")]
    client.patch(f"/api/v1/runs/{other}", json={"name": "renamed"})
    assert [(e[2]["action"], e[2]["run"]["name"]) for e in _events(listing.poll())] == [("updated", "renamed")]
    # a change whose writer stamped it before the last one sent but committed after it is not lost
    from datetime import timedelta

    from sqlalchemy import update

    from server.db import session_scope
    from server.models import Run

    with session_scope(client.app.state.engine) as s:
        s.execute(update(Run).where(Run.id == other).values(name="late", updated_at=listing.since - timedelta(seconds=1)))
    assert [(e[2]["action"], e[2]["run"]["name"]) for e in _events(listing.poll())] == [("updated", "late")]
    assert _events(listing.poll()) == []  # and sent once
    client.patch(f"/api/v1/runs/{other}", json={"status": "cancelled"})
    listing.poll()
    assert client.delete(f"/api/v1/runs/{other}").status_code == 204
    assert _events(listing.poll()) == [("run", None, {"action": "deleted", "run": {"id": other}})]


FUZZ_VALUES = [None, True, -1, 2**63, 10**400, "", "x" * 5000, "é中😀", "\x00", [], {"a": 1}, "0001-01-01T00:00:00"]
FUZZ_RAW = [b"", b"null", b"{", b"[]", b'"x"', b"\xff\xfe", b'{"a":' * 3000]


def test_fuzzed_bodies_queries_and_content_types_are_never_500(client):
    """schemathesis-style by hand: every body field of every JSON endpoint with wrong types, huge
    numbers, unicode, empty and broken bodies under several content types, and odd query values.
    Every answer is below 500 and every error has a JSON body with a sentence."""
    rid = external_run(client, "fuzzed")["id"]
    post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "a", "step": 1, "value": 1}]})
    failures = []

    def check(method, path, **kwargs):
        r = client.request(method, path, **kwargs)
        body = r.json() if "json" in r.headers.get("content-type", "") and r.content else None
        message = isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"]
        if r.status_code >= 500 or (r.status_code >= 400 and not message):
            failures.append((method, path, str(kwargs)[:120], r.status_code, r.text[:200]))

    def send(method, path, body):
        check(method, path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    fields = {
        ("POST", "/api/v1/runs"): (["recipe", "name", "project", "params", "trainer", "hyperparameters"],
                                   {"recipe": "external"}),
        ("PATCH", f"/api/v1/runs/{rid}"): (["status", "hyperparameters", "error", "name"], {}),
        ("POST", f"/api/v1/runs/{rid}/resume"): (["checkpoint_id"], {}),
        ("POST", f"/api/v1/runs/{rid}/checkpoints"): (["path", "epoch", "step", "monitor", "score", "is_best"],
                                                      {"path": f"{rid}/nothing.ckpt"}),
    }
    shaped = {
        f"/api/v1/runs/{rid}/logs": lambda v: [{"lines": [{"text": v}]}, {"lines": [{"text": "x", "stream": v}]},
                                              {"lines": [{"text": "x", "time": v}]}, {"lines": v}],
        f"/api/v1/runs/{rid}/metrics": lambda v: [{"points": [{"key": v, "step": 1, "value": 1}]},
                                                 {"points": [{"key": "k", "step": v, "value": 1}]},
                                                 {"points": [{"key": "k", "step": 1, "value": v}]},
                                                 {"points": [{"key": "k", "step": 1, "value": 1, "epoch": v}]},
                                                 {"points": [{"key": "k", "step": 1, "value": 1, "wall_time": v}]},
                                                 {"points": v}],
        f"/api/v1/runs/{rid}/hyperparameters": lambda v: [{"k": v}, v],
        f"/api/v1/runs/{rid}/summary": lambda v: [{"k": v}, v],
    }
    methods = {"logs": "POST", "metrics": "POST", "hyperparameters": "PUT", "summary": "PUT"}
    for (method, path), (names, base) in fields.items():
        for name in names:
            for value in FUZZ_VALUES:
                send(method, path, {**base, name: value})
    for path, bodies in shaped.items():
        for value in FUZZ_VALUES:
            for body in bodies(value):
                send(methods[path.rsplit("/", 1)[1]], path, body)
    for method, path in [*fields, *((methods[p.rsplit("/", 1)[1]], p) for p in shaped)]:
        for raw in FUZZ_RAW:
            for content_type in ["application/json", "text/plain", None]:
                check(method, path, content=raw, headers={"Content-Type": content_type} if content_type else {})
    odd = ["", "abc", "-1", str(2**63), "NaN", "\x00", "é", "x" * 3000, "metric:", "-"]
    for path, names in [("/api/v1/runs", ["project", "status", "recipe", "q", "sort", "limit", "offset",
                                          "metric_keys"]),
                        (f"/api/v1/runs/{rid}/metrics", ["keys", "min_step", "max_step", "max_points"]),
                        (f"/api/v1/runs/{rid}/logs", ["tail", "after", "limit"])]:
        for name in names:
            for value in odd:
                check("GET", path, params={name: value})
    for value in odd:
        check("PUT", f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": value}, content=b"z")
        check("PUT", f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": "f.ckpt", "step": value},
              content=b"z")
    for run_id in ["0", "-1", "abc", str(2**63), "1.5", "%00"]:
        for method, path in [("GET", "/api/v1/runs/{}"), ("DELETE", "/api/v1/runs/{}"),
                             ("POST", "/api/v1/runs/{}/cancel"), ("GET", "/api/v1/runs/{}/metrics"),
                             ("GET", "/api/v1/checkpoints/{}/download"), ("GET", "/api/v1/runs/{}/events")]:
            check(method, path.format(run_id))
    assert failures == []
    assert client.get(f"/api/v1/runs/{rid}").status_code == 200
    assert client.get(f"/api/v1/runs/{rid}/metric-keys").status_code == 200


@pytest.mark.parametrize("bad", ["", "x" * 65, "big queue", "a/b", "ü", 7, None])
def test_run_queue_is_validated(client, bad):
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "queue": bad})
    assert r.status_code == 422 and r.json()["field"] == "queue", r.text
    if bad is None:  # a resume without a queue keeps the old run's
        return
    r = client.post("/api/v1/runs/1/resume", json={"queue": bad})
    assert r.status_code == 422 and r.json()["field"] == "queue", r.text


def test_run_queue_is_stored_returned_used_and_inherited_by_resume(client, app_settings, monkeypatch):
    from server import queue, store
    from server.db import get_engine, session_scope

    sent = []
    monkeypatch.setattr(queue, "enqueue_run", lambda run_id, task_id, queue, settings: sent.append((run_id, queue)))
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "trainer": {"max_epochs": 1}})
    assert r.status_code == 201 and r.json()["queue"] == "runyard", r.text
    r = client.post("/api/v1/runs", json={"recipe": "digits_classifier", "queue": "gpu-big_1.a"})
    assert r.status_code == 201, r.text
    big = r.json()
    assert big["queue"] == "gpu-big_1.a" and client.get(f"/api/v1/runs/{big['id']}").json()["queue"] == "gpu-big_1.a"
    assert sent[-2:] == [(big["id"] - 1, "runyard"), (big["id"], "gpu-big_1.a")]
    assert external_run(client)["queue"] == "runyard"

    with session_scope(get_engine(app_settings.database_url)) as s:
        run = store.create_run(s, recipe="digits_classifier", name="q", status="running", queue="big")
        store.add_checkpoint(s, run.id, f"{run.id}/checkpoints/last.ckpt", step=1, epoch=0, is_last=True, attempt=1)
        store.finish_run(s, run.id, "failed")
        rid = run.id
    inherited = client.post(f"/api/v1/runs/{rid}/resume", json={}).json()
    assert inherited["queue"] == "big" and sent[-1] == (inherited["id"], "big")
    chosen = client.post(f"/api/v1/runs/{rid}/resume", json={"queue": "small"}).json()
    assert chosen["queue"] == "small" and sent[-1] == (chosen["id"], "small")
