"""Bounded requests and no 500s on any input (issue 11, points 1 and 5; server/limits.py,
server/errors.py, server/openapi.py).

The body limits are checked through a real uvicorn with small limits, with chunked bodies (no
Content-Length) and declared ones; everything else runs on SQLite and PostgreSQL (the ``client``
fixture), which must answer alike."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.server.conftest import free_port, start_server, stop_server, wait_healthy

SMALL = {"RUNYARD_MAX_BODY_BYTES": "4096", "RUNYARD_MAX_METRICS_BODY_BYTES": "8192",
         "RUNYARD_MAX_LOGS_BODY_BYTES": "16384", "RUNYARD_MAX_CHECKPOINT_BYTES": str(2**20)}
JSON = {"Content-Type": "application/json"}


def post_json(client, path, body, method="POST"):
    return client.request(method, path, content=json.dumps(body), headers=JSON)


def external_run(client, name="limits", **extra):
    r = client.post("/api/v1/runs", json={"recipe": "external", "name": name, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def chunks(total: int, size: int = 1000, prefix: bytes = b""):
    """A generator body (sent chunked, no Content-Length) of ``total`` bytes of JSON-ish text."""
    def gen():
        yield prefix
        sent = len(prefix)
        while sent < total:
            n = min(size, total - sent)
            yield b" " * n
            sent += n
    return gen()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A real uvicorn with small body limits (4 KiB JSON, 8 KiB metrics, 16 KiB logs)."""
    home = tmp_path_factory.mktemp("limits-home")
    port = free_port()
    proc = start_server(home, port, **SMALL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c
    stop_server(proc)


# --------------------------------------------------------------------------- body size, streamed


@pytest.mark.parametrize("kind, path, setting, limit", [
    ("create", "/api/v1/runs", "RUNYARD_MAX_BODY_BYTES", 4096),
    ("patch", "/api/v1/runs/{rid}", "RUNYARD_MAX_BODY_BYTES", 4096),
    ("hyperparameters", "/api/v1/runs/{rid}/hyperparameters", "RUNYARD_MAX_BODY_BYTES", 4096),
    ("summary", "/api/v1/runs/{rid}/summary", "RUNYARD_MAX_BODY_BYTES", 4096),
    ("metrics", "/api/v1/runs/{rid}/metrics", "RUNYARD_MAX_METRICS_BODY_BYTES", 8192),
    ("logs", "/api/v1/runs/{rid}/logs", "RUNYARD_MAX_LOGS_BODY_BYTES", 16384),
])
def test_a_chunked_body_over_its_limit_is_413_and_stores_nothing(small_server, kind, path, setting, limit):
    rid = external_run(small_server, f"stream-{kind}")["id"]
    method = {"patch": "PATCH", "hyperparameters": "PUT", "summary": "PUT"}.get(kind, "POST")
    url = path.format(rid=rid)
    # a valid document, padded with whitespace past the limit
    doc = {"create": {"recipe": "external", "name": "too-big"}, "patch": {"name": "renamed"},
           "hyperparameters": {"lr": 1}, "summary": {"layers": 1},
           "metrics": {"points": [{"key": "loss", "step": 1, "value": 1.0}]},
           "logs": {"lines": [{"text": "hello"}]}}[kind]
    before = small_server.get("/api/v1/runs", params={"limit": 1000}).json()["total"]
    r = small_server.request(method, url, content=chunks(limit + 1, prefix=json.dumps(doc).encode()), headers=JSON)
    assert r.status_code == 413, r.text
    body = r.json()
    assert setting in body["detail"] and str(limit) in body["detail"]
    assert body["field"] == setting.removeprefix("RUNYARD_").lower()
    assert "content-length" not in {k.lower() for k in r.request.headers}  # it was streamed
    # nothing of it was stored
    run = small_server.get(f"/api/v1/runs/{rid}").json()
    assert small_server.get("/api/v1/runs", params={"limit": 1000}).json()["total"] == before
    assert run["name"] == f"stream-{kind}" and run["hyperparameters"] == {}
    assert small_server.get(f"/api/v1/runs/{rid}/summary").status_code == 404
    assert small_server.get(f"/api/v1/runs/{rid}/metric-keys").json() == []
    assert small_server.get(f"/api/v1/runs/{rid}/logs").json()["lines"] == []
    # the same document, padded to exactly the limit, is taken
    r = small_server.request(method, url, content=chunks(limit, prefix=json.dumps(doc).encode()), headers=JSON)
    assert r.status_code in (200, 201), r.text


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body_is_read(small_server):
    host, port = small_server.base_url.host, small_server.base_url.port
    with socket.create_connection((host, port), timeout=10) as s:
        # the body never comes: a server that waited for it would time out instead of answering
        s.sendall(b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = s.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"RUNYARD_MAX_BODY_BYTES" in body and b"1000000000" in body


def test_uploads_keep_their_own_limits(small_server):
    rid = external_run(small_server, "uploads")["id"]
    data = b"u" * 50_000  # far over RUNYARD_MAX_BODY_BYTES=4096, under RUNYARD_MAX_CHECKPOINT_BYTES
    r = small_server.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": "a.ckpt"}, content=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    r = small_server.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": "b.ckpt"},
                         content=chunks(2**20 + 1), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413 and "RUNYARD_MAX_CHECKPOINT_BYTES" in r.json()["detail"], r.text


def test_the_middleware_refuses_odd_content_lengths_without_calling_the_app():
    from server.limits import RequestLimits
    from server.settings import Settings

    called = []

    async def app(scope, receive, send):
        called.append(scope["path"])

    async def run(length: bytes) -> list[dict]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):  # ANN202
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/v1/runs", "query_string": b"",
                 "headers": [(b"content-length", length)]}
        await RequestLimits(app, Settings(max_body_bytes=100))(scope, receive, send)
        return sent

    huge = asyncio.run(run(b"9" * 5000))
    assert huge[0]["status"] == 413 and b"RUNYARD_MAX_BODY_BYTES" in huge[1]["body"]
    assert asyncio.run(run(b"12abc"))[0]["status"] == 400
    assert called == []
    assert asyncio.run(run(b"2")) == [] and called == ["/api/v1/runs"]


