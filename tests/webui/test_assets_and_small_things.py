"""Issue 14 points 7 and 9 in a real Chromium against a real server: plotly.js is fetched and
evaluated once per session however many pages are visited (the dashboard is one page, and the
bundle's URL names its content, so it is cached ``immutable``); ``/docs`` renders Swagger UI with
everything outside the server refused; a run page without a model summary logs no console error;
every invalid field of one submit is shown at once; the live dot shows only while a page holds a
live stream. Every wait is for a condition."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PLOTLY = re.compile(r"/static/plotly-basic\.[0-9a-f]{16}\.min\.js$")


@pytest.fixture
def console(page):
    """Console errors and failed requests of ``page`` (a 404 logs "Failed to load resource")."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors


def test_plotly_loads_once_across_pages_and_is_cached(page, server):
    run = server.external_run("nav", params={"lr": 0.1})
    other = server.external_run("nav-2", params={"lr": 0.2})
    for r in (run, other):
        server.log_points(r["id"], [{"key": "loss", "step": i, "value": 1 / (i + 1)} for i in range(5)])
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "plotly" in r.url else None)
    page.add_init_script("window.__documents = (window.__documents || 0) + 1;")
    page.goto("/#/runs")
    expect(page.locator(f"tr[data-run-id='{run['id']}']")).to_be_visible()
    page.wait_for_function("() => typeof window.Plotly === 'object'")
    page.evaluate("window.__plotlyObject = window.Plotly")
    for hash_, ready in ((f"#/runs/{run['id']}", ".chart-card[data-key='loss'][data-total='5']"),
                         (f"#/compare?ids={run['id']},{other['id']}", ".chart-card[data-key='loss'][data-total='10']"),
                         ("#/new", "[data-testid='submit-run']"), ("#/projects", "h1"),
                         (f"#/runs/{other['id']}", ".chart-card[data-key='loss'][data-total='5']"), ("#/runs", "tr[data-run-id]")):
        page.evaluate(f"location.hash = {hash_!r}")
        expect(page.locator(ready).first).to_be_visible()
    assert [u for u in fetched if PLOTLY.search(u)] == [fetched[0]] and len(fetched) == 1, fetched
    # one document, one evaluation of the bundle: the same Plotly object on every page
    assert page.evaluate("window.__documents") == 1
    assert page.evaluate("window.__plotlyObject === window.Plotly")
    # a new document takes the bundle from Chromium's cache (immutable, named by its content)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    answers: list[dict] = []
    cdp.on("Network.responseReceived", lambda e: answers.append(e["response"]) if PLOTLY.search(e["response"]["url"]) else None)
    cached: list[str] = []
    cdp.on("Network.requestServedFromCache", lambda e: cached.append(e["requestId"]))
    page.goto("/?again#/runs")
    page.wait_for_function("() => typeof window.Plotly === 'object'")
    assert len(answers) == 1, answers
    assert answers[0].get("fromDiskCache") or answers[0].get("fromPrefetchCache") or cached or answers[0]["status"] == 304, answers


def test_api_docs_render_offline(page, server):
    outside: list[str] = []

    def only_ours(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_ours)
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Runyard", timeout=30_000)
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    assert outside == [], outside


def test_run_without_summary_logs_no_console_error(page, server, console):
    run = server.external_run("no summary yet")
    page.goto(f"/#/runs/{run['id']}")
    expect(page.get_by_test_id("model-summary")).to_contain_text("No model summary yet")
    expect(page.locator("#conn")).to_have_class("conn conn-ok")  # its live stream is open
    assert console == [], console


def test_every_invalid_field_of_one_submit_is_shown(page, server, console):
    page.goto("/#/new")
    page.locator("#f-recipe").select_option("mnist_classifier")
    expect(page.locator("#f-params-hidden_dim")).to_be_visible()
    expect(page.locator("#conn")).to_have_class(re.compile(r"\bconn-idle\b"))  # no live stream here: no dot
    expect(page.locator("#conn")).to_be_hidden()
    page.locator("#f-params-hidden_dim").fill("-5")
    page.locator("#f-params-lr").fill("-1")
    page.locator("#f-trainer-max_epochs").fill("1000000000")
    page.get_by_test_id("submit-run").click()
    for field in ("params.hidden_dim", "params.lr", "trainer.max_epochs"):
        error = page.locator(f"[data-error-for='{field}']")
        expect(error).to_be_visible()
        expect(error).not_to_be_empty()
    expect(page.locator("[data-error-for='trainer.max_epochs']")).to_contain_text("100000")
    assert all("422" in e or "Unprocessable" in e for e in console), console  # the refused POST only
