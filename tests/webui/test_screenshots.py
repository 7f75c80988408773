"""Screenshots of each page over a realistic set of runs (tracked from scripts), saved
under test-output/screenshots/ (docs/img/ holds copies). Each page is also checked for
what it must show, so a broken page fails here rather than producing a bad picture."""

from __future__ import annotations

import os
import time

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import screenshot, settle
from tests.webui.data import SUMMARY, training_curves

pytestmark = pytest.mark.browser

RUNS = [
    # name, project, final status, params
    ("autoencoder-baseline", "mnist", "succeeded", {"lr": 1e-3, "hidden_dim": 64, "batch_size": 64}),
    ("autoencoder-wide", "mnist", "succeeded", {"lr": 1e-3, "hidden_dim": 256, "batch_size": 64}),
    ("autoencoder-lr3e-3", "mnist", "running", {"lr": 3e-3, "hidden_dim": 64, "batch_size": 64}),
    ("classifier-dropout", "mnist", "failed", {"lr": 1e-2, "dropout": 0.5, "batch_size": 128}),
    ("digits-small", "digits", "cancelled", {"lr": 5e-3, "hidden_dim": 32, "batch_size": 32}),
    ("digits-sweep-07", "digits", "succeeded", {"lr": 2e-3, "hidden_dim": 48, "batch_size": 32}),
]


@pytest.fixture(scope="module")
def seeded(server):
    ids = {}
    now = time.time()
    for i, (name, project, status, params) in enumerate(RUNS):
        run = server.external_run(name, project=project, params=params)
        rid = run["id"]
        ids[name] = rid
        steps = 300 if status != "running" else 180
        server.log_points(
            rid, training_curves(seed=i, steps=steps, lr=params["lr"], start=now - 900 + i * 60)
        )
        server.request(
            "PUT",
            f"/api/v1/runs/{rid}/hyperparameters",
            {**params, "optimizer": "Adam", "scheduler": "cosine"},
        )
        server.request("PUT", f"/api/v1/runs/{rid}/summary", SUMMARY)
        for epoch, step in ((4, 149), (9, 299)):
            if step >= steps:
                continue
            server.request(
                "PUT",
                f"/api/v1/runs/{rid}/checkpoints/upload?filename=epoch%3D{epoch}-step%3D{step}.ckpt"
                f"&epoch={epoch}&step={step}&monitor=val_loss&score={0.1 + 0.3 / (epoch + 1):.4f}"
                f"&is_best={'true' if epoch == 9 or steps < 300 else 'false'}&is_last={'true' if step + 1 >= steps - 150 else 'false'}",
                raw=os.urandom(40_000 + 1000 * i),
                content_type="application/octet-stream",
            )
        server.post(
            f"/api/v1/runs/{rid}/logs",
            {
                "lines": [
                    {"stream": "stdout", "text": "  | Name    | Type       | Params | Mode"},
                    {"stream": "stdout", "text": "0 | encoder | Sequential | 50.4 K | train"},
                    {"stream": "stdout", "text": "1 | decoder | Sequential | 51.2 K | train"},
                    *(
                        {
                            "stream": "stdout",
                            "text": f"Epoch {e}: 100%|██████████| 30/30 [00:02<00:00, 14.2it/s, train_loss={1.8 / (e + 1):.3f}]",
                        }
                        for e in range(steps // 30)
                    ),
                    {
                        "stream": "stderr",
                        "text": "UserWarning: The dataloader does not have many workers which may be a bottleneck.",
                    },
                ]
            },
        )
        if status == "failed":
            server.request(
                "PATCH",
                f"/api/v1/runs/{rid}",
                {
                    "status": "failed",
                    "error": 'Traceback (most recent call last):\n  File "train.py", line 42, in training_step\nRuntimeError: CUDA out of memory.',
                },
            )
        elif status != "running":
            server.request("PATCH", f"/api/v1/runs/{rid}", {"status": status})
    return ids


def test_screenshot_runs_page(page, server, seeded):
    page.goto("/#/runs")
    page.evaluate(
        "localStorage.setItem('runyard.metricColumns', JSON.stringify(['val_loss', 'val_acc', 'train_loss']))"
    )
    page.reload()
    table = page.get_by_test_id("runs-table")
    expect(table.locator("tbody tr")).to_have_count(len(RUNS))
    expect(page.get_by_test_id("add-metric-column").locator("option[value='lr']")).to_have_count(1)
    expect(table.locator(f"tr[data-run-id='{seeded['classifier-dropout']}'] .badge")).to_have_text("failed")
    page.locator(f"tr[data-run-id='{seeded['autoencoder-baseline']}'] input[type=checkbox]").check()
    page.locator(f"tr[data-run-id='{seeded['autoencoder-wide']}'] input[type=checkbox]").check()
    screenshot(page, "runs")


def test_screenshot_run_page(page, server, seeded):
    rid = seeded["autoencoder-lr3e-3"]
    page.goto(f"/#/runs/{rid}")
    expect(page.locator(".chart-card")).to_have_count(4)
    expect(page.get_by_test_id("summary-table").locator("tbody tr")).to_have_count(3)
    expect(page.get_by_test_id("checkpoints").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("log-tail")).to_contain_text("Epoch 5")
    page.get_by_test_id("smoothing").fill("0.6")
    settle(page)
    screenshot(page, "run")


def test_screenshot_failed_run_shows_traceback(page, server, seeded):
    page.goto(f"/#/runs/{seeded['classifier-dropout']}")
    expect(page.get_by_test_id("run-error")).to_contain_text("CUDA out of memory")
    expect(page.get_by_test_id("resume-run")).to_be_hidden()  # external runs are not resumable from here
    expect(page.locator(".chart-card")).to_have_count(4)
    screenshot(page, "run-failed", full_page=False)


def test_screenshot_compare_page(page, server, seeded):
    ids = [seeded["autoencoder-baseline"], seeded["autoencoder-wide"], seeded["autoencoder-lr3e-3"]]
    page.goto(f"/#/compare?ids={','.join(map(str, ids))}")
    expect(page.locator(".chip")).to_have_count(3)
    expect(page.locator(".chart-card")).to_have_count(4)
    expect(page.locator("tr[data-param='params.hidden_dim']")).to_have_class("diff")
    settle(page)
    screenshot(page, "compare")
