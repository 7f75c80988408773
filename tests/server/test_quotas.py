"""Quotas and retention per project (issue 11, point 2), on SQLite and PostgreSQL: every quota refuses
with 413 naming itself, its value, the usage and how to raise it, stores nothing, and lets the request
through once raised; deleting a run frees its bytes at once; retention keeps exactly the policy's set;
endless runs are refused at submit and every queued run gets the project's max_time; the reaper stops
an over-time run; the sweep deletes orphan files only."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from server import quotas, store
from server.models import Checkpoint, CodeSnapshot, MetricPoint, Run, Upload, utcnow
from tests.server.conftest import publish_builtin_recipes
from tests.server.test_artifacts import moto_s3  # noqa: F401 - the S3 fixture (moto_server)

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def app_settings(backend):
    """The conftest settings, with no grace after the longest run time (the reaper test)."""
    from server.settings import Settings

    _, url, home = backend
    return Settings(home=home, database_url=url, broker_url="memory://", reaper=False, sse_poll_interval=0.05,
                    quota_run_time_grace=0.0)


@pytest.fixture(scope="module")
def client(app_settings):
    from fastapi.testclient import TestClient

    from server.app import create_app

    with TestClient(create_app(app_settings), raise_server_exceptions=False) as c:
        publish_builtin_recipes(c)
        yield c


def _project_id(client, name: str) -> int:
    for p in client.get("/api/v1/projects").json():
        if p["name"] == name:
            return p["id"]
    raise AssertionError(f"no project {name}")


def new_run(client, project: str) -> int:
    r = client.post("/api/v1/runs", json={"recipe": "external", "project": project})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def set_quota(client, project: str, **values) -> dict:
    r = client.put(f"/api/v1/projects/{_project_id(client, project)}/quotas", json=values)
    assert r.status_code == 200, r.text
    return r.json()


def session_of(client):
    return client.app.state.sessionmaker()


def stored_files(client, run_id: int) -> set[str]:
    root = client.app.state.artifacts.root / str(run_id)
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def upload(client, run_id: int, name: str, data: bytes, **meta):
    params = {"filename": name, **{k: v for k, v in meta.items() if v is not None}}
    return client.put(f"/api/v1/runs/{run_id}/checkpoints/upload", params=params, content=data, headers=OCTET)


# --------------------------------------------------------------------------- the quotas themselves


def test_an_admin_sets_quotas_and_null_resets_them(client, app_settings):
    new_run(client, "q-admin")
    pid = _project_id(client, "q-admin")
    r = client.get(f"/api/v1/projects/{pid}/quotas")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["quotas"] == body["defaults"] == quotas.defaults(app_settings)
    assert body["defaults"]["checkpoint_bytes"] == 100 * 2**30 and body["defaults"]["keep_best"] == 5
    assert set(body["overrides"].values()) == {None}
    body = set_quota(client, "q-admin", checkpoint_bytes=10**9, keep_best=2, max_run_seconds=3600)
    assert body["quotas"]["checkpoint_bytes"] == 10**9 and body["overrides"]["keep_best"] == 2
    assert body["quotas"]["keep_last"] == app_settings.quota_keep_last  # untouched: still the default
    body = set_quota(client, "q-admin", keep_best=None)
    assert body["quotas"]["keep_best"] == app_settings.quota_keep_best and body["overrides"]["keep_best"] is None
    assert body["overrides"]["checkpoint_bytes"] == 10**9
    events = client.get("/api/v1/audit", params={"action": "quotas_changed"}).json()
    items = events["items"] if isinstance(events, dict) else events
    mine = [e for e in items if e["project_id"] == pid]
    assert mine and mine[0]["detail"]["changes"] == {"keep_best": {"before": 2, "after": None}}
    for bad in ({"keep_last": 0}, {"checkpoint_bytes": -1}, {"max_run_seconds": 0}, {"nonsense": 1}):
        r = client.put(f"/api/v1/projects/{pid}/quotas", json=bad)
        assert r.status_code == 422, (bad, r.text)
    assert client.get("/api/v1/projects/987654/quotas").status_code == 404
    beyond = client.get(f"/api/v1/projects/{2**40}/quotas")  # beyond the id column: the same 404
    assert beyond.status_code == 404 and "does not exist" in beyond.json()["detail"], beyond.text


def test_checkpoint_bytes_quota_refuses_before_storing_and_deleting_a_run_frees_bytes(client):
    run_a = new_run(client, "q-bytes")
    set_quota(client, "q-bytes", checkpoint_bytes=1000, keep_last=10)  # retention keeps every file here
    pid = _project_id(client, "q-bytes")
    assert upload(client, run_a, "a.ckpt", b"a" * 600).status_code == 201
    # resumable upload: refused by its declared size, no upload row, nothing staged
    data = b"b" * 600
    r = client.post(f"/api/v1/runs/{run_a}/checkpoints/uploads",
                    json={"filename": "b.ckpt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["field"] == "quota.checkpoint_bytes"
    for part in ("checkpoint_bytes", "1000 bytes", "600 bytes", "runyard project quota q-bytes --checkpoint-bytes",
                 f"PUT /api/v1/projects/{pid}/quotas"):
        assert part in body["detail"], (part, body["detail"])
    with session_of(client) as s:
        assert s.scalar(select(Upload.id).where(Upload.run_id == run_a)) is None
    # one-shot upload streamed without a length: refused while it streams, nothing kept
    r = client.put(f"/api/v1/runs/{run_a}/checkpoints/upload", params={"filename": "c.ckpt"}, headers=OCTET,
                   content=iter([b"c" * 300, b"c" * 300]))
    assert r.status_code == 413 and r.json()["field"] == "quota.checkpoint_bytes", r.text
    assert stored_files(client, run_a) == {"a.ckpt"}
    staged = client.app.state.settings.upload_dir / str(run_a)
    assert not any(staged.glob("*")) if staged.exists() else True
    # an upload started under the quota, then the quota lowered: its next PUT is refused before a byte
    small = b"d" * 100
    r = client.post(f"/api/v1/runs/{run_a}/checkpoints/uploads",
                    json={"filename": "d.ckpt", "size": len(small), "sha256": hashlib.sha256(small).hexdigest()})
    assert r.status_code == 201, r.text
    set_quota(client, "q-bytes", checkpoint_bytes=650)
    r = client.put(f"/api/v1/uploads/{r.json()['upload_id']}", params={"offset": 0}, content=small, headers=OCTET)
    assert r.status_code == 413 and r.json()["field"] == "quota.checkpoint_bytes", r.text
    assert stored_files(client, run_a) == {"a.ckpt"}
    # the store's registration refuses too (a file registered from the store itself)
    with session_of(client) as s, pytest.raises(quotas.QuotaExceeded):
        store.add_checkpoint(s, run_a, f"{run_a}/checkpoints/e.ckpt", size=100)
    # raising the quota lets it through
    set_quota(client, "q-bytes", checkpoint_bytes=2000)
    assert upload(client, run_a, "c.ckpt", b"c" * 600).status_code == 201
    assert client.get(f"/api/v1/projects/{pid}/quotas").json()["usage"] == {"checkpoint_bytes": 1200,
                                                                             "checkpoints": 2}
    # deleting the run frees its bytes at once (rows and files)
    client.post(f"/api/v1/runs/{run_a}/cancel", json={})
    with session_of(client) as s:  # an external run: finish it so it can be deleted
        store.move(s, run_a, "failed")
    assert client.delete(f"/api/v1/runs/{run_a}").status_code == 204
    assert client.get(f"/api/v1/projects/{pid}/quotas").json()["usage"] == {"checkpoint_bytes": 0, "checkpoints": 0}
    assert stored_files(client, run_a) == set()
    run_b = new_run(client, "q-bytes")
    assert upload(client, run_b, "big.ckpt", b"x" * 1900).status_code == 201


def test_points_and_keys_per_run_are_refused_whole(client):
    rid = new_run(client, "q-points")
    set_quota(client, "q-points", points_per_run=100, metric_keys_per_run=3)

    def post(points):
        return client.post(f"/api/v1/runs/{rid}/metrics", json={"points": points})

    def count():
        with session_of(client) as s:
            return len(list(s.scalars(select(MetricPoint.id).where(MetricPoint.run_id == rid))))

    assert post([{"key": "loss", "step": i, "value": 1.0} for i in range(60)]).status_code == 200
    r = post([{"key": "loss", "step": 60 + i, "value": 1.0} for i in range(50)])
    assert r.status_code == 413, r.text
    assert r.json()["field"] == "quota.points_per_run"
    for part in ("points_per_run", "100", "60", "runyard project quota q-points --points-per-run N"):
        assert part in r.json()["detail"], (part, r.json()["detail"])
    assert count() == 60
    # keys: two more fit, a fourth key does not (and nothing of its batch is stored)
    assert post([{"key": "acc", "step": 0, "value": 1}, {"key": "lr", "step": 0, "value": 1}]).status_code == 200
    r = post([{"key": "loss", "step": 99, "value": 1}, {"key": "grad_norm", "step": 0, "value": 1}])
    assert r.status_code == 413 and r.json()["field"] == "quota.metric_keys_per_run", r.text
    assert "'grad_norm'" in r.json()["detail"] and "--metric-keys-per-run" in r.json()["detail"]
    assert count() == 62
    assert post([{"key": "loss", "step": 61, "value": 1}]).status_code == 200  # a known key still goes in
    # raising the quotas lets them through
    set_quota(client, "q-points", points_per_run=1000, metric_keys_per_run=None)
    assert post([{"key": "loss", "step": 100 + i, "value": 1.0} for i in range(50)]).status_code == 200
    assert post([{"key": "grad_norm", "step": 0, "value": 1}]).status_code == 200
    assert count() == 114


# --------------------------------------------------------------------------- retention


def expected_keep(rows, keep_best, keep_last, keep_every, mode, protected=()):
    """The policy of docs/security.md, written out on its own."""
    keep = {r["name"] for r in rows[-keep_last:]}
    keep |= {r["name"] for r in rows if r.get("best") or r.get("last")}
    scored = sorted((r for r in rows if r.get("score") is not None),
                    key=lambda r: (r["score"] if mode == "min" else -r["score"], rows.index(r)))
    keep |= {r["name"] for r in scored[:keep_best]}
    if keep_every:
        blocks = {}
        for r in rows:
            blocks.setdefault(r["step"] // keep_every, r["name"])
        keep |= set(blocks.values())
    return keep | set(protected)


def test_retention_keeps_exactly_the_policy_set_as_the_run_goes(client):
    rid = new_run(client, "q-retain")
    set_quota(client, "q-retain", keep_best=2, keep_last=2, keep_every=10)
    rows = []
    scores = [5.0, 3.0, 4.0, 1.0, 6.0, 2.5, 7.0, 0.5, 8.0, 9.0, 2.0, 3.5]
    for i, score in enumerate(scores):
        step = i * 4
        name = f"step={step}.ckpt"
        r = upload(client, rid, name, f"{i}".encode() * 10, step=step, epoch=0, score=score, monitor="val_loss")
        assert r.status_code == 201, r.text
        rows.append({"name": name, "step": step, "score": score})
        want = expected_keep(rows, 2, 2, 10, "min")
        got = {c["path"].rsplit("/", 1)[-1] for c in client.get(f"/api/v1/runs/{rid}/checkpoints").json()}
        assert got == want, (i, got, want)
        assert stored_files(client, rid) == want  # the files went with the rows
    assert len(got) < len(rows)


def test_retention_respects_the_mode_and_never_drops_resume_points_or_inputs(client):
    with session_of(client) as s:
        run = store.create_run(s, recipe="digits_classifier", project="q-resume", status="running",
                               trainer={"checkpoint_mode": "max"})
        rid = run.id
    set_quota(client, "q-resume", keep_best=1, keep_last=1, keep_every=0)
    with session_of(client) as s:
        # the current attempt's resume checkpoint, then newer plain ones
        resume = store.add_checkpoint(s, rid, f"{rid}/checkpoints/last-0.ckpt", step=0, attempt=1, resumable=True, retain=True)
        first = store.add_checkpoint(s, rid, f"{rid}/checkpoints/a.ckpt", step=1, score=0.9, monitor="val_acc",
                                     attempt=1, retain=True)
        named = store.add_checkpoint(s, rid, f"{rid}/checkpoints/b.ckpt", step=2, score=0.1, monitor="val_acc",
                                     attempt=1, retain=True)
        # another queued run names checkpoint b as its input: b must stay
        store.create_run(s, recipe="digits_classifier", project="q-resume", params={"init_checkpoint_id": named.id})
        resumed_from = store.add_checkpoint(s, rid, f"{rid}/checkpoints/c.ckpt", step=3, score=0.5,
                                            monitor="val_acc", attempt=1, retain=True)
        # another run resumes from checkpoint c: c must stay
        store.create_run(s, recipe="digits_classifier", project="q-resume", resume_checkpoint_id=resumed_from.id)
        store.add_checkpoint(s, rid, f"{rid}/checkpoints/e.ckpt", step=4, score=0.3, monitor="val_acc", attempt=1,
                             retain=True)
        newest = store.add_checkpoint(s, rid, f"{rid}/checkpoints/d.ckpt", step=5, score=0.2, monitor="val_acc",
                                      attempt=1, retain=True)
        kept = {c.id for c in store.list_checkpoints(s, rid)}
        # mode max (trainer.checkpoint_mode): a (0.9) is the best; e (0.3) goes, d is the newest
        assert kept == {resume.id, first.id, named.id, resumed_from.id, newest.id}
        assert newest.pruned_keys == [f"{rid}/checkpoints/e.ckpt"]


def test_mode_is_read_from_the_flagged_best(client):
    rid = new_run(client, "q-mode")
    set_quota(client, "q-mode", keep_best=1, keep_last=1)
    for i, (score, best) in enumerate([(0.5, True), (0.7, True), (0.6, False), (0.1, False)]):
        assert upload(client, rid, f"{i}.ckpt", b"z" * 10, step=i, score=score, monitor="m",
                      is_best=best).status_code == 201
    names = {c["path"].rsplit("/", 1)[-1] for c in client.get(f"/api/v1/runs/{rid}/checkpoints").json()}
    assert names == {"1.ckpt", "3.ckpt"}  # 0.7 was flagged best over 0.5: mode max; 3 is the newest


# --------------------------------------------------------------------------- longest run time


def test_endless_runs_are_refused_and_every_run_gets_max_time(client, app_settings):
    def submit(trainer, project="q-time"):
        return client.post("/api/v1/runs", json={"recipe": "digits_classifier", "project": project,
                                                 "trainer": trainer})

    r = submit({"max_epochs": -1})
    assert r.status_code == 422 and r.json()["field"] == "trainer.max_epochs", r.text
    assert "forever" in r.json()["detail"]
    default = quotas.format_max_time(app_settings.quota_max_run_seconds)
    assert default == "03:00:00:00"
    r = submit({"max_epochs": -1, "max_steps": 100})
    assert r.status_code == 201, r.text
    assert r.json()["trainer"]["max_time"] == default
    assert submit({"max_epochs": 1, "max_time": "30:00:00:00"}).json()["trainer"]["max_time"] == default
    assert submit({"max_epochs": 1, "max_time": "00:01:00:00"}).json()["trainer"]["max_time"] == "00:01:00:00"
    assert submit({"max_epochs": -1, "max_time": {"hours": 2}}).json()["trainer"]["max_time"] == {"hours": 2.0}
    set_quota(client, "q-time", max_run_seconds=1800)
    assert submit({"max_epochs": 1}).json()["trainer"]["max_time"] == "00:00:30:00"
    assert submit({"max_epochs": 1, "max_time": {"hours": 2}}).json()["trainer"]["max_time"] == "00:00:30:00"
    # a resumed run gets the project's limit as it is now
    with session_of(client) as s:
        old = store.create_run(s, recipe="digits_classifier", project="q-time", status="running",
                               trainer={"max_epochs": -1})
        store.add_checkpoint(s, old.id, f"{old.id}/checkpoints/x.ckpt", step=1, attempt=1, resumable=True)
        store.move(s, old.id, "failed")
    r = client.post(f"/api/v1/runs/{old.id}/resume", json={})
    assert r.status_code == 201, r.text
    assert r.json()["trainer"]["max_time"] == "00:00:30:00"


def test_the_reaper_stops_a_run_past_its_longest_run_time(client):
    from server.app import reap_once

    late, fresh = new_run(client, "q-reap"), new_run(client, "q-reap")
    other = new_run(client, "q-reap-other")  # default limit (3 days): untouched
    set_quota(client, "q-reap", max_run_seconds=60)
    with session_of(client) as s:
        s.execute(update(Run).where(Run.id.in_([late, other])).values(started_at=utcnow() - timedelta(seconds=120)))
        s.execute(update(Run).where(Run.id == fresh).values(started_at=utcnow() - timedelta(seconds=30)))
        s.commit()
    found = reap_once(client.app)
    assert found["overtime"] == [late]
    r = client.get(f"/api/v1/runs/{late}").json()
    assert r["status"] == "failed"
    for part in ("max_run_seconds", "60 s", "runyard project quota q-reap --max-run-seconds N"):
        assert part in r["error"], (part, r["error"])
    assert client.get(f"/api/v1/runs/{fresh}").json()["status"] == "running"
    assert client.get(f"/api/v1/runs/{other}").json()["status"] == "running"


# --------------------------------------------------------------------------- the orphan sweep


def test_the_sweep_removes_orphan_files_only(client):
    artifacts = client.app.state.artifacts
    upload_dir = client.app.state.settings.upload_dir
    rid = new_run(client, "q-sweep")
    assert upload(client, rid, "kept.ckpt", b"k" * 10).status_code == 201
    old = time.time() - 7200

    def put(key: str, age: float | None = old) -> None:
        path = artifacts.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"o")
        if age is not None:
            os.utime(path, (age, age))

    put(f"{rid}/checkpoints/orphan.ckpt")
    put(f"{rid}/checkpoints/fresh-orphan.ckpt", age=None)  # may be a write in flight: kept
    put("999999/checkpoints/of-a-deleted-run.ckpt")
    with session_of(client) as s:
        s.add(CodeSnapshot(project_id=_project_id(client, "q-sweep"), sha256="a" * 64, size=1, unpacked_bytes=1,
                           file_count=0, files=[], git=None, created_at=utcnow()))
        s.add(Upload(id="f" * 32, run_id=rid, filename="u.ckpt", size=5, sha256="0" * 64, received=1, meta={},
                     created_at=utcnow(), updated_at=utcnow()))
        s.commit()
    put(f"snapshots/aa/{'a' * 64}.tar.gz")  # has a row
    put(f"snapshots/bb/{'b' * 64}.tar.gz")  # has none
    put("not-ours/readme.txt")  # not a key Runyard writes
    staged = {"with-row": upload_dir / str(rid) / f"{'f' * 32}.part",
              "no-row": upload_dir / str(rid) / f"{'e' * 32}.part",
              "oneshot": upload_dir / str(rid) / "oneshot-123.part",
              "snapshot": upload_dir / "snapshots" / "x.part"}
    for path in staged.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"s")
        os.utime(path, (old, old))
    with session_of(client) as s:
        counts = quotas.sweep_orphans(s, artifacts, upload_dir, grace=3600)
    assert counts == {"checkpoints": 2, "snapshots": 1, "uploads": 3}
    # what the server's periodic task runs (RUNYARD_SWEEP_GRACE): nothing is left to sweep
    from server.app import sweep_orphan_files

    assert sweep_orphan_files(client.app) == {"checkpoints": 0, "snapshots": 0, "uploads": 0}
    left = {p.relative_to(artifacts.root).as_posix() for p in artifacts.root.rglob("*") if p.is_file()}
    assert f"{rid}/checkpoints/kept.ckpt" in left and f"{rid}/checkpoints/fresh-orphan.ckpt" in left
    assert f"snapshots/aa/{'a' * 64}.tar.gz" in left and "not-ours/readme.txt" in left
    assert not {f"{rid}/checkpoints/orphan.ckpt", "999999/checkpoints/of-a-deleted-run.ckpt",
                f"snapshots/bb/{'b' * 64}.tar.gz"} & left
    assert staged["with-row"].exists()
    assert not any(staged[k].exists() for k in ("no-row", "oneshot", "snapshot"))
    with session_of(client) as s:  # the kept checkpoint still downloads
        ckpt = s.scalar(select(Checkpoint).where(Checkpoint.run_id == rid))
    assert client.get(f"/api/v1/checkpoints/{ckpt.id}/download").content == b"k" * 10


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_the_sweep_lists_and_deletes_on_both_artifact_stores(client, request, tmp_path, kind):
    from server.artifacts import LocalArtifactStore, S3ArtifactStore
    from tests.server.test_artifacts import BUCKET

    if kind == "local":
        target = LocalArtifactStore(tmp_path / "root")
    else:
        s3 = request.getfixturevalue("moto_s3")
        target = S3ArtifactStore(BUCKET, f"sweep/{tmp_path.name}", endpoint_url=s3.endpoint)
    rid = new_run(client, "q-sweep-stores")
    with session_of(client) as s:
        store.add_checkpoint(s, rid, f"{rid}/checkpoints/kept.ckpt", size=None)
    src = tmp_path / "blob"
    src.write_bytes(b"x")
    for key in (f"{rid}/checkpoints/kept.ckpt", f"{rid}/checkpoints/orphan.ckpt", "outside/file"):
        target.put_file(key, src)
    listed = dict(target.iter_files())
    assert set(listed) == {f"{rid}/checkpoints/kept.ckpt", f"{rid}/checkpoints/orphan.ckpt", "outside/file"}
    assert all(abs(mtime - time.time()) < 600 for mtime in listed.values())
    with session_of(client) as s:
        assert quotas.sweep_orphans(s, target, None, grace=3600)["checkpoints"] == 0  # all too new
        assert quotas.sweep_orphans(s, target, None, grace=-60)["checkpoints"] == 1  # as if an hour old
    assert set(dict(target.iter_files())) == {f"{rid}/checkpoints/kept.ckpt", "outside/file"}


def test_a_real_servers_reaper_stops_a_script_past_its_longest_run_time(tmp_path):
    """uvicorn with its reaper on (no grace): a script that trains on and on is failed naming the quota,
    and its RunyardLogger learns it (``lost``) from its next heartbeat."""
    import subprocess
    import sys

    import httpx

    from tests.server.conftest import REPO, free_port, start_server, stop_server, wait_healthy

    port = free_port()
    proc = start_server(tmp_path / "home", port, RUNYARD_REAPER="true", RUNYARD_HEARTBEAT_TIMEOUT="3",
                        RUNYARD_QUOTA_RUN_TIME_GRACE="0")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        with httpx.Client(base_url=url, timeout=30) as api:
            assert api.post("/api/v1/runs", json={"recipe": "external", "project": "overtime"}).status_code == 201
            pid = next(p["id"] for p in api.get("/api/v1/projects").json() if p["name"] == "overtime")
            assert api.put(f"/api/v1/projects/{pid}/quotas", json={"max_run_seconds": 1}).status_code == 200
        script = tmp_path / "forever.py"
        script.write_text(
            "import time\n"
            "from trainer_core.loggers.runyard import RunyardLogger\n"
            f"logger = RunyardLogger(url={url!r}, project='overtime', save_dir={str(tmp_path)!r},\n"
            "                        heartbeat_interval=0.3, system_metrics=False, environment=False, capture=False)\n"
            "step, deadline = 0, time.monotonic() + 90\n"
            "while not logger.lost.is_set() and time.monotonic() < deadline:\n"
            "    logger.log_metrics({'loss': 1.0}, step=step)\n"
            "    step += 1\n"
            "    logger.lost.wait(0.02)\n"
            "print('LOST' if logger.lost.is_set() else 'NEVER', logger.run_id)\n")
        out = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=150)
        assert out.returncode == 0, out.stdout + out.stderr
        word, run_id = out.stdout.split()[-2:]
        assert word == "LOST", out.stdout + out.stderr
        run = httpx.get(f"{url}/api/v1/runs/{run_id}").json()
        assert run["status"] == "failed", run
        assert "max_run_seconds quota of 1 s" in run["error"] and "--max-run-seconds N" in run["error"], run
    finally:
        stop_server(proc)
