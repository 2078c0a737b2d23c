"""The course's async lessons (05), monitoring (07) and the side-by-side (08).

The Databricks calls are in the notebooks' own cells, the declared result schema is the one the job writes,
and the "try this" cells check their answers.

``NOTEBOOK_CALLS`` has the shape of ``tests/test_course.py``'s table (the two are merged).
"""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest
import yaml

from helpers import shelf
from helpers.config import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
NOTEBOOK_CALLS: dict[str, list[str]] = {
    "05_async_1_demand_model": [
        "FeatureLookup(",
        "fe.create_training_set(",
        "fe.log_model(",
        "set_registered_model_alias(",
        "fe.score_batch(",
    ],
    "05_async_2_job_and_endpoint": [
        "StructType([",
        "fe.create_table(",
        "delta.enableChangeDataFeed = true",
        "fe.create_online_store(",
        "fe.publish_table(",
        "fe.create_feature_spec(",
        "FeatureLookup(",
        "ServedEntityInput(",
        "EndpointCoreConfigInput(",
        "w.serving_endpoints.create_and_wait(",
        "scale_to_zero_enabled=",
        "w.jobs.create(",
        'JobParameterDefinition(name="run_id", default="{{job.run_id}}")',
        "jobs.job_compute()",
    ],
    "05_async_3_client": [
        "w.jobs.list(name=",
        "w.jobs.run_now(",
        "idempotency_token=",
        "w.jobs.get_run_output(",
        ".error",
        "w.serving_endpoints.query(",
    ],
    "jobs/shelf_layout_optimization": [
        "platform.job_parameters(",
        "fe.score_batch(",
        "fe.publish_table(",
        "platform.notebook_exit(",
    ],
    "07_monitoring_inference_tables": [
        "spark.catalog.tableExists(",
        "spark.table(",
        "w.serving_endpoints.get(",
        ".saveAsTable(",
        "Monitor(",
        "DataProfilingConfig(",
        "InferenceLogConfig(",
        "InferenceProblemType.INFERENCE_PROBLEM_TYPE_CLASSIFICATION",
        "baseline_table_name=",
        "slicing_exprs=",
        "w.data_quality.create_monitor(",
        "except ResourceAlreadyExists:",
        "w.data_quality.update_monitor(",
        "_profile_metrics",
        "_drift_metrics",
    ],
    "08_architectures_side_by_side": [
        "fe.score_batch(",
        "fe.publish_table(",
        "fe.create_feature_spec(",
        "FeatureLookup(",
        "ServedEntityInput(",
        "EndpointCoreConfigInput(",
        "w.serving_endpoints.create_and_wait(",
        "w.serving_endpoints.query(",
        "w.jobs.create(",
        'JobParameterDefinition(name="run_id", default="{{job.run_id}}")',
        "jobs.job_compute()",
        "w.jobs.run_now(",
        "w.jobs.get_run_output(",
    ],
    "jobs/score_events": [
        "platform.job_parameters(",
        "fe.score_batch(",
        "platform.notebook_exit(",
    ],
    "scheduled/batch_scoring": [
        "platform.job_parameters(",
        "fe.score_batch(",
        "fe.publish_table(",
    ],
}


