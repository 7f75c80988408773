"""Static files, compressed once and cached in memory, with validators (issue 14 points 7 and 9).

Every file the server sends as is (the dashboard's ``webui/`` files, plotly.js, Swagger UI) is an
:class:`Asset`: its bytes, their gzip encoding (made once, on first use) and an ``ETag`` from the
content's hash. :func:`asset_response` answers ``Content-Encoding: gzip`` when the request's
``Accept-Encoding`` takes it (``Vary: Accept-Encoding`` either way) and ``304 Not Modified`` to a
matching ``If-None-Match``.

Caching: a URL that names its content (``/static/plotly-basic.<hash>.min.js``, which ``index.html``
is rewritten to use, and ``/static/docs/<version>/...``) is ``immutable`` for a year; the
dashboard's own files keep their plain names (its ES modules import each other by name), so they
are ``no-cache``: revalidated with the ETag, a ``304`` without a body when unchanged.
``/static/plotly.min.js`` (the full bundle, unused by the dashboard) and
``/static/plotly-basic.min.js`` are cached for a day.

The dashboard is one page (a hash router, ``webui/js/app.js``): plotly.js is loaded and parsed
once per session, never per navigation.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
ONE_DAY = "public, max-age=86400"
MIN_COMPRESS = 512  # smaller files are sent as they are
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon", ".webp": "image/webp", ".map": "application/json"}
COMPRESSIBLE = (".html", ".js", ".css", ".svg", ".map")


class Asset:
    """One file's bytes, their gzip encoding (made when first asked for) and its ETag."""

    __slots__ = ("body", "media_type", "etag", "digest", "_gzip", "_lock", "compressible")

    def __init__(self, body: bytes, media_type: str, compressible: bool = True) -> None:
        self.body = body
        self.media_type = media_type
        self.digest = hashlib.sha256(body).hexdigest()
        self.etag = f'"{self.digest[:24]}"'
        self.compressible = compressible and len(body) >= MIN_COMPRESS
        self._gzip: bytes | None = None
        self._lock = threading.Lock()

    @property
    def gzipped(self) -> bytes:
        with self._lock:
            if self._gzip is None:
                self._gzip = gzip.compress(self.body, compresslevel=9, mtime=0)
            return self._gzip


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip (``gzip;q=0`` refuses it)."""
    for part in (header or "").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def asset_response(request: Request, asset: Asset, cache_control: str) -> Response:
    """``asset`` for ``request``: gzip when accepted, ``304`` to a matching ``If-None-Match``."""
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if etag_matches(request.headers.get("if-none-match"), asset.etag):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.compressible and accepts_gzip(request.headers.get("accept-encoding")):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(b"", media_type=asset.media_type, headers=headers)
    return Response(body, media_type=asset.media_type, headers=headers)


class FileAssets:
    """Assets read from files, re-read when a file's size or modification time changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cache: dict[Path, tuple[tuple[int, int], Asset]] = {}

    def get(self, path: Path, transform: object = None) -> Asset | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        with self.lock:
            cached = self.cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        body = path.read_bytes()
        if callable(transform):
            body = transform(body)
        asset = Asset(body, TYPES.get(path.suffix, "application/octet-stream"), path.suffix in COMPRESSIBLE)
        with self.lock:
            self.cache[path] = (key, asset)
        return asset


# --------------------------------------------------------------------------- Swagger UI, offline

def swagger_ui_dir() -> Path | None:
    """Swagger UI 5 and ReDoc as the ``fastapi-offline`` package ships them (a server dependency)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).parent / "static"
    return path if path.is_dir() else None


SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"})


def swagger_version() -> str:
    """The version of the docs files (part of their URL, so they are cached ``immutable``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastapi-offline")
    except PackageNotFoundError:
        return "missing"


# --------------------------------------------------------------------------- plotly.js and the dashboard

_files = FileAssets()
_plotly: list[Asset] = []
_plotly_lock = threading.Lock()
BASIC = Path(__file__).resolve().parent.parent / "webui" / "vendor" / "plotly-basic.min.js"
BASIC_NAME = b"/static/plotly-basic.min.js"


def plotly_asset() -> Asset:
    """The full plotly.js from the installed ``plotly`` package, once per process."""
    with _plotly_lock:
        if not _plotly:
            from server.app import plotly_js

            _plotly.append(Asset(plotly_js(), TYPES[".js"]))
        return _plotly[0]


def plotly_basic_asset() -> Asset | None:
    """plotly.js's basic bundle (``webui/vendor/``): every chart of the dashboard is a scatter
    trace, and it is a quarter of the full bundle to fetch and evaluate."""
    return _files.get(BASIC)


def plotly_basic_url() -> str:
    """The content-hashed URL of the basic bundle (``immutable``): ``index.html`` names this one."""
    asset = plotly_basic_asset()
    return f"/static/plotly-basic.{asset.digest[:16]}.min.js" if asset is not None else "/static/plotly.min.js"


def _versioned_index(body: bytes) -> bytes:
    return body.replace(BASIC_NAME, plotly_basic_url().encode())


def dashboard_response(request: Request, root: Path, name: str) -> Response | None:
    """A file of the dashboard (``name`` checked by ``webguard.dashboard_file``), or None."""
    asset = _files.get(root / name, _versioned_index if name == "index.html" else None)
    if asset is None:
        return None
    return asset_response(request, asset, REVALIDATE)


def swagger_response(request: Request, version: str, name: str) -> Response | None:
    folder = swagger_ui_dir()
    if folder is None or name not in SWAGGER_FILES or version != swagger_version():
        return None
    asset = _files.get(folder / name)
    return None if asset is None else asset_response(request, asset, IMMUTABLE)
