"""Screenshots of the issue-14 dashboard features for docs/img/, taken with Playwright against a
real, seeded server (a temporary RUNYARD_HOME): the runs table grouped by a parameter with
parameter and metric columns and tags, a run page with a chart of two metrics, the chart
editor and the single-values table, and the compare page's parameter plots.

    .venv/bin/python bench/screenshots.py            # writes docs/img/*.png
    .venv/bin/python bench/screenshots.py --out /tmp/shots

Each picture is taken once the page shows what it must (waited for, no fixed sleeps), and the
page is checked for horizontal overflow first.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.webui.conftest import CHROMIUM, CHROMIUM_ARGS, Server  # noqa: E402
from tests.webui.data import training_curves  # noqa: E402

SWEEP = [(lr, width, opt) for lr in (3e-4, 1e-3, 3e-3) for width in (64, 256) for opt in ("adam", "sgd")]


def seed(server: Server) -> list[int]:
    ids = []
    now = time.time()
    for i, (lr, width, opt) in enumerate(SWEEP):
        run = server.external_run(f"sweep-{opt}-w{width}-lr{lr:g}", project="mnist",
                                  params={"lr": lr, "hidden_dim": width, "optimizer": opt})
        rid = run["id"]
        server.log_points(rid, training_curves(seed=i, steps=120, epochs=6, lr=lr, start=now - 600 + i * 20))
        quality = abs(math.log10(lr) + 3) * 0.2 + (0.05 if opt == "sgd" else 0) - width / 5000
        server.log_points(rid, [{"key": "test_acc", "step": 120, "value": round(0.97 - quality, 4)},
                                {"key": "test_loss", "step": 120, "value": round(0.08 + quality, 4)}])
        tags = ["sweep-3"] + (["baseline"] if (lr, width, opt) == (1e-3, 64, "adam") else [])
        server.post(f"/api/v1/runs/{rid}/tags", {"tags": tags})
        server.request("PATCH", f"/api/v1/runs/{rid}", {"status": "succeeded"})
        ids.append(rid)
    server.request("PUT", f"/api/v1/runs/{ids[2]}/note", {"note": "Baseline of **sweep 3**: Adam, cosine schedule."})
    return ids


def shoot(page, path: Path) -> None:
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path.name}: the page is {overflow}px wider than the window"
    page.screenshot(path=str(path), full_page=False)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import expect, sync_playwright

    server = Server(Path(tempfile.mkdtemp(prefix="runyard-shots-"))).start()
    try:
        ids = seed(server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(base_url=server.url, viewport={"width": 1440, "height": 900})

            page.goto("/#/runs?q=tag%3Asweep-3&columns=params.hidden_dim,metrics.val_loss.min,metrics.test_acc.last"
                      "&group_by=params.optimizer")
            expect(page.locator("tr.agg-row")).to_have_count(2)
            expect(page.locator("[data-testid=runs-table] tbody tr[data-run-id]")).to_have_count(len(SWEEP))
            page.keyboard.press("j")
            page.keyboard.press("j")
            shoot(page, args.out / "runs-grouped.png")

            page.goto(f"/#/runs/{ids[2]}")
            expect(page.locator(".chart-card[data-key='train_loss']")).to_have_attribute("data-total", "120")
            page.get_by_test_id("edit-panels").click()
            editor = page.get_by_test_id("panel-editor")
            editor.locator("[data-testid=panel-metric][value='train_loss']").check()
            editor.locator("[data-testid=panel-metric][value='val_loss']").check()
            editor.get_by_test_id("panel-title").fill("train and val loss")
            editor.get_by_test_id("panel-add").click()
            expect(editor).to_have_attribute("data-saved", "1")
            expect(page.get_by_test_id("single-values")).to_be_visible()
            page.get_by_test_id("charts").scroll_into_view_if_needed()
            page.evaluate("document.querySelector('[data-testid=charts]').closest('section').scrollIntoView()")
            page.mouse.move(0, 0)
            page.screenshot(path=str(args.out / "run-panels.png"), full_page=False)
            print(f"wrote {args.out / 'run-panels.png'}")

            page.goto(f"/#/compare?ids={','.join(map(str, ids))}")
            expect(page.get_by_test_id("parcoords")).to_have_attribute("data-lines", str(len(SWEEP)))
            page.get_by_test_id("scatter-x").select_option("params.lr")
            page.get_by_test_id("scatter-y").select_option("metrics.test_acc.last")
            page.get_by_test_id("scatter-color").select_option("params.hidden_dim")
            page.wait_for_function("() => document.querySelector('[data-testid=scatter]').data?.[0]?.x?.length > 0")
            page.get_by_test_id("param-plots-section").scroll_into_view_if_needed()
            page.evaluate("document.querySelector('[data-testid=param-plots-section]').scrollIntoView()")
            page.mouse.move(0, 0)
            page.screenshot(path=str(args.out / "compare-params.png"), full_page=False)
            print(f"wrote {args.out / 'compare-params.png'}")
            browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
