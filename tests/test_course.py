"""The course as a learner reads it: the Databricks calls that define each architecture are written out in
the notebooks' own cells, one model class, one parameter convention, one smoke switch, quiet outputs.

``assert_clean_outputs`` is also applied to every notebook the smoke runs execute (tests/test_notebooks.py,
tests/test_own_data_at_defaults.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.config import PROJECT_ROOT, SMOKE_SIZES

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"

# {notebook: the Databricks calls a learner must see in its code cells, as they would write them}
NOTEBOOK_CALLS: dict[str, list[str]] = {
    "00_setup_feature_tables": ["fe.create_table(", "primary_keys=", "timeseries_column=", "fe.write_table("],
    "01_train_and_register": [
        "FeatureLookup(",
        "timestamp_lookup_key=",
        "FeatureFunction(",
        "fe.create_training_set(",
        "fe.log_model(",
        "registered_model_name=",
        "set_registered_model_alias(",
        "fe.score_batch(",
    ],
    "02_batch_predictions_serving": [
        "FeatureLookup(",
        "fe.score_batch(",
        "delta.enableChangeDataFeed = true",
        "fe.create_online_store(",
        "fe.publish_table(",
        'publish_mode="CONTINUOUS"',
        "ServedEntityInput(",
        "EndpointCoreConfigInput(",
        "create_and_wait(",
        "w.serving_endpoints.query(",
    ],
    "03_sync_serving_with_lookups": [
        "fe.create_online_store(",
        "fe.publish_table(",
        "get_model_version_by_alias(",
        "ServedEntityInput(",
        "EndpointCoreConfigInput(",
        "create_and_wait(",
        "update_config_and_wait(",
        "w.serving_endpoints.query(",
    ],
    "04_sync_serving_request_features": [
        "FeatureLookup(",
        "mlflow.pyfunc.log_model(",
        "signature=",
        "input_example=",
        "ServedEntityInput(",
        "EndpointCoreConfigInput(",
        "create_and_wait(",
        "DataframeSplitInput(",
    ],
    "06_rollout_ab_test": [
        "FeatureLookup(",
        "FeatureFunction(",
        "fe.log_model(",
        "put_ai_gateway(",
        "AiGatewayInferenceTableConfig(",
        "ServedEntityInput(",
        "TrafficConfig(",
        "Route(",
        "update_config_and_wait(",
        "client_request_id=",
    ],
}
# Lines of executed outputs a learner should not have to read past.
NOISE = re.compile(r"warning|warn\(|deprecat|is not published to the online store|Traceback", re.IGNORECASE)


def code_cells(notebook: Path) -> list[dict[str, Any]]:
    return [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]


def code_of(notebook: Path) -> str:
    return "\n".join("".join(cell["source"]) for cell in code_cells(notebook))


def noisy_outputs(notebook: dict[str, Any]) -> list[str]:
    """The output lines of an executed notebook that are warnings, errors or the twin's notices."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                found.append(f"cell {index}: {output['ename']}: {output['evalue']}")
            text = output.get("text") or "".join(output.get("data", {}).get("text/plain", ""))
            text = "".join(text) if isinstance(text, list) else text
            found += [f"cell {index}: {line}" for line in text.splitlines() if NOISE.search(line)]
    return found


def assert_clean_outputs(executed: Path) -> None:
    noise = noisy_outputs(json.loads(executed.read_text()))
    assert not noise, f"{executed.name} prints warnings or notices:\n" + "\n".join(noise[:10])


@pytest.mark.parametrize("name", sorted(NOTEBOOK_CALLS))
def test_the_databricks_calls_are_written_in_the_notebook(name: str) -> None:
    code = code_of(NOTEBOOKS_DIR / f"{name}.ipynb")
    missing = [call for call in NOTEBOOK_CALLS[name] if call not in code]
    assert not missing, f"{name} does not show {missing} in its own cells"


def test_every_numbered_notebook_of_this_part_is_listed() -> None:
    """A new notebook of this part gets its entry (05* and 07, 08: tests/test_course_async.py)."""
    mine = {p.stem for p in NOTEBOOKS_DIR.glob("0[0-46]_*.ipynb")}
    assert mine == set(NOTEBOOK_CALLS)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS_DIR.rglob("*.ipynb")), ids=lambda p: p.name)
