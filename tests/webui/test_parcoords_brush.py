"""Brushing the parallel coordinates (webui/js/parcoords.js) in a real Chromium against a real
server: a drag along an axis keeps the runs inside the range, ranges on two axes intersect, a
click on an axis clears its range, the ranges survive a redraw, and the picked runs open in
the compare page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def seed(server, project: str) -> list[int]:
    """Four runs: lr x opt, val_loss.min 0.25, 0.5, 0.75, 1.0 in that order."""
    ids = []
    for i, (lr, opt) in enumerate([(0.1, "adam"), (0.1, "sgd"), (0.01, "adam"), (0.01, "sgd")]):
        r = server.external_run(f"brush-{i}", project=project, params={"lr": lr, "opt": opt})
        server.log_points(r["id"], [{"key": "val_loss", "step": s, "value": (i + 1) / (s + 1)} for s in range(4)])
        ids.append(r["id"])
    return ids


def drag(page, hit, top: float, bottom: float) -> None:
    """Drag along an axis' hit strip between two fractions of its height (0 = top)."""
    box = hit.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + bottom * box["height"])
    page.mouse.down()
    page.mouse.move(x, box["y"] + top * box["height"], steps=6)
    page.mouse.up()


def on_ids(plot) -> set[int]:
    return {int(v) for v in plot.locator(".pc-line:not(.pc-off)").evaluate_all("els => els.map(e => e.dataset.runId)")}


def test_brushing_filters_intersects_clears_and_compares(page, server):
    ids = seed(server, "brush-proj")
    page.goto("/#/runs?q=project%20%3D%20brush-proj")
    expect(page.locator("[data-testid=runs-table] tbody tr[data-run-id]")).to_have_count(4)
    page.get_by_test_id("plot-results").click()
    plot = page.get_by_test_id("results-plots").get_by_test_id("parcoords")
    expect(plot).to_have_attribute("data-lines", "4")
    expect(plot).to_have_attribute("data-active", "4")
    expect(plot.get_by_test_id("parcoords-status")).to_contain_text("4 runs. Drag along an axis")

    # The lower 55 % of the metric's axis: val_loss.min 0.25 .. 0.66, the first two runs.
    metric_hit = plot.locator(".pc-hit[data-key='metrics.val_loss.min']")
    drag(page, metric_hit, 0.45, 0.99)
    expect(plot).to_have_attribute("data-active", "2")
    assert on_ids(plot) == {ids[0], ids[1]}
    expect(plot.locator(".pc-brush[width='16']")).to_have_count(1)
    expect(plot.get_by_test_id("parcoords-status")).to_contain_text("2 of 4 runs in the ranges picked (metrics.val_loss.min)")

    # A second range, on the categorical axis (adam at the bottom): the intersection is one run.
    opt_hit = plot.locator(".pc-hit[data-key='params.opt']")
    drag(page, opt_hit, 0.8, 0.99)
    expect(plot).to_have_attribute("data-active", "1")
    assert on_ids(plot) == {ids[0]}
    expect(plot.get_by_test_id("parcoords-compare")).to_have_count(0)  # nothing to compare one run with
    # A dimmed line takes no clicks; the one left still opens its run's tooltip text.
    expect(plot.locator(f".pc-line[data-run-id='{ids[0]}'] title")).to_contain_text("brush-0")

    # A click on an axis without dragging clears that axis' range only.
    box = opt_hit.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(plot).to_have_attribute("data-active", "2")
    assert on_ids(plot) == {ids[0], ids[1]}

    # A redraw with another metric keeps the ranges of the columns still drawn (params.opt) and
    # drops those of the column no longer drawn.
    drag(page, opt_hit, 0.8, 0.99)
    expect(plot).to_have_attribute("data-active", "1")
    metric = page.get_by_test_id("results-plots").get_by_test_id("parcoords-metric")
    others = [v for v in metric.locator("option").evaluate_all("els => els.map(e => e.value)")
              if v != "metrics.val_loss.min"]
    if others:
        metric.select_option(others[0])
        expect(plot.locator(f".pc-axis[data-key='{others[0]}']")).to_have_count(1)
        expect(plot).to_have_attribute("data-active", "2")  # the adam runs, whatever the metric
        assert on_ids(plot) == {ids[0], ids[2]}
        metric.select_option("metrics.val_loss.min")
        expect(plot).to_have_attribute("data-active", "2")
    else:
        plot.get_by_test_id("parcoords-clear").click()
        drag(page, opt_hit, 0.8, 0.99)
        expect(plot).to_have_attribute("data-active", "2")
    assert on_ids(plot) == {ids[0], ids[2]}

    # The runs picked open side by side.
    plot.get_by_test_id("parcoords-compare").click()
    page.wait_for_function("() => location.hash.startsWith('#/compare?ids=')")
    shown = page.evaluate("location.hash.split('=')[1]")
    assert {int(x) for x in shown.split(",")} == {ids[0], ids[2]}

    # "Clear ranges" on the compare page's own plot brings every run back.
    compare_plot = page.get_by_test_id("parcoords")
    expect(compare_plot).to_have_attribute("data-lines", "2")
    drag(page, compare_plot.locator(".pc-hit[data-key='params.lr']"), 0.0, 0.3)
    expect(compare_plot).to_have_attribute("data-active", "1")
    compare_plot.get_by_test_id("parcoords-clear").click()
    expect(compare_plot).to_have_attribute("data-active", "2")