# --------------------------------------------------------------------------- JSON shape (both backends)


def nested(depth: int) -> str:
    """``depth`` levels in all: the body object, hyperparameters, then arrays."""
    inner = depth - 2
    return '{"recipe": "external", "hyperparameters": {"deep": ' + "[" * inner + "]" * inner + "}}"


def test_json_depth_is_bounded_and_deep_json_is_never_a_500(client):
    assert post_json(client, "/api/v1/runs", json.loads(nested(64))).status_code == 201
    for depth in (65, 500, 100_000):
        r = client.post("/api/v1/runs", content=nested(depth), headers=JSON)
        assert r.status_code == 422, (depth, r.text)
        assert r.json()["field"] == "max_json_depth" and "RUNYARD_MAX_JSON_DEPTH" in r.json()["detail"]
    # brackets inside strings are text, not nesting
    r = post_json(client, "/api/v1/runs", {"recipe": "external", "name": "[" * 150, "hyperparameters": {"{" * 90: 1}})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    for path, method in [(f"/api/v1/runs/{rid}/hyperparameters", "PUT"), (f"/api/v1/runs/{rid}/summary", "PUT"),
                         (f"/api/v1/runs/{rid}/metrics", "POST"), (f"/api/v1/runs/{rid}/logs", "POST"),
                         (f"/api/v1/runs/{rid}", "PATCH"), (f"/api/v1/runs/{rid}/environment", "PUT")]:
        r = client.request(method, path, content='{"a": ' + "[" * 600 + "]" * 600 + "}", headers=JSON)
        assert r.status_code == 422 and r.json()["field"] == "max_json_depth", (path, r.text)


def test_json_item_counts_are_bounded(client):
    rid = external_run(client, "items")["id"]
    r = post_json(client, f"/api/v1/runs/{rid}/hyperparameters", {"a": [0] * 200_001}, method="PUT")
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "max_json_items" and "RUNYARD_MAX_JSON_ITEMS" in r.json()["detail"]
    assert client.get(f"/api/v1/runs/{rid}/hyperparameters").json() == {}
    keys = {f"k{i}": [0] for i in range(70_000)}  # 70,000 keys, 140,000 values: 210,000 items in 840 KB
    r = client.put(f"/api/v1/runs/{rid}/summary", content=json.dumps(keys, separators=(",", ":")), headers=JSON)
    assert r.status_code == 422 and r.json()["field"] == "max_json_items", r.text
    # commas inside strings are no items
    r = post_json(client, f"/api/v1/runs/{rid}/hyperparameters", {"a": "," * 300_000}, method="PUT")
    assert r.status_code == 200, r.text
    # the metrics batch keeps its own cap of points
    points = [{"key": "m", "step": i, "value": 1} for i in range(10_001)]
    r = post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": points})
    assert r.status_code == 413 and r.json()["field"] == "points", r.text
    assert post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": points[:10_000]}).status_code == 200


