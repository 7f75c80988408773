"""Resumable checkpoint uploads against a real uvicorn process (SQLite, local artifact store):
a connection cut halfway continues from the server's offset, sha256 is verified, names are
immutable, sizes are bounded, files get the server's umask mode, and a 2 GB upload streams
through in flat memory."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import REPO, free_port, stop_server, wait_healthy

UMASK = 0o027  # not the usual 0o022, so the test sees the server's umask is what decides
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory):
    """``uvicorn server.app:create_app --factory`` on SQLite, started with umask 027: (url, pid, settings-ish)."""
    home = tmp_path_factory.mktemp("uploads-home")
    port = free_port()
    env = {**os.environ, "RUNYARD_HOME": str(home), "RUNYARD_PORT": str(port), "RUNYARD_REAPER": "false"}
    for name in ("RUNYARD_ARTIFACT_URL", "RUNYARD_ARTIFACT_ROOT", "RUNYARD_UPLOAD_DIR", "RUNYARD_DATABASE_URL",
                 "RUNYARD_MAX_CHECKPOINT_BYTES", "RUNYARD_TOKEN"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.umask(UMASK),
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    yield {"url": url, "port": port, "pid": proc.pid, "home": home, "artifacts": home / "artifacts",
           "uploads": home / "uploads"}
    stop_server(proc)


@pytest.fixture
def api(upload_server):
    with httpx.Client(base_url=upload_server["url"], timeout=120) as c:
        yield c


def external_run(api) -> int:
    r = api.post("/api/v1/runs", json={"recipe": "external", "name": "uploads"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_upload(api, rid: int, filename: str, size: int, sha256: str, **meta) -> dict:
    r = api.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                 json={"filename": filename, "size": size, "sha256": sha256, **meta})
    assert r.status_code in (200, 201), r.text
    return r.json()


def put_raw(port: int, path: str, chunks: Iterator[bytes], content_length: int, *, cut_after: int | None = None,
            reset: bool = False) -> tuple[int, http.client.HTTPResponse | None, http.client.HTTPConnection]:
    """PUT over a plain socket (http.client): the headers promise ``content_length`` bytes; with
    ``cut_after`` the socket is closed after that many body bytes (``reset``: with an RST, unsent
    bytes dropped, instead of an orderly FIN). Returns (body bytes sent, response or None, connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.putrequest("PUT", path, skip_accept_encoding=True)
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(content_length))
    conn.endheaders()
    sent = 0
    for chunk in chunks:
        if cut_after is not None and sent + len(chunk) >= cut_after:
            chunk = chunk[:cut_after - sent]
            conn.send(chunk)
            sent += len(chunk)
            if reset:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sock.close()
            conn.sock = None
            return sent, None, conn
        conn.send(chunk)
        sent += len(chunk)
    return sent, conn.getresponse(), conn


def pieces(data: bytes, start: int = 0, size: int = 256 * 1024) -> Iterator[bytes]:
    for i in range(start, len(data), size):
        yield data[i:i + size]


