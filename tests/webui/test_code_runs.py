"""Code runs in the dashboard (issue 10), in a real Chromium against a real server: the Code
section of the run page (facts, files, a file's text, the git diff, the download), the
Environment and System sections, the new-run form started from an earlier code run (and
Clone), and the compare page's diff of params and environment records.

No worker: the snapshot is packed with ``server.snapshots.pack`` and uploaded, code runs are
created with ``POST /api/v1/runs``, and what a run's process would record (the code schema, the
environment, ``system/*`` points) is PUT/POSTed through the API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import SCREENSHOTS, screenshot, settle

pytestmark = pytest.mark.browser

PROJECT = "code-ui"
XSS_FILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">\n'
MODULE_ENTRY = {"kind": "module", "model": "pkg/models.py:LitClassifier", "data": "pkg/data.py:MNISTData"}
CLI_ENTRY = {"kind": "cli", "script": "train.py", "subcommand": "fit"}
PARAMS_SCHEMA = {
    "type": "object",
    "properties": {
        "lr": {"type": "number", "default": 0.001, "exclusiveMinimum": 0, "description": "Learning rate."},
        "hidden_dim": {"type": "integer", "default": 64, "minimum": 1},
        "batch_size": {"type": "integer", "default": 32, "minimum": 1},
    },
}
MODELS_PY = '''import torch
from trainer_core import LightningModule


class LitClassifier(LightningModule):
    def __init__(self, lr: float = 1e-3, hidden_dim: int = 64):
        super().__init__()
        self.save_hyperparameters()
'''


def environment(torch: str = "2.5.1+cu121", numpy: str = "2.1.3", seed: int | None = 42) -> dict:
    return {
        "command": ["python", "-m", "worker.run_process", "--run-id", "7"],
        "cwd": "/runs/7/code",
        "python": "3.12.3",
        "executable": "/usr/bin/python3",
        "platform": "Linux-6.8.0-x86_64-with-glibc2.39",
        "torch": torch,
        "cuda": "12.1",
        "cudnn": 90100,
        "hostname": "gpu-box-1",
        "gpus": ["NVIDIA H200"],
        "seed": seed,
        "packages": {"numpy": numpy, "torch": torch, "pathspec": "0.12.1", "PyYAML": "6.0.2", "psutil": "6.1.0"},
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "branch": "main", "dirty": True},
        "time": time.time(),
    }


def _git(folder: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def code(server, tmp_path_factory):
    """A project folder in git (with an uncommitted change), packed, uploaded, and two code runs."""
    from server import snapshots

    folder = tmp_path_factory.mktemp("project")
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "models.py").write_text(MODELS_PY)
    (folder / "pkg" / "data.py").write_text("class MNISTData:\n    def __init__(self, batch_size: int = 32):\n        pass\n")
    (folder / "train.py").write_text("from trainer_core.cli import LightningCLI\n\nLightningCLI()\n")
    (folder / "notes.html").write_text(XSS_FILE)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "remote", "add", "origin", "https://alice:s3cret@git.example.com/team/mnist.git")
    _git(folder, "add", "-A")
    _git(folder, "commit", "-q", "-m", "first")
    (folder / "pkg" / "models.py").write_text(MODELS_PY + "\n# tuned the head\n")  # uncommitted
    packed = snapshots.pack(folder)
    snap = server.request("PUT", f"/api/v1/snapshots/{packed.sha256}?project={PROJECT}", raw=packed.data,
                          content_type="application/gzip")
    base = server.post("/api/v1/runs", {
        "recipe": "code", "name": "code-base", "project": PROJECT,
        "code": {"snapshot_id": snap["id"], "entry": MODULE_ENTRY},
        "params": {"lr": 0.01, "hidden_dim": 64, "batch_size": 32}, "trainer": {"max_epochs": 2},
    })
    # What the run's process records when it starts.
    server.request("PUT", f"/api/v1/runs/{base['id']}/code-schema", {"params_schema": PARAMS_SCHEMA, "trainer_schema": None})
    server.request("PUT", f"/api/v1/runs/{base['id']}/environment", environment())
    t0 = time.time() - 60
    points = []
    for i in range(12):
        wall = t0 + 5 * i
        points += [
            {"key": "system/cpu_percent", "step": i, "value": 40 + i, "wall_time": wall},
            {"key": "system/ram_percent", "step": i, "value": 20 + i / 2, "wall_time": wall},
            {"key": "system/gpu0/utilization", "step": i, "value": 90, "wall_time": wall},
            {"key": "train_loss", "step": i * 10, "value": 1 / (i + 1), "wall_time": wall},
        ]
    server.log_points(base["id"], points)
    # A LightningCLI run that never started: no schema recorded yet.
    cli = server.post("/api/v1/runs", {
        "recipe": "code", "name": "cli-unstarted", "project": PROJECT,
        "code": {"snapshot_id": snap["id"], "entry": CLI_ENTRY},
        "params": {"seed_everything": 7, "model": {"lr": 0.05, "hidden_dim": 32}, "trainer": {"max_epochs": 1}},
    })
    return {"folder": folder, "packed": packed, "snapshot": snap, "base": base, "cli": cli}


def field(page, path: str):
    return page.locator(f"[data-field='{path}']")


def panel_shot(page, locator, name: str) -> None:
    """A picture of one section (test-output/screenshots/NAME.png), checking the page is not
    wider than the window."""
    page.mouse.move(0, 0)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def section(page, title: str):
    return page.locator("section.panel").filter(has=page.locator(".panel-head h2", has_text=title))


def test_code_section_lists_files_shows_text_escapes_html_and_downloads(page, server, code):
    rid = code["base"]["id"]
    sha = code["packed"].sha256
    page.goto(f"/#/runs/{rid}")
    facts = page.get_by_test_id("code-facts")
    expect(page.get_by_test_id("snapshot-sha")).to_have_text(sha[:12])
    expect(facts.get_by_test_id("code-size")).to_contain_text(f"{len(code['packed'].files)} files")
    expect(facts.get_by_test_id("entry-words")).to_contain_text("Trains the LightningModule LitClassifier from pkg/models.py")
    expect(facts.get_by_test_id("entry-words")).to_contain_text("MNISTData from pkg/data.py")
    git = code["packed"].git
    expect(facts.get_by_test_id("git-commit")).to_have_text(git["commit"][:10])
    expect(facts.get_by_test_id("git-branch")).to_have_text("main")
    expect(facts.get_by_test_id("git-dirty")).to_have_text("uncommitted changes")
    expect(facts.get_by_test_id("git-remote")).not_to_contain_text("s3cret")  # no credentials shown
    files = page.get_by_test_id("file-list")
    for f in code["packed"].files:
        expect(files.locator(f".file-item[data-path='{f['path']}']")).to_have_count(1)
    # The entry point's file is opened first.
    text = page.get_by_test_id("file-text")
    expect(page.get_by_test_id("file-path")).to_have_text("pkg/models.py")
    expect(text).to_contain_text("class LitClassifier(LightningModule):")
    expect(text).to_contain_text("# tuned the head")
    panel_shot(page, section(page, "Code"), "run-code")
    # HTML in a file is shown as its characters, never parsed.
    files.locator(".file-item[data-path='notes.html']").click()
    expect(page.get_by_test_id("file-path")).to_have_text("notes.html")
    expect(text).to_have_attribute("data-loaded", "1")
    assert text.text_content() == XSS_FILE
    assert page.locator(".file-view img, .file-view script").count() == 0
    assert page.evaluate("window.__xss") is None
    # A binary file: a note, no text.
    files.locator(".file-item[data-path='weights.bin']").click()
    expect(page.get_by_test_id("file-note")).to_contain_text("Binary file")
    expect(text).to_be_hidden()
    # The uncommitted diff.
    page.get_by_test_id("view-diff").click()
    expect(page.get_by_test_id("file-path")).to_have_text(".runyard/git.diff")
    expect(text).to_contain_text("+# tuned the head")
    # The filter narrows the list.
    page.get_by_test_id("file-filter").fill("pkg/")
    expect(files.locator(".file-item")).to_have_count(sum(f["path"].startswith("pkg/") for f in code["packed"].files))
    with page.expect_download() as info:
        page.get_by_test_id("download-snapshot").click()
    assert Path(info.value.path()).read_bytes() == code["packed"].data
    assert info.value.suggested_filename == f"snapshot-{sha[:12]}.tar.gz"
    # A narrow window: the file browser stacks, nothing is wider than the window.
    page.set_viewport_size({"width": 760, "height": 900})
    page.get_by_test_id("file-filter").fill("")
    files.locator(".file-item[data-path='pkg/models.py']").click()
    expect(text).to_have_attribute("data-loaded", "1")
    page.wait_for_function("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_environment_and_system_sections(page, server, code):
    rid = code["base"]["id"]
    page.goto(f"/#/runs/{rid}")
    env = page.get_by_test_id("env-table")
    expect(env.locator("tr[data-env='torch'] td")).to_have_text("2.5.1+cu121")
    expect(env.locator("tr[data-env='python'] td")).to_have_text("3.12.3")
    expect(env.locator("tr[data-env='cuda'] td")).to_have_text("12.1")
    expect(env.locator("tr[data-env='gpus'] td")).to_have_text("NVIDIA H200")
    expect(env.locator("tr[data-env='seed'] td")).to_have_text("42")
    expect(env.locator("tr[data-env='hostname'] td")).to_have_text("gpu-box-1")
    expect(env.locator("tr[data-env='command'] td")).to_have_text("python -m worker.run_process --run-id 7")
    packages = page.get_by_test_id("env-packages")
    expect(packages.locator("summary")).to_have_text("Installed packages (5)")
    expect(page.get_by_test_id("package-table")).to_be_hidden()  # folded
    packages.locator("summary").click()
    expect(page.get_by_test_id("package-table").locator("tr")).to_have_count(5)
    page.get_by_test_id("package-filter").fill("num")
    expect(page.get_by_test_id("package-table").locator("tr")).to_have_count(1)
    expect(page.get_by_test_id("package-table").locator("tr[data-package='numpy'] td")).to_have_text("2.1.3")
    panel_shot(page, section(page, "Environment"), "run-environment")

    # System series in their own section, against seconds since the first sample; not among
    # the training charts.
    system = page.get_by_test_id("system-charts")
    training = page.get_by_test_id("charts")
    for key in ("system/cpu_percent", "system/ram_percent", "system/gpu0/utilization"):
        expect(system.locator(f".chart-card[data-key='{key}']")).to_have_attribute("data-total", "12")
    expect(training.locator(".chart-card[data-key='train_loss']")).to_have_attribute("data-total", "12")
    expect(training.locator(".chart-card[data-key^='system/']")).to_have_count(0)
    settle(page)  # the picture only: plotly done drawing after its data
    panel_shot(page, section(page, "System"), "run-system")
    plot = "[data-testid=system-charts] .chart-card[data-key='system/cpu_percent'] .chart-plot"
    page.wait_for_function(f"() => document.querySelector(\"{plot}\").data && document.querySelector(\"{plot}\").data.length === 1")
    xs = page.evaluate(f"document.querySelector(\"{plot}\").data[0].x")
    assert xs[0] == 0 and abs(xs[-1] - 55) < 1e-6, xs
    # Live: a new sample reaches the system chart, a new system key gets its card there.
    server.log_points(rid, [
        {"key": "system/cpu_percent", "step": 12, "value": 70, "wall_time": time.time()},
        {"key": "system/process_rss_mb", "step": 12, "value": 812, "wall_time": time.time()},
    ])
    expect(system.locator(".chart-card[data-key='system/cpu_percent']")).to_have_attribute("data-total", "13")
    expect(system.locator(".chart-card[data-key='system/process_rss_mb']")).to_be_visible()
    expect(training.locator(".chart-card[data-key^='system/']")).to_have_count(0)
    page.get_by_test_id("system-x-mode").select_option("step")
    page.wait_for_function(f"() => document.querySelector(\"{plot}\").data[0].x[0] === 0 && document.querySelector(\"{plot}\").data[0].x.at(-1) === 12")

    # A run without a record says so; its System section says none were recorded.
    bare = server.external_run("no-env", project=PROJECT)
    page.goto(f"/#/runs/{bare['id']}")
    expect(page.get_by_test_id("env-missing")).to_contain_text("Not recorded")
    expect(page.get_by_test_id("system-charts")).to_contain_text("No system metrics recorded")
    expect(page.get_by_test_id("code-section")).to_have_count(0)


def test_new_run_from_an_earlier_code_run(page, server, code):
    base = code["base"]
    page.goto(f"/#/new?project={PROJECT}")
    page.get_by_test_id("source-code").check()
    sel = page.locator("#f-code-run")
    expect(sel.locator(f"option[value='{base['id']}']")).to_have_count(1)
    sel.select_option(str(base["id"]))
    expect(page.get_by_test_id("code-source-sha")).to_have_text(code["packed"].sha256[:12])
    expect(field(page, "params.lr")).to_have_value("0.01")
    expect(field(page, "params.hidden_dim")).to_have_value("64")
    expect(field(page, "trainer.max_epochs")).to_have_value("2")
    screenshot(page, "new-run-code")
    # A value the recorded schema refuses: the server's 422 goes next to its field.
    field(page, "params.hidden_dim").fill("0")
    page.get_by_test_id("submit-run").click()
    expect(page.locator("[data-error-for='params.hidden_dim']")).to_be_visible()
    expect(page).to_have_url(f"{server.url}/#/new?project={PROJECT}")
    field(page, "params.hidden_dim").fill("128")
    field(page, "params.lr").fill("0.003")
    page.locator("#f-queue").fill("gpu")
    page.locator("#f-name").fill("code-lr3e-3")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    new_id = int(page.url.rsplit("/", 1)[1])
    assert new_id != base["id"]
    run = server.get(f"/api/v1/runs/{new_id}")
    assert run["recipe"] == "code"
    assert run["name"] == "code-lr3e-3"
    assert run["params"]["lr"] == 0.003 and run["params"]["hidden_dim"] == 128 and run["params"]["batch_size"] == 32
    assert run["trainer"].get("max_epochs") == 2
    assert run["queue"] == "gpu"
    assert run["code"]["snapshot_id"] == code["snapshot"]["id"]
    assert run["code"]["entry"] == MODULE_ENTRY
    expect(page.get_by_test_id("snapshot-sha")).to_have_text(code["packed"].sha256[:12])


def test_clone_of_a_code_run_opens_the_form_prefilled(page, server, code):
    base = code["base"]
    page.goto(f"/#/runs/{base['id']}")
    page.get_by_test_id("clone-run").click()
    page.wait_for_url("**/#/new?clone=*")
    expect(page.get_by_test_id("source-code")).to_be_checked()
    expect(page.locator("#f-code-run")).to_have_value(str(base["id"]))
    expect(page.locator("#f-name")).to_have_value("code-base-clone")
    expect(page.locator("#f-project")).to_have_value(PROJECT)
    expect(field(page, "params.lr")).to_have_value("0.01")
    expect(field(page, "trainer.max_epochs")).to_have_value("2")
    field(page, "params.lr").fill("0.02")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    clone = server.get(f"/api/v1/runs/{int(page.url.rsplit('/', 1)[1])}")
    assert clone["params"] == {**base["params"], "lr": 0.02}
    assert clone["code"]["entry"] == MODULE_ENTRY and clone["code"]["snapshot_id"] == code["snapshot"]["id"]
    # Run and clone on the compare page: the changed lr stands out.
    page.goto(f"/#/compare?ids={base['id']},{clone['id']}")
    params = page.get_by_test_id("compare-params")
    expect(params.locator("tr[data-param='params.lr']")).to_have_class("diff")
    expect(params.locator("tr[data-param='params.lr'] td").nth(0)).to_have_text("0.01")
    expect(params.locator("tr[data-param='params.lr'] td").nth(1)).to_have_text("0.02")
    expect(params.locator("tr[data-param='params.hidden_dim']")).to_have_attribute("data-differs", "0")
    expect(params.locator("tr[data-param='code.snapshot']")).to_have_attribute("data-differs", "0")


def test_code_run_without_a_recorded_schema_edits_params_as_json(page, server, code):
    cli = code["cli"]
    page.goto(f"/#/new?clone={cli['id']}")
    expect(page.get_by_test_id("code-schema-note")).to_contain_text("recorded when run")
    editor = page.locator("#f-params-json")
    assert json.loads(editor.input_value()) == cli["params"]
    expect(page.get_by_test_id("trainer-note")).to_contain_text("LightningCLI config")
    editor.fill("{not json")
    page.get_by_test_id("submit-run").click()
    expect(page.locator("[data-error-for='params']")).to_contain_text("Not valid JSON")
    edited = {**cli["params"], "model": {"lr": 0.1, "hidden_dim": 32}}
    editor.fill(json.dumps(edited))
    page.get_by_test_id("submit-run").click()
    page.wait_for_url("**/#/runs/*")
    run = server.get(f"/api/v1/runs/{int(page.url.rsplit('/', 1)[1])}")
    assert run["params"] == edited
    assert run["code"]["entry"] == CLI_ENTRY
    # The run page shows the nested config as dotted keys.
    expect(page.get_by_test_id("params-table")).to_contain_text("model.lr")


def test_compare_highlights_differing_environment(page, server, code):
    snap = code["snapshot"]
    ids = []
    for torch, numpy, lr in (("2.5.1+cu121", "2.1.3", 0.01), ("2.6.0+cu124", "2.1.3", 0.001)):
        run = server.post("/api/v1/runs", {
            "recipe": "code", "name": f"env-{torch}", "project": PROJECT,
            "code": {"snapshot_id": snap["id"], "entry": MODULE_ENTRY},
            "params": {"lr": lr, "hidden_dim": 64, "batch_size": 32},
        })
        server.request("PUT", f"/api/v1/runs/{run['id']}/environment", environment(torch=torch, numpy=numpy))
        ids.append(run["id"])
    page.goto(f"/#/compare?ids={','.join(map(str, ids))}")
    params = page.get_by_test_id("compare-params")
    expect(params.locator("tr[data-param='params.lr']")).to_have_class("diff")
    expect(params.locator("tr[data-param='env.torch']")).to_have_class("diff")
    expect(params.locator("tr[data-param='env.torch'] td").nth(1)).to_have_text("2.6.0+cu124")
    expect(params.locator("tr[data-param='env.python']")).to_have_attribute("data-differs", "0")
    expect(params.locator("tr[data-param='env.git.commit']")).to_have_attribute("data-differs", "0")
    # Packages: one row per differing version only, under a summary row.
    expect(params.locator("tr[data-param='env.packages.torch']")).to_have_class("diff")
    expect(params.locator("tr[data-param='env.packages.numpy']")).to_have_count(0)
    expect(params.locator("tr[data-param='env.packages']")).to_have_attribute("data-differs", "1")
    expect(params.locator("tr.group-row[data-group='env']")).to_have_count(1)
    page.get_by_test_id("only-diff").check()
    expect(params.locator("tr[data-param='env.python']")).to_have_count(0)
    panel_shot(page, section(page, "Parameters"), "compare-environment")
    expect(params.locator("tr[data-param='env.torch']")).to_be_visible()
    expect(params.locator("tr.group-row[data-group='run']")).to_have_count(0)
