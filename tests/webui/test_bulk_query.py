""""Select all N runs that match" on the runs page: the banner once the page is selected, a bulk
action over every matching run (more than one page) by query, the confirm naming N, a count that
changed meanwhile refused, and back to per-row selection; in a real Chromium against a real server."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PROJECT = "many-proj"
QUERY = "params.lr < 0.5"


def rows(page):
    return page.locator("[data-testid=runs-table] tbody tr[data-run-id]")


def tagged(server, tag: str) -> set[int]:
    qs = urllib.parse.urlencode({"project": PROJECT, "q": f"tag:{tag}", "limit": 500})
    return {r["id"] for r in server.get(f"/api/v1/runs?{qs}")["items"]}


def test_select_all_runs_that_match_acts_on_every_page(page, server):
    ids = [server.external_run(f"many-{i}", project=PROJECT, params={"lr": 0.1})["id"] for i in range(130)]
    other = server.external_run("not-matching", project=PROJECT, params={"lr": 0.9})["id"]
    page.goto("/#/runs")
    page.get_by_test_id("filter-project").locator(f"option[value='{PROJECT}']").wait_for(state="attached")
    page.get_by_test_id("filter-project").select_option(PROJECT)
    page.get_by_test_id("search").fill(QUERY)
    expect(page.get_by_test_id("run-count")).to_have_text("130 runs")
    expect(rows(page)).to_have_count(100)
    banner = page.get_by_test_id("select-all-banner")
    expect(banner).to_be_hidden()

    page.get_by_test_id("select-page").check()
    expect(banner).to_contain_text("All 100 runs on this page are selected.")
    expect(page.get_by_test_id("bulk-count")).to_have_text("100 selected")
    page.get_by_test_id("select-all-matching").click()
    expect(banner).to_contain_text("All 130 runs that match are selected.")
    expect(page.get_by_test_id("bulk-count")).to_have_text("All 130 matching selected")
    expect(page.get_by_test_id("bulk-bar")).to_have_attribute("data-mode", "query")
    # Delete asks first, naming N; backing out deletes nothing.
    page.get_by_test_id("bulk-delete").click()
    expect(page.get_by_test_id("confirm-dialog")).to_contain_text("Delete all 130 runs that match?")
    expect(page.get_by_test_id("confirm-ok")).to_have_text("Delete 130 runs")
    page.get_by_test_id("confirm-cancel").click()
    # Unticking one row goes back to the page's rows, less that one.
    rows(page).first.locator("input[type=checkbox]").uncheck()
    expect(page.get_by_test_id("bulk-count")).to_have_text("99 selected")
    expect(page.get_by_test_id("bulk-bar")).to_have_attribute("data-mode", "ids")
    expect(banner).to_be_hidden()
    rows(page).first.locator("input[type=checkbox]").check()
    page.get_by_test_id("select-all-matching").click()

    page.get_by_test_id("bulk-tag").click()
    expect(page.get_by_test_id("prompt-dialog")).to_contain_text("Tag all 130 runs that match")
    page.get_by_test_id("prompt-input").fill("many-tag")
    page.get_by_test_id("prompt-ok").click()
    expect(page.get_by_test_id("bulk-bar")).to_have_attribute(
        "data-last", json.dumps({"action": "tag", "ok": 130, "failed": 0, "matched": 130}, separators=(",", ":"))
    )
    assert tagged(server, "many-tag") == set(ids)  # all 130, the 30 not shown too; not the one that does not match
    assert other not in tagged(server, "many-tag")
    expect(page.get_by_test_id("bulk-bar")).to_be_hidden()  # the selection ends with the action
    expect(page.locator("[data-testid=runs-table] tbody input[type=checkbox]:checked")).to_have_count(0)

    # A run that starts to match after the count was shown: the server refuses, nothing changes.
    page.get_by_test_id("select-page").check()
    page.get_by_test_id("select-all-matching").click()
    expect(banner).to_contain_text("All 130 runs that match are selected.")
    late = server.external_run("late", project=PROJECT, params={"lr": 0.2})["id"]
    page.get_by_test_id("bulk-tag").click()
    page.get_by_test_id("prompt-input").fill("too-late")
    page.get_by_test_id("prompt-ok").click()
    expect(page.locator(".toast", has_text="now matches 131 runs, not the 130 you were shown")).to_be_visible()
    expect(page.get_by_test_id("run-count")).to_have_text("131 runs")  # shown again
    assert tagged(server, "too-late") == set()
    assert late not in tagged(server, "many-tag")

    # Clear selection returns to per-row mode.
    page.get_by_test_id("select-page").check()
    expect(banner).to_contain_text("All 100 runs on this page are selected.")
    page.get_by_test_id("select-all-matching").click()
    expect(banner).to_contain_text("All 131 runs that match are selected.")
    page.get_by_test_id("clear-selection").click()
    expect(page.get_by_test_id("bulk-bar")).to_be_hidden()
    expect(banner).to_be_hidden()
    expect(page.locator("[data-testid=runs-table] tbody input[type=checkbox]:checked")).to_have_count(0)
    # A changed query ends "all that match" too.
    page.get_by_test_id("select-page").check()
    page.get_by_test_id("select-all-matching").click()
    page.get_by_test_id("search").fill("params.lr < 0.15")
    expect(page.get_by_test_id("run-count")).to_have_text("130 runs")
    expect(banner).to_be_hidden()
    expect(page.get_by_test_id("bulk-bar")).to_be_hidden()
