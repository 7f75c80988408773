"""Gaps found in review: sorting the runs table by every column (checked by order, not just
the header class), the recipe filter and the start/duration cells, the run page's timing and
checkpoint columns, escaping of every kind of text (project, params/hyperparameter values,
log lines, a failed run's error, 422 messages, the clone form) on every page, and the pages in
a narrow window with long names and many metrics, plus their empty states."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import screenshot

pytestmark = pytest.mark.browser

XSS = '<img src=x onerror="window.__xss=1;alert(1)">'
RECIPE = "digits_classifier"


def row_ids(page) -> list[int]:
    return [
        int(x)
        for x in page.locator("tbody tr[data-run-id]").evaluate_all("rs => rs.map(r => r.dataset.runId)")
    ]


def order_of(ids: list[int], subset: list[int]) -> list[int]:
    return [i for i in ids if i in subset]


def test_runs_table_sorts_by_every_column_and_filters_by_recipe(page, server):
    r2 = server.post("/api/v1/runs", {"recipe": RECIPE, "name": "alpha", "project": "p-a"})[
        "id"
    ]  # stays queued
    r1 = server.external_run("bravo", project="p-c")["id"]  # succeeded at once: duration ~0
    r3 = server.external_run("charlie", project="p-b")["id"]  # running
    server.request("PATCH", f"/api/v1/runs/{r1}", {"status": "succeeded"})
    server.log_points(r1, [{"key": "train_loss", "step": 0, "value": 0.3}])
    server.log_points(r3, [{"key": "train_loss", "step": 0, "value": 0.1}])
    page.goto("/#/runs")
    expect(page.locator("th[data-sort='metric:train_loss']")).to_be_visible()  # picked on first visit

    # Cells: recipe, project, start time (or "queued …"), duration (ticking while running, "—" when queued).
    row = lambda rid: page.locator(f"tr[data-run-id='{rid}']")  # noqa: E731
    expect(row(r2).locator("td").nth(4)).to_have_text(RECIPE)
    expect(row(r2).locator("td").nth(5)).to_have_text(re.compile(r"^queued just now$"))
    expect(row(r2).locator(".cell-duration")).to_have_text("—")
    expect(row(r1).locator("td").nth(3)).to_have_text("p-c")
    expect(row(r1).locator("td").nth(5)).to_have_text("just now")
    expect(row(r1).locator(".cell-duration")).to_have_text(re.compile(r"^[01]s$"))
    expect(row(r3).locator(".cell-duration")).to_have_text(re.compile(r"^\d+s$"))
    expect(row(r3).locator("td[data-metric='train_loss']")).to_have_text("0.1")

    # Recipe filter.
    page.get_by_test_id("filter-recipe").select_option(RECIPE)
    expect(page.locator("tbody tr[data-run-id]")).to_have_count(1)
    expect(row(r2)).to_be_visible()
    page.get_by_test_id("filter-recipe").select_option("")
    expect(page.locator("tbody tr[data-run-id]")).to_have_count(3)

    # Every column, ascending then descending (runs without a value are left out of the check).
    expected_asc = {
        "status": [r2, r3, r1],  # queued < running < succeeded
        "name": [r2, r1, r3],
        "project": [r2, r3, r1],
        "recipe": [r2, r1],  # digits_classifier < external
        "started_at": [r1, r3],
        "duration": [r1, r3],
        "metric:train_loss": [r3, r1],
    }
    for sort, asc in expected_asc.items():
        header = page.locator(f"th[data-sort='{sort}']")
        header.click()
        expect(header.locator(".sort-ind")).to_have_text(" ▲")
        page.wait_for_function(
            "([ids]) => { const got = [...document.querySelectorAll('tbody tr[data-run-id]')].map(r => +r.dataset.runId)"
            ".filter(i => ids.includes(i)); return JSON.stringify(got) === JSON.stringify(ids); }",
            arg=[asc],
            timeout=5000,
        )
        assert order_of(row_ids(page), asc) == asc, (sort, row_ids(page))
        header.click()
        expect(header.locator(".sort-ind")).to_have_text(" ▼")
        desc = asc[::-1]
        page.wait_for_function(
            "([ids]) => { const got = [...document.querySelectorAll('tbody tr[data-run-id]')].map(r => +r.dataset.runId)"
            ".filter(i => ids.includes(i)); return JSON.stringify(got) === JSON.stringify(ids); }",
            arg=[desc],
            timeout=5000,
        )

    # Run page: timing of the finished run and the queued one.
    page.goto(f"/#/runs/{r1}")
    expect(page.get_by_test_id("started")).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    expect(page.get_by_test_id("ended")).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    expect(page.get_by_test_id("duration")).to_contain_text(re.compile(r"[01]s"))
    page.goto(f"/#/runs/{r2}")
    expect(page.get_by_test_id("started")).to_contain_text("—")
    expect(page.get_by_test_id("created")).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d"))
    server.post(f"/api/v1/runs/{r2}/cancel")


def _assert_nothing_injected(page, dialogs) -> None:
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    bad = page.evaluate(
        "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes].filter(a => a.name.startsWith('on'))"
        ".map(a => e.tagName + ' ' + a.name))"
    )
    assert bad == [], bad


def test_every_kind_of_text_is_escaped_on_every_page(page, server):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ext = server.external_run(XSS, project=XSS, params={"note": XSS})
    rid = ext["id"]
    server.request("PUT", f"/api/v1/runs/{rid}/hyperparameters", {XSS: XSS})
    server.post(
        f"/api/v1/runs/{rid}/logs",
        {"lines": [{"stream": "stdout", "text": XSS}, {"stream": "stderr", "text": XSS}]},
    )
    server.log_points(rid, [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(3)])
    server.request(
        "PATCH", f"/api/v1/runs/{rid}", {"status": "failed", "error": f"Traceback:\nValueError: {XSS}"}
    )
    queued = server.post("/api/v1/runs", {"recipe": RECIPE, "name": XSS, "project": XSS})["id"]

    page.goto("/#/runs")
    expect(page.locator(f"tr[data-run-id='{rid}'] td").nth(3)).to_have_text(XSS)  # project cell
    expect(page.get_by_test_id("filter-project").locator("option", has_text=XSS)).to_have_count(1)
    _assert_nothing_injected(page, dialogs)

    page.goto(f"/#/runs/{rid}")
    expect(page.get_by_test_id("run-error")).to_have_text(f"Traceback:\nValueError: {XSS}")
    expect(page.get_by_test_id("run-info")).to_contain_text(XSS)  # project
    expect(page.get_by_test_id("params-table").locator("td")).to_have_text(XSS)
    expect(page.get_by_test_id("hparams-table").locator("th")).to_have_text(XSS)
    expect(page.get_by_test_id("hparams-table").locator("td")).to_have_text(XSS)
    expect(page.get_by_test_id("log-tail").locator(".log-line")).to_have_count(2)
    expect(page.locator(".log-err")).to_contain_text(XSS)
    _assert_nothing_injected(page, dialogs)

    page.goto(f"/#/compare?ids={rid},{queued}")
    expect(page.locator("tr[data-param='params.note'] td").first).to_have_text(XSS)
    expect(page.locator(f"tr[data-param='hparams.{XSS}']")).to_have_count(1)
    expect(page.locator("tr[data-param='project'] td").first).to_have_text(XSS)
    _assert_nothing_injected(page, dialogs)

    # The clone form shows the name and project as values, and a 422 whose text carries markup
    # is shown as text, on its field and (unplaced) in the form's error box.
    page.goto(f"/#/new?clone={queued}")
    expect(page.locator("#f-name")).to_have_value(f"{XSS}-clone")
    expect(page.locator("#f-project")).to_have_value(XSS)
    detail = [
        {"loc": ["body", "params", "hidden_dim"], "msg": f"bad {XSS}", "type": "value_error"},
        {"loc": ["body", XSS], "msg": XSS, "type": "value_error"},
    ]
    page.route(
        "**/api/v1/runs",
        lambda route: (
            route.fulfill(status=422, content_type="application/json",
                          body=json.dumps({"detail": f"Invalid value for params.hidden_dim: bad {XSS}.",
                                           "field": "params.hidden_dim", "errors": detail}))
            if route.request.method == "POST"
            else route.continue_()
        ),
    )
    page.get_by_test_id("submit-run").click()
    expect(page.locator("[data-path='params.hidden_dim'] .field-error")).to_have_text(f"Bad {XSS}")
    expect(page.get_by_test_id("form-error")).to_contain_text(XSS)
    _assert_nothing_injected(page, dialogs)
    server.post(f"/api/v1/runs/{queued}/cancel")


LONG = "resnet50-imagenet-sweep-" + "lr3e-4-wd0.05-warmup2000-cosine-" * 5


def test_narrow_window_long_names_many_metrics_and_empty_states(browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 760, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        # Empty states.
        page.goto("/#/runs")
        page.get_by_test_id("search").fill("no-such-run-anywhere")
        expect(page.locator("td.empty")).to_have_text("No run matches these filters.")
        page.get_by_test_id("search").fill("")
        page.goto("/#/compare")
        expect(page.locator(".empty-state")).to_contain_text("Select runs")
        screenshot(page, "narrow-compare-empty")
        bare = server.external_run("bare")["id"]
        page.goto(f"/#/runs/{bare}")
        expect(page.get_by_test_id("charts")).to_contain_text("No metrics logged yet")
        expect(page.get_by_test_id("checkpoints")).to_contain_text("No checkpoints yet")
        expect(page.get_by_test_id("log-tail")).to_contain_text("No log lines yet")
        expect(page.get_by_test_id("model-summary")).to_contain_text("No model summary yet")
        screenshot(page, "narrow-run-empty")

        # A long name, a long project and many metrics, in a narrow window.
        run = server.external_run(
            LONG[:200], project="computer-vision-" * 6, params={"description": "x" * 300}
        )
        rid = run["id"]
        keys = [f"val/class_{i:02d}_accuracy_top5_per_epoch" for i in range(12)] + ["train_loss"]
        server.log_points(
            rid,
            [
                {"key": k, "step": s, "value": 1.0 / (s + 1 + i), "epoch": s // 10}
                for i, k in enumerate(keys)
                for s in range(40)
            ],
        )
        server.request(
            "PATCH",
            f"/api/v1/runs/{rid}",
            {
                "status": "failed",
                "error": "Traceback (most recent call last):\n"
                + '  File "/very/long/path/to/some/module/' * 4
                + 'train.py", line 1\nRuntimeError: boom',
            },
        )
        page.goto("/#/runs")
        expect(page.locator(f"tr[data-run-id='{rid}']")).to_be_visible()
        screenshot(page, "narrow-runs")
        page.goto(f"/#/runs/{rid}")
        expect(page.locator(".chart-card")).to_have_count(len(keys))
        expect(page.locator(".chart-card").first).to_have_attribute("data-key", "train_loss")  # losses first
        expect(page.get_by_test_id("run-error")).to_contain_text("RuntimeError: boom")
        screenshot(page, "narrow-run-failed")
        page.goto(f"/#/compare?ids={rid},{bare}")
        expect(page.locator(".chip")).to_have_count(2)
        screenshot(page, "narrow-compare")
        page.goto("/#/new")
        expect(page.get_by_test_id("submit-run")).to_be_visible()
        screenshot(page, "narrow-new-run")
    finally:
        context.close()
    assert not errors, errors


def test_whole_float_in_an_int_or_float_field_stays_a_float(page, server):
    """limit_train_batches is `int | float`: 1.0 means every batch, 1 means one batch. JS has a
    single number type, so the form must still send `1.0` (and a clone must keep it)."""
    page.goto("/#/new")
    page.locator("#f-recipe").select_option(RECIPE)
    page.locator("#f-name").fill("float-limit")
    page.locator("[data-field='trainer.limit_train_batches']").fill("1.0")
    page.locator("[data-field='trainer.early_stopping_monitor']").fill("val_loss")
    page.locator("[data-field='trainer.early_stopping_patience']").fill("7")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    rid = int(page.url.rsplit("/", 1)[1])
    trainer = server.get(f"/api/v1/runs/{rid}")["trainer"]
    assert trainer["limit_train_batches"] == 1.0 and isinstance(trainer["limit_train_batches"], float), (
        trainer
    )
    assert trainer["early_stopping_monitor"] == "val_loss" and trainer["early_stopping_patience"] == 7, (
        trainer
    )

    trainer_table = page.get_by_test_id("trainer-table")
    expect(trainer_table.locator("tr", has_text="limit_train_batches").locator("td")).to_have_text("1.0")
    expect(trainer_table.locator("tr", has_text="early_stopping_patience").locator("td")).to_have_text("7")

    page.goto(f"/#/new?clone={rid}")
    expect(page.locator("[data-field='trainer.limit_train_batches']")).to_have_value("1.0")
    expect(page.locator("[data-field='trainer.early_stopping_monitor']")).to_have_value("val_loss")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url(lambda url: url.rsplit("/", 1)[-1].isdigit() and not url.endswith(f"/{rid}"))
    clone = int(page.url.rsplit("/", 1)[1])
    limit = server.get(f"/api/v1/runs/{clone}")["trainer"]["limit_train_batches"]
    assert limit == 1.0 and isinstance(limit, float), limit
    # An int stays an int.
    page.goto("/#/new")
    page.locator("#f-recipe").select_option(RECIPE)
    page.locator("[data-field='trainer.limit_train_batches']").fill("3")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    third = int(page.url.rsplit("/", 1)[1])
    limit = server.get(f"/api/v1/runs/{third}")["trainer"]["limit_train_batches"]
    assert limit == 3 and isinstance(limit, int), limit
    # Compare: 1.0 and 3 shown as written and marked as differing.
    page.goto(f"/#/compare?ids={rid},{third}")
    row = page.locator("tr[data-param='trainer.limit_train_batches']")
    expect(row).to_have_attribute("data-differs", "1")
    expect(row.locator("td").nth(0)).to_have_text("1.0")
    expect(row.locator("td").nth(1)).to_have_text("3")
    expect(page.locator("tr[data-param='trainer.early_stopping_patience'] td").nth(0)).to_have_text("7")
    for r in (rid, clone, third):
        server.post(f"/api/v1/runs/{r}/cancel")


def test_compare_page_follows_running_runs_live(page, server):
    a = server.external_run("cmp-live-a")["id"]
    b = server.external_run("cmp-live-b")["id"]
    for rid in (a, b):
        server.log_points(rid, [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(5)])
    page.goto(f"/#/compare?ids={a},{b}")
    loss = page.locator(".chart-card[data-key='loss']")
    expect(loss).to_have_attribute("data-total", "10")
    page.evaluate("window.__noReload = 1")
    server.log_points(b, [{"key": "loss", "step": s, "value": 0.1} for s in range(5, 8)])
    expect(loss).to_have_attribute("data-total", "13", timeout=5000)
    lens = page.evaluate(
        "document.querySelector(\".chart-card[data-key='loss'] .chart-plot\").data.map(t => t.x.length)"
    )
    assert lens == [5, 8]
    assert page.evaluate("window.__noReload") == 1
