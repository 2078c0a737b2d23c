"""Smoke runs: every numbered notebook, in order, with papermill, at smoke sizes (``HELPERS_SMOKE=1``), in a
temporary state dir; their outputs carry no warnings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fresh_state
import papermill
import pytest
from test_course import assert_clean_outputs

from helpers.config import PROJECT_ROOT, get_settings
from helpers.run_notebooks import for_project

pytestmark = pytest.mark.long  # a chain of notebooks
NOTEBOOKS = for_project(sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), get_settings())


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One state dir for the whole sequence: each notebook builds on the previous ones."""
    state = fresh_state.seed(tmp_path_factory.mktemp("notebook_state"))
    patch = pytest.MonkeyPatch()
    patch.setenv("HELPERS_STATE_DIR", str(state))
    patch.setenv("HELPERS_SMOKE", "1")  # the notebooks' sizes capped at config.SMOKE_SIZES
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield state
    from helpers.local.continuous_sync import stop_tailer
    from helpers.local.server.process import stop_server

    stop_server(state)
    stop_tailer(state)
    patch.undo()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook: Path, shared_state: Path, tmp_path: Path) -> None:
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / notebook.name),
        cwd=str(notebook.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    assert_clean_outputs(tmp_path / notebook.name)


def test_teardown_deletes_what_the_notebooks_created(shared_state: Path, tmp_path: Path) -> None:
    from databricks.sdk import WorkspaceClient

    from helpers.local.server.process import ensure_server
    from helpers.local.tables import DeltaTables
    from helpers.names import ProjectNames

    notebook = PROJECT_ROOT / "notebooks" / "teardown.ipynb"
    papermill.execute_notebook(
        str(notebook), str(tmp_path / notebook.name), cwd=str(notebook.parent), kernel_name="python3",
        progress_bar=False,
    )  # fmt: skip
    cfg = get_settings()
    server = ensure_server(shared_state)
    w = WorkspaceClient(host=server.url, token=server.token, auth_type="pat")
    assert list(w.serving_endpoints.list()) == []
    assert list(w.jobs.list(name=cfg.job_name)) == []
    assert not DeltaTables(shared_state).exists(cfg.table(cfg.events_table))
    assert list(w.data_quality.list_monitor()) == []  # notebook 07's monitor, deleted before its table
    left = [n for n in ProjectNames.of(cfg).of_kind("plain table") if DeltaTables(shared_state).is_delta(n)]
    assert left == [], "the inference log, baseline and metric tables are dropped too"