def test_one_model_class_logged_from_code(notebook: Path) -> None:
    code = code_of(notebook)
    assert not re.search(r"class \w+\(.*PythonModel\)", code), f"{notebook.name} defines a model class"
    logs = re.search(r"\b(fe|mlflow\.pyfunc)\.log_model\(", code)
    if (
        logs and "shelf" not in notebook.name and "05" not in notebook.name
    ):  # the demand model: its own flavor
        assert "models.MODEL_CODE" in code, f"{notebook.name} logs a model, not from code"


@pytest.mark.parametrize("notebook", [NOTEBOOKS_DIR / f"{name}.ipynb" for name in NOTEBOOK_CALLS], ids=str)
def test_names_left_none_come_from_project_yml(notebook: Path) -> None:
    """No notebook hard-codes a name project.yml owns: each *_name / *endpoint* parameter defaults to None."""
    cells = code_cells(notebook)
    parameters = "".join(cells[0]["source"])
    assert "parameters" in cells[0].get("metadata", {}).get("tags", []), (
        "the first code cell holds parameters"
    )
    hard_coded = re.findall(r'^(\w*(?:_name|endpoint\w*)) = "', parameters, re.MULTILINE)
    assert not hard_coded, f"{notebook.name} hard-codes {hard_coded}; leave them None (project.yml)"


def test_notices_and_warnings_are_found() -> None:
    executed = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": ["fine\n"]}],
            },
            {
                "cell_type": "code",
                "outputs": [
                    {"output_type": "stream", "name": "stderr", "text": "x.py:1: UserWarning: careful\n"},
                    {"output_type": "error", "ename": "KeyError", "evalue": "'a'", "traceback": []},
                ],
            },
        ]
    }
    assert noisy_outputs(executed) == ["cell 1: x.py:1: UserWarning: careful", "cell 1: KeyError: 'a'"]


def test_the_smoke_switch_caps_the_sizes_of_the_calling_notebook(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import platform

    namespace = {"platform": platform, "n_queries": 200, "n_stream": 5, "seed": 42, "n_customers": 2_000}
    monkeypatch.setenv("HELPERS_SMOKE", "1")
    cfg = eval("platform.settings(n_customers=n_customers)", namespace)  # as a notebook's cell calls it
    assert namespace["n_queries"] == SMOKE_SIZES["n_queries"] and namespace["n_stream"] == 5  # smaller stands
    assert namespace["seed"] == 42 and cfg.n_customers == SMOKE_SIZES["n_customers"]
    monkeypatch.delenv("HELPERS_SMOKE")
    assert platform.settings(n_customers=2_000).n_customers == 2_000


def test_the_model_class_loads_from_its_code_alone(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model holds helpers/models.py itself and the fitted pipeline; it predicts probabilities."""
    import mlflow
    import pandas as pd

    from helpers import models

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir / 'mlflow.db'}")
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 50, "kind": ["a", "b"] * 100})
    label = (frame.x > 1.5).astype(int)
    pipeline = models.classifier(frame, max_iter=5).fit(frame, label)
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(
        str(path),
        python_model=models.MODEL_CODE,
        artifacts=models.save_pipeline(pipeline, tmp_path),
        signature=mlflow.models.infer_signature(frame, pipeline.predict_proba(frame)[:, 1]),
        input_example=frame.head(3),
    )
    assert "import helpers" not in Path(models.MODEL_CODE).read_text()
    assert "from helpers" not in Path(models.MODEL_CODE).read_text()
    assert not list(path.rglob("python_model.pkl"))  # nothing pickled but the pipeline artifact
    scores = mlflow.pyfunc.load_model(str(path)).predict(frame)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[frame.x > 1.5].mean() > scores[frame.x < 1.5].mean()


def test_make_run_starts_kernels_without_a_warning(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """ipykernel warns on every TCP kernel without encryption; `make run` starts them over IPC instead."""
    import nbformat

    from helpers.run_notebooks import run_notebooks

    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), notebook)
    run_notebooks([notebook], tmp_path / "out")
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err, captured.err
    assert "42" in (tmp_path / "out" / "tiny.ipynb").read_text()