def settled_offset(api, upload_id: str, at_least: int = 0, timeout: float = 30.0) -> int:
    """The server's offset once it stopped moving (the server noticed the cut and wrote what it had)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        offset = api.get(f"/api/v1/uploads/{upload_id}").json()["offset"]
        if offset != last:
            last, since = offset, time.monotonic()
        elif offset >= at_least and time.monotonic() - since > 0.5:
            return offset
        time.sleep(0.05)
    raise AssertionError(f"the upload's offset did not settle (last {last})")


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_cut_connection_resumes_from_the_servers_offset(api, upload_server, reset):
    rid = external_run(api)
    data = os.urandom(24 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    up = start_upload(api, rid, f"cut-{int(reset)}.ckpt", len(data), sha, step=7, resumable=True)
    upload_id, path = up["upload_id"], f"/api/v1/uploads/{up['upload_id']}"
    total = 0
    sent, response, _ = put_raw(upload_server["port"], f"{path}?offset=0", pieces(data), len(data),
                                cut_after=len(data) // 2, reset=reset)
    assert response is None and sent == len(data) // 2
    total += sent
    offset = settled_offset(api, upload_id, at_least=1 if not reset else 0)
    print(f"offset after the cut ({'RST' if reset else 'FIN'}): {offset} of {len(data)}")
    if reset:
        assert 0 <= offset <= len(data) // 2  # what was written before the reset, no more
    else:
        assert offset == len(data) // 2  # every byte that arrived was kept
    # a client that restarts asks again (same name, size and sha256): the same upload, at the same offset
    again = start_upload(api, rid, f"cut-{int(reset)}.ckpt", len(data), sha, step=7, resumable=True)
    assert again == {"upload_id": upload_id, "offset": offset, "size": len(data)}
    # the wrong offset is refused with the right one
    r = api.put(path, params={"offset": 0 if offset else 1}, content=b"x")
    assert r.status_code == 409 and r.json()["offset"] == offset
    sent, response, conn = put_raw(upload_server["port"], f"{path}?offset={offset}", pieces(data, offset),
                                   len(data) - offset)
    total += sent
    body = response.read()
    conn.close()
    assert response.status == 200, body
    answer = json.loads(body)
    assert answer["offset"] == answer["size"] == len(data)
    checkpoint = answer["checkpoint"]
    assert checkpoint["sha256"] == sha and checkpoint["size"] == len(data) and checkpoint["resumable"] is True
    assert checkpoint["step"] == 7 and checkpoint["filename"] == f"cut-{int(reset)}.ckpt"
    assert total < 1.5 * len(data), f"sent {total} bytes for a {len(data)}-byte file: the upload restarted"
    stored = upload_server["artifacts"] / checkpoint["path"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
    assert api.get(checkpoint["download_url"], headers={"Range": "bytes=-1000"}).content == data[-1000:]
    status = api.get(path).json()
    assert status["done"] is True and status["checkpoint"]["id"] == checkpoint["id"]
    # a repeat of the final PUT (its answer lost) answers the same checkpoint
    r = api.put(path, params={"offset": len(data)}, content=b"")
    assert r.status_code == 200 and r.json()["checkpoint"]["id"] == checkpoint["id"]


def test_a_reconnect_takes_over_from_a_connection_that_is_still_open(api, upload_server):
    """The network dropped without the server noticing (no FIN): the client reconnects and goes on
    from the server's offset; the stale connection writes nothing more, even if bytes trickle in."""
    rid = external_run(api)
    data = os.urandom(8 * MiB)
    up = start_upload(api, rid, "stale.ckpt", len(data), hashlib.sha256(data).hexdigest())
    path = f"/api/v1/uploads/{up['upload_id']}"
    stale = http.client.HTTPConnection("127.0.0.1", upload_server["port"], timeout=30)
    stale.putrequest("PUT", f"{path}?offset=0", skip_accept_encoding=True)
    stale.putheader("Content-Length", str(len(data)))
    stale.endheaders()
    stale.send(data[:3 * MiB])  # ... and then silence, the socket left open
    offset = settled_offset(api, up["upload_id"], at_least=3 * MiB)
    assert offset == 3 * MiB
    sent, response, conn = put_raw(upload_server["port"], f"{path}?offset={offset}", pieces(data, offset),
                                   len(data) - offset)
    body = response.read()
    conn.close()
    assert response.status == 200, body
    checkpoint = json.loads(body)["checkpoint"]
    try:  # the stale connection wakes up with wrong bytes: they must not land anywhere
        stale.send(b"\xff" * MiB)
        stale_answer = stale.getresponse()
        assert stale_answer.status == 409
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stale.close()
    time.sleep(0.3)
    stored = (upload_server["artifacts"] / checkpoint["path"]).read_bytes()
    assert stored == data and checkpoint["sha256"] == hashlib.sha256(data).hexdigest()
    assert api.get(checkpoint["download_url"]).content == data


def test_sha256_mismatch_is_422_and_restarts_at_zero(api):
    rid = external_run(api)
    data = b"the bytes that arrive" * 1000
    up = start_upload(api, rid, "bad.ckpt", len(data), hashlib.sha256(b"something else").hexdigest())
    r = api.put(f"/api/v1/uploads/{up['upload_id']}", params={"offset": 0}, content=data)
    assert r.status_code == 422 and r.json()["field"] == "sha256" and r.json()["offset"] == 0, r.text
    assert api.get(f"/api/v1/uploads/{up['upload_id']}").json() == {"offset": 0, "size": len(data), "done": False,
                                                                     "checkpoint": None}
    assert api.get(f"/api/v1/runs/{rid}/checkpoints").json() == []
    # the right file under that name: a new upload replaces the unfinished one
    fixed = start_upload(api, rid, "bad.ckpt", len(data), hashlib.sha256(data).hexdigest())
    assert fixed["upload_id"] != up["upload_id"] and fixed["offset"] == 0
    assert api.get(f"/api/v1/uploads/{up['upload_id']}").status_code == 404
    r = api.put(f"/api/v1/uploads/{fixed['upload_id']}", params={"offset": 0}, content=data)
    assert r.status_code == 200 and r.json()["checkpoint"]["size"] == len(data)