def test_log_lines_over_the_limit_are_cut_and_marked(client, app_settings):
    rid = external_run(client, "long-lines")["id"]
    limit = app_settings.max_log_line_bytes
    long_ascii = "a" * (limit + 5000)
    long_wide = "é" * limit  # 2 bytes each: cut on a character boundary
    r = post_json(client, f"/api/v1/runs/{rid}/logs", {"lines": [{"text": "short"}, {"text": long_ascii},
                                                                 {"text": long_wide}]})
    assert r.status_code == 201 and r.json()["accepted"] == 3, r.text
    short, cut_ascii, cut_wide = [ln["text"] for ln in client.get(f"/api/v1/runs/{rid}/logs").json()["lines"]]
    assert short == "short"
    for original, cut in [(long_ascii, cut_ascii), (long_wide, cut_wide)]:
        head, marker = cut.rsplit("… [cut: ", 1)
        dropped = int(marker.removesuffix(" bytes]"))
        assert original.startswith(head) and len(cut.encode()) <= limit
        assert len(head.encode()) + dropped == len(original.encode())


def test_list_items_are_bounded_and_each_value_is_whole_on_its_own_endpoint(client, app_settings):
    """A run stored before the limits existed, with values far over RUNYARD_MAX_VALUE_BYTES."""
    from server.models import Run

    cap = app_settings.max_value_bytes
    rid = external_run(client, "oversized", project="oversized")["id"]
    big = {"blob": "x" * (3 * cap), "small": 1}
    session = client.app.state.sessionmaker()
    try:
        run = session.get(Run, rid)
        long_name = session.bind.dialect.name == "sqlite"  # PostgreSQL's varchar(200) holds no longer one
        if long_name:
            run.name = "n" * (2 * cap)
        run.error = "e" * (2 * cap)
        run.params = {"p": "y" * (2 * cap)}
        run.hyperparameters = big
        session.commit()
    finally:
        session.close()
    listed = client.get("/api/v1/runs", params={"project": "oversized"})
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert len(listed.content) < 6 * cap  # about one cap per cut field
    assert sorted(item["truncated"]) == ["error", "hyperparameters"] + ["name"] * long_name + ["params"]
    assert item["error"].startswith("eee") and item["error"].endswith(f"… [cut: {cap} bytes]")
    if long_name:
        assert item["name"].startswith("nnn") and item["name"].endswith(f"… [cut: {cap} bytes]")
    assert "[cut: " in item["hyperparameters"]["…"] and f"/api/v1/runs/{rid}/hyperparameters" in \
        item["hyperparameters"]["…"]
    assert len(json.dumps(item["hyperparameters"])) <= cap + 200
    # whole on its own endpoints
    assert client.get(f"/api/v1/runs/{rid}/hyperparameters").json() == big
    whole = client.get(f"/api/v1/runs/{rid}").json()
    assert whole["error"] == "e" * (2 * cap) and whole["params"] == {"p": "y" * (2 * cap)}
    assert whole["name"] == ("n" * (2 * cap) if long_name else "oversized")
    assert whole["truncated"] == []


def test_run_list_events_cut_oversized_values_too(client, app_settings):
    from types import SimpleNamespace

    from server.api.events import RunListPoller
    from server.auth import OPEN
    from server.models import Run
    from server.store import utcnow

    cap = app_settings.max_value_bytes
    listing = RunListPoller(SimpleNamespace(app=client.app, state=SimpleNamespace(principal=OPEN)))
    listing.poll()  # the baseline
    rid = external_run(client, "oversized-event")["id"]
    session = client.app.state.sessionmaker()
    try:
        run = session.get(Run, rid)
        run.error, run.updated_at = "e" * (3 * cap), utcnow()
        session.commit()
    finally:
        session.close()
    runs = [json.loads(line.split(": ", 1)[1])["run"] for chunk in listing.poll() for line in chunk.splitlines()
            if line.startswith("data: ")]
    (event,) = [r for r in runs if r.get("id") == rid]
    assert event["truncated"] == ["error"] and event["error"].endswith(f"… [cut: {2 * cap} bytes]")
    assert client.get(f"/api/v1/runs/{rid}").json()["error"] == "e" * (3 * cap)


