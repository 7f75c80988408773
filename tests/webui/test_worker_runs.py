"""Runs that really train: submitted from the dashboard's form, executed by a real Celery
worker process (as `runyard worker` starts it), followed live in the browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import Worker, screenshot
from tests.webui.test_pages import record

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RECIPE = "digits_classifier"  # scikit-learn's bundled digits: no download


@pytest.fixture(scope="module")
def worker_holder(server):
    holder = {"worker": None}
    yield holder
    if holder["worker"] is not None:
        holder["worker"].stop()


def ensure_worker(server, holder) -> None:
    if holder["worker"] is None:
        holder["worker"] = Worker(server).start()


def field(page, path: str):
    return page.locator(f"[data-field='{path}']")


def badge(page):
    return page.locator(".run-title .badge")


def test_bad_parameter_error_is_shown_on_its_field(page, server):
    page.goto("/#/new")
    page.locator("#f-recipe").select_option(RECIPE)
    field(page, "params.hidden_dim").fill("99999")
    page.get_by_test_id("submit-run").click()
    error = page.locator("[data-path='params.hidden_dim'] .field-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("4096")
    expect(page.locator("[data-path='params.hidden_dim']")).to_have_class("field invalid")
    screenshot(page, "new-run-error", full_page=False)
    assert page.url.endswith("#/new")
    # Fixing the value clears the error on input.
    field(page, "params.hidden_dim").fill("32")
    expect(error).to_be_hidden()
    # A bad trainer argument lands on its own field too.
    field(page, "trainer.max_epochs").fill("-5")
    page.get_by_test_id("submit-run").click()
    expect(page.locator("[data-path='trainer.max_epochs'] .field-error")).to_be_visible()
    # The queue is sent with the run; the server's 422 on it shows under the Queue field.
    field(page, "trainer.max_epochs").fill("1")
    page.locator("#f-queue").fill("big queue")
    page.get_by_test_id("submit-run").click()
    expect(page.locator("[data-error-for='queue']")).to_contain_text("pattern")
    assert server.get("/api/v1/runs?limit=1")["total"] == 0  # nothing was queued


def test_form_is_generated_from_the_recipe_schema(page, server):
    page.goto("/#/new")
    page.locator("#f-recipe").select_option(RECIPE)
    hd = field(page, "params.hidden_dim")
    assert hd.get_attribute("type") == "number" and hd.input_value() == "64"  # typed, with its default
    expect(page.locator("[data-path='params.hidden_dim'] .field-help")).to_have_text(
        "Width of the hidden layer. Default: 64"
    )
    assert field(page, "params.dataset").evaluate("e => e.tagName") == "SELECT"
    for name in (
        "max_epochs",
        "precision",
        "limit_train_batches",
        "fast_dev_run",
        "early_stopping_monitor",
        "early_stopping_patience",
    ):
        expect(field(page, f"trainer.{name}")).to_be_visible()
    assert field(page, "trainer.fast_dev_run").input_value() == "false"
    assert field(page, "trainer.early_stopping_patience").input_value() == "3"
    screenshot(page, "new-run")


def test_submit_from_form_and_follow_to_success(page, server, worker_holder):
    page.goto("/#/new")
    page.locator("#f-recipe").select_option(RECIPE)
    page.locator("#f-name").fill("form-digits")
    page.locator("#f-project").fill("webui")
    field(page, "params.hidden_dim").fill("32")
    field(page, "trainer.max_epochs").fill("40")
    page.get_by_test_id("trainer-more").locator("summary").click()
    field(page, "trainer.log_every_n_steps").fill("2")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    rid = int(page.url.rsplit("/", 1)[1])
    run = server.get(f"/api/v1/runs/{rid}")
    assert (
        run["params"]["hidden_dim"] == 32 and run["trainer"]["max_epochs"] == 40 and run["project"] == "webui"
        and run["queue"] == "runyard"
    )
    # No worker yet: the run waits in the queue.
    expect(badge(page)).to_have_text("queued")
    # Record every status and, while running, every train_loss total the page shows: the run is
    # short (a few 0.5 s worker flushes), so waiting for "more than the first total seen" races
    # with the end of training on a loaded machine.
    page.evaluate("""() => { window.__seen = []; window.__totals = []; setInterval(() => {
        const b = document.querySelector('.run-title .badge'); const s = b && b.dataset.status;
        if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
        const c = document.querySelector(".chart-card[data-key='train_loss']"); const t = c && c.dataset.total;
        if (s === 'running' && t && window.__totals[window.__totals.length - 1] !== +t) window.__totals.push(+t);
        }, 10); }""")

    ensure_worker(server, worker_holder)
    expect(badge(page)).to_have_text("running", timeout=90_000)
    loss = page.locator(".chart-card[data-key='train_loss']")
    expect(loss).to_have_attribute("data-total", re.compile(r"^\d+$"), timeout=60_000)
    expect(page.get_by_test_id("worker")).not_to_contain_text("—")
    expect(page.get_by_test_id("device")).to_contain_text("cpu")
    expect(badge(page)).to_have_text(re.compile("succeeded|failed|cancelled"), timeout=180_000)
    # Lag from the worker logging a point (its wall_time) to the browser receiving it.
    lags = sorted(page.evaluate("window.__runyard.pointLags || []"))
    assert lags, "no live metric points reached the page"
    record(
        "worker_point_to_browser_s",
        {
            "p50": round(lags[len(lags) // 2], 3),
            "p95": round(lags[int(len(lags) * 0.95)], 3),
            "max": round(lags[-1], 3),
            "events": len(lags),
        },
    )
    assert badge(page).text_content() == "succeeded", server.get(f"/api/v1/runs/{rid}")["error"]
    assert page.evaluate("window.__seen") == ["queued", "running", "succeeded"]
    # The curve gained points while the run trained (live, no reload): several growing totals.
    totals = page.evaluate("window.__totals")
    assert len(totals) >= 2 and totals == sorted(totals), totals

    # Model summary of the real model, with totals.
    table = page.get_by_test_id("summary-table")
    expect(table.locator("tbody tr").first).to_be_visible()
    summary = server.get(f"/api/v1/runs/{rid}/summary")
    expect(table.locator("tbody tr")).to_have_count(len(summary["layers"]))
    expect(page.locator("[data-total='total_params'] td")).to_contain_text(f"{summary['total_params']:,}")

    # Checkpoints: download one and compare with the file on disk.
    rows = page.get_by_test_id("checkpoints").locator("tbody tr")
    expect(rows.first).to_be_visible()
    ckpts = server.get(f"/api/v1/runs/{rid}/checkpoints")
    expect(rows).to_have_count(len(ckpts))
    with page.expect_download() as info:
        rows.first.get_by_test_id("download-ckpt").click()
    ckpt = next(c for c in ckpts if str(c["id"]) == rows.first.get_attribute("data-ckpt-id"))
    assert Path(info.value.path()).read_bytes() == Path(server.home, "artifacts", ckpt["path"]).read_bytes()
    expect(page.get_by_test_id("log-tail")).not_to_contain_text("No log lines yet")
    # test_acc is logged once, after fit: a row of the single-values table, not a chart with a lone dot.
    expect(page.get_by_test_id("single-values").locator("tr[data-key='test_acc'] td")).to_have_text(re.compile(r"^0\.\d+"))
    expect(page.locator(".chart-card[data-key='test_acc']")).to_have_count(0)
    screenshot(page, "run-trained")

    # Clone opens the form prefilled with this run's settings.
    page.get_by_test_id("clone-run").click()
    page.wait_for_url("**/#/new?clone=*")
    expect(page.locator("#f-name")).to_have_value("form-digits-clone")
    expect(page.locator("#f-recipe")).to_have_value(RECIPE)
    expect(field(page, "params.hidden_dim")).to_have_value("32")
    expect(field(page, "trainer.max_epochs")).to_have_value("40")
    expect(field(page, "trainer.log_every_n_steps")).to_have_value("2")
    expect(page.locator("#f-queue")).to_have_value("runyard")


def test_cancel_running_run_then_resume(page, server, worker_holder):
    ensure_worker(server, worker_holder)
    run = server.post(
        "/api/v1/runs",
        {
            "recipe": RECIPE,
            "name": "long-run",
            "trainer": {"max_epochs": 1000, "log_every_n_steps": 5, "checkpoint_every_n_train_steps": 20},
        },
    )
    page.goto(f"/#/runs/{run['id']}")
    expect(badge(page)).to_have_text("running", timeout=90_000)
    expect(page.locator(".chart-card[data-key='train_loss']")).to_be_visible(timeout=60_000)
    # Dismissing the confirmation keeps it running.
    page.get_by_test_id("cancel-run").click()
    page.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_hidden()
    assert server.get(f"/api/v1/runs/{run['id']}")["cancel_requested"] is False
    page.get_by_test_id("cancel-run").click()
    expect(page.get_by_test_id("confirm-dialog")).to_contain_text("Cancel run")
    page.get_by_test_id("confirm-ok").click()
    expect(badge(page)).to_have_text("cancelled", timeout=60_000)
    # Resume from a checkpoint: a new run that continues this one.
    expect(page.get_by_test_id("checkpoints").locator("tbody tr").first).to_be_visible(timeout=20_000)
    page.get_by_test_id("resume-from").first.click()
    page.wait_for_url(lambda url: url.endswith("#/runs/" + str(run["id"])) is False and "#/runs/" in url)
    new_id = int(page.url.rsplit("/", 1)[1])
    assert new_id != run["id"]
    expect(page.get_by_test_id("run-info")).to_contain_text(f"#{run['id']}")
    server.post(f"/api/v1/runs/{new_id}/cancel")
    expect(badge(page)).to_have_text("cancelled", timeout=60_000)


def test_cancel_queued_run(page, server, worker_holder):
    # With the worker busy on a long run, the next one stays queued; cancel it from its page.
    ensure_worker(server, worker_holder)
    busy = server.post("/api/v1/runs", {"recipe": RECIPE, "name": "busy", "trainer": {"max_epochs": 1000}})
    queued = server.post("/api/v1/runs", {"recipe": RECIPE, "name": "waiting"})
    page.goto(f"/#/runs/{queued['id']}")
    expect(badge(page)).to_have_text("queued")
    page.get_by_test_id("cancel-run").click()
    page.get_by_test_id("confirm-ok").click()
    expect(badge(page)).to_have_text("cancelled", timeout=10_000)
    server.post(f"/api/v1/runs/{busy['id']}/cancel")
