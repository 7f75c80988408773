"""Tags, notes, the query box and keyboard navigation of the runs table (issue 14, points 1-3)
in a real Chromium against a real server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

NOTE = (
    "**bold words** and `code`\n\n"
    '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>\n\n'
    "[bad](javascript:window.__xss=3) [good](https://example.com/a)"
)


def rows(page):
    return page.locator("[data-testid=runs-table] tbody tr[data-run-id]")


def search(page, text: str) -> None:
    page.get_by_test_id("search").fill(text)


def test_tags_and_note_on_the_run_page_and_search(page, server):
    a = server.external_run("tagged-run", project="tags-proj")
    b = server.external_run("plain-run", project="tags-proj")
    page.goto(f"/#/runs/{a['id']}")
    tags = page.get_by_test_id("run-tags")
    tags.get_by_test_id("tag-input").fill("baseline exp:1")
    tags.get_by_test_id("tag-input").press("Enter")
    expect(tags.locator(".tag-chip")).to_have_text(["baseline×", "exp:1×"])
    tags.locator(".tag-chip[data-tag='exp:1'] .chip-x").click()
    expect(tags.locator(".tag-chip")).to_have_text(["baseline×"])
    # A bad tag is refused before it is sent, with the rule.
    tags.get_by_test_id("tag-input").fill("no spaces<>")
    tags.get_by_test_id("add-tag").click()
    expect(page.locator(".toast")).to_contain_text("not a tag")

    note = page.get_by_test_id("note-section")
    note.get_by_test_id("edit-note").click()
    note.get_by_test_id("note-source").fill(NOTE)
    note.get_by_test_id("save-note").click()
    html = note.get_by_test_id("note-html")
    expect(html.locator("strong")).to_have_text("bold words")
    expect(html).to_contain_text('<img src=x onerror="window.__xss=1">')  # shown as text
    assert html.locator("img, script").count() == 0
    expect(html.locator("a[href='https://example.com/a']")).to_have_text("good")
    assert html.locator("a[href^='javascript']").count() == 0
    page.reload()
    expect(page.get_by_test_id("note-html").locator("strong")).to_have_text("bold words")
    expect(page.get_by_test_id("run-tags").locator(".tag-chip")).to_have_text(["baseline×"])
    assert page.evaluate("window.__xss") is None

    page.goto("/#/runs")
    search(page, "project = tags-proj and tag:baseline")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run-id", str(a["id"]))
    expect(rows(page).first.locator(".row-tags .tag-chip")).to_have_text("baseline")
    search(page, 'project = tags-proj and note ~ "bold words"')
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run-id", str(a["id"]))
    search(page, "project = tags-proj and not tag:baseline")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run-id", str(b["id"]))
    assert page.evaluate("window.__xss") is None


def test_a_bad_query_says_why_and_where(page, server):
    server.external_run("query-run", project="query-proj", params={"lr": 0.1})
    page.goto("/#/runs")
    search(page, "project = query-proj")
    expect(rows(page)).to_have_count(1)
    bad = "project = query-proj and params.lr < "
    search(page, bad)
    err = page.get_by_test_id("query-error")
    expect(err).to_be_visible()
    column = page.evaluate(
        "(() => { const p = document.querySelector('[data-testid=query-error-where]').textContent.split('\\n');"
        " return p[1].indexOf('^') + 1; })()"
    )
    assert 20 <= column <= len(bad) + 1
    expect(err).to_contain_text(f"column {column}")
    expect(rows(page)).to_have_count(1)  # the last good answer stays
    search(page, "project = query-proj and params.lr < 0.5")
    expect(err).to_be_hidden()
    expect(rows(page)).to_have_count(1)


def test_keyboard_navigation_of_the_runs_table(page, server):
    ids = [server.external_run(f"keys-{i}", project="keys-proj")["id"] for i in range(3)]
    page.goto("/#/runs")
    search(page, "project = keys-proj")
    expect(rows(page)).to_have_count(3)
    page.locator("h1").click()  # focus leaves the search box
    newest_first = [int(x) for x in rows(page).evaluate_all("rs => rs.map(r => r.dataset.runId)")]
    assert newest_first == sorted(ids, reverse=True)
    page.keyboard.press("j")
    expect(page.locator("tr.cursor")).to_have_attribute("data-run-id", str(newest_first[0]))
    page.keyboard.press("j")
    expect(page.locator("tr.cursor")).to_have_attribute("data-run-id", str(newest_first[1]))
    page.keyboard.press("x")
    expect(page.get_by_test_id("compare-selected")).to_have_text("Compare 1")
    expect(page.locator(f"tr[data-run-id='{newest_first[1]}'] input[type=checkbox]")).to_be_checked()
    page.get_by_test_id("runs-table").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("tr.cursor")).to_have_attribute("data-run-id", str(newest_first[2]))
    page.keyboard.press("k")
    page.keyboard.press("k")
    expect(page.locator("tr.cursor")).to_have_attribute("data-run-id", str(newest_first[0]))
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/#/runs/{newest_first[0]}")
    expect(page.get_by_test_id("run-name")).to_have_text("keys-2")


def seed_sweep(server, project: str) -> list[int]:
    ids = []
    for i, (lr, opt) in enumerate([(0.1, "adam"), (0.1, "sgd"), (0.01, "adam"), (0.01, "sgd")]):
        r = server.external_run(f"sweep-{i}", project=project, params={"lr": lr, "opt": opt})
        server.log_points(
            r["id"], [{"key": "val_loss", "step": s, "value": (i + 1) / (s + 1)} for s in range(4)]
        )
        ids.append(r["id"])
    return ids


def test_param_and_metric_columns_grouping_and_bulk_actions(page, server):
    ids = seed_sweep(server, "cols-proj")
    page.goto("/#/runs")
    page.evaluate("localStorage.removeItem('runyard.columns')")
    search(page, "project = cols-proj")
    expect(rows(page)).to_have_count(4)
    add = page.get_by_test_id("add-column")
    expect(add.locator("option[value='metrics.val_loss.min']")).to_have_count(1)  # from /runs/keys
    add.select_option("params.lr")
    add.select_option("metrics.val_loss.min")
    row0 = page.locator(f"tr[data-run-id='{ids[0]}']")
    expect(row0.locator("td[data-field='params.lr']")).to_have_text("0.1")
    expect(row0.locator("td[data-field='metrics.val_loss.min']")).to_have_text("0.25")
    page.locator("th[data-sort='metrics.val_loss.min']").click()
    expect(page.locator("th[data-sort='metrics.val_loss.min']")).to_have_class(re.compile(r"\bsorted\b"))
    expect(rows(page).first).to_have_attribute("data-run-id", str(ids[0]))
    # Grouped by lr: an aggregate row heads each group (mean, min-max of the metric column).
    page.get_by_test_id("group-by").select_option("params.lr")
    groups = page.locator("tr.agg-row")
    expect(groups).to_have_count(2)
    expect(groups.nth(0).locator(".group-label")).to_contain_text("0.01 · 2 runs")
    expect(groups.nth(0).locator("td[data-agg='metrics.val_loss.min'] .agg-mean")).to_have_text(
        "0.875"
    )  # (0.75+1)/2
    expect(groups.nth(1).locator("td[data-agg='metrics.val_loss.min'] .agg-mean")).to_have_text("0.375")
    # The state is in the address: a reload (or a colleague) sees the same.
    assert "group_by=params.lr" in page.evaluate("location.hash")
    page.reload()
    expect(page.locator("tr.agg-row")).to_have_count(2)
    expect(page.get_by_test_id("search")).to_have_value("project = cols-proj")
    # Bulk: tag two runs, then cancel them.
    page.get_by_test_id("group-by").select_option("")
    expect(page.locator("tr.agg-row")).to_have_count(0)
    for rid in ids[:2]:
        page.locator(f"tr[data-run-id='{rid}'] input[type=checkbox]").check()
    expect(page.get_by_test_id("bulk-count")).to_have_text("2 selected")
    page.get_by_test_id("bulk-tag").click()
    page.get_by_test_id("prompt-input").fill("sweep-a lr:0.1")
    page.get_by_test_id("prompt-ok").click()
    expect(page.locator(f"tr[data-run-id='{ids[1]}'] .row-tags .tag-chip")).to_have_text(
        ["lr:0.1", "sweep-a"]
    )
    assert server.get(f"/api/v1/runs/{ids[0]}")["tags"] == ["lr:0.1", "sweep-a"]
    page.get_by_test_id("bulk-cancel").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("bulk-bar")).to_have_attribute(
        "data-last", '{"action":"cancel","ok":2,"failed":0}'
    )
    search(page, "project = cols-proj and tag:sweep-a")
    expect(rows(page)).to_have_count(2)


def test_saved_views_and_query_completion(page, server):
    seed_sweep(server, "views-proj")
    page.goto("/#/runs")
    page.get_by_test_id("filter-project").locator("option[value='views-proj']").wait_for(state="attached")
    page.get_by_test_id("filter-project").select_option("views-proj")
    box = page.get_by_test_id("search")
    box.click()
    box.press_sequentially("para")
    suggest = page.get_by_test_id("query-suggest")
    expect(suggest.locator("li[data-value='params.lr']")).to_be_visible()
    box.press_sequentially("ms.l")
    box.press("Tab")
    expect(box).to_have_value("params.lr ")
    expect(suggest.locator("li[data-value='<']")).to_be_visible()  # operators after a field
    box.press_sequentially("<= 0.05")
    expect(rows(page)).to_have_count(2)
    page.get_by_test_id("add-column").select_option("params.opt")
    page.get_by_test_id("save-view").click()
    page.get_by_test_id("prompt-input").fill("small lr <b>")
    page.get_by_test_id("prompt-ok").click()
    page.wait_for_function("() => /^#\\/runs\\?view=\\d+$/.test(location.hash)")
    shared = page.evaluate("location.hash")
    expect(page.get_by_test_id("views").locator("option:checked")).to_have_text("small lr <b>")
    # Someone opening the address gets the same query and columns.
    other = page.context.new_page()
    other.goto("/" + shared)
    expect(other.get_by_test_id("search")).to_have_value("params.lr <= 0.05")
    expect(other.locator("[data-testid=runs-table] tbody tr[data-run-id]")).to_have_count(2)
    expect(other.locator("th[data-sort='params.opt']")).to_be_visible()
    other.close()
    page.get_by_test_id("delete-view").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("views").locator("option")).to_have_text(["No saved views"])


def test_parameter_plots_of_a_querys_results(page, server):
    ids = seed_sweep(server, "plot-proj")
    page.goto("/#/runs")
    search(page, "project = plot-proj and params.lr < 0.05")
    expect(rows(page)).to_have_count(2)
    page.get_by_test_id("plot-results").click()
    plots = page.get_by_test_id("results-plots")
    expect(plots.get_by_test_id("parcoords")).to_have_attribute("data-lines", "2")
    expect(plots.get_by_test_id("scatter")).to_have_attribute("data-points", "2")
    expect(plots.locator(".pc-axis[data-key='metrics.val_loss.min']")).to_have_count(1)
    line = plots.locator(f".pc-line[data-run-id='{ids[2]}']")
    expect(line.locator("title")).to_contain_text(f"#{ids[2]} sweep-2")
    line.dispatch_event("click")
    page.wait_for_url(f"**/#/runs/{ids[2]}")


def test_new_runs_page_tools_fit_a_phone(page, server):
    ids = seed_sweep(server, "phone-proj")
    server.post(f"/api/v1/runs/{ids[0]}/tags", {"tags": ["a-rather-long-tag-name-for-a-phone", "baseline"]})
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(
        "/#/runs?q=project%20%3D%20phone-proj&columns=params.lr,metrics.val_loss.min&group_by=params.opt"
    )
    expect(page.locator("tr.agg-row")).to_have_count(2)
    page.locator(f"tr[data-run-id='{ids[0]}'] input[type=checkbox]").check()
    expect(page.get_by_test_id("bulk-bar")).to_be_visible()
    page.get_by_test_id("plot-results").click()
    expect(page.get_by_test_id("results-plots").get_by_test_id("parcoords")).to_have_attribute(
        "data-lines", "4"
    )
    assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 0
    page.goto(f"/#/runs/{ids[0]}")
    expect(page.locator(".chart-card[data-key='val_loss']")).to_have_attribute("data-total", "4")
    page.get_by_test_id("edit-panels").click()
    expect(page.get_by_test_id("panel-editor")).to_be_visible()
    expect(page.get_by_test_id("run-tags").locator(".tag-chip")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 0
    page.goto(f"/#/compare?ids={','.join(map(str, ids))}")
    expect(page.get_by_test_id("parcoords")).to_have_attribute("data-lines", "4")
    expect(page.get_by_test_id("scatter")).to_have_attribute("data-points", "4")
    assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 0
