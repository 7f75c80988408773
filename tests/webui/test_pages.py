"""Dashboard pages in a real Chromium against a real server (runs tracked from 'scripts',
i.e. external runs whose data the test posts through the REST API)."""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import REPO, screenshot
from tests.webui.data import SUMMARY, training_curves

pytestmark = pytest.mark.browser

XSS_NAME = '<img src=x onerror="window.__xss=1;alert(1)">'
MEASUREMENTS = REPO / "test-output" / "webui-measurements.json"


def record(name: str, value) -> None:
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.exists() else {}
    data[name] = value
    MEASUREMENTS.write_text(json.dumps(data, indent=2))


def card(page, key: str):
    return page.locator(f".chart-card[data-key='{key}']")


def expect_sorted_by(page, sort: str, desc: bool = False) -> None:
    """Wait until the runs table shows ``sort``: the header is marked (with the direction) only
    once the reloaded rows are rendered, in the same step as the body."""
    th = page.locator(f"th[data-sort='{sort}']")
    expect(th).to_have_class(re.compile(r"\bsorted\b"))
    expect(th.locator(".sort-ind")).to_contain_text("▼" if desc else "▲")


def test_plotly_and_pages_are_served_locally(page, server):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/")
    expect(page.locator("h1")).to_have_text("Runs")
    page.wait_for_function("() => typeof window.Plotly === 'object'")  # loaded async
    assert any(re.search(r"/static/plotly-basic\.[0-9a-f]{16}\.min\.js$", u) for u in requests)  # by content hash
    # The bundle is the file shipped in the installed plotly package, byte for byte.
    import plotly

    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    served = page.request.get("/static/plotly.min.js").body()
    assert served == bundled.read_bytes()
    # Offline: every page (charts included) works with anything outside the server refused.
    page.context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
    run = server.external_run("offline", params={"lr": 0.1})
    server.log_points(run["id"], [{"key": "loss", "step": i, "value": 1 / (i + 1)} for i in range(5)])
    page.goto(f"/#/runs/{run['id']}")
    expect(card(page, "loss")).to_have_attribute("data-total", "5")
    page.goto("/#/new")
    expect(page.get_by_test_id("submit-run")).to_be_visible()
    page.goto(f"/#/compare?ids={run['id']}")
    expect(card(page, "loss")).to_have_attribute("data-total", "5")
    assert all(u.startswith(server.url) or u.startswith("data:") for u in requests), requests