def test_read_caps_are_422_naming_the_parameter(client):
    from server.deps import MAX_KEYS, MAX_LIST_LIMIT, MAX_LOG_LINES, MAX_POINTS

    rid = external_run(client, "caps")["id"]
    post_json(client, f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "m", "step": 0, "value": 1}]})
    many = ",".join(f"k{i}" for i in range(MAX_KEYS + 1))
    for path, params, field in [
        (f"/api/v1/runs/{rid}/metrics", {"max_points": MAX_POINTS + 1}, "max_points"),
        (f"/api/v1/runs/{rid}/metrics", {"keys": many}, "keys"),
        ("/api/v1/runs", {"limit": MAX_LIST_LIMIT + 1}, "limit"),
        ("/api/v1/runs", {"metric_keys": many}, "metric_keys"),
        (f"/api/v1/runs/{rid}/logs", {"tail": MAX_LOG_LINES + 1}, "tail"),
        (f"/api/v1/runs/{rid}/logs", {"limit": MAX_LOG_LINES + 1}, "limit"),
    ]:
        r = client.get(path, params=params)
        assert r.status_code == 422 and r.json()["field"] == field, (path, params, r.text)
        assert isinstance(r.json()["detail"], str)
    assert client.get(f"/api/v1/runs/{rid}/metrics", params={"max_points": MAX_POINTS}).status_code == 200
    assert client.get(f"/api/v1/runs/{rid}/metrics", params={"keys": many.rsplit(",", 1)[0]}).status_code == 200


# --------------------------------------------------------------------------- no 500 (both backends)


