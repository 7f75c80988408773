"""The FastAPI application: ``create_app(settings=None)``.

At startup the database is brought to the latest migration; a reaper requeues runs whose
worker stopped heartbeating. The dashboard (``webui/``: its HTML, CSS, JS and images only) is
served at ``/`` when built, and plotly.js from the installed ``plotly`` package at
``/static/plotly.min.js``. ``server/webguard.py``'s middleware, outermost, checks Host, Origin and
Content-Type and adds the browser security headers to every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

from server import oidc, queue, static, store
from server.api import account, checkpoints, code, events, logs, metrics, misc, runs, views, workers
from server.api import quotas as quota_routes
from server.auth import authorize
from server.db import get_engine, session_factory, upgrade_database
from server.errors import ApiError, install_error_handlers
from server.feed import StreamLimiter, feed_for
from server.limits import RequestLimits
from server.openapi import install_openapi
from server.settings import Settings, get_settings
from server.webguard import DashboardFiles, WebGuard

log = logging.getLogger(__name__)

WEBUI_DIR = Path(__file__).resolve().parent.parent / "webui"


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    bundled = None
    with contextlib.suppress(ImportError):
        import plotly

        candidate = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        if candidate.is_file():
            bundled = candidate.read_bytes()
    if bundled is None:
        from plotly.offline import get_plotlyjs

        bundled = get_plotlyjs().encode()
    return bundled


def install_static(app: FastAPI) -> None:
    """plotly.js (the full bundle, and the basic one the dashboard uses, also by content-hashed URL), and Swagger UI at /docs and ReDoc at /redoc from
    our own files (``fastapi-offline``'s), compressed and cacheable (``server/static.py``)."""

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_bundle(request: Request) -> Response:
        return static.asset_response(request, static.plotly_asset(), static.ONE_DAY)

    @app.get("/static/plotly-basic.min.js", include_in_schema=False)
    def plotly_basic(request: Request) -> Response:
        asset = static.plotly_basic_asset()
        if asset is None:
            raise ApiError(404, "webui/vendor/plotly-basic.min.js is missing; the full bundle is /static/plotly.min.js.")
        return static.asset_response(request, asset, static.ONE_DAY)

    @app.get("/static/plotly-basic.{digest}.min.js", include_in_schema=False)
    def plotly_basic_versioned(digest: str, request: Request) -> Response:
        asset = static.plotly_basic_asset()
        if asset is None or static.plotly_basic_url() != f"/static/plotly-basic.{digest}.min.js":
            raise ApiError(404, f"This server's plotly.js is at {static.plotly_basic_url()}; reload the page.")
        return static.asset_response(request, asset, static.IMMUTABLE)

    @app.get("/static/docs/{version}/{name}", include_in_schema=False)
    def docs_file(version: str, name: str, request: Request) -> Response:
        answer = static.swagger_response(request, version, name)
        if answer is None:
            raise ApiError(404, f"No API docs file {name!r} here; the API docs are at /docs.")
        return answer

    base = f"/static/docs/{static.swagger_version()}"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Runyard - API docs",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{base}/swagger-ui-bundle.js", swagger_css_url=f"{base}/swagger-ui.css",
                                   swagger_favicon_url=f"{base}/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="Runyard - API docs", redoc_js_url=f"{base}/redoc.standalone.js",
                              redoc_favicon_url=f"{base}/favicon.png", with_google_fonts=False)


def reap_once(app: FastAPI) -> dict[str, list[int]]:
    """One pass of the one reaper (``store.reap``), then the sends it asks for."""
    settings: Settings = app.state.settings
    session = app.state.sessionmaker()
    try:
        found = store.reap(session, settings.heartbeat_timeout, settings.resend_after)
        for run in found["crashed"]:
            log.warning("script run %s stopped sending heartbeats: failed", run.id)
        from server.quotas import stop_overtime_runs

        found["overtime"] = [store.require_run(session, i) for i in stop_overtime_runs(session, settings)]
        for run in found["overtime"]:
            log.warning("run %s ran past its project's longest run time (max_run_seconds): failed", run.id)
        for run in found["requeued"] + found["resend"]:
            if run in found["requeued"]:
                log.warning("run %s lost its worker (no heartbeat for %s s): requeued", run.id,
                            settings.heartbeat_timeout)
            try:
                queue.enqueue_run(run.id, cast(str, run.task_id), queue=run.queue, settings=settings)
            except Exception:  # enqueued_at stays NULL: the next pass sends it
                log.exception("could not enqueue run %s", run.id)
                continue
            store.mark_enqueued(session, run.id, cast(str, run.task_id))
        return {k: [r.id for r in v] for k, v in found.items()}
    finally:
        session.close()


SESSION_SWEEP_S = 3600.0


def sweep_sessions(app: FastAPI) -> int:
    """Drop browser sessions that ended over a day ago (logins would otherwise pile up)."""
    from server.users import delete_expired_sessions

    session = app.state.sessionmaker()
    try:
        return delete_expired_sessions(session)
    finally:
        session.close()


