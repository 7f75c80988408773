"""Full or read-only storage (issue 11, point 6), on small tmpfs mounts (root; see need_service):
an upload that does not fit is a 507 naming the free space, found up front or while writing,
leaving no partial file and nothing registered, and the run's earlier checkpoints intact; a
database write on a full disk is a 507 too; ``/healthz`` says ``degraded`` (with the reason)
while the database, the artifact store or the staging folder cannot be written, and ``ok``
again once space is freed."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import pytest

from tests.helpers.tmpfs import fill, mounted_tmpfs, remount
from tests.server.test_artifacts import moto_s3  # noqa: F401 - the fixture

warnings.filterwarnings("ignore", category=DeprecationWarning)
KiB, MiB = 1024, 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def disk(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "4m") as path:
        yield path


def make_client(home: Path, **settings):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    settings.setdefault("health_probe_interval", 0)  # probe at every /healthz (the cache has its own test)
    app = create_app(Settings(home=home, reaper=False, **settings))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def open_client():
    """``open_client(home, **settings)``: a started app; its engine is disposed at the end (before
    the tmpfs under it is unmounted)."""
    clients = []

    def start(home: Path, **settings):
        client = make_client(home, **settings)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    from server.db import dispose_engine

    for client in clients:
        client.__exit__(None, None, None)
        dispose_engine(client.app.state.settings.database_url)


def external_run(client) -> int:
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": "full-disk"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def one_shot(client, rid: int, name: str, data, **headers):
    return client.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": name}, content=data,
                      headers={**OCTET, **headers})


def chunks(data: bytes, size: int = 256 * KiB):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def files_under(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file (filler files excluded)."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("filler"):
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def upload_rows(client) -> int:
    from sqlalchemy import func, select

    from server.models import Upload

    session = client.app.state.sessionmaker()
    try:
        return session.scalar(select(func.count()).select_from(Upload))
    finally:
        session.close()


def assert_507(r, *phrases: str) -> str:
    assert r.status_code == 507, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "free" in detail, detail
    for phrase in phrases:
        assert phrase in detail, (phrase, detail)
    return detail


# --------------------------------------------------------------------------- uploads


def test_an_upload_larger_than_the_free_space_is_refused_before_a_byte_is_stored(tmp_path, disk, open_client):
    # staging folder and artifact store on the 4 MiB tmpfs; the database elsewhere
    client = open_client(tmp_path / "home", artifact_root=disk / "artifacts", upload_dir=disk / "uploads")
    rid = external_run(client)
    earlier = os.urandom(300 * KiB)
    assert one_shot(client, rid, "epoch=0.ckpt", earlier).status_code == 201
    before = files_under(disk)
    big = 6 * MiB  # more than the whole tmpfs

    r = client.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                    json={"filename": "epoch=1.ckpt", "size": big, "sha256": "0" * 64})
    detail = assert_507(r, f"{big} bytes", str(disk / "uploads"), "has only")
    assert r.json().get("field") == "size"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    assert f"({free} bytes) free" in detail, detail
    assert upload_rows(client) == 0  # nothing registered

    # by the Content-Length, before reading (a write would have said "no space left on device")
    assert_507(one_shot(client, rid, "epoch=1.ckpt", b"\0" * big), f"needs 6.0 MiB ({big} bytes)", "has only")
    r = client.put("/api/v1/snapshots/" + "a" * 64, content=b"\0" * big,
                   headers={"Content-Type": "application/gzip"})
    assert_507(r, f"needs 6.0 MiB ({big} bytes)", "has only")

    assert files_under(disk) == before  # no partial file, the earlier checkpoint as it was
    names = [c["path"].rsplit("/", 1)[-1] for c in client.get(f"/api/v1/runs/{rid}/checkpoints").json()]
    assert names == ["epoch=0.ckpt"]
    assert client.get(f"/api/v1/checkpoints/{client.get(f'/api/v1/runs/{rid}/checkpoints').json()[0]['id']}"
                      "/download").content == earlier


def test_a_disk_that_fills_during_the_write_answers_507_and_keeps_nothing(tmp_path, disk, open_client):
    client = open_client(tmp_path / "home", artifact_root=disk / "artifacts", upload_dir=disk / "uploads")
    rid = external_run(client)
    earlier = os.urandom(200 * KiB)
    assert one_shot(client, rid, "epoch=0.ckpt", earlier).status_code == 201
    data = os.urandom(3 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    # a resumable upload that fitted when it started ...
    r = client.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                    json={"filename": "epoch=1.ckpt", "size": len(data), "sha256": sha})
    assert r.status_code == 201, r.text
    upload_id = r.json()["upload_id"]
    filler = fill(disk)
    os.truncate(filler, filler.stat().st_size - 1 * MiB)  # ... and now only 1 MiB is left
    before = files_under(disk)

    # chunked one-shot upload (no Content-Length): found while writing
    r = one_shot(client, rid, "epoch=2.ckpt", chunks(data))
    assert_507(r, "no space left on device", str(disk / "uploads"))
    # the resumable PUT: what is left to send does not fit any more, refused before reading
    r = client.put(f"/api/v1/uploads/{upload_id}", params={"offset": 0}, content=data, headers=OCTET)
    assert_507(r, f"{len(data)} bytes", "has only")
    assert files_under(disk) == before  # no partial file anywhere
    assert client.get(f"/api/v1/uploads/{upload_id}").json()["offset"] == 0
    names = [c["path"].rsplit("/", 1)[-1] for c in client.get(f"/api/v1/runs/{rid}/checkpoints").json()]
    assert names == ["epoch=0.ckpt"]  # nothing registered, the earlier one kept

    filler.unlink()  # space freed: the same upload goes through
    r = client.put(f"/api/v1/uploads/{upload_id}", params={"offset": 0}, content=data, headers=OCTET)
    assert r.status_code == 200 and r.json()["checkpoint"]["sha256"] == sha, r.text
    cid = r.json()["checkpoint"]["id"]
    assert client.get(f"/api/v1/checkpoints/{cid}/download").content == data


def test_a_resumable_put_cut_short_by_a_full_disk_drops_only_its_own_bytes(tmp_path, disk, open_client):
    client = open_client(tmp_path / "home", artifact_root=disk / "artifacts", upload_dir=disk / "uploads")
    rid = external_run(client)
    data = os.urandom(3 * MiB)
    r = client.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                    json={"filename": "a.ckpt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    upload_id = r.json()["upload_id"]
    first = 512 * KiB
    r = client.put(f"/api/v1/uploads/{upload_id}", params={"offset": 0}, content=data[:first], headers=OCTET)
    assert r.status_code == 200 and r.json()["offset"] == first, r.text
    filler = fill(disk)
    os.truncate(filler, filler.stat().st_size - 3 * MiB)  # the rest fits, the check passes ...
    staged = next((disk / "uploads").rglob("*.part"))

    def rest():
        yield data[first:first + 256 * KiB]
        with open(filler, "ab") as f:  # ... but another writer takes the space meanwhile
            f.write(b"\0" * (3 * MiB - 300 * KiB))
        yield data[first + 256 * KiB:]

    r = client.put(f"/api/v1/uploads/{upload_id}", params={"offset": first}, content=rest(), headers=OCTET)
    assert_507(r, "no space left on device")
    assert staged.stat().st_size == first  # back where this PUT started
    assert client.get(f"/api/v1/uploads/{upload_id}").json()["offset"] == first
    filler.unlink()
    r = client.put(f"/api/v1/uploads/{upload_id}", params={"offset": first}, content=data[first:], headers=OCTET)
    assert r.status_code == 200 and r.json()["checkpoint"]["size"] == len(data), r.text


def test_an_artifact_store_on_another_full_file_system(tmp_path, disk, open_client):
    # staging on the ordinary disk, the artifact store on the tmpfs: the staged file is copied over
    client = open_client(tmp_path / "home", artifact_root=disk / "artifacts")
    rid = external_run(client)
    earlier = os.urandom(200 * KiB)
    assert one_shot(client, rid, "epoch=0.ckpt", earlier).status_code == 201
    data = os.urandom(2 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    filler = fill(disk)
    os.truncate(filler, filler.stat().st_size - 1 * MiB)
    before = files_under(disk)

    r = client.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                    json={"filename": "epoch=1.ckpt", "size": len(data), "sha256": sha})
    assert_507(r, "the artifact store", str(disk / "artifacts"))
    r = one_shot(client, rid, "epoch=1.ckpt", chunks(data))  # no Content-Length: fails in the copy
    assert_507(r, "no space left on device", "the artifact store")
    assert files_under(disk) == before  # no temp file left in the store
    staging = client.app.state.settings.upload_dir
    assert not [p for p in staging.rglob("*") if p.is_file()]  # nor in the staging folder
    names = [c["path"].rsplit("/", 1)[-1] for c in client.get(f"/api/v1/runs/{rid}/checkpoints").json()]
    assert names == ["epoch=0.ckpt"]
    filler.unlink()
    assert one_shot(client, rid, "epoch=1.ckpt", chunks(data)).status_code == 201


# --------------------------------------------------------------------------- database


def test_a_full_sqlite_disk_is_507_and_healthz_degraded_until_space_is_freed(tmp_path, disk, open_client):
    client = open_client(tmp_path / "home", database_url=f"sqlite:///{disk / 'runyard.db'}")
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "artifacts": "ok", "uploads": "ok"}
    rid = external_run(client)
    filler = fill(disk)

    r = client.post("/api/v1/runs", json={"recipe": "external", "name": "no room"})
    detail = assert_507(r, "database", str(disk))
    assert "0 B" in detail, detail
    r = client.post(f"/api/v1/runs/{rid}/metrics", json={"points": [{"key": "loss", "step": 0, "value": 1.0}]})
    assert r.status_code == 507, r.text
    # a checkpoint stored on another disk cannot be registered: its file goes again
    assert_507(one_shot(client, rid, "epoch=0.ckpt", os.urandom(100 * KiB)), "database")
    artifacts = client.app.state.settings.artifact_root
    assert not [p for p in artifacts.rglob("*") if p.is_file()]
    health = client.get("/healthz")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "degraded" and body["database"].startswith("degraded: the database's disk is full")
    assert body["artifacts"] == "ok" and body["uploads"] == "ok"  # those are on another disk
    assert str(disk) not in health.text  # /healthz is public: no server paths

    filler.unlink()
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.post("/api/v1/runs", json={"recipe": "external", "name": "room again"}).status_code == 201
    runs = client.get("/api/v1/runs").json()
    assert sorted(r["name"] for r in runs["items"]) == ["full-disk", "room again"]  # the refused one is not there


@pytest.fixture
def pg_on_tmpfs():
    """A PostgreSQL database whose tablespace is a 32 MiB tmpfs: ``(url, folder)``. Needs the
    PostgreSQL server on this machine (it must see the folder), as CI runs it."""
    import secrets

    from tests.conftest import need_service, port_open

    need_service("PostgreSQL", port_open("127.0.0.1", 5432), "on 127.0.0.1:5432")
    name = f"runyard_full_{secrets.token_hex(4)}"
    mountpoint = Path(tempfile.mkdtemp(prefix="runyard-pgdisk-"))  # not under pytest's 0700 folders
    os.chmod(mountpoint, 0o755)
    try:
        yield from _tablespace(name, mountpoint)
    finally:
        mountpoint.rmdir()


def _tablespace(name: str, mountpoint: Path):
    import pwd

    import psycopg

    from tests.conftest import need_service
    from tests.server.conftest import PG_ADMIN_URL

    with mounted_tmpfs(mountpoint, "32m") as disk:
        try:
            owner = pwd.getpwnam("postgres")
            os.chown(disk, owner.pw_uid, owner.pw_gid)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f"CREATE TABLESPACE {name} LOCATION '{disk}'")
                conn.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
            why = ""
        except (KeyError, psycopg.Error) as exc:
            why = str(exc).strip()
        need_service("a PostgreSQL server on this machine", not why, f"a tablespace on a tmpfs: {why}")
        try:
            yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", disk
        finally:
            from server.db import dispose_engine

            dispose_engine(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"DROP TABLESPACE IF EXISTS {name}")


def test_reads_go_on_with_a_token_while_the_database_disk_is_full(tmp_path, disk, open_client):
    from server import auth, users

    client = open_client(tmp_path / "home", database_url=f"sqlite:///{disk / 'runyard.db'}")
    session = client.app.state.sessionmaker()
    try:
        user = users.create_user(session, "ada", password="a-long-password", is_admin=True)
        _, secret = auth.create_token(session, "personal", name="t", scope="read+write", user_id=user.id)
    finally:
        session.close()
    headers = {"Authorization": f"Bearer {secret}"}
    rid = client.post("/api/v1/runs", json={"recipe": "external", "name": "kept"}, headers=headers).json()["id"]
    from sqlalchemy import update

    from server.models import Token

    session = client.app.state.sessionmaker()
    try:  # as if the token was last used long ago: the next request records its use
        session.execute(update(Token).values(last_used_at=None))
        session.commit()
    finally:
        session.close()
    auth.clear_caches()
    filler = fill(disk)
    # the token's last-used time cannot be recorded: the request is served anyway
    r = client.get(f"/api/v1/runs/{rid}", headers=headers)
    assert r.status_code == 200 and r.json()["name"] == "kept", r.text
    assert client.get("/api/v1/runs", headers=headers).json()["total"] == 1
    assert_507(client.post("/api/v1/runs", json={"recipe": "external"}, headers=headers), "database")
    filler.unlink()


def test_a_full_postgresql_tablespace_is_507_and_healthz_degraded(tmp_path, pg_on_tmpfs, open_client):
    url, disk = pg_on_tmpfs
    client = open_client(tmp_path / "home", database_url=url)
    assert client.get("/healthz").json()["status"] == "ok"
    rid = external_run(client)
    points = {"points": [{"key": "loss", "step": i, "value": 1.0} for i in range(10_000)]}
    filler = fill(disk)

    # an UPDATE would still fit in its page: the probe's new table must grow, and cannot
    body = client.get("/healthz").json()
    assert body["status"] == "degraded", body
    assert body["database"].startswith("degraded: the database's disk is full (could not extend file"), body
    assert "pg_tblspc" not in body["database"] and str(disk) not in str(body)
    r = client.post(f"/api/v1/runs/{rid}/metrics", json=points)
    assert r.status_code == 507 and "its disk is full" in r.json()["detail"], r.text

    filler.unlink()
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.post(f"/api/v1/runs/{rid}/metrics", json=points).status_code == 200
    keys = {k["key"]: k["count"] for k in client.get(f"/api/v1/runs/{rid}/metric-keys").json()}
    assert keys == {"loss": 10_000}  # the refused batch stored nothing


def test_a_read_only_database_is_told_apart_from_a_busy_or_broken_one(tmp_path):
    # (a read-only disk under a live SQLite database cannot be staged on tmpfs: the remount needs
    # every file closed, and a WAL database cannot even be read then; a read-only open is the same error)
    import sqlite3

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from server.health import database_storage_problem

    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with engine.connect() as conn, pytest.raises(OperationalError) as refused:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert database_storage_problem(refused.value) == "read-only"
    with engine.connect() as conn, pytest.raises(OperationalError) as broken:
        conn.execute(text("INSERT INTO missing VALUES (1)"))
    assert database_storage_problem(broken.value) is None
    engine.dispose()


# --------------------------------------------------------------------------- artifact store, staging


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_healthz_reports_an_artifact_store_that_cannot_be_written(tmp_path, disk, open_client, how):
    client = open_client(tmp_path / "home", artifact_root=disk / "artifacts", upload_dir=disk / "uploads")
    assert client.get("/healthz").json()["status"] == "ok"
    filler = fill(disk) if how == "full" else None
    if how == "read-only":
        remount(disk, "ro")
    try:
        r = client.get("/healthz")
        assert r.status_code == 200, r.text
        body = r.json()
        reason = "no space left on device, 0 B free" if how == "full" else "read-only file system"
        assert body == {"status": "degraded", "database": "ok",
                        "artifacts": f"degraded: cannot be written ({reason})",
                        "uploads": f"degraded: cannot be written ({reason})"}, body
        rid = external_run(client)
        assert_507(one_shot(client, rid, "x.ckpt", chunks(b"\1" * 100 * KiB)),
                   "no space left on device" if how == "full" else "read-only file system")
    finally:
        if how == "read-only":
            remount(disk, "rw")
    if filler is not None:
        filler.unlink()
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "artifacts": "ok", "uploads": "ok"}
    assert not [p for p in disk.rglob("*") if p.is_file()]  # no probe file left behind


def test_healthz_probes_are_cached_and_a_507_makes_the_next_one_probe_again(tmp_path, disk, open_client):
    client = open_client(tmp_path / "home", artifact_root=disk / "artifacts", upload_dir=disk / "uploads",
                         health_probe_interval=3600)
    assert client.get("/healthz").json()["status"] == "ok"
    writes = probe_writes(client)
    assert client.get("/healthz").json()["status"] == "ok"
    assert probe_writes(client) == writes  # cached: no write
    fill(disk)
    assert client.get("/healthz").json()["status"] == "ok"  # still the cached answer ...
    rid = external_run(client)
    assert one_shot(client, rid, "x.ckpt", b"\1" * MiB).status_code == 507
    assert client.get("/healthz").json()["artifacts"].startswith("degraded")  # ... until a write failed
    assert probe_writes(client) == writes + 1


def probe_writes(client) -> int:
    from sqlalchemy import select

    from server.models import HealthProbe

    session = client.app.state.sessionmaker()
    try:
        return session.scalar(select(HealthProbe.writes).where(HealthProbe.id == 1))
    finally:
        session.close()


def test_an_s3_artifact_store_is_probed_with_an_object_put_and_deleted(tmp_path, request):
    from server.artifacts import S3ArtifactStore
    from server.health import probe_artifacts

    moto = request.getfixturevalue("moto_s3")

    store = S3ArtifactStore(moto.bucket, f"probe-{tmp_path.name}", endpoint_url=moto.endpoint)
    assert probe_artifacts(store) == "ok"
    assert moto.keys(f"probe-{tmp_path.name}/") == set()  # nothing left behind
    missing = S3ArtifactStore("no-such-bucket", "x", endpoint_url=moto.endpoint)
    reason = probe_artifacts(missing)
    assert reason.startswith("degraded: cannot be written (") and "NoSuchBucket" in reason, reason
