"""Past RUNYARD_BULK_MAX the runs page says how many one bulk action may take instead of offering
"Select all N runs that match" (a server started with a cap of 120, 130 matching runs), and the
server refuses the same bulk anyway; in a real Chromium against a real server."""

from __future__ import annotations

import json
import urllib.error

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import Server

pytestmark = pytest.mark.browser

PROJECT = "capped-proj"


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("runyard-capped"))
    s.env["RUNYARD_BULK_MAX"] = "120"
    s.start()
    yield s
    s.stop()


def test_past_the_cap_the_banner_says_so_and_the_server_refuses(browser, capped):
    for i in range(130):
        capped.external_run(f"capped-{i}", project=PROJECT, params={"lr": 0.1})
    assert capped.get("/api/v1/me")["limits"] == {"bulk_max": 120}
    context = browser.new_context(base_url=capped.url, viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto("/#/runs")
        page.get_by_test_id("filter-project").locator(f"option[value='{PROJECT}']").wait_for(state="attached")
        page.get_by_test_id("filter-project").select_option(PROJECT)
        expect(page.get_by_test_id("run-count")).to_have_text("130 runs")
        page.get_by_test_id("select-page").check()
        banner = page.get_by_test_id("select-all-banner")
        expect(banner).to_contain_text("All 100 runs on this page are selected. 130 match; a bulk action takes "
                                       "at most 120 at a time")
        expect(page.get_by_test_id("select-all-matching")).to_be_hidden()
        expect(page.get_by_test_id("bulk-count")).to_have_text("100 selected")  # the page's rows still can
    finally:
        context.close()
    # The server refuses the same action however it is sent (this home has only those 130 runs).
    with pytest.raises(urllib.error.HTTPError) as refused:
        capped.post("/api/v1/runs/bulk", {"query": {"q": ""}, "expected": 130, "action": "tag", "tags": ["x"]})
    body = json.loads(refused.value.read())
    assert refused.value.code == 422 and body["field"] == "query" and "120" in body["detail"]