def sweep_run_deletions(app: FastAPI) -> int:
    """Drop the tombstones of runs deleted over a day ago (live streams read them within seconds)."""
    session = app.state.sessionmaker()
    try:
        return store.sweep_run_deletions(session)
    finally:
        session.close()


def sweep_orphan_files(app: FastAPI) -> dict[str, int]:
    """Delete files no row points to (``server/quotas.py``: checkpoints, snapshot blobs, staged uploads)
    untouched for RUNYARD_SWEEP_GRACE seconds."""
    from server.quotas import sweep_orphans

    settings: Settings = app.state.settings
    session = app.state.sessionmaker()
    try:
        return sweep_orphans(session, app.state.artifacts, settings.upload_dir, settings.sweep_grace)
    finally:
        session.close()


async def _reaper(app: FastAPI) -> None:
    interval = max(0.5, min(5.0, app.state.settings.heartbeat_timeout / 3))
    last_sweep = 0.0
    last_orphan_sweep = asyncio.get_running_loop().time()  # the first one a sweep interval after start
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(reap_once, app)
            if asyncio.get_running_loop().time() - last_sweep > SESSION_SWEEP_S:
                last_sweep = asyncio.get_running_loop().time()
                await run_in_threadpool(sweep_sessions, app)
                await run_in_threadpool(sweep_run_deletions, app)
            if asyncio.get_running_loop().time() - last_orphan_sweep > app.state.settings.sweep_interval:
                last_orphan_sweep = asyncio.get_running_loop().time()
                await run_in_threadpool(sweep_orphan_files, app)
        except Exception:  # keep reaping
            log.exception("reaper pass failed")


def _watch_shutdown_signals(app: FastAPI) -> None:
    """Let live event streams end when the server is asked to stop.

    uvicorn waits for open responses before it shuts down, and an SSE stream never ends by
    itself, so without this one open dashboard keeps the server alive after Ctrl-C/SIGTERM.
    The handlers uvicorn installed are chained, not replaced (and it restores its own later)."""
    if threading.current_thread() is not threading.main_thread():
        return  # e.g. a test client running the app in a thread: no signals there
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: object, previous: Callable[[int, Any], Any] = previous) -> None:
            app.state.shutting_down.set()
            previous(signum, frame)

        signal.signal(sig, handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _watch_shutdown_signals(app)
        if settings.migrate:
            await run_in_threadpool(upgrade_database, settings.database_url)
        task = asyncio.create_task(_reaper(app)) if settings.reaper else None
        feed = feed_for(app)  # server/feed.py: the one change feed of the live streams
        feed.start()
        try:
            yield
        finally:
            await feed.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="Runyard", version="0.1.0", lifespan=lifespan, dependencies=[Depends(authorize)],
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,  # install_static: offline docs
                  description="Experiment tracking and training jobs for PyTorch.")
    app.state.settings = settings
    app.state.shutting_down = threading.Event()
    app.state.stream_limiter = StreamLimiter()  # open live streams per client (server/feed.py)
    app.state.engine = get_engine(settings.database_url)
    app.state.sessionmaker = session_factory(app.state.engine)
    # what the store's quota checks and retention use (server/quotas.py): these settings, and the
    # artifact store to delete pruned checkpoints from (looked up when used: tests may replace it)
    app.state.sessionmaker.configure(info={"settings": settings, "artifacts": lambda: app.state.artifacts})
    app.state.artifacts = checkpoints.artifact_store(settings)  # server/artifacts.py: local root or s3://
    install_error_handlers(app)
    # Request limits (server/limits.py): body size counted as it streams, JSON depth/items/NUL.
    # Middleware added later wraps what was added before: server/webguard.py (Host, Content-Type,
    # Origin, security headers) is added AFTER this line, so that it runs OUTSIDE (before) the limits.
    app.add_middleware(RequestLimits, settings=settings)
    install_openapi(app)  # server/openapi.py: every status a route answers, one ErrorBody schema
    app.state.routers = [m.router for m in (runs, metrics, checkpoints, code, logs, events, misc, workers, account,
                                            oidc, quota_routes, views)]
    for router in app.state.routers:
        app.include_router(router)
    oidc.install(app, settings)

    install_static(app)

    @app.get("/runs/{run_id}", include_in_schema=False)
    def run_page(run_id: int, request: Request) -> Response:
        answer = static.dashboard_response(request, WEBUI_DIR, "index.html")
        if answer is None:
            raise ApiError(404, "The dashboard is not built (webui/index.html is missing); the API is at /docs.")
        return answer

    if WEBUI_DIR.is_dir():  # only the dashboard's own files (server/webguard.py): not __init__.py, caches
        app.mount("/", DashboardFiles(directory=WEBUI_DIR, check_dir=False), name="webui")
    # Last, so outermost: Host, Origin and Content-Type are checked before anything else reads the
    # request (the body limits included), and every answer gets the browser security headers.
    app.add_middleware(WebGuard, settings=settings)
    return app
