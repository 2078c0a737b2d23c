"""End to end in a real browser: fill the form, press Optimize, wait, and see the layout drawn.

The chain is real: notebook 00 makes the tables; notebook 05's lessons 1 and 2 (demand model, result tables,
``shelf-layouts`` endpoint, the job) run; ``helpers.local.dashboard``
serves the app (``make app``'s code path); Playwright drives Debian's chromium (``/usr/bin/chromium``,
installed by ``.ci/run``; no browser download).
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import fresh_state
import papermill
import pytest
from app_server import use_server
from databricks.sdk import WorkspaceClient
from streamlit.testing.v1 import AppTest

from helpers.config import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    BROWSER_MISSING = "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
elif importlib.util.find_spec("playwright") is None:
    BROWSER_MISSING = "needs the playwright package (pip install -e '.[dev]')"
else:
    BROWSER_MISSING = ""
needs_browser = pytest.mark.skipif(bool(BROWSER_MISSING), reason=BROWSER_MISSING)
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NOTEBOOKS = PROJECT_ROOT / "notebooks"
SMALL = {"n_customers": 300, "n_transactions": 3_000, "n_products": 20, "n_stores": 3, "n_weeks": 12}
JOB_NAME = "shelf_layout_optimization"


def _run_notebook(source: Path, out_dir: Path) -> None:
    declared = papermill.inspect_notebook(str(source))
    papermill.execute_notebook(
        str(source),
        str(out_dir / source.name),
        parameters={k: v for k, v in SMALL.items() if k in declared},
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, module_patch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state dir with the tables, the demand model, the results endpoint and the job."""
    from helpers.local.server.process import stop_server

    state = fresh_state.seed(tmp_path_factory.mktemp("app_e2e_state"))
    module_patch.setenv("HELPERS_STATE_DIR", str(state))
    module_patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        _run_notebook(NOTEBOOKS / "00_setup_feature_tables.ipynb", state)
        _run_notebook(NOTEBOOKS / "05_async_1_demand_model.ipynb", state)
        _run_notebook(NOTEBOOKS / "05_async_2_job_and_endpoint.ipynb", state)
        yield state
    finally:
        stop_server(state)


@pytest.fixture(scope="module")
def w(chain: Path, module_patch: pytest.MonkeyPatch) -> WorkspaceClient:
    return use_server(module_patch, chain)


@pytest.fixture(scope="module")
def app_url(chain: Path, w: WorkspaceClient) -> Iterator[str]:
    from helpers.local import dashboard

    url = dashboard.start(chain, _free_port())
    try:
        yield url
    finally:
        dashboard.stop(chain)


@needs_browser
def test_a_manager_optimizes_a_shelf_and_sees_it_drawn(
    app_url: str, w: WorkspaceClient, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(app_url)
            page.get_by_role("button", name="Optimize").wait_for(timeout=60_000)
            page.get_by_label("Store id").fill("2")
            page.get_by_label("Shelf length (cm)").fill("250")
            page.get_by_role("button", name="Optimize").click()
            page.get_by_text("Started run").first.wait_for(timeout=30_000)
            (run,) = list(w.jobs.list_runs(job_id=_job_id(w)))
            # Listed at once, then refreshed by the page itself until the run ends and the layout is drawn.
            page.get_by_text(f"Shelf layout of run {run.run_id}").wait_for(timeout=240_000)
            page.locator("[data-testid=stImage] img").first.wait_for()
            served = w.serving_endpoints.query(
                "shelf-layouts", dataframe_records=[{"run_id": str(run.run_id)}]
            )
            margin = f"{served.outputs[0]['expected_weekly_margin']:,.0f}"
            assert page.get_by_test_id("stMetricValue").first.inner_text() == margin
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    finished = w.jobs.get_run(run.run_id)
    assert finished.state.result_state.value == "SUCCESS"
    params = {p.name: p.value for p in finished.job_parameters}
    assert (params["store_id"], params["shelf_length_cm"]) == ("2", "250")
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000


def _job_id(w: WorkspaceClient) -> int:
    return next(j.job_id for j in w.jobs.list(name=JOB_NAME))


def test_an_unknown_store_fails_its_run_with_the_stores_that_exist(w: WorkspaceClient) -> None:
    views = PROJECT_ROOT / "app" / "views"
    at = AppTest.from_file(str(views / "shelf_optimization.py"), default_timeout=60).run()
    at.number_input(key="store_id").set_value(99)
    at.button[0].click().run()
    run_id = at.session_state["run_choice"]
    finished = w.jobs.wait_get_run_job_terminated_or_skipped(run_id, timeout=timedelta(minutes=5))
    assert finished.state.result_state.value == "FAILED"
    again = AppTest.from_file(str(views / "shelf_optimization.py"), default_timeout=60).run()
    (shown,) = [e.value for e in again.error]
    assert "store 99 does not exist; stores: [1, 2, 3]" in shown


def test_the_endpoints_page_shows_the_results_endpoint(w: WorkspaceClient) -> None:
    at = AppTest.from_file(str(PROJECT_ROOT / "app" / "views" / "endpoints.py"), default_timeout=60).run()
    assert [s.value for s in at.subheader] == ["shelf-layouts"]
    assert at.metric[0].value == "READY"
    entities = at.dataframe[0].value
    assert entities["kind"].tolist() == ["feature spec"] and entities["traffic %"].tolist() == [100]
