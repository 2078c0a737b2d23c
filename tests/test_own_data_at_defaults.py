"""Own data at the notebooks' defaults: a small real table (not the demo generator, string keys, text dates)
runs every notebook of the flow with no parameter lowered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sample_data import STOCKS_MAPPING, stock_events
from test_course import assert_clean_outputs
from test_own_data import run, use_mapping, write

from helpers.config import PROJECT_ROOT

pytestmark = pytest.mark.long  # a chain of notebooks


def test_a_small_real_table_runs_every_notebook_at_its_defaults(tmp_path: Path) -> None:
    """vega_datasets' monthly stock prices as 540 events of 5 symbols (string keys, "Apr 1 2000" dates): no
    parameter lowered, every notebook of the flow runs, prints no warning, names nothing after the demo."""
    from databricks.sdk import WorkspaceClient

    from helpers.local.server.process import ensure_server, stop_server

    patch = pytest.MonkeyPatch()
    folder = use_mapping(patch, tmp_path, STOCKS_MAPPING)
    patch.delenv("HELPERS_SMOKE", raising=False)
    source = write(stock_events(), folder / "stocks.csv")
    patch.setenv("HELPERS_SOURCE", source)
    names = ["00_setup_feature_tables", "01_train_and_register", "03_sync_serving_with_lookups",
             "04_sync_serving_request_features", "06_rollout_ab_test",
             "07_monitoring_inference_tables"]  # fmt: skip
    try:
        for name in names:
            run(PROJECT_ROOT / "notebooks" / f"{name}.ipynb", folder)
            assert_clean_outputs(folder / f"{name}.ipynb")
            cells = json.loads((folder / f"{name}.ipynb").read_text())["cells"]
            outputs = json.dumps([cell.get("outputs", []) for cell in cells])
            if not name.startswith("07"):  # 07's labels: issue 17's other half
                assert "fraud" not in outputs, f"{name} speaks of fraud on stock prices"
        server = ensure_server(folder / "state")
        w = WorkspaceClient(host=server.url, token=server.token, auth_type="pat")
        answer = w.serving_endpoints.query(
            "stock-direction", dataframe_records=[{"symbol": "IBM", "price": 90.0}]
        )
        assert 0.0 <= answer.predictions[0] <= 1.0
    finally:
        stop_server(folder / "state")
        patch.undo()