def test_runs_page_live_status_filters_sort_and_select(page, server):
    a = server.external_run("alpha-live", project="vision", params={"lr": 0.1})
    b = server.external_run("beta-search", project="nlp", params={"lr": 0.01})
    server.log_points(a["id"], [{"key": "train_loss", "step": i, "value": 1 / (i + 1)} for i in range(20)])
    server.log_points(b["id"], [{"key": "train_loss", "step": i, "value": 2 / (i + 1)} for i in range(10)])
    page.goto("/#/runs")
    page.evaluate("localStorage.removeItem('runyard.metricColumns')")
    page.reload()
    row_a = page.locator(f"tr[data-run-id='{a['id']}']")
    row_b = page.locator(f"tr[data-run-id='{b['id']}']")
    expect(row_a.locator(".badge")).to_have_text("running")
    expect(row_a).to_contain_text("vision")
    expect(row_a).to_contain_text("external")

    # Live: the status changes without a reload (the marker survives).
    page.evaluate("window.__noReload = 1")
    server.request("PATCH", f"/api/v1/runs/{a['id']}", {"status": "succeeded"})
    expect(row_a.locator(".badge")).to_have_text("succeeded", timeout=5000)
    c = server.external_run("gamma-new", project="vision")
    expect(page.locator(f"tr[data-run-id='{c['id']}']")).to_be_visible(timeout=5000)
    assert page.evaluate("window.__noReload") == 1

    # A chosen metric column shows each run's last value.
    # First visit: a loss column is picked from the runs' keys; remove it, add it back.
    header = page.locator("th[data-sort='metric:train_loss']")
    expect(header).to_be_visible()
    page.get_by_test_id("metric-column-chips").get_by_role("button", name="Remove column train_loss").click()
    expect(header).to_have_count(0)
    add = page.get_by_test_id("add-metric-column")
    expect(add.locator("option[value='train_loss']")).to_have_count(1)  # discovered from the runs
    add.select_option("train_loss")
    expect(row_a.locator("td[data-metric='train_loss']")).to_have_text("0.05")
    expect(row_b.locator("td[data-metric='train_loss']")).to_have_text("0.2")

    # Filters: status, project, search by name.
    page.get_by_test_id("filter-status").select_option("succeeded")
    expect(row_b).to_have_count(0)
    expect(row_a).to_be_visible()
    page.get_by_test_id("filter-status").select_option("")
    page.get_by_test_id("filter-project").select_option("nlp")
    expect(row_a).to_have_count(0)
    expect(row_b).to_be_visible()
    page.get_by_test_id("filter-project").select_option("")
    expect(row_a).to_be_visible()  # back before searching, so the search below is what hides it
    page.get_by_test_id("search").fill("beta")
    expect(row_a).to_have_count(0)
    expect(row_b).to_be_visible()
    page.get_by_test_id("search").fill("")
    expect(row_a).to_be_visible()

    # Sort by a metric column, both directions, by project and by duration (all server-side).
    # Each sort is a reload: wait for the table to show it, then for the rows it asserts (the
    # rows shown before the reload can already match a check on the first row only).
    # Every run on this module's server (earlier tests add theirs), all on the one page.
    listed = server.get("/api/v1/runs?limit=100")["items"]
    header = page.locator("th[data-sort='metric:train_loss']")
    header.click()
    expect_sorted_by(page, "metric:train_loss")
    expect(page.locator("tbody tr").first).to_have_attribute("data-run-id", str(a["id"]))  # 0.05 < 0.2
    header.click()
    expect_sorted_by(page, "metric:train_loss", desc=True)
    expect(page.locator("tbody tr").first).to_have_attribute("data-run-id", str(b["id"]))
    page.locator("th[data-sort='project']").click()
    expect_sorted_by(page, "project")
    # The whole project column in order (td 4: checkbox, status, name, project), nlp before vision.
    expect(page.locator("tbody tr td:nth-child(4)")).to_have_text(sorted(r["project"] for r in listed))
    page.locator("th[data-sort='duration']").click()
    expect_sorted_by(page, "duration")
    expect(row_a).to_be_visible()
    page.locator("th[data-sort='name']").click()
    expect_sorted_by(page, "name")
    expect(page.locator("tbody .run-link")).to_have_text(sorted(r["name"] for r in listed))
    expect(page.locator("tbody .run-link").first).to_have_text("alpha-live")

    # Select two runs and compare them.
    row_a.locator("input[type=checkbox]").check()
    row_b.locator("input[type=checkbox]").check()
    page.get_by_test_id("compare-selected").click()
    expect(page).to_have_url(f"{server.url}/#/compare?ids={a['id']},{b['id']}")
    expect(page.locator(".chip")).to_have_count(2)


def test_escaped_run_name(page, server):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    run = server.external_run(XSS_NAME, params={XSS_NAME: XSS_NAME})
    server.log_points(run["id"], [{"key": XSS_NAME, "step": i, "value": float(i)} for i in range(3)])
    page.goto("/#/runs")
    expect(page.locator(f"tr[data-run-id='{run['id']}'] .run-link")).to_have_text(XSS_NAME)
    page.goto(f"/#/runs/{run['id']}")
    expect(page.get_by_test_id("run-name")).to_have_text(XSS_NAME)
    expect(page.get_by_test_id("params-table")).to_contain_text(XSS_NAME)
    expect(page.locator(".chart-card .chart-title")).to_have_text(XSS_NAME)
    page.goto(f"/#/compare?ids={run['id']}")
    expect(page.locator(".chip a")).to_have_text(XSS_NAME)
    # Check the DOM once the compare page is fully built (its chart is drawn last) ...
    expect(page.locator(".chart-card")).to_have_attribute("data-total", "3")
    expect(page.locator(".chart-card .chart-title")).to_have_text(XSS_NAME)
    # ... and once an image requested now has failed to load, so that the error (and onerror
    # handler) of any <img src=x> injected by the pages above has had its turn.
    page.evaluate(
        "() => new Promise((done) => { const i = new Image(); i.onload = i.onerror = done; i.src = 'x?probe'; })"
    )
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    # No inline handler attributes anywhere in the DOM we built.
    assert (
        page.evaluate(
            "[...document.querySelectorAll('*')].some(e => [...e.attributes].some(a => a.name.startsWith('on')))"
        )
        is False
    )


