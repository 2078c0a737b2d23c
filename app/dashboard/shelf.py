"""Shelf optimization: check the form, start runs, list them, fetch and draw a finished run's layout."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import pandas as pd
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import BaseRun, RunLifeCycleState, RunResultState

# The job checks every parameter itself and fails the run with a clear message; the form checks the same
# ranges first so that a typo never costs a run.
SHELF_LENGTH_RANGE_CM = (50.0, 2000.0)
MAX_FACINGS_RANGE = (1, 10)
N_SCENARIOS_RANGE = (1, 5000)
_ACTIVE = {
    RunLifeCycleState.QUEUED,
    RunLifeCycleState.PENDING,
    RunLifeCycleState.RUNNING,
    RunLifeCycleState.TERMINATING,
    RunLifeCycleState.BLOCKED,
    RunLifeCycleState.WAITING_FOR_RETRY,
}


def validate_form(
    store_id: int | float | None,
    shelf_length_cm: float | None,
    all_products: bool,
    products: str,
    max_facings: int | float | None,
    n_scenarios: int | float | None,
) -> tuple[dict[str, str], list[str]]:
    """The job parameters for a form, and the problems found (each names its field); empty if it is fine."""
    errors: list[str] = []
    if store_id is None or store_id != int(store_id) or store_id < 1:
        errors.append(f"Store id must be a whole number of at least 1 (got {store_id}).")
    low, high = SHELF_LENGTH_RANGE_CM
    if shelf_length_cm is None or not low <= shelf_length_cm <= high:
        errors.append(f"Shelf length must be between {low:g} and {high:g} cm (got {shelf_length_cm}).")
    ids: list[int] = []
    if not all_products:
        tokens = [t.strip() for t in products.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
        bad = [t for t in tokens if not t.isdigit()]
        if bad:
            errors.append(f"Candidate products must be product ids like 3, 7, 12; not {', '.join(bad)}.")
        elif not tokens:
            errors.append("Candidate products: enter at least one product id, or tick 'All products'.")
        ids = list(dict.fromkeys(int(t) for t in tokens if t.isdigit()))
    for label, value, (lo, hi) in (
        ("Max facings", max_facings, MAX_FACINGS_RANGE),
        ("Demand scenarios", n_scenarios, N_SCENARIOS_RANGE),
    ):
        if value is None or value != int(value) or not lo <= value <= hi:
            errors.append(f"{label} must be a whole number between {lo} and {hi} (got {value}).")
    if errors:
        return {}, errors
    parameters = {
        "store_id": str(int(store_id)),
        "shelf_length_cm": f"{shelf_length_cm:g}",
        "candidate_products": ",".join(str(i) for i in ids),
        "max_facings": str(int(max_facings)),
        "n_scenarios": str(int(n_scenarios)),
    }
    return parameters, []


def find_job_id(w: WorkspaceClient, name: str) -> int:
    """The id of the job called ``name``; a LookupError says how to create it."""
    found = [j.job_id for j in w.jobs.list(name=name) if j.settings and j.settings.name == name]
    if not found:
        raise LookupError(
            f"There is no job named {name!r} yet. Run notebook 05_async_2_job_and_endpoint (or `databricks "
            "bundle deploy`) to create it, or set SHELF_JOB_ID / SHELF_JOB_NAME."
        )
    if len(found) > 1:
        raise LookupError(f"{len(found)} jobs are named {name!r} (ids {sorted(found)}); set SHELF_JOB_ID.")
    return int(found[0])


def start_run(w: WorkspaceClient, job_id: int, parameters: dict[str, str]) -> int:
    """Start a run with these job parameters; its id, at once."""
    return int(w.jobs.run_now(job_id, job_parameters=parameters).run_id)


@dataclass(frozen=True)
class RunView:
    """What the page shows of a run."""

    run_id: int
    store_id: str
    shelf_length_cm: str
    state: str
    active: bool
    succeeded: bool
    started: str
    elapsed_s: float
    message: str


def recent_runs(w: WorkspaceClient, job_id: int, limit: int) -> list[RunView]:
    """The job's latest runs, newest first (from the Jobs API, so they survive a reload or a restart)."""
    return [run_view(r) for r in islice(w.jobs.list_runs(job_id=job_id, limit=min(limit, 25)), limit)]