def test_existing_name_is_409_and_sizes_are_bounded(api, upload_server):
    rid = external_run(api)
    data = b"checkpoint" * 100
    sha = hashlib.sha256(data).hexdigest()
    up = start_upload(api, rid, "taken.ckpt", len(data), sha)
    first = api.put(f"/api/v1/uploads/{up['upload_id']}", params={"offset": 0}, content=data).json()["checkpoint"]
    r = api.post(f"/api/v1/runs/{rid}/checkpoints/uploads", json={"filename": "taken.ckpt", "size": 3,
                                                                  "sha256": hashlib.sha256(b"new").hexdigest()})
    assert r.status_code == 409 and r.json()["field"] == "filename" and r.json()["checkpoint"]["id"] == first["id"]
    r = api.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": "taken.ckpt"}, content=b"new")
    assert r.status_code == 409
    assert api.get(first["download_url"]).content == data
    # too large: declared, promised by Content-Length, or streamed without one
    r = api.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                 json={"filename": "huge.ckpt", "size": 50 * 1024**3 + 1, "sha256": sha})
    assert r.status_code == 413 and r.json()["field"] == "size"
    up = start_upload(api, rid, "small.ckpt", 10, hashlib.sha256(b"0123456789").hexdigest())
    r = api.put(f"/api/v1/uploads/{up['upload_id']}", params={"offset": 0}, content=b"0123456789ABC")
    assert r.status_code == 413 and r.json()["offset"] == 0
    r = api.put(f"/api/v1/uploads/{up['upload_id']}", params={"offset": 0},
                content=iter([b"01234", b"56789", b"ABC"]))  # chunked: no Content-Length to check first
    assert r.status_code == 413 and r.json()["offset"] == 10
    r = api.put(f"/api/v1/uploads/{up['upload_id']}", params={"offset": 10}, content=b"")
    assert r.status_code == 200 and r.json()["checkpoint"]["filename"] == "small.ckpt"
    assert api.get(f"/api/v1/uploads/{'f' * 32}").status_code == 404
    assert api.put("/api/v1/uploads/not-an-id", params={"offset": 0}, content=b"x").status_code == 404
    assert api.post(f"/api/v1/runs/{rid}/checkpoints/uploads",
                    json={"filename": "../x.ckpt", "size": 1, "sha256": sha}).status_code == 422


def test_stored_files_follow_the_servers_umask(api, upload_server):
    rid = external_run(api)
    data = b"mode" * 10
    up = start_upload(api, rid, "mode.ckpt", len(data), hashlib.sha256(data).hexdigest())
    resumable = api.put(f"/api/v1/uploads/{up['upload_id']}", params={"offset": 0}, content=data).json()
    oneshot = api.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": "curl.ckpt"}, content=data).json()
    for checkpoint in (resumable["checkpoint"], oneshot):
        mode = stat.S_IMODE((upload_server["artifacts"] / checkpoint["path"]).stat().st_mode)
        assert mode == 0o666 & ~UMASK, oct(mode)


def _memory_kb(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_gigabytes_stream_through_in_flat_memory(api, upload_server):
    """2 GB, generated on the fly in 8 MiB chunks (never held whole), uploaded in one PUT: the server's
    RSS (and its peak, VmHWM) grows by under 100 MB."""
    size, chunk = 2 * 1024**3, 8 * MiB
    base = os.urandom(chunk)

    def generate() -> Iterator[bytes]:
        for i in range(size // chunk):
            yield i.to_bytes(8, "big") + base[8:]  # each chunk differs; one 8 MiB buffer at a time

    digest = hashlib.sha256()
    for block in generate():
        digest.update(block)
    sha = digest.hexdigest()
    rid = external_run(api)
    up = start_upload(api, rid, "big.ckpt", size, sha)
    pid = upload_server["pid"]
    before = _memory_kb(pid)
    peak_rss = [before["VmRSS"]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak_rss.append(_memory_kb(pid)["VmRSS"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        sent, response, conn = put_raw(upload_server["port"], f"/api/v1/uploads/{up['upload_id']}?offset=0",
                                       generate(), size)
        body = response.read()
        conn.close()
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    after = _memory_kb(pid)
    assert response.status == 200, body
    checkpoint = json.loads(body)["checkpoint"]
    assert sent == size and checkpoint["size"] == size and checkpoint["sha256"] == sha
    stored = upload_server["artifacts"] / checkpoint["path"]
    try:
        assert stored.stat().st_size == size
        grew_mb = {"VmHWM": (after["VmHWM"] - before["VmHWM"]) / 1024,
                   "VmRSS": (after["VmRSS"] - before["VmRSS"]) / 1024,
                   "sampled RSS peak": (max(peak_rss) - before["VmRSS"]) / 1024}
        print(f"2 GB upload in {elapsed:.1f} s; server memory grew by (MB): {grew_mb}")
        assert all(v < 100 for v in grew_mb.values()), grew_mb
    finally:
        stored.unlink(missing_ok=True)