def test_run_page_curve_gains_points_live(page, server):
    run = server.external_run("live-curve", params={"lr": 0.001, "batch_size": 32})
    rid = run["id"]
    server.request("PUT", f"/api/v1/runs/{rid}/hyperparameters", {"hidden_dim": 64, "optimizer": "adam"})
    page.goto(f"/#/runs/{rid}")
    expect(page.get_by_test_id("charts")).to_contain_text("No metrics logged yet")
    expect(page.get_by_test_id("hparams-table")).to_contain_text("hidden_dim")
    server.log_points(
        rid, [{"key": "train_loss", "step": s, "value": 1.0 / (s + 1), "epoch": 0} for s in range(5)]
    )
    expect(card(page, "train_loss")).to_have_attribute("data-total", "5", timeout=5000)

    latencies = []
    for i in range(8):
        step = 5 + i
        t0 = time.perf_counter()
        server.post(
            f"/api/v1/runs/{rid}/metrics",
            {"points": [{"key": "train_loss", "step": step, "value": 1.0 / (step + 1), "epoch": 0}]},
        )
        page.wait_for_function(
            f"() => document.querySelector(\".chart-card[data-key='train_loss']\").dataset.total === '{step + 1}'",
            polling=10,
            timeout=5000,
        )
        latencies.append(time.perf_counter() - t0)
    p50 = statistics.median(latencies)
    record(
        "sse_point_latency_s",
        {"p50": round(p50, 3), "max": round(max(latencies), 3), "samples": [round(x, 3) for x in latencies]},
    )
    assert p50 <= 1.0, latencies
    # The plotted trace has every point.
    n = page.evaluate(
        "document.querySelector(\".chart-card[data-key='train_loss'] .chart-plot\").data[0].x.length"
    )
    assert n == 13

    # Log tail follows live too.
    server.post(
        f"/api/v1/runs/{rid}/logs",
        {
            "lines": [
                {"stream": "stdout", "text": "epoch 0: loss 0.07"},
                {"stream": "stderr", "text": "warning: <b>not bold</b>"},
            ]
        },
    )
    expect(page.get_by_test_id("log-tail")).to_contain_text("epoch 0: loss 0.07", timeout=5000)
    expect(page.locator(".log-err")).to_contain_text("warning: <b>not bold</b>")


def test_chart_controls_x_axis_log_smoothing(page, server):
    run = server.external_run("controls")
    server.log_points(run["id"], training_curves(seed=1, steps=200))
    page.goto(f"/#/runs/{run['id']}")
    plot = ".chart-card[data-key='train_loss'] .chart-plot"
    expect(card(page, "train_loss")).to_have_attribute("data-total", "200")
    page.get_by_test_id("x-mode").select_option("epoch")
    page.wait_for_function(f'() => document.querySelector("{plot}").data[0].x[199] === 9')
    page.get_by_test_id("x-mode").select_option("wall")
    page.wait_for_function(f"() => document.querySelector(\"{plot}\").layout.xaxis.type === 'date'")
    page.get_by_test_id("x-mode").select_option("relative")  # seconds since the first point
    page.wait_for_function(
        f'() => document.querySelector("{plot}").data[0].x[0] === 0 && document.querySelector("{plot}").data[0].x[199] === 99.5'
    )
    page.get_by_test_id("x-mode").select_option("step")
    page.get_by_test_id("log-scale").check()
    page.wait_for_function(f"() => document.querySelector(\"{plot}\").layout.yaxis.type === 'log'")
    page.get_by_test_id("smoothing").fill("0.9")
    page.wait_for_function(f'() => document.querySelector("{plot}").data.length === 2')  # raw (faded) + smoothed
    raw, smoothed = page.evaluate(
        f'[document.querySelector("{plot}").data[0].y, document.querySelector("{plot}").data[1].y]'
    )
    assert _roughness(smoothed) < _roughness(raw) / 3
    # Hover shows values.
    box = page.locator(plot).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.locator(f"{plot} .hoverlayer")).to_contain_text("step", timeout=5000)
    page.get_by_test_id("metric-filter").fill("val_")
    expect(page.locator(".chart-card")).to_have_count(2)


def _roughness(ys):
    return sum(abs(ys[i + 1] - ys[i]) for i in range(len(ys) - 1))


