"""The run page's live stream survives a server restart: EventSource reconnects (with
Last-Event-ID, or our own reconnect with ?cursor= when the browser gives up) and the
chart keeps gaining points without a reload."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import Server

pytestmark = pytest.mark.browser


def test_live_chart_reconnects_after_server_restart(browser, tmp_path):
    server = Server(tmp_path / "home").start()
    try:
        run = server.external_run("restart-me")
        rid = run["id"]
        server.log_points(rid, [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(10)])
        context = browser.new_context(base_url=server.url)
        page = context.new_page()
        page.goto(f"/#/runs/{rid}")
        loss = page.locator(".chart-card[data-key='loss']")
        expect(loss).to_have_attribute("data-total", "10")
        expect(page.locator("#conn")).to_have_class("conn conn-ok")
        page.evaluate("window.__noReload = 1")

        server.kill()
        expect(page.locator("#conn")).to_have_class("conn conn-down", timeout=10_000)
        errors = page.evaluate("window.__runyard.sse.errors")  # the browser tried again and failed: it is retrying
        page.wait_for_function(f"() => window.__runyard.sse.errors > {errors}", timeout=15_000)
        server.start()
        # Points logged right after the restart, possibly before the browser is back.
        server.log_points(rid, [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(10, 15)])
        expect(loss).to_have_attribute("data-total", "15", timeout=15_000)
        expect(page.locator("#conn")).to_have_class("conn conn-ok")
        # And the stream is live again, not just a one-off reload.
        server.log_points(rid, [{"key": "loss", "step": 15, "value": 0.06}])
        expect(loss).to_have_attribute("data-total", "16", timeout=5_000)
        n = page.evaluate(
            "document.querySelector(\".chart-card[data-key='loss'] .chart-plot\").data[0].x.length"
        )
        assert n == 16  # no duplicates from the overlap of history and stream
        assert page.evaluate("window.__noReload") == 1
        sse = page.evaluate("window.__runyard.sse")
        print("SSE after restart:", sse)
        assert sse["opens"] >= 2
        context.close()
    finally:
        server.stop()


def test_page_reconnects_itself_with_cursor_when_the_browser_gives_up(browser, tmp_path):
    """A reconnect answered with an error (here a 503 while the server starts) makes
    EventSource give up for good; the page then reconnects itself with ?cursor=<last id>."""
    server = Server(tmp_path / "home").start()
    try:
        rid = server.external_run("gives-up")["id"]
        server.log_points(rid, [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(10)])
        context = browser.new_context(base_url=server.url)
        page = context.new_page()
        page.goto(f"/#/runs/{rid}")
        loss = page.locator(".chart-card[data-key='loss']")
        expect(loss).to_have_attribute("data-total", "10")
        server.log_points(rid, [{"key": "loss", "step": 10, "value": 0.09}])
        expect(loss).to_have_attribute("data-total", "11")  # now the stream has an event id

        seen: list[str] = []

        def handler(route):
            seen.append(route.request.url)
            if len(seen) == 1:
                route.fulfill(status=503, content_type="application/json", body='{"detail": "starting"}')
            else:
                route.continue_()

        page.route("**/api/v1/runs/*/events*", handler)
        server.kill()
        server.start()
        server.log_points(rid, [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(11, 15)])
        expect(loss).to_have_attribute("data-total", "15", timeout=15_000)
        assert "cursor=" not in seen[0] and "cursor=" in seen[1], seen
        assert page.evaluate("window.__runyard.sse.manualReconnects") >= 1
        server.log_points(rid, [{"key": "loss", "step": 15, "value": 0.06}])
        expect(loss).to_have_attribute("data-total", "16", timeout=5_000)
        assert (
            page.evaluate(
                "document.querySelector(\".chart-card[data-key='loss'] .chart-plot\").data[0].x.length"
            )
            == 16
        )
        context.close()
    finally:
        server.stop()
