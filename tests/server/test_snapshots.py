"""Code snapshots and code runs over the API, on SQLite and PostgreSQL: upload (dedupe, sha256,
unsafe archives, size and file limits), browse, download, who may do what, code runs (the
snapshot and entry point checked, params validated against a recorded schema), the code schema
and the environment record (docs/code-runs.md)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server import snapshots, users
from server.auth import create_token
from server.store import missing_snapshot

KiB = 1024
MAX_BYTES = 256 * KiB  # compressed upload limit of this module's server
MAX_UNPACKED = 512 * KiB
MAX_FILES = 50


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def own_backend(request, tmp_path_factory):
    """A database of this module's own (its accounts must not end other modules' open mode)."""
    home = tmp_path_factory.mktemp(f"snapshots-{request.param}")
    if request.param == "sqlite":
        yield f"sqlite:///{home / 'runyard.db'}", home
        return
    import secrets

    import psycopg

    base = request.getfixturevalue("pg_url").rsplit("/", 1)[0]
    name = f"runyard_snapshots_{secrets.token_hex(4)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}", home
    from server.db import dispose_engine

    dispose_engine(f"{base}/{name}")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def world(own_backend):
    """An app with project "vision" (alice member, bob viewer) and "nlp" (carol admin, alice member),
    personal tokens of each, a read-only token of alice and a worker token."""
    from server.app import create_app
    from server.settings import Settings
    from server.store import get_or_create_project

    url, home = own_backend
    settings = Settings(
        home=home,
        database_url=url,
        reaper=False,
        broker_url="memory://",
        snapshot_max_bytes=MAX_BYTES,
        snapshot_max_unpacked_bytes=MAX_UNPACKED,
        snapshot_max_files=MAX_FILES,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        session = app.state.sessionmaker()
        try:
            vision = get_or_create_project(session, "vision")
            nlp = get_or_create_project(session, "nlp")
            session.commit()
            made = {
                name: users.create_user(session, name, password="correct horse battery")
                for name in ("alice", "bob", "carol")
            }
            users.set_role(session, vision, made["alice"], "member")
            users.set_role(session, vision, made["bob"], "viewer")
            users.set_role(session, nlp, made["carol"], "admin")
            users.set_role(session, nlp, made["alice"], "member")
            tokens = {
                name: create_token(session, "personal", name=name, scope="read+write", user_id=u.id)[1]
                for name, u in made.items()
            }
            tokens["alice_ro"] = create_token(
                session, "personal", name="ro", scope="read", user_id=made["alice"].id
            )[1]
            tokens["worker"] = create_token(session, "worker", name="w")[1]
        finally:
            session.close()
        yield {"client": client, "app": app, "tokens": tokens, "settings": settings}


def bearer(world, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world['tokens'].get(who, who)}"}


def write_project(root: Path, **extra: bytes | str) -> Path:
    """A small project folder: a LightningModule file, a data file, a script and what ``extra`` adds."""
    files = {
        "pkg/__init__.py": "",
        "pkg/models.py": "class LitClassifier:\n    def __init__(self, lr: float = 0.01, hidden: int = 32):\n"
        "        self.lr = lr\n",
        "pkg/data.py": "class MNISTData:\n    def __init__(self, batch_size: int = 64):\n        pass\n",
        "train.py": "print('training')\n",
        "README.md": "héllo wörld\n",
        **extra,
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def pack_of(tmp_path: Path, name: str = "proj", **extra: bytes | str) -> snapshots.Packed:
    return snapshots.pack(write_project(tmp_path / name, **extra))


def upload(world, packed_or_bytes, who: str = "alice", project: str = "vision", sha: str | None = None):
    data = packed_or_bytes if isinstance(packed_or_bytes, bytes) else packed_or_bytes.data
    sha = sha or hashlib.sha256(data).hexdigest()
    return world["client"].put(
        f"/api/v1/snapshots/{sha}",
        params={"project": project},
        content=data,
        headers={**bearer(world, who), "Content-Type": "application/gzip"},
    )


def blobs(world) -> list[Path]:
    root = world["settings"].artifact_root / "snapshots"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def raw_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes = b"x", **attrs) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.type != tarfile.REGTYPE:
        info.size = 0
        return info, None
    return info, data


# --------------------------------------------------------------------------- upload


def test_upload_is_deduplicated_per_project_and_stored_once(world, tmp_path):
    packed = pack_of(tmp_path, "dedupe", **{"dedupe.txt": "unique to this test"})
    before = len(blobs(world))
    first = upload(world, packed)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["sha256"] == packed.sha256 and body["project"] == "vision" and body["created_by"] == "alice"
    assert body["size"] == len(packed.data) and body["file_count"] == len(packed.files)
    assert body["unpacked_bytes"] == sum(f["size"] for f in packed.files)
    assert body["download_url"] == f"/api/v1/snapshots/{body['id']}/download"
    again = upload(world, packed)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert len(blobs(world)) == before + 1
    blob = world["settings"].artifact_root / "snapshots" / packed.sha256[:2] / f"{packed.sha256}.tar.gz"
    assert blob.read_bytes() == packed.data
    other = upload(world, packed, project="nlp")
    assert other.status_code == 201 and other.json()["id"] != body["id"] and other.json()["project"] == "nlp"
    assert len(blobs(world)) == before + 1  # a new row, still one blob
    # nothing is left in the staging folder
    assert list((world["settings"].upload_dir / "snapshots").iterdir()) == []


def test_list_snapshots_shows_visible_projects_and_filters_by_sha(world, tmp_path):
    packed = pack_of(tmp_path, "listed", **{"listed.txt": "listed"})
    assert upload(world, packed).status_code == 201
    assert upload(world, packed, project="nlp").status_code == 201
    client = world["client"]
    mine = client.get("/api/v1/snapshots", params={"sha256": packed.sha256}, headers=bearer(world, "alice"))
    assert mine.status_code == 200
    assert sorted(s["project"] for s in mine.json()["items"]) == ["nlp", "vision"]
    assert all("files" not in s or s["files"] is None for s in mine.json()["items"])
    carols = client.get("/api/v1/snapshots", params={"sha256": packed.sha256}, headers=bearer(world, "carol"))
    assert [s["project"] for s in carols.json()["items"]] == ["nlp"]
    only = client.get(
        "/api/v1/snapshots",
        params={"sha256": packed.sha256, "project": "vision"},
        headers=bearer(world, "alice"),
    )
    assert [s["project"] for s in only.json()["items"]] == ["vision"]
    bad = client.get("/api/v1/snapshots", params={"sha256": "nothex"}, headers=bearer(world, "alice"))
    assert bad.status_code == 422 and bad.json()["field"] == "sha256"


def test_upload_to_a_new_project_creates_it_with_the_uploader_as_admin(world, tmp_path):
    packed = pack_of(tmp_path, "newproj")
    r = upload(world, packed, project="fresh-project")
    assert r.status_code == 201, r.text
    projects = world["client"].get("/api/v1/projects", headers=bearer(world, "alice")).json()
    fresh = [p for p in projects if p["name"] == "fresh-project"]
    assert fresh and fresh[0]["role"] == "admin"


def test_sha_mismatch_is_422_and_nothing_is_stored(world, tmp_path):
    packed = pack_of(tmp_path, "mismatch", **{"mismatch.txt": "m"})
    before = blobs(world)
    r = upload(world, packed, sha="0" * 64)
    assert r.status_code == 422 and r.json()["field"] == "sha256"
    assert packed.sha256 in r.json()["detail"] and "0" * 64 in r.json()["detail"]
    assert blobs(world) == before


@pytest.mark.parametrize(
    "bad,name",
    [
        ([member("../evil.py")], "../evil.py"),
        ([member("/etc/passwd")], "/etc/passwd"),
        ([member("link", type=tarfile.SYMTYPE, linkname="/etc")], "link"),
        ([member("ok.py"), member("hard", type=tarfile.LNKTYPE, linkname="ok.py")], "hard"),
        ([member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)], "dev"),
        ([member("twice.py"), member("twice.py")], "twice.py"),
    ],
)
def test_unsafe_archives_are_refused_naming_the_member(world, bad, name):
    data = raw_tar(bad)
    r = upload(world, data)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body" and repr(name) in r.json()["detail"]


def test_not_a_tar_gz_is_422(world):
    r = upload(world, b"just some bytes, not gzip")
    assert r.status_code == 422 and "tar.gz" in r.json()["detail"]


def test_over_the_upload_limit_is_413_while_streaming(world):
    data = os.urandom(MAX_BYTES + 10 * KiB)  # incompressible: over the compressed limit

    def body():
        for i in range(0, len(data), 16 * KiB):
            yield data[i : i + 16 * KiB]

    sha = hashlib.sha256(data).hexdigest()
    r = world["client"].put(
        f"/api/v1/snapshots/{sha}",
        params={"project": "vision"},
        content=body(),
        headers=bearer(world, "alice"),
    )
    assert r.status_code == 413 and "RUNYARD_SNAPSHOT_MAX_BYTES" in r.json()["detail"]
    declared = world["client"].put(
        f"/api/v1/snapshots/{sha}", params={"project": "vision"}, content=data, headers=bearer(world, "alice")
    )
    assert declared.status_code == 413


def test_unpacked_over_the_limit_is_413_naming_the_largest_file(world):
    data = raw_tar([member("small.py", b"x = 1\n"), member("data/huge.bin", b"\0" * (MAX_UNPACKED + KiB))])
    assert len(data) < MAX_BYTES
    r = upload(world, data)
    assert r.status_code == 413, r.text
    assert (
        "data/huge.bin" in r.json()["detail"] and "RUNYARD_SNAPSHOT_MAX_UNPACKED_BYTES" in r.json()["detail"]
    )


def test_too_many_files_is_413(world):
    data = raw_tar([member(f"f{i:03}.py", b"") for i in range(MAX_FILES + 1)])
    r = upload(world, data)
    assert r.status_code == 413 and f"more than {MAX_FILES} files" in r.json()["detail"]


def test_viewer_and_read_only_token_cannot_upload(world, tmp_path):
    packed = pack_of(tmp_path, "viewer")
    r = upload(world, packed, who="bob")
    assert r.status_code == 403 and r.json()["field"] == "project" and "member" in r.json()["detail"]
    r = upload(world, packed, who="alice_ro")
    assert r.status_code == 403
    r = upload(world, packed, who="carol")  # not in vision at all: may not submit there
    assert r.status_code == 403


# --------------------------------------------------------------------------- browse, download


@pytest.fixture(scope="module")
def git_snapshot(world, tmp_path_factory):
    """A snapshot of a git repository with a dirty tree, in project vision."""
    root = write_project(
        tmp_path_factory.mktemp("gitproj") / "repo", **{"weights.bin": bytes(range(256)) * 4}
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "."],
        ["commit", "-qm", "first"],
        ["remote", "add", "origin", "https://user:secret@example.org/team/repo.git"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, env=env, capture_output=True)
    (root / "train.py").write_text("print('changed')\n")
    packed = snapshots.pack(root)
    r = upload(world, packed)
    assert r.status_code == 201, r.text
    return packed, r.json()


def test_snapshot_records_git_and_lists_its_files(world, git_snapshot):
    packed, out = git_snapshot
    assert out["git"]["branch"] == "main" and out["git"]["dirty"] is True
    assert out["git"]["remote"] == "https://example.org/team/repo.git"  # no credentials kept
    assert len(out["git"]["commit"]) == 40
    r = world["client"].get(f"/api/v1/snapshots/{out['id']}", headers=bearer(world, "bob"))
    assert r.status_code == 200
    files = {f["path"]: f["size"] for f in r.json()["files"]}
    assert files["pkg/models.py"] > 0 and files["weights.bin"] == 1024
    assert ".runyard/git.json" in files and ".runyard/git.diff" in files


def test_read_a_files_text_a_binary_file_and_a_missing_one(world, git_snapshot):
    _, out = git_snapshot
    client, sid = world["client"], out["id"]
    r = client.get(f"/api/v1/snapshots/{sid}/files/pkg/models.py", headers=bearer(world, "bob"))
    assert r.status_code == 200, r.text
    assert r.json()["text"].startswith("class LitClassifier") and r.json()["path"] == "pkg/models.py"
    assert r.json()["size"] == len(r.json()["text"].encode())
    assert (
        client.get(f"/api/v1/snapshots/{sid}/files/README.md", headers=bearer(world, "bob")).json()["text"]
        == "héllo wörld\n"
    )
    diff = client.get(f"/api/v1/snapshots/{sid}/files/.runyard/git.diff", headers=bearer(world, "bob")).json()
    assert "+print('changed')" in diff["text"]
    binary = client.get(f"/api/v1/snapshots/{sid}/files/weights.bin", headers=bearer(world, "bob")).json()
    assert binary == {"path": "weights.bin", "size": 1024, "binary": True, "truncated": False}
    missing = client.get(f"/api/v1/snapshots/{sid}/files/pkg/nope.py", headers=bearer(world, "bob"))
    assert (
        missing.status_code == 404
        and missing.json()["field"] == "path"
        and "pkg/nope.py" in missing.json()["detail"]
    )
    unknown = client.get("/api/v1/snapshots/999999/files/x.py", headers=bearer(world, "alice"))
    assert unknown.status_code == 404 and unknown.json()["detail"] == missing_snapshot(999999).message


def test_download_gives_the_bytes_and_their_checksum(world, git_snapshot):
    packed, out = git_snapshot
    r = world["client"].get(f"/api/v1/snapshots/{out['id']}/download", headers=bearer(world, "bob"))
    assert r.status_code == 200
    assert r.content == packed.data
    assert r.headers["x-checksum-sha256"] == packed.sha256
    assert r.headers["content-type"] == "application/gzip"
    assert f'filename="snapshot-{packed.sha256[:12]}.tar.gz"' in r.headers["content-disposition"]


def test_download_serves_a_range_as_a_checkpoint_download_does(world, git_snapshot):
    from sqlalchemy import func, select

    from server.models import AuditEvent

    packed, out = git_snapshot
    url, size = f"/api/v1/snapshots/{out['id']}/download", len(packed.data)

    def audited() -> int:
        session = world["app"].state.sessionmaker()
        try:
            return session.scalar(
                select(func.count()).where(
                    AuditEvent.action == "snapshot_downloaded", AuditEvent.target == f"snapshot {out['id']}"
                )
            )
        finally:
            session.close()

    before = audited()
    first = world["client"].get(url, headers={**bearer(world, "bob"), "Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == packed.data[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{size}" and first.headers["accept-ranges"] == "bytes"
    assert first.headers["x-checksum-sha256"] == packed.sha256
    rest = world["client"].get(url, headers={**bearer(world, "bob"), "Range": "bytes=100-"})
    assert rest.status_code == 206 and first.content + rest.content == packed.data
    assert world["client"].get(url, headers={**bearer(world, "bob"), "Range": "bytes=-7"}).content == packed.data[-7:]
    assert audited() == before + 1  # bytes=0-99 started a download; the others continued it
    bad = world["client"].get(url, headers={**bearer(world, "bob"), "Range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"
    assert bad.json()["field"] == "Range"


def test_a_user_of_another_project_gets_404_as_if_missing(world, git_snapshot):
    _, out = git_snapshot
    sid = out["id"]
    for path in (
        f"/api/v1/snapshots/{sid}",
        f"/api/v1/snapshots/{sid}/files/train.py",
        f"/api/v1/snapshots/{sid}/download",
    ):
        r = world["client"].get(path, headers=bearer(world, "carol"))
        assert r.status_code == 404 and r.json()["detail"] == missing_snapshot(sid).message, path


# --------------------------------------------------------------------------- code runs


def code_run(world, snapshot_id: int, entry: dict, who: str = "alice", project: str = "vision", **body):
    return world["client"].post(
        "/api/v1/runs",
        json={
            "recipe": "code",
            "project": project,
            "code": {"snapshot_id": snapshot_id, "entry": entry},
            **body,
        },
        headers=bearer(world, who),
    )


MODULE_ENTRY = {"kind": "module", "model": "pkg/models.py:LitClassifier", "data": "pkg/data.py:MNISTData"}


def test_code_run_is_created_with_its_snapshot_and_entry(world, git_snapshot):
    packed, out = git_snapshot
    r = code_run(world, out["id"], MODULE_ENTRY, params={"lr": 0.1}, trainer={"max_epochs": 2})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["recipe"] == "code" and run["status"] == "queued" and run["params"] == {"lr": 0.1}
    assert run["trainer"] == {"max_epochs": 2, "max_time": "03:00:00:00"}  # the longest run time (quotas)
    assert run["code"] == {
        "snapshot_id": out["id"],
        "sha256": packed.sha256,
        "entry": MODULE_ENTRY,
        "git": {k: out["git"][k] for k in ("commit", "branch", "remote", "dirty")},
    }
    assert (
        world["client"].get(f"/api/v1/runs/{run['id']}", headers=bearer(world, "bob")).json()["code"]
        == run["code"]
    )
    listed = (
        world["client"].get("/api/v1/runs", params={"recipe": "code"}, headers=bearer(world, "bob")).json()
    )
    assert any(
        item["id"] == run["id"] and item["code"]["sha256"] == packed.sha256 for item in listed["items"]
    )
    cli = code_run(world, out["id"], {"kind": "cli", "script": "train.py"})
    assert cli.status_code == 201 and cli.json()["code"]["entry"] == {
        "kind": "cli",
        "script": "train.py",
        "subcommand": "fit",
    }
    command = code_run(
        world,
        out["id"],
        {"kind": "command", "command": ["python", "train.py"]},
        params={"--lr": "0.01", "--fast": True},
    )
    assert command.status_code == 201 and command.json()["params"] == {"--lr": "0.01", "--fast": True}
    other = world["client"].get("/api/v1/runs/" + str(run["id"]), headers=bearer(world, "carol"))
    assert other.status_code == 404


@pytest.mark.parametrize(
    "entry,field",
    [
        ({"kind": "module", "model": "pkg/missing.py:LitClassifier"}, "code.entry.model"),
        ({"kind": "module", "model": "pkg/models.py"}, "code.entry.model"),
        (
            {"kind": "module", "model": "pkg/models.py:LitClassifier", "data": "nope.py:Data"},
            "code.entry.data",
        ),
        ({"kind": "module"}, "code.entry.model"),
        ({"kind": "notebook"}, "code.entry.kind"),
        ({"kind": "cli", "script": "missing.py"}, "code.entry.script"),
        ({"kind": "cli", "script": "train.py", "subcommand": "fit; rm -rf /"}, "code.entry.subcommand"),
        ({"kind": "command", "command": []}, "code.entry.command"),
        ({"kind": "command", "command": ["python"], "extra": 1}, "code.entry.extra"),
    ],
)
def test_a_bad_entry_is_422_naming_its_key(world, git_snapshot, entry, field):
    _, out = git_snapshot
    r = code_run(world, out["id"], entry)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()


def test_the_snapshot_must_be_of_the_runs_project(world, git_snapshot, tmp_path):
    _, out = git_snapshot
    # alice is a member of nlp too, but the snapshot is vision's
    r = code_run(world, out["id"], MODULE_ENTRY, project="nlp")
    assert r.status_code == 422 and r.json()["field"] == "code.snapshot_id"
    r = code_run(world, 987654, MODULE_ENTRY)
    assert r.status_code == 422 and r.json()["field"] == "code.snapshot_id"
    r = world["client"].post(
        "/api/v1/runs", json={"recipe": "code", "project": "vision"}, headers=bearer(world, "alice")
    )
    assert r.status_code == 422 and r.json()["field"] == "code"
    r = world["client"].post(
        "/api/v1/runs",
        json={"recipe": "external", "code": {"snapshot_id": out["id"], "entry": MODULE_ENTRY}},
        headers=bearer(world, "alice"),
    )
    assert r.status_code == 422 and r.json()["field"] == "code"
    r = code_run(world, out["id"], MODULE_ENTRY, who="bob")  # a viewer submits nothing
    assert r.status_code == 403
    r = code_run(world, out["id"], {"kind": "cli", "script": "train.py"}, trainer={"max_epochs": 1})
    assert r.status_code == 422 and r.json()["field"] == "trainer"
    r = code_run(
        world,
        out["id"],
        {"kind": "command", "command": ["python", "train.py"]},
        params={"--nested": {"a": 1}},
    )
    assert r.status_code == 422 and r.json()["field"] == "params.--nested"


def claim(world, run_id: int) -> str:
    r = world["client"].post(
        f"/api/v1/runs/{run_id}/claim", json={"worker": "w", "device": "cpu"}, headers=bearer(world, "worker")
    )
    assert r.status_code == 200, r.text
    return r.json()["token"]


PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "lr": {"type": "number", "default": 0.01},
        "hidden": {"type": "integer", "default": 32},
        "batch_size": {"type": "integer", "default": 64},
    },
}


def test_code_schema_is_recorded_by_the_run_and_validates_later_params(world, git_snapshot):
    _, out = git_snapshot
    client = world["client"]
    entry = {"kind": "module", "model": "pkg/models.py:LitClassifier"}
    run_id = code_run(world, out["id"], entry, params={"lr": "not checked yet"}).json()["id"]
    r = client.get(f"/api/v1/runs/{run_id}/code-schema", headers=bearer(world, "bob"))
    assert r.status_code == 404 and "no recorded code schema" in r.json()["detail"]
    token = claim(world, run_id)
    bad = client.put(
        f"/api/v1/runs/{run_id}/code-schema",
        json={"params_schema": {"type": 12}},
        headers=bearer(world, token),
    )
    assert bad.status_code == 422 and bad.json()["field"] == "params_schema"
    r = client.put(
        f"/api/v1/runs/{run_id}/code-schema",
        json={"params_schema": PARAMS_SCHEMA, "trainer_schema": None},
        headers=bearer(world, token),
    )
    assert r.status_code == 200, r.text
    r = client.get(f"/api/v1/runs/{run_id}/code-schema", headers=bearer(world, "bob"))
    assert r.status_code == 200 and r.json() == {"params_schema": PARAMS_SCHEMA, "trainer_schema": None}
    # a new run of the same snapshot and entry point is checked against it
    wrong = code_run(world, out["id"], entry, params={"lr": "fast"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "params.lr"
    extra = code_run(world, out["id"], entry, params={"dropout": 0.5})
    assert extra.status_code == 422 and extra.json()["field"] == "params.dropout"
    good = code_run(world, out["id"], entry, params={"lr": 0.5})
    assert good.status_code == 201 and good.json()["params"] == {"lr": 0.5, "hidden": 32, "batch_size": 64}
    # ...another entry point of the same snapshot is not
    other = code_run(world, out["id"], MODULE_ENTRY, params={"lr": "fast"})
    assert other.status_code == 201
    # a run that is not a code run has none
    external = client.post(
        "/api/v1/runs", json={"recipe": "external", "project": "vision"}, headers=bearer(world, "alice")
    ).json()["id"]
    r = client.put(
        f"/api/v1/runs/{external}/code-schema", json={"params_schema": {}}, headers=bearer(world, "alice")
    )
    assert r.status_code == 409
    assert (
        client.get(f"/api/v1/runs/{external}/code-schema", headers=bearer(world, "alice")).status_code == 404
    )


def test_environment_record_put_and_get(world, git_snapshot):
    _, out = git_snapshot
    client = world["client"]
    run_id = code_run(world, out["id"], MODULE_ENTRY).json()["id"]
    r = client.get(f"/api/v1/runs/{run_id}/environment", headers=bearer(world, "bob"))
    assert r.status_code == 404
    token = claim(world, run_id)
    record = {
        "python": "3.11.7",
        "torch": "2.3.0",
        "packages": {"numpy": "1.26"},
        "seed": 7,
        "command": ["python", "-m", "worker"],
    }
    r = client.put(f"/api/v1/runs/{run_id}/environment", json=record, headers=bearer(world, token))
    assert r.status_code == 200, r.text
    got = client.get(f"/api/v1/runs/{run_id}/environment", headers=bearer(world, "bob"))
    assert got.status_code == 200 and got.json()["record"] == record and got.json()["updated_at"]
    record["seed"] = 8
    assert (
        client.put(f"/api/v1/runs/{run_id}/environment", json=record, headers=bearer(world, token)).json()[
            "record"
        ]["seed"]
        == 8
    )
    r = client.put(f"/api/v1/runs/{run_id}/environment", json=[1, 2], headers=bearer(world, token))
    assert r.status_code == 422 and r.json()["field"] == "record"
    r = client.put(f"/api/v1/runs/{run_id}/environment", content=b"{not json",
                   headers={**bearer(world, token), "Content-Type": "application/json"})
    assert r.status_code == 422
    big = {"packages": {f"p{i}": "x" * 100 for i in range(25_000)}}  # 2.7 MB: over the record's 2 MiB
    r = client.put(f"/api/v1/runs/{run_id}/environment", json=big, headers=bearer(world, token))
    assert r.status_code == 413 and "environment record" in r.json()["detail"], r.json()
    # a script's run (external) records its own with the user's token
    external = client.post(
        "/api/v1/runs", json={"recipe": "external", "project": "vision"}, headers=bearer(world, "alice")
    ).json()["id"]
    r = client.put(
        f"/api/v1/runs/{external}/environment", json={"python": "3.12"}, headers=bearer(world, "alice")
    )
    assert r.status_code == 200
    r = client.put(
        f"/api/v1/runs/{external}/environment", json={"python": "3.12"}, headers=bearer(world, "bob")
    )
    assert r.status_code == 403


def test_run_token_downloads_its_own_snapshot_only(world, git_snapshot, tmp_path):
    packed, out = git_snapshot
    client = world["client"]
    run_id = code_run(world, out["id"], MODULE_ENTRY).json()["id"]
    token = claim(world, run_id)
    r = client.get(f"/api/v1/snapshots/{out['id']}/download", headers=bearer(world, token))
    assert r.status_code == 200 and r.content == packed.data
    other = upload(world, pack_of(tmp_path, "someone-elses", **{"secret.txt": "not for this run"})).json()
    r = client.get(f"/api/v1/snapshots/{other['id']}/download", headers=bearer(world, token))
    assert r.status_code == 403
    r = client.get(f"/api/v1/snapshots/{out['id']}", headers=bearer(world, token))  # only the download
    assert r.status_code == 403
    # a run that is not a code run downloads no snapshot
    external = client.post(
        "/api/v1/runs", json={"recipe": "external", "project": "vision"}, headers=bearer(world, "alice")
    ).json()["id"]
    session = world["app"].state.sessionmaker()
    try:
        external_token = create_token(session, "run", run_id=external, attempt=1)[1]
    finally:
        session.close()
    r = client.get(f"/api/v1/snapshots/{out['id']}/download", headers=bearer(world, external_token))
    assert r.status_code == 403


def test_resuming_a_code_run_keeps_its_snapshot_and_entry(world, git_snapshot):
    _, out = git_snapshot
    client = world["client"]
    run_id = code_run(world, out["id"], MODULE_ENTRY).json()["id"]
    token = claim(world, run_id)
    session = world["app"].state.sessionmaker()
    try:
        from server.store import add_checkpoint

        add_checkpoint(session, run_id, f"{run_id}/checkpoints/last.ckpt", step=10, attempt=1)
    finally:
        session.close()
    assert (
        client.post(
            f"/api/v1/runs/{run_id}/finish", json={"status": "failed"}, headers=bearer(world, token)
        ).status_code
        == 200
    )
    r = client.post(f"/api/v1/runs/{run_id}/resume", json={}, headers=bearer(world, "alice"))
    assert r.status_code == 201, r.text
    assert r.json()["code"]["snapshot_id"] == out["id"] and r.json()["code"]["entry"] == MODULE_ENTRY