def test_model_summary_table(page, server):
    run = server.external_run("with-summary")
    server.request("PUT", f"/api/v1/runs/{run['id']}/summary", SUMMARY)
    page.goto(f"/#/runs/{run['id']}")
    table = page.get_by_test_id("summary-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("tbody tr").first).to_contain_text("encoder")
    expect(table.locator("tbody tr").first).to_contain_text("Sequential")
    expect(table.locator("thead")).not_to_contain_text("in size")  # no sizes recorded: column left out
    totals = page.get_by_test_id("summary-totals")
    expect(totals.locator("tr[data-total='total_params'] td")).to_contain_text("101,681")
    expect(totals.locator("tr[data-total='trainable_params'] td")).to_contain_text("101,651")
    expect(totals.locator("tr[data-total='non_trainable_params'] td")).to_contain_text("30")
    expect(totals.locator("tr[data-total='size_mb'] td")).to_have_text("0.407")


def test_checkpoint_download_bytes_match_disk(page, server):
    run = server.external_run("with-checkpoint")
    blob = os.urandom(300_000)
    ckpt = server.request(
        "PUT",
        f"/api/v1/runs/{run['id']}/checkpoints/upload?filename=epoch%3D1-step%3D20.ckpt&epoch=1&step=20"
        "&monitor=val_loss&score=0.1234&is_best=true&is_last=true",
        raw=blob,
        content_type="application/octet-stream",
    )
    page.goto(f"/#/runs/{run['id']}")
    row = page.locator(f"[data-testid=checkpoints] tr[data-ckpt-id='{ckpt['id']}']")
    expect(row).to_contain_text("epoch=1-step=20.ckpt")
    expect(row).to_contain_text("best")
    expect(row).to_contain_text("293.0 KB")
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text("1")  # epoch
    expect(cells.nth(2)).to_have_text("20")  # step
    expect(cells.nth(3)).to_have_text("0.1234")  # score
    expect(cells.nth(4)).to_have_text("293.0 KB")
    expect(cells.nth(5)).to_have_text("bestlast")
    expect(page.get_by_test_id("checkpoints").locator("thead")).to_contain_text("Score (val_loss)")
    with page.expect_download() as info:
        row.get_by_test_id("download-ckpt").click()
    download = info.value
    on_disk = Path(server.home, "artifacts", ckpt["path"])
    assert Path(download.path()).read_bytes() == on_disk.read_bytes() == blob
    assert download.suggested_filename == "epoch=1-step=20.ckpt"


def test_compare_two_runs(page, server):
    a = server.external_run("cmp-fast", params={"lr": 0.003, "batch_size": 64, "hidden": 128})
    b = server.external_run("cmp-slow", params={"lr": 0.0003, "batch_size": 64, "hidden": 128})
    server.log_points(a["id"], training_curves(seed=2, steps=240, lr=3e-3))
    server.log_points(b["id"], training_curves(seed=4, steps=240, lr=3e-4))
    page.goto(f"/#/compare?ids={a['id']},{b['id']}")
    expect(page.locator(".chip")).to_have_count(2)
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        expect(card(page, key)).to_be_visible()
    plot = ".chart-card[data-key='val_loss'] .chart-plot"
    page.wait_for_function(
        f'() => document.querySelector("{plot}").data && document.querySelector("{plot}").data.length === 2'
    )
    names = page.evaluate(f'document.querySelector("{plot}").data.map(t => t.name)')
    assert names == [f"#{a['id']} cmp-fast", f"#{b['id']} cmp-slow"]
    expect(page.locator(f"{plot} .legend")).to_contain_text("cmp-fast")
    params = page.get_by_test_id("compare-params")
    expect(params.locator("tr[data-param='params.lr']")).to_have_class("diff")
    expect(params.locator("tr[data-param='params.lr'] td").nth(0)).to_have_text("0.003")
    expect(params.locator("tr[data-param='params.batch_size']")).to_have_attribute("data-differs", "0")
    page.get_by_test_id("only-diff").check()
    expect(params.locator("tr[data-param='params.batch_size']")).to_have_count(0)
    expect(params.locator("tr[data-param='params.lr']")).to_be_visible()
    page.get_by_test_id("only-diff").uncheck()
    screenshot(page, "compare-two")


def test_large_series_is_downsampled_and_zoom_refetches_detail(page, server):
    """A 1M-point series draws from the server's downsampled read; its draw time is recorded for
    docs/benchmarks.md, not asserted (a timed assertion fails on a loaded machine)."""
    from sqlalchemy.orm import Session

    from server import store
    from server.db import get_engine
    from server.settings import Settings

    run = server.external_run("one-million-points")
    rid = run["id"]
    settings = Settings(home=server.home)
    engine = get_engine(settings.database_url)
    t0 = time.time() - 1_000_000 * 0.01
    n = 1_000_000
    with Session(engine) as session:
        for start in range(0, n, 200_000):
            store.add_metric_points(
                session,
                rid,
                [
                    (
                        "train_loss",
                        s,
                        2.0 * (0.999995**s) + 0.05 * ((s * 7919) % 97) / 97,
                        s // 10_000,
                        t0 + s * 0.01,
                    )
                    for s in range(start, min(n, start + 200_000))
                ],
            )
    times, from_load, breakdown = [], [], []
    for _ in range(2):
        page.goto(f"/#/runs/{rid}")
        expect(card(page, "train_loss")).to_have_attribute("data-total", str(n), timeout=20_000)
        page.wait_for_function("() => document.querySelector('[data-testid=charts]').dataset.loaded === '1'")
        timing = page.evaluate("window.__runyard.lastDraw")
        times.append(timing["ms"])
        from_load.append(timing["since_page_load_ms"])
        breakdown.append({k: timing[k] for k in ("fetch_ms", "plotly_wait_ms", "draw_ms")})
        page.goto("about:blank")
    page.goto(f"/#/runs/{rid}")
    expect(card(page, "train_loss")).to_have_attribute("data-total", str(n), timeout=20_000)
    drawn = int(card(page, "train_loss").get_attribute("data-points"))
    assert drawn <= 4_000  # server downsampling, not a million SVG points
    record(
        "large_series_draw_ms",
        {
            "points": n,
            "drawn": drawn,
            "fetch_and_draw_ms": times,
            "from_page_load_ms": from_load,
            "breakdown": breakdown,
        },
    )
    expect(card(page, "train_loss").locator(".chart-meta")).to_contain_text("1.0 M pts")
    screenshot(page, "run-1m-points")

    # Zoom into 1,000 steps: that range is refetched at full detail.
    plot = ".chart-card[data-key='train_loss'] .chart-plot"
    page.evaluate(f"Plotly.relayout(document.querySelector(\"{plot}\"), {{'xaxis.range': [500000, 501000]}})")
    expect(card(page, "train_loss")).to_have_attribute("data-zoomed", "1", timeout=10_000)
    xs = page.evaluate(f'document.querySelector("{plot}").data[0].x.filter(x => x >= 500000 && x <= 501000)')
    assert xs == list(range(500000, 501001))
    # Back to the full view (double click = autorange) drops the detail.
    page.evaluate(f"Plotly.relayout(document.querySelector(\"{plot}\"), {{'xaxis.autorange': true}})")
    expect(card(page, "train_loss")).to_have_attribute("data-zoomed", "0", timeout=10_000)


def test_delete_finished_run(page, server):
    run = server.external_run("delete-me")
    server.request("PATCH", f"/api/v1/runs/{run['id']}", {"status": "succeeded"})
    page.goto(f"/#/runs/{run['id']}")
    page.get_by_test_id("delete-run").click()
    page.get_by_test_id("confirm-cancel").click()  # "Back": nothing happens
    expect(page.get_by_test_id("confirm-dialog")).to_have_count(0)
    expect(page.get_by_test_id("run-name")).to_have_text("delete-me")
    assert server.get(f"/api/v1/runs/{run['id']}")["id"] == run["id"]
    page.get_by_test_id("delete-run").click()
    page.get_by_test_id("confirm-ok").click()
    page.wait_for_url("**/#/runs")
    expect(page.locator(f"tr[data-run-id='{run['id']}']")).to_have_count(0)
    assert server.get("/api/v1/runs?q=delete-me")["total"] == 0


def test_live_series_stays_bounded_in_the_browser(page, server):
    """Points streamed live are decimated in the page (min/max), so a fast logger cannot make
    every redraw slower; zoom still fetches full detail from the server."""
    run = server.external_run("fast-logger")
    rid = run["id"]
    page.goto(f"/#/runs/{rid}")
    expect(page.get_by_test_id("charts")).to_contain_text("No metrics logged yet")
    server.log_points(
        rid, [{"key": "loss", "step": s, "value": 1.0 + (s % 100) / 100} for s in range(30_000)]
    )
    loss = card(page, "loss")
    expect(loss).to_have_attribute("data-total", "30000", timeout=15_000)
    drawn = int(loss.get_attribute("data-points"))
    assert drawn <= 8_000, drawn
    ys = page.evaluate("document.querySelector(\".chart-card[data-key='loss'] .chart-plot\").data[0].y")
    assert min(ys) == 1.0 and max(ys) == 1.99  # extremes survive the decimation


def test_run_url_opens_the_run_page(page, server):
    run = server.external_run("deep-link")
    page.goto(
        run["url"].replace(server.url, "") if run["url"].startswith(server.url) else f"/runs/{run['id']}"
    )
    expect(page.get_by_test_id("run-name")).to_have_text("deep-link")
    expect(page).to_have_url(re.compile(re.escape(f"/#/runs/{run['id']}") + "$"))
