"""Chart panels (issue 14, point 4) and parameter plots (point 5) in a real Chromium against a
real server: the chart order live and after a reload, single-value metrics as a table, charts
of several metrics kept per project, log-scale ticks that never overlap, parallel coordinates
and a scatter of params against metrics (hover names the run, a click opens it), under the
page's strict CSP."""

from __future__ import annotations

import math

import pytest
from playwright.sync_api import expect

from tests.webui.data import training_curves

pytestmark = pytest.mark.browser


def card_keys(page, box: str = "charts") -> list[str]:
    return page.evaluate(
        f"[...document.querySelectorAll('[data-testid={box}] > .chart-card[data-panel]')].map(c => c.dataset.key)"
    )


def csp_watch(page) -> list[str]:
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return []


def test_chart_order_is_the_same_live_and_after_reload(page, server):
    run = server.external_run("order-live", project="panels-order")
    rid = run["id"]
    page.goto(f"/#/runs/{rid}")
    expect(page.get_by_test_id("charts")).to_have_attribute("data-loaded", "1")
    # Points arrive as a run logs them: one key with a single point first (it used to be
    # ranked last and stay there), another with many, then the first one's curve.
    server.log_points(
        rid, [{"key": "zeta_acc", "step": 0, "value": 0.5}, {"key": "alpha", "step": 0, "value": 1.0}]
    )
    expect(page.get_by_test_id("single-values").locator("tr[data-key='alpha']")).to_be_visible()
    server.log_points(rid, [{"key": "zeta_acc", "step": s, "value": 0.5 + s / 100} for s in range(1, 6)])
    server.log_points(rid, [{"key": "beta", "step": s, "value": 2.0 / (s + 1)} for s in range(6)])
    server.log_points(rid, [{"key": "alpha", "step": s, "value": 1.0 / (s + 1)} for s in range(1, 6)])
    expect(page.locator(".chart-card[data-key='alpha']")).to_have_attribute("data-total", "6")
    expect(page.get_by_test_id("single-values")).to_have_count(0)
    live = card_keys(page)
    page.reload()
    expect(page.locator(".chart-card[data-key='alpha']")).to_have_attribute("data-total", "6")
    assert live == card_keys(page) == ["alpha", "beta", "zeta_acc"]


def test_single_value_metrics_are_a_table(page, server):
    a = server.external_run("single-a", project="panels-single")
    b = server.external_run("single-b", project="panels-single")
    for i, r in enumerate((a, b)):
        server.log_points(r["id"], training_curves(i, steps=40, epochs=4))
        server.log_points(
            r["id"],
            [
                {"key": "test_acc", "step": 40, "value": 0.9 + i / 100},
                {"key": "test_loss", "step": 40, "value": 0.2},
            ],
        )
    page.goto(f"/#/runs/{a['id']}")
    table = page.get_by_test_id("single-values")
    expect(table.locator("tr[data-key='test_acc'] td")).to_have_text("0.9")
    expect(table.locator("tr[data-key='test_loss']")).to_be_visible()
    expect(page.locator(".chart-card[data-key='test_acc']")).to_have_count(0)
    expect(page.locator(".chart-card[data-key='train_loss']")).to_be_visible()
    page.goto(f"/#/compare?ids={a['id']},{b['id']}")
    table = page.get_by_test_id("single-values")
    expect(table.locator("tr[data-key='test_acc'] td")).to_have_text(["0.9", "0.91"])
    expect(page.locator(".chart-card[data-key='test_acc']")).to_have_count(0)


def test_chart_of_several_metrics_and_the_order_are_kept_per_project(page, server):
    a = server.external_run("panel-a", project="panels-layout")
    b = server.external_run("panel-b", project="panels-layout")
    for i, r in enumerate((a, b)):
        server.log_points(r["id"], training_curves(i, steps=60, epochs=6))
    page.goto(f"/#/runs/{a['id']}")
    expect(page.locator(".chart-card[data-key='train_loss']")).to_have_attribute("data-total", "60")
    page.get_by_test_id("edit-panels").click()
    editor = page.get_by_test_id("panel-editor")
    editor.locator("[data-testid=panel-metric][value='train_loss']").check()
    editor.locator("[data-testid=panel-metric][value='val_loss']").check()
    editor.get_by_test_id("panel-title").fill("<b>losses</b>")
    editor.get_by_test_id("panel-add").click()
    first = page.locator("[data-testid=charts] > .chart-card[data-panel]").first
    expect(first.locator(".chart-title")).to_have_text("<b>losses</b>")  # text, not markup
    expect(first).to_have_attribute("data-total", "66")  # 60 train_loss + 6 val_loss points
    names = page.evaluate(
        "document.querySelector('[data-testid=charts] > .chart-card[data-panel] .chart-plot').data.map(t => t.name)"
    )
    assert names == ["train_loss", "val_loss"]
    # Hide lr's own chart and move val_acc to the front.
    editor.locator(".panel-row[data-panel='m:lr'] [data-testid=panel-show]").uncheck()
    expect(page.locator(".chart-card[data-key='lr']")).to_have_count(0)
    for _ in range(4):
        row = editor.locator(".panel-row[data-panel='m:val_acc']")
        if editor.locator(".panel-row").first.get_attribute("data-panel") == "m:val_acc":
            break
        row.get_by_test_id("panel-up").click()
    expect(editor.locator(".panel-row").first).to_have_attribute("data-panel", "m:val_acc")
    expect(editor).to_have_attribute("data-saved", "6")
    live = card_keys(page)
    assert live[0] == "val_acc" and "lr" not in live
    page.reload()
    expect(page.locator(".chart-card[data-key='val_acc']")).to_have_attribute("data-total", "6")
    assert card_keys(page) == live
    # The same project's other run, and the compare page (two runs: a dash per metric).
    page.goto(f"/#/compare?ids={a['id']},{b['id']}")
    expect(page.locator(".chart-card[data-key='val_acc']")).to_have_attribute("data-total", "12")
    assert card_keys(page, "compare-charts") == live
    dashes = page.evaluate(
        "document.querySelectorAll('[data-testid=compare-charts] > .chart-card[data-panel]')[1]"
        ".querySelector('.chart-plot').data.map(t => t.line.dash)"
    )
    assert dashes == ["solid", "solid", "dash", "dash"]


