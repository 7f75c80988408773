"""Issue 14 points 7 and 9 on the server side (``server/static.py``, ``server/errors.py``):
static files compressed and cacheable (gzip honouring Accept-Encoding, ETag and 304,
``immutable`` for content-hashed URLs), Swagger UI served from our own files, HTML error pages
for browsers that link back to the runs page, every invalid field of one submit in one 422,
``max_epochs``' upper bound, and ``/summary?optional=true`` answering null instead of 404."""

from __future__ import annotations

import gzip
import re

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.server.conftest import publish_builtin_recipes


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from server.app import create_app

    home = tmp_path_factory.mktemp("static-home")
    with TestClient(create_app(Settings(home=home, reaper=False, broker_url="memory://")),
                    raise_server_exceptions=False) as c:
        publish_builtin_recipes(c)
        yield c


def raw_get(client, path: str, **headers: str):
    """GET without decoding the body (to see the bytes on the wire)."""
    with client.stream("GET", path, headers=headers) as r:
        body = b"".join(r.iter_raw())
    return r, body


def test_dashboard_files_are_gzipped_when_accepted_and_revalidated_by_etag(client):
    for path in ("/", "/js/app.js", "/css/app.css", "/js/pages/run.js"):
        r, body = raw_get(client, path, **{"Accept-Encoding": "gzip, deflate, br"})
        assert r.status_code == 200, path
        assert r.headers["content-encoding"] == "gzip" and "accept-encoding" in r.headers["vary"].lower()
        plain, plain_body = raw_get(client, path, **{"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert gzip.decompress(body) == plain_body and len(body) < len(plain_body)
        assert r.headers["cache-control"] == "no-cache"  # plain names: revalidated each time
        etag = r.headers["etag"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    refused, _ = raw_get(client, "/js/app.js", **{"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers


def test_plotly_is_named_by_its_hash_and_immutable(client):
    from server.static import BASIC

    index = client.get("/").text
    url = re.search(r'src="(/static/plotly-basic\.[0-9a-f]{16}\.min\.js)"', index).group(1)
    assert "/static/plotly.min.js" not in index and "/static/plotly-basic.min.js" not in index
    r, body = raw_get(client, url, **{"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"] and "max-age=31536000" in r.headers["cache-control"]
    basic = BASIC.read_bytes()
    assert gzip.decompress(body) == basic and len(body) < len(basic) / 2
    assert client.get("/static/plotly-basic.min.js").content == basic
    full = client.get("/static/plotly.min.js").content  # the full bundle is still there, 4x the size
    assert len(full) > 3 * len(basic)
    stale = client.get("/static/plotly-basic.0123456789abcdef.min.js")
    assert stale.status_code == 404 and url in stale.json()["detail"]


def test_swagger_ui_is_served_from_this_server(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/static/docs/") for u in urls), urls
    assert "cdn.jsdelivr.net" not in page.text and "fastapi.tiangolo.com" not in page.text
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"], url
    assert client.get("/docs/oauth2-redirect").status_code == 200
    redoc = client.get("/redoc")
    scripts = re.findall(r'<script src="([^"]+)"', redoc.text)
    assert scripts and all(u.startswith("/static/docs/") for u in scripts) and "fonts.googleapis" not in redoc.text
    assert client.get(scripts[0]).status_code == 200
    for path in ("/docs", "/redoc"):  # nothing from elsewhere is allowed to run
        policy = client.get(path).headers["content-security-policy"]
        assert "https:" not in policy, policy
    assert client.get(urls[0].rsplit("/", 1)[0] + "/index.html").status_code == 404  # only the files /docs uses


def test_browsers_get_an_error_page_linking_to_the_runs_page(client):
    html = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    for path in ("/no-such-page", "/api/v1/runs/987654"):
        r = client.get(path, headers=html)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert 'href="/#/runs"' in r.text and "Back to the runs page" in r.text
    xss = client.get("/<script>alert(1)</script>", headers=html)
    assert "<script>alert(1)</script>" not in xss.text and "&lt;script&gt;" in xss.text
    api = client.get("/api/v1/runs/987654")  # an API client (or the dashboard's fetch) keeps the JSON
    assert api.status_code == 404 and api.json()["detail"].startswith("Run 987654 does not exist")


def test_one_submit_lists_every_invalid_field(client):
    r = client.post("/api/v1/runs", json={"recipe": "mnist_classifier", "params": {"lr": "fast", "hidden_dim": -5},
                                          "trainer": {"max_epochs": 10**9}})
    assert r.status_code == 422, r.text
    body = r.json()
    fields = {".".join(e["loc"][1:]) for e in body["errors"]}
    assert {"params.lr", "params.hidden_dim", "trainer.max_epochs"} <= fields, body
    assert body["field"] in fields
    epochs = next(e for e in body["errors"] if e["loc"][1:] == ["trainer", "max_epochs"])
    assert "100000" in epochs["msg"], epochs


def test_max_epochs_has_an_upper_bound(client):
    from worker.recipes.registry import MAX_EPOCHS

    too_many = client.post("/api/v1/runs", json={"recipe": "mnist_classifier", "trainer": {"max_epochs": MAX_EPOCHS + 1}})
    assert too_many.status_code == 422 and too_many.json()["field"] == "trainer.max_epochs", too_many.text
    assert "maximum" in too_many.json()["detail"]


def test_summary_optional_answers_null_not_404(client):
    run = client.post("/api/v1/runs", json={"recipe": "external", "name": "no summary"}).json()
    assert client.get(f"/api/v1/runs/{run['id']}/summary").status_code == 404
    r = client.get(f"/api/v1/runs/{run['id']}/summary", params={"optional": "true"})
    assert r.status_code == 200 and r.json() is None
    missing = client.get("/api/v1/runs/987654/summary", params={"optional": "true"})
    assert missing.status_code == 404 and missing.json()["detail"].startswith("Run 987654 does not exist")
    client.put(f"/api/v1/runs/{run['id']}/summary", json={"layers": []})
    assert client.get(f"/api/v1/runs/{run['id']}/summary", params={"optional": "true"}).json() == {"layers": []}
