"""Cold page load of a run page with a 1,000,000-point metric, in Chromium (issue 14 point 7).

A real server (subprocess) on a temp home; one run with ``train_loss`` at 1M steps (written
straight into its database). Each cold load is a fresh browser context (empty cache) opening
``/#/runs/<id>``; the figure is the time from navigation start until the first chart is drawn
(``window.__runyard.lastDraw.since_page_load_ms``, set by ``webui/js/charts.js`` when the
charts are drawn), with where it went (plotly.js fetched and evaluated, the metric fetched), and
the bytes plotly.js took on the wire. "identity" asks for no compression (``Accept-Encoding:
identity``, as before this issue); "warm" is a second document in the same context (plotly.js
from the browser's cache: its URL names its content and is ``immutable``).

    .venv/bin/python bench/cold_load.py [--loads 5] [--points 1000000]

Prints one line per mode and the medians; the figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.webui.conftest import CHROMIUM, CHROMIUM_ARGS, Server

TIMING = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const plotly = performance.getEntriesByType('resource').find((e) => /plotly/.test(e.name));
  return {draw: window.__runyard.lastDraw, plotly_end_ms: plotly ? Math.round(plotly.responseEnd) : null,
          plotly_transfer: plotly ? plotly.transferSize : null, plotly_encoded: plotly ? plotly.encodedBodySize : null,
          dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd)};
}"""


def seed(server: Server, points: int) -> int:
    from sqlalchemy.orm import Session

    from server import store
    from server.db import get_engine
    from server.settings import Settings

    run = server.external_run("a million points")
    engine = get_engine(Settings(home=server.home).database_url)
    t0 = time.time() - points * 0.01
    with Session(engine) as session:
        for start in range(0, points, 200_000):
            store.add_metric_points(session, run["id"], [
                ("train_loss", s, 2.0 * (0.999995 ** s) + 0.05 * ((s * 7919) % 97) / 97, s // 10_000, t0 + s * 0.01)
                for s in range(start, min(points, start + 200_000))])
    server.request("PATCH", f"/api/v1/runs/{run['id']}", {"status": "succeeded"})
    return run["id"]


def load(page, url: str, points: int) -> dict:
    page.goto(url)
    page.wait_for_function(f"() => window.__runyard && window.__runyard.lastDraw && "
                           f"window.__runyard.lastDraw.points_total === {points}", timeout=60_000)
    return page.evaluate(TIMING)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as home:
        server = Server(Path(home)).start()
        try:
            rid = seed(server, args.points)
            url = f"{server.url}/#/runs/{rid}"
            results: dict[str, list[dict]] = {"cold (gzip)": [], "cold (identity)": [], "warm": []}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                load(browser.new_page(), url, args.points)  # the server's first answers (gzip made once)
                for _ in range(args.loads):
                    for mode, headers in (("cold (gzip)", {}), ("cold (identity)", {"Accept-Encoding": "identity"})):
                        context = browser.new_context(viewport={"width": 1440, "height": 900}, extra_http_headers=headers)
                        page = context.new_page()
                        results[mode].append(load(page, url, args.points))
                        if mode == "cold (gzip)":
                            page.goto("about:blank")
                            results["warm"].append(load(page, url + "?warm", args.points))
                        context.close()
                browser.close()
        finally:
            server.stop()
    print(f"run page, {args.points:,} points of train_loss, {args.loads} loads each (medians):")
    for mode, rows in results.items():
        first = statistics.median(r["draw"]["since_page_load_ms"] for r in rows)
        plotly_end = statistics.median(r["plotly_end_ms"] or 0 for r in rows)
        fetch = statistics.median(r["draw"]["fetch_ms"] for r in rows)
        wait = statistics.median(r["draw"]["plotly_wait_ms"] for r in rows)
        wire = statistics.median(r["plotly_transfer"] or 0 for r in rows)
        print(f"  {mode:16} first chart drawn {first:6.0f} ms after navigation start "
              f"(all: {[r['draw']['since_page_load_ms'] for r in rows]}); plotly.js ready at {plotly_end:.0f} ms, "
              f"{wire / 1e6:.2f} MB on the wire; charts waited {wait:.0f} ms for plotly, {fetch:.0f} ms for the metric")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