def _boxes_overlap(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


@pytest.mark.parametrize("decades", [3, 12, 30])
def test_log_scale_tick_labels_never_overlap(page, server, decades):
    run = server.external_run(f"log-{decades}", project="panels-log")
    n = 200
    server.log_points(
        run["id"],
        [
            {"key": "grad_norm", "step": s, "value": 10 ** (-decades / 2 + decades * s / (n - 1))}
            for s in range(n)
        ],
    )
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"/#/runs/{run['id']}")
    card = page.locator(".chart-card[data-key='grad_norm']")
    expect(card).to_have_attribute("data-total", str(n))
    page.get_by_test_id("log-scale").check()
    page.wait_for_function(
        "() => document.querySelector(\".chart-card[data-key='grad_norm'] .chart-plot\")._fullLayout.yaxis.type === 'log'"
        " && document.querySelectorAll(\".chart-card[data-key='grad_norm'] .ytick text\").length >= 2"
    )
    boxes = [
        b for b in (t.bounding_box() for t in card.locator(".ytick text").all()) if b and b["height"] > 0
    ]
    assert len(boxes) >= 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _boxes_overlap(a, b), (a, b)
    # plotly's automatic ticks are what collided: without the fix there are 2 and 5 labels.
    labels = card.locator(".ytick text").all_text_contents()
    assert len(labels) <= math.ceil(decades) + 2


def test_parameter_plots_on_the_compare_page(page, server):
    csp_watch(page)
    ids = []
    for i in range(12):
        lr = 10 ** (-4 + i / 4)
        r = server.external_run(
            f"sweep-{i}<i>",
            project="panels-sweep",
            params={"lr": lr, "width": 32 * (1 + i % 3), "opt": ["adam", "sgd"][i % 2]},
        )
        server.log_points(
            r["id"],
            [
                {"key": "val_loss", "step": s, "value": 1 / (s + 1) + abs(math.log10(lr) + 2)}
                for s in range(5)
            ],
        )
        ids.append(r["id"])
    page.goto(f"/#/compare?ids={','.join(map(str, ids))}")
    par = page.get_by_test_id("parcoords")
    expect(par).to_have_attribute("data-lines", "12")
    assert par.get_attribute("data-dims") == "4"  # lr, width, opt -> val_loss.min
    expect(par.locator(".pc-axis")).to_have_count(4)
    expect(par.locator(".pc-axis[data-key='params.opt'] .pc-tick")).to_have_text(["adam", "sgd"])
    line = par.locator(f".pc-line[data-run-id='{ids[3]}']")
    expect(line.locator("title")).to_contain_text(f"#{ids[3]} sweep-3<i>")  # the hover text, as text
    line.dispatch_event("click")
    page.wait_for_url(f"**/#/runs/{ids[3]}")
    page.go_back()
    expect(par).to_have_attribute("data-lines", "12")
    scatter = page.get_by_test_id("scatter")
    expect(scatter).to_have_attribute("data-points", "12")
    page.get_by_test_id("scatter-x").select_option("params.lr")
    page.get_by_test_id("scatter-y").select_option("metrics.val_loss.last")
    page.get_by_test_id("scatter-color").select_option("params.opt")
    page.wait_for_function(
        "() => { const d = document.querySelector('[data-testid=scatter]').data; return d && d[0].x.length === 12 && d[0].x[0] === 1e-4; }"
    )
    # plotly's drag layer sits above the points: move the mouse to the point, as a user does.
    point = scatter.locator(".scatterlayer .point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 20, cy - 20)
    page.mouse.move(cx, cy, steps=4)
    expect(scatter.locator(".hoverlayer")).to_contain_text(f"#{ids[0]} sweep-0<i>")
    page.mouse.click(cx, cy)
    page.wait_for_url(f"**/#/runs/{ids[0]}")
    expect(page.get_by_test_id("run-name")).to_have_text("sweep-0<i>")
    assert page.evaluate("window.__csp") == []