def test_a_range_header_with_5000_digits_is_answered(client):
    rid = external_run(client, "range")["id"]
    r = client.put(f"/api/v1/runs/{rid}/checkpoints/upload", params={"filename": "r.ckpt"}, content=b"0123456789",
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    url = r.json()["download_url"]
    digits = "9" * 5000
    assert client.get(url, headers={"Range": f"bytes={digits}-"}).status_code == 416
    whole = client.get(url, headers={"Range": f"bytes=0-{digits}"})
    assert whole.status_code == 206 and whole.content == b"0123456789"
    suffix = client.get(url, headers={"Range": f"bytes=-{digits}"})
    assert suffix.status_code == 206 and suffix.content == b"0123456789"
    assert client.get(url, headers={"Range": "bytes=2-4"}).content == b"234"


def test_other_headers_with_huge_numbers_are_answered(client):
    rid = external_run(client, "headers")["id"]
    r = client.get(f"/api/v1/runs/{rid}/events", headers={"Last-Event-ID": f"{'9' * 5000}.0.0"})
    assert r.status_code == 422 and r.json()["field"] == "Last-Event-ID"
    r = client.post(f"/api/v1/runs/{rid}/metrics", headers={**JSON, "Idempotency-Key": "9" * 5000},
                    content=json.dumps({"points": [{"key": "m", "step": 0, "value": 1}]}))
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key"


ID_ROUTES = [
    ("GET", "/api/v1/runs/{}"), ("PATCH", "/api/v1/runs/{}"), ("DELETE", "/api/v1/runs/{}"),
    ("POST", "/api/v1/runs/{}/cancel"), ("GET", "/api/v1/runs/{}/metrics"), ("GET", "/api/v1/runs/{}/logs"),
    ("GET", "/api/v1/runs/{}/hyperparameters"), ("GET", "/api/v1/runs/{}/checkpoints"),
    ("GET", "/api/v1/runs/{}/events"), ("GET", "/api/v1/checkpoints/{}/download"),
    ("DELETE", "/api/v1/checkpoints/{}"), ("GET", "/api/v1/snapshots/{}"),
    ("GET", "/api/v1/projects/{}/members"),
]


def _missing_answer(client, method, path):  # ANN202
    r = client.request(method, path, content=b"{}" if method in ("PATCH", "POST") else None,
                       headers=JSON if method in ("PATCH", "POST") else {})
    return r.status_code, r.json()


@pytest.mark.parametrize("method, path", ID_ROUTES)
def test_ids_beyond_the_column_range_are_404_like_a_missing_one(client, method, path):
    status, body = _missing_answer(client, method, path.format(2**31 - 1))  # in range, no such row
    assert status == 404, body
    for beyond in [2**31, 2**32 + 5, 2**63 - 1, 2**63, 10**30, "9" * 5000, 0, -1]:
        got_status, got = _missing_answer(client, method, path.format(beyond))
        assert got_status == 404, (beyond, got)
        shown = str(beyond) if len(str(beyond)) <= 40 else f"{str(beyond)[:20]}...{str(beyond)[-8:]}"
        assert got["detail"] == body["detail"].replace(str(2**31 - 1), shown), (beyond, got)
    for not_an_int in ["abc", "1.5", "1e3"]:
        got_status, got = _missing_answer(client, method, path.format(not_an_int))
        assert got_status == 422 and isinstance(got["detail"], str) and got["errors"], (not_an_int, got)


def test_nul_characters_get_the_same_answer_on_every_backend(client):
    rid = external_run(client, "nul")["id"]
    for method, path, body, field in [
        ("POST", "/api/v1/runs", {"recipe": "external", "name": "a\x00b"}, "name"),
        ("POST", "/api/v1/runs", {"recipe": "external", "params": {"k\x00": 1}}, "params.k\\u0000"),
        ("POST", "/api/v1/runs", {"recipe": "external", "hyperparameters": {"a": ["x", "\x00"]}},
         "hyperparameters.a[1]"),
        ("PATCH", f"/api/v1/runs/{rid}", {"error": "boom\x00"}, "error"),
        ("PUT", f"/api/v1/runs/{rid}/hyperparameters", {"lr": "\x00"}, "lr"),
        ("PUT", f"/api/v1/runs/{rid}/summary", {"\x00": 1}, "\\u0000"),
        ("POST", f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "m\x00", "step": 0, "value": 1}]},
         "points[0].key"),
    ]:
        r = post_json(client, path, body, method=method)
        assert r.status_code == 422 and r.json()["field"] == field, (path, body, r.text)
        assert "NUL" in r.json()["detail"]
    # an escaped backslash before u0000 is text, not a NUL
    r = client.post("/api/v1/runs", content=b'{"recipe": "external", "name": "a\\\\u0000"}', headers=JSON)
    assert r.status_code == 201 and r.json()["name"] == "a\\u0000", r.text
    for path, params, field in [("/api/v1/runs", {"q": "a\x00"}, "q"), ("/api/v1/runs", {"project": "\x00"}, "project"),
                                (f"/api/v1/runs/{rid}/metrics", {"keys": "a\x00"}, "keys")]:
        r = client.get(path, params=params)
        assert r.status_code == 422 and r.json()["field"] == field, (path, r.text)
    r = client.get("/api/v1/projects/1/members/a%00b")
    assert r.status_code == 422 and r.json()["field"] == "path", r.text
    # log text keeps the line: NUL becomes U+FFFD
    r = post_json(client, f"/api/v1/runs/{rid}/logs", {"lines": [{"text": "progress\x00 50%"}]})
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/runs/{rid}/logs").json()["lines"][-1]["text"] == "progress\ufffd 50%"
    assert client.get(f"/api/v1/runs/{rid}").json()["name"] == "nul"


# --------------------------------------------------------------------------- one error schema


