"""The new-run form offers the run's devices (issue 13): a count, a list of GPU ids or auto; the
server's refusal of more GPUs than any live worker has shows on the devices field."""

from __future__ import annotations

import json
import urllib.request

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser]

RECIPE = "digits_classifier"


def field(page, path: str):
    return page.locator(f"[data-field='{path}']")


def register_gpu_worker(server, gpus: list[str]) -> None:
    """A live worker whose host has ``gpus`` (what `runyard worker --gpus ...` reports)."""
    from worker.recipes import get_registry

    recipes = [r.describe() for r in get_registry("").values()]
    req = urllib.request.Request(server.url + "/api/v1/workers", method="POST", data=json.dumps(
        {"name": "webui-gpu-box", "queues": ["elsewhere"], "recipes": recipes, "gpus": gpus}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.worker_token()}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        res.read()


def test_the_form_offers_devices_and_strategy_and_shows_the_gpu_refusal(page, server):
    register_gpu_worker(server, ["0", "1"])
    page.goto("/#/new")
    page.locator("#f-recipe").select_option(RECIPE)
    for name in ("accelerator", "devices", "strategy"):  # up front, not folded away
        expect(page.locator(f"[data-path='trainer.{name}']")).to_be_visible()
    register_gpu_worker(server, ["0", "1"])  # still live when the form is sent
    field(page, "trainer.max_epochs").fill("1")
    field(page, "trainer.accelerator").select_option("gpu")
    field(page, "trainer.devices").fill("4")
    page.get_by_test_id("submit-run").click()
    error = page.locator("[data-path='trainer.devices'] .field-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("the largest has 2")
    assert server.get("/api/v1/runs?limit=1")["total"] == 0
    # two CPU processes are never refused; a list of ids is taken as is
    field(page, "trainer.accelerator").select_option("cpu")
    field(page, "trainer.devices").fill("[0, 1]")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    run = server.get("/api/v1/runs/" + page.url.rsplit("/", 1)[-1])
    assert run["trainer"]["devices"] == [0, 1] and run["trainer"]["accelerator"] == "cpu", run
