"""The MLflow UI in a real browser: a sweep's runs, metrics, charts and comparison as a user sees them.

A tiny sweep records into a temporary store, ``mlflow server`` serves it on a free loopback port,
and headless Chromium (Debian's ``chromium`` package, driven by Playwright; no browser download)
clicks through it as a user would. Every step leaves a screenshot in the test's temporary
directory (``<tmp>/screenshots/NN_step.png``, and ``NN_step_FAILED.png`` where a step failed).

    pytest tests/test_ui.py -m e2e                           # run alone
    UPDATE_SCREENSHOT=1 pytest tests/test_ui.py -m e2e       # also refresh docs/mlflow_ui.png
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_SCREENSHOT = ROOT / "docs" / "mlflow_ui.png"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium in a container with no network: no sandbox, no GPU, and none of its background
# connections (refused here, and they stall page loads).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
SWEEP = [
    "-m", "pool.size=2,3", "pool.stride=2", "model=tinyvgg", "data.image_size=32", "data.train_size=64",
    "data.val_size=32", "trainer.batch_size=16", "trainer.epochs=2", "tracking.log_model=false",
]  # fmt: skip
COLUMNS = ["val_accuracy", "train_images_per_sec"]  # the metrics a user compares across runs
CHARTS = ["loss", "val_accuracy", "train_images_per_sec"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary (looked for $CHROMIUM, chromium, chromium-browser on PATH); "
        "install Debian's chromium package (apt-get install chromium) to run the MLflow UI test",
    ),
]


def _clean_env() -> dict[str, str]:
    """This environment without MLflow or pytest settings that would leak into the subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sweep_store(tmp_path: Path) -> Path:
    """tmp_path holding mlflow.db and mlartifacts/ of a two-job sweep (pool size 2 and 3)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *SWEEP],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path


@pytest.fixture
def mlflow_server(sweep_store: Path, request) -> str:
    """``mlflow server`` on the sweep's store, on a free loopback port; returns its URL."""
    port = _free_port()
    log = open(sweep_store / "mlflow_server.log", "w")
    env = _clean_env()
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: browsing needs none
    # Started in the store's directory: the server's own artifact root (./mlartifacts) is then the
    # folder our tracking layer gives each experiment, and the runs' file:// artifact URIs there
    # are read by this same machine, so the UI can show every artifact.
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{sweep_store / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=sweep_store, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def stop() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the whole group: mlflow starts uvicorn beneath it
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()

    request.addfinalizer(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            text = (sweep_store / "mlflow_server.log").read_text()[-3000:]
            pytest.fail(f"mlflow server did not answer {url}/health (exit code {process.poll()}):\n{text}")
        time.sleep(0.25)


def _sweep_runs(store: Path):
    """The sweep's parent run and its children (job 0 first), as recorded in the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tritonpool")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r is not parent), key=lambda r: int(r.data.tags["hydra.job.num"]))
    return parent, children


class UserSteps:
    """A page plus the numbered steps taken on it: each step ends with a screenshot, and waiting in
    vain for an element fails with the step's name and the element's description."""

    def __init__(self, page, shots: Path) -> None:
        self.page, self.shots, self.step = page, shots, "00_start"

    def begin(self, step: str) -> None:
        self.step = step

    def see(self, what: str, locator, timeout: float = 30_000):
        """The first element of ``locator``, once visible; else this step fails naming ``what``."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            locator.first.wait_for(state="visible", timeout=timeout)
        except PlaywrightTimeout:
            failed = self.shots / f"{self.step}_FAILED.png"
            self.page.screenshot(path=failed)
            raise AssertionError(f"step {self.step}: {what} not found (screenshot: {failed})") from None
        return locator.first

    def click(self, what: str, locator, timeout: float = 30_000) -> None:
        self.see(what, locator, timeout).click()

    def snap(self) -> Path:
        path = self.shots / f"{self.step}.png"
        self.page.screenshot(path=path)
        return path


def _number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise AssertionError(f"expected a number in the table cell, found {text!r}") from None


@pytest.mark.timeout(420)
def test_mlflow_ui_shows_the_sweep_as_a_user_browses_it(mlflow_server: str, sweep_store: Path):
    from playwright.sync_api import sync_playwright

    parent, children = _sweep_runs(sweep_store)
    child = children[-1]  # pool.size=3
    names = [c.info.run_name for c in children]
    assert names == ["tinyvgg-max-k2-s2", "tinyvgg-max-k3-s2"], names
    shots = sweep_store / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            user = UserSteps(page, shots)

            def link(name: str):
                return page.get_by_role("link", name=name, exact=True)

            def chart(metric: str):
                cards = page.get_by_test_id("experiment-view-compare-runs-card")
                return cards.filter(has=page.get_by_role("heading", name=metric, exact=True)).locator("svg.main-svg")

            # 1. The home page; "Model training" (not GenAI) shows experiments as runs.
            user.begin("01_experiment")
            page.goto(mlflow_server)
            user.click("the 'Model training' switch", page.get_by_role("button", name="Model training"), 60_000)
            user.click("the experiment link 'tritonpool'", page.get_by_role("link", name="tritonpool", exact=True))
            user.see("the sweep's parent run in the runs table", link(parent.info.run_name))
            user.see("'3 matching runs' under the table", page.get_by_text(re.compile(r"^3\s*matching runs$")))
            _close_assistant_panel(page)  # it narrows the table, and columns out of view are not drawn
            for name in names:  # nested: hidden until the parent is expanded
                assert link(name).count() == 0, f"step {user.step}: child run {name} shown before expanding its parent"
            user.snap()

            # 2. Expand the parent: its children appear beneath it.
            user.begin("02_nested_children")
            parent_row = page.locator(f'[role="row"][row-id="{parent.info.run_id}"]')
            run_name_cell = parent_row.locator('[col-id="attributes.`Run Name`"]')
            user.click("the parent run's expand button", run_name_cell.get_by_role("button"))
            for run in children:
                user.see(f"child run {run.info.run_name} under the parent", link(run.info.run_name))
            rows = page.locator('[role="row"][row-id]')
            order = [rows.nth(i).get_attribute("row-id") for i in range(rows.count())]
            for run in children:
                below = order.index(run.info.run_id) > order.index(parent.info.run_id)
                assert below, f"step {user.step}: child run {run.info.run_name} above its parent"
            user.snap()

            # 3. Add the metrics a user compares as columns (Columns > search > tick).
            user.begin("03_metric_columns")
            user.click("the 'Columns' button", page.get_by_role("button", name="Columns"))
            dialog = user.see("the columns dialog", page.get_by_role("dialog"))
            search = user.see("the 'Search columns' box", dialog.get_by_placeholder("Search columns"))
            for metric in COLUMNS:
                search.fill(metric)
                node = dialog.locator(".du-bois-light-tree-treenode").filter(has_text=re.compile(f"^{metric}$"))
                user.click(f"metric {metric} in the columns dialog", node.locator(".du-bois-light-tree-checkbox"))
            page.keyboard.press("Escape")
            for metric in COLUMNS:
                column = f'[col-id="metrics.`{metric}`"]'
                user.see(f"the {metric} column header", page.locator(f'[role="columnheader"]{column}'))
                for run in children:
                    cell = page.locator(f'[role="row"][row-id="{run.info.run_id}"] {column}')
                    shown = _number(user.see(f"{run.info.run_name}'s {metric} cell", cell).inner_text())
                    recorded = run.data.metrics[metric]
                    assert shown == pytest.approx(recorded, rel=1e-6), f"step {user.step}: {metric} {shown} != {recorded}"
            user.snap()
            if os.environ.get("UPDATE_SCREENSHOT") == "1":
                _save_readme_screenshot(page)

            # 4. Open a child run: its params.
            user.begin("04_child_params")
            user.click(f"the child run link {child.info.run_name}", link(child.info.run_name))
            user.see(f"the run page heading {child.info.run_name}", page.get_by_role("heading", name=child.info.run_name))
            user.see("the 'Parameters' table", page.get_by_text(re.compile(r"^Parameters \(\d+\)$")))
            user.see("the parameter search box", page.get_by_placeholder("Search parameters")).fill("pool.")
            for key in ["pool.type", "pool.size", "pool.stride"]:
                row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
                value = user.see(f"the parameter row {key}", row).get_by_role("cell").nth(1).inner_text()
                assert value.strip() == child.data.params[key], f"step {user.step}: {key} shows {value!r}"
            user.snap()

            # 5. Its metric charts.
            user.begin("05_child_charts")
            user.click("the 'Model metrics' tab", page.get_by_role("tab", name="Model metrics"))
            search = user.see("the 'Search metric charts' box", page.get_by_placeholder("Search metric charts"))
            for metric in CHARTS:  # searched for: the grid draws only the charts in view
                search.fill(metric)
                user.see(f"the {metric} chart's plot", chart(metric))
            search.fill("accuracy")  # training against validation accuracy, side by side
            user.see("the accuracy chart's plot", chart("accuracy"))
            user.snap()

            # 6. Back to the parent (its link on the child's overview): the comparison plot.
            user.begin("06_comparison_plot")
            user.click("the 'Overview' tab", page.get_by_role("tab", name="Overview"))
            user.click("the 'Parent run' link", link(parent.info.run_name))
            user.click("the 'Artifacts' tab", page.get_by_role("tab", name="Artifacts"))
            tree_node = page.get_by_test_id("artifact-tree-node").filter(has_text="comparison.png")
            user.click("comparison.png in the artifact tree", tree_node)
            image = user.see("the comparison plot image", page.locator('img[alt="comparison.png"]'))
            loaded = image.evaluate("img => img.complete && img.naturalWidth > 0")
            assert loaded, f"step {user.step}: the comparison plot image is empty (the server did not serve comparison.png)"
            user.snap()
        finally:
            browser.close()


def _close_assistant_panel(page) -> None:
    """Close MLflow's assistant side panel where this MLflow version opens it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.get_by_role("button", name="Close").first
    try:
        close.wait_for(state="visible", timeout=5_000)
    except PlaywrightTimeout:
        return
    close.click()


def _save_readme_screenshot(page) -> None:
    """README's picture: the runs table with the sweep expanded and the compared metrics."""
    README_SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=README_SCREENSHOT, clip={"x": 0, "y": 0, "width": 1600, "height": 400})