def run_view(run: BaseRun, now_ms: int | None = None) -> RunView:
    state = run.state
    life = state.life_cycle_state if state else None
    result = state.result_state if state else None
    params = {p.name: p.value if p.value is not None else p.default for p in run.job_parameters or []}
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start = run.start_time or 0
    end = run.end_time or (0 if life in _ACTIVE else start)
    elapsed = ((end or now_ms) - start) / 1000 if start else 0.0
    return RunView(
        run_id=int(run.run_id),
        store_id=params.get("store_id", ""),
        shelf_length_cm=params.get("shelf_length_cm", ""),
        state=result.value if result else (life.value if life else "UNKNOWN"),
        active=life in _ACTIVE,
        succeeded=result == RunResultState.SUCCESS,
        started=pd.Timestamp(start, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC") if start else "",
        elapsed_s=round(max(elapsed, 0.0), 1),
        message=(state.state_message or "") if state else "",
    )


def failure_reason(w: WorkspaceClient, run: RunView) -> str:
    """Why a finished run failed: its task's ``error`` from ``runs/get-output`` (where Databricks puts a
    notebook's exception; the state message only says to look there), else the run's state message."""
    for task in w.jobs.get_run(run.run_id).tasks or []:
        error = w.jobs.get_run_output(task.run_id).error
        if error:
            return error
    return run.message or "no message"


def runs_frame(runs: Iterable[RunView]) -> pd.DataFrame:
    rows = [
        {
            "run_id": r.run_id,
            "store": r.store_id,
            "shelf (cm)": r.shelf_length_cm,
            "state": r.state,
            "elapsed": format_seconds(r.elapsed_s),
            "started": r.started,
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=["run_id", "store", "shelf (cm)", "state", "elapsed", "started"])


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def fetch_result(w: WorkspaceClient, endpoint: str, run_id: int) -> dict[str, Any] | None:
    """The result row served for ``run_id``, or None if the endpoint has nothing for it."""
    answer = w.serving_endpoints.query(endpoint, dataframe_records=[{"run_id": str(run_id)}])
    row = (answer.outputs or [None])[0]
    if not row or not row.get("layout_json"):
        return None
    return row


def layout_frame(result: dict[str, Any]) -> pd.DataFrame:
    """The positions of a result row, left to right."""
    layout = pd.DataFrame(json.loads(result["layout_json"]))
    return layout.sort_values("position").reset_index(drop=True) if len(layout) else layout


def draw_shelf(layout: pd.DataFrame, shelf_length_cm: float, title: str) -> bytes:
    """The shelf as a PNG: a block per product (a line per facing), coloured by category, left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(12, 3.4))
    categories = sorted(layout["category"].unique()) if len(layout) else []
    colour = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(categories)}
    height = 30.0
    for row in layout.itertuples():
        ax.add_patch(
            Rectangle((row.x_start_cm, 0), row.width_cm, height, facecolor=colour[row.category],
                      edgecolor="white", linewidth=1.5, alpha=0.9)
        )  # fmt: skip
        for k in range(1, int(row.facings)):
            x = row.x_start_cm + k * row.unit_width_cm
            ax.plot([x, x], [0, height], color="white", lw=0.6, alpha=0.8)
        ax.text(
            row.x_start_cm + row.width_cm / 2, height / 2,
            f"{row.name}\n×{row.facings} · {row.expected_margin:.0f}/wk",
            rotation=90, ha="center", va="center", fontsize=7, clip_on=True,
        )  # fmt: skip
    used = float(layout["width_cm"].sum()) if len(layout) else 0.0
    if used < shelf_length_cm:
        ax.add_patch(
            Rectangle((used, 0), shelf_length_cm - used, height, facecolor="none", edgecolor="grey",
                      hatch="//", linewidth=0.5)
        )  # fmt: skip
    ax.set_xlim(0, shelf_length_cm)
    ax.set_ylim(0, height * 1.05)
    ax.set_yticks([])
    ax.set_xlabel("shelf position (cm)")
    ax.set_title(title, fontsize=10)
    ax.legend(
        [Rectangle((0, 0), 1, 1, facecolor=colour[c]) for c in categories], categories,
        loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=max(1, len(categories)), fontsize=8,
        frameon=False,
    )  # fmt: skip
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