def test_one_error_body_everywhere_and_in_the_openapi_document(client):
    r = post_json(client, "/api/v1/runs", {"recipe": 5})
    body = r.json()
    assert r.status_code == 422 and isinstance(body["detail"], str) and body["field"] == "recipe"
    assert body["errors"][0]["loc"] == ["body", "recipe"]
    doc = client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["detail"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for code in ("400", "401", "403", "422", "503"):
                assert code in responses, (method, path, code)
            if method in ("post", "put", "patch"):
                for code in ("413", "415"):
                    assert code in responses, (method, path, code)
            if "{" in path:
                assert "404" in responses, (method, path)
            for code, response in responses.items():
                if int(code) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_a_refusal_while_streaming_does_not_hang_a_slow_client(small_server):
    """Over the limit the server answers even though the client keeps the rest of the body back."""
    host, port = small_server.base_url.host, small_server.base_url.port
    with socket.create_connection((host, port), timeout=15) as s:
        s.sendall(b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 5000
        s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")  # over 4096, and no end of the body
        started = time.monotonic()
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("body, accepted", [
    (b"[" * 64 + b"]" * 64, True),
    (b"[" * 65 + b"]" * 65, False),
    (b'{"a":' * 3000, False),  # unclosed: refused before a parser recurses on it
    (b'{"a":' * 60, True),  # not JSON either, but shallow: the route's parser answers
    (b'["' + b"[" * 100 + b'"]', True),  # brackets in a string are text
    (b'["\\"' + b"[" * 100 + b'"]', True),  # also after an escaped quote
    (b'["\\\\",' + b"[" * 70 + b"]" * 70 + b"]", False),  # an escaped backslash ends the string
    (b'[{"a":[1,2,{"b":[]}]},' + b"[]," * 70 + b"3]", True),  # many siblings, shallow
    (b"[" * 40 + b"{" * 30 + b"}" * 30 + b"]" * 40, False),
    (b'["' + b"," * 300_000 + b'"]', True),  # commas in a string are no items
    (b"[" + b"0," * 200_000 + b"0]", False),
])
def test_json_structure_is_read_from_the_bytes(body, accepted):
    from server.limits import Refusal, json_structure

    try:
        json_structure(body, 64, 200_000)
    except Refusal as refusal:
        assert not accepted and refusal.status == 422
    else:
        assert accepted


def test_bytes_that_are_not_utf8_in_the_path_or_query_are_no_500(client):
    rid = external_run(client, "odd-bytes")["id"]
    for path in ["/api/v1/projects/1/members/%ED%A0%80", "/api/v1/projects/1/members/%FF%FE",
                 "/api/v1/runs?q=%ED%A0%80", "/api/v1/runs?project=%FF", f"/api/v1/runs/{rid}/metrics?keys=%ED%A0%80",
                 "/api/v1/snapshots?project=%C0%80", "/api/v1/uploads/%ED%A0%80"]:
        r = client.get(path)
        assert r.status_code < 500 and isinstance(r.json()["detail"] if r.status_code >= 400 else "", str), (path,
                                                                                                          r.text)


def test_ids_in_bodies_beyond_the_column_range_get_the_same_422_on_every_backend(client):
    rid = external_run(client, "body-ids")["id"]
    client.patch(f"/api/v1/runs/{rid}", json={"status": "succeeded"})
    for path, body, field in [(f"/api/v1/runs/{rid}/resume", {"checkpoint_id": 2**31}, "checkpoint_id"),
                              (f"/api/v1/runs/{rid}/resume", {"checkpoint_id": 2**63}, "checkpoint_id"),
                              ("/api/v1/runs", {"recipe": "code", "code": {"snapshot_id": 2**31, "entry": {}}},
                               "code.snapshot_id")]:
        r = post_json(client, path, body)
        assert r.status_code == 422 and r.json()["field"] == field, (path, r.text)
    r = client.get("/api/v1/audit", params={"user_id": 2**31})
    assert r.status_code == 422 and r.json()["field"] == "user_id", r.text


def test_the_environment_record_keeps_its_own_documented_limit(small_server):
    """PUT /runs/{id}/environment takes up to 2 MiB (server/api/code.py) even with a smaller
    RUNYARD_MAX_BODY_BYTES; beyond, its own 413."""
    rid = external_run(small_server, "environment")["id"]
    record = {"packages": ["x" * 100] * 10_000}  # about 1 MB, over the 4 KiB of RUNYARD_MAX_BODY_BYTES here
    r = small_server.put(f"/api/v1/runs/{rid}/environment", content=json.dumps(record), headers=JSON)
    assert r.status_code == 200, r.text
    r = small_server.put(f"/api/v1/runs/{rid}/environment", content=chunks(3 * 2**20, prefix=b'{"a": 1}'),
                         headers=JSON)
    assert r.status_code == 413, r.text