def code_of(notebook: str) -> str:
    """The notebook's code cells, joined."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def markdown_of(notebook: str) -> str:
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_CALLS))
def test_the_databricks_calls_are_written_in_the_notebook(notebook: str) -> None:
    code = code_of(notebook)
    missing = [call for call in NOTEBOOK_CALLS[notebook] if call not in code]
    assert not missing, f"{notebook} does not spell {missing} in its own cells"


def test_the_old_one_piece_notebook_05_is_gone_and_the_lessons_are_numbered_runs() -> None:
    lessons = sorted(p.stem for p in NOTEBOOKS.glob("05_*.ipynb"))
    assert lessons == ["05_async_1_demand_model", "05_async_2_job_and_endpoint", "05_async_3_client"]
    assert all(p.match("[0-9][0-9]_*.ipynb") for p in NOTEBOOKS.glob("05_*.ipynb"))  # the Makefile's glob


def _schema_cell(notebook: str) -> str:
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    (cell,) = [
        c for c in cells if c["cell_type"] == "code" and "result_schema = StructType" in "".join(c["source"])
    ]
    return "".join(cell["source"])


def _lesson_2_schemas() -> dict:
    """The names lesson 2's schema cell defines (``layout_schema``, ``result_schema``), run with the Spark
    types it imports on a cluster."""
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

    names: dict = {
        "StructType": StructType,
        "StructField": StructField,
        "StringType": StringType,
        "LongType": LongType,
        "DoubleType": DoubleType,
        "TimestampType": TimestampType,
    }
    exec(_schema_cell("05_async_2_job_and_endpoint"), names)  # noqa: S102 - the notebook's own cell
    return names


def test_the_schema_lesson_2_declares_is_the_one_the_job_writes() -> None:
    from pyspark.sql.pandas.types import to_arrow_schema

    names = _lesson_2_schemas()
    for declared, written in (
        (names["layout_schema"], shelf.LAYOUT_SCHEMA),
        (names["result_schema"], shelf.RESULT_SCHEMA),
    ):
        arrow = to_arrow_schema(declared)
        assert arrow.names == written.names
        assert [f.type for f in arrow] == [f.type for f in written]


@pytest.mark.parametrize(
    "notebook",
    [
        "05_async_1_demand_model",
        "05_async_2_job_and_endpoint",
        "05_async_3_client",
        "07_monitoring_inference_tables",
    ],
)
def test_each_lesson_ends_with_checked_exercises(notebook: str) -> None:
    text, code = markdown_of(notebook), code_of(notebook)
    assert "## Try this" in text
    answers = [line for line in code.splitlines() if line.startswith("answer_") and "= None" in line]
    assert 2 <= len(answers) <= 3, answers
    for line in answers:
        name = line.split("=")[0].strip()
        assert code.count(name) >= 2, f"{notebook}: {name} is never checked"
    assert "not answered yet" in code


def test_the_async_narrative_is_true_to_the_seed() -> None:
    lessons = " ".join(markdown_of(n) for n in NOTEBOOK_CALLS if n.startswith("05_"))
    flat = " ".join(lessons.split())
    for point in (
        "the task needs the user's input",
        "schedule it",
        "Celery",
        "FastAPI",
        "Unity Catalog is required for serving",
        "cold start",
        "scale_to_zero_enabled",
        "Online Tables",
    ):
        assert point in flat, f"the 05 lessons do not teach {point!r}"


def test_the_job_notebook_names_the_lesson_that_makes_its_tables() -> None:
    assert "05_async_2_job_and_endpoint" in code_of("jobs/shelf_layout_optimization")
    assert Path(NOTEBOOKS / "05_async_2_job_and_endpoint.ipynb").is_file()


def test_the_twin_creates_a_feature_table_from_the_notebook_s_spark_schema(state_dir: Path) -> None:
    from helpers import platform

    names = _lesson_2_schemas()
    platform.settings()
    fe = platform.feature_engineering_client()
    fe.create_table(name="main.course_test.results", primary_keys=["run_id"], schema=names["result_schema"])
    assert fe.get_table(name="main.course_test.results").primary_keys == ["run_id"]
    assert list(fe.read_table(name="main.course_test.results").columns) == shelf.RESULT_SCHEMA.names
    with pytest.raises(TypeError, match="StructType"):
        fe.create_table(name="main.course_test.other", primary_keys=["run_id"], schema={"run_id": "string"})


def test_07_stops_with_a_clear_message_when_the_inference_table_is_missing(
    state_dir: Path, tmp_path: Path
) -> None:
    """No payload table yet (nothing logged, or rows on their way): a message, not a crash further down."""
    notebook = NOTEBOOKS / "07_monitoring_inference_tables.ipynb"
    try:
        with pytest.raises(papermill.PapermillExecutionError) as stopped:
            papermill.execute_notebook(
                str(notebook), str(tmp_path / notebook.name), cwd=str(NOTEBOOKS), kernel_name="python3",
                progress_bar=False, parameters={"inference_table_prefix": "nothing_logged"},
            )  # fmt: skip
    finally:
        from helpers.local.server.process import stop_server

        stop_server(state_dir)
    assert stopped.value.ename == "NotEnoughTraffic"
    assert "nothing_logged_payload does not exist yet" in stopped.value.evalue
    assert "min_requests" in stopped.value.evalue and "an hour" in stopped.value.evalue


def test_07_s_operations_chart_has_no_twin_axis_and_starts_at_zero() -> None:
    code = code_of("07_monitoring_inference_tables")
    assert ".twinx()" not in code
    assert code.count("ylim=(0,") >= 3


def test_batch_scoring_is_a_scheduled_bundle_job() -> None:
    jobs = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())["resources"]["jobs"]
    job = jobs["batch_scoring"]
    assert job["schedule"]["quartz_cron_expression"] and job["schedule"]["pause_status"] == "PAUSED"
    (task,) = job["tasks"]
    assert task["notebook_task"]["notebook_path"] == "./notebooks/scheduled/batch_scoring.ipynb"
    assert "${var.offers_model_name}" in {p["default"] for p in job["parameters"]}  # notebook 02's model


def test_the_side_by_side_labels_the_twin_s_figures_and_cites_the_published_limits() -> None:
    text = " ".join(markdown_of("08_architectures_side_by_side").split())
    code = code_of("08_architectures_side_by_side")
    assert "not as a workspace's numbers" in text and "published limits" in text
    for limit in ("16 MB", "297 s", "< 50 ms", "1000", "5 MB"):
        assert limit in code
    assert "compare.plot_side_by_side(" in code


def test_lesson_2_s_job_has_the_bundle_job_s_parameters_and_compute() -> None:
    """The job lesson 2 creates (``w.jobs.create``) and the bundle's ``shelf_layout_optimization`` agree."""
    import ast

    code = code_of("05_async_2_job_and_endpoint")
    cell = code[code.index("compute = jobs.job_compute()") :]
    tree = ast.parse(code)
    (defaults,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "defaults" for t in node.targets)
    ]
    names = ["run_id", *(key.value for key in defaults.keys)]
    bundle = yaml.safe_load((PROJECT_ROOT / "databricks.yml").read_text())["resources"]["jobs"]
    assert names == [p["name"] for p in bundle["shelf_layout_optimization"]["parameters"]]
    assert "job_clusters=[compute]" in cell and "libraries=jobs.cluster_libraries()" in cell
    assert "queue=QueueSettings(enabled=True)" in cell and "max_concurrent_runs=4" in cell
    assert bundle["shelf_layout_optimization"]["max_concurrent_runs"] == 4
