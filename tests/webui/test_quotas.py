"""A project's quotas on its page, in a real Chromium against a real server (open mode: the local
user is a server admin): shown with the checkpoint usage, set from the form, reset by emptying a
field (the server's answer is what is shown)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import screenshot

pytestmark = pytest.mark.browser


def test_server_admin_sets_and_resets_a_projects_quotas(page, server):
    run = server.external_run("quota-page", project="quota-ui")
    projects = {p["name"]: p["id"] for p in server.get("/api/v1/projects")}
    pid = projects["quota-ui"]
    page.goto(f"/#/projects/{pid}/members")
    panel = page.get_by_test_id("quotas-panel")
    expect(panel.get_by_test_id("quota-usage")).to_contain_text("checkpoints: 0 B of 100.0 GB (0 files)")
    expect(panel.get_by_test_id("quota-value-keep_best")).to_have_text("5")
    expect(panel.locator("tr[data-quota='keep_best'] td").nth(2)).to_have_text("default")
    panel.get_by_test_id("quota-keep_best").fill("2")
    panel.get_by_test_id("quota-points_per_run").fill("1000")
    panel.get_by_test_id("save-quotas").click()
    expect(panel.get_by_test_id("quota-value-keep_best")).to_have_text("2")
    expect(panel.locator("tr[data-quota='keep_best'] td").nth(2)).to_have_text("set")
    expect(panel.get_by_test_id("quota-value-points_per_run")).to_have_text("1,000")
    answer = server.get(f"/api/v1/projects/{pid}/quotas")
    assert answer["overrides"]["keep_best"] == 2 and answer["overrides"]["points_per_run"] == 1000
    # the quota holds: a run of the project cannot log past it
    import json
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as refused:
        server.post(f"/api/v1/runs/{run['id']}/metrics",
                    {"points": [{"key": "loss", "step": i, "value": 1.0} for i in range(1001)]})
    assert refused.value.code == 413 and json.loads(refused.value.read())["field"] == "quota.points_per_run"
    # an empty field resets the quota to the server's default
    panel.get_by_test_id("quota-keep_best").fill("")
    panel.get_by_test_id("save-quotas").click()
    expect(panel.locator("tr[data-quota='keep_best'] td").nth(2)).to_have_text("default")
    expect(panel.get_by_test_id("quota-value-keep_best")).to_have_text("5")
    assert server.get(f"/api/v1/projects/{pid}/quotas")["overrides"]["keep_best"] is None
    # a value the server refuses shows its sentence
    panel.get_by_test_id("quota-keep_last").fill("0")
    panel.get_by_test_id("save-quotas").click()
    expect(panel.get_by_test_id("quota-error")).to_contain_text("keep_last")
    screenshot(page, "project-quotas")
