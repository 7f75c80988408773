"""The new-run form shows the recipes workers published, marks one no live worker serves as
unavailable, and still queues a run of it, with the server's warning shown."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
import uuid

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_a_recipe_no_live_worker_serves_is_marked_unavailable_and_queues_with_a_warning(page, server):
    name = f"lonely_{uuid.uuid4().hex[:6]}"
    recipe = {"name": name, "description": "Published by a worker that has gone away.",
              "params_schema": {"type": "object", "properties": {"lr": {"type": "number", "default": 0.1}},
                                "additionalProperties": False},
              "trainer_schema": {}}
    worker = f"gone-{uuid.uuid4().hex[:6]}"
    req = urllib.request.Request(server.url + "/api/v1/workers", method="POST", data=json.dumps(
        {"name": worker, "queues": ["runyard"], "recipes": [recipe]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.worker_token()}"})
    urllib.request.urlopen(req, timeout=30).read()
    # the worker was last seen long ago (it stopped): its recipe is no longer served
    with sqlite3.connect(server.home / "runyard.db") as db:
        db.execute("UPDATE workers SET last_seen_at = '2000-01-01 00:00:00' WHERE name = ?", (worker,))
    listed = {r["name"]: r for r in server.get("/api/v1/recipes")}
    assert listed[name]["available"] is False

    page.goto("/#/new")
    page.locator("#f-recipe").select_option(name)
    expect(page.locator(f"#f-recipe option[value='{name}']")).to_have_text(f"{name} (unavailable)")
    notice = page.get_by_test_id("recipe-unavailable")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("No live worker serves this recipe")
    page.get_by_test_id("submit-run").click()
    expect(page.locator(".toast-warn")).to_contain_text("No live worker serves recipe")
    page.wait_for_url(lambda url: "#/runs/" in url)
    run_id = int(page.url.rsplit("/", 1)[1])
    run = server.get(f"/api/v1/runs/{run_id}")
    assert run["recipe"] == name and run["status"] == "queued" and run["params"] == {"lr": 0.1}
    server.post(f"/api/v1/runs/{run_id}/cancel")
