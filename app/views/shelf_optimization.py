"""Shelf optimization: a form starts a job run; runs refresh until they end; finished layouts are drawn."""

import streamlit as st
from databricks.sdk.errors import DatabricksError

from dashboard import shelf
from dashboard.config import load_config, workspace_client

cfg = load_config()
w = workspace_client()
st.title("Shelf layout optimization")
st.caption(
    "Pick a store, a shelf length and the candidate products. Optimize starts a job run; you can leave and "
    "come back — runs and their layouts stay here."
)


@st.cache_data(ttl=300, show_spinner=False)
def job_id_named(name: str) -> int:
    return shelf.find_job_id(workspace_client(), name)


try:
    job_id = cfg.shelf_job_id or job_id_named(cfg.shelf_job_name)
except LookupError as error:
    st.error(str(error))
    st.stop()

with st.form("optimize"):
    left, right = st.columns(2)
    store_id = left.number_input("Store id", value=1, step=1, key="store_id")
    shelf_length = right.number_input("Shelf length (cm)", value=300.0, step=10.0, key="shelf_length_cm")
    all_products = st.checkbox("All products are candidates", value=True, key="all_products")
    products = st.text_input(
        "Candidate product ids (used when the box above is not ticked)",
        placeholder="3, 7, 12",
        key="products",
    )
    with st.expander("Advanced"):
        left, right = st.columns(2)
        max_facings = left.number_input("Max facings per product", value=3, step=1, key="max_facings")
        n_scenarios = right.number_input(
            "Demand scenarios (more: more robust, slower)", value=1, step=1, key="n_scenarios"
        )
    submitted = st.form_submit_button("Optimize", type="primary")

if submitted:
    parameters, errors = shelf.validate_form(
        store_id, shelf_length, all_products, products, max_facings, n_scenarios
    )
    for message in errors:
        st.error(message)
    if not errors:
        try:
            run_id = shelf.start_run(w, job_id, parameters)
        except DatabricksError as error:
            st.error(f"The Jobs API did not start the run: {error}")
        else:
            st.session_state["run_choice"] = run_id
            st.toast(f"Started run {run_id}")

results: dict[int, dict] = st.session_state.setdefault("results", {})
pictures: dict[int, bytes] = st.session_state.setdefault("pictures", {})


def show_run(run: shelf.RunView) -> None:
    if run.active:
        st.info(
            f"Run {run.run_id} is {run.state} ({shelf.format_seconds(run.elapsed_s)} so far). "
            "The layout appears here when it ends."
        )
        return
    if not run.succeeded:
        reasons: dict[int, str] = st.session_state.setdefault("failure_reasons", {})
        if run.run_id not in reasons:  # a finished run's output never changes: ask once
            reasons[run.run_id] = shelf.failure_reason(w, run)
        st.error(f"Run {run.run_id} ended {run.state}: {reasons[run.run_id]}")
        return
    if run.run_id not in results:
        try:
            found = shelf.fetch_result(w, cfg.shelf_results_endpoint, run.run_id)
        except DatabricksError as error:
            st.error(f"Could not read run {run.run_id}'s layout from {cfg.shelf_results_endpoint!r}: {error}")
            return
        if found is None:
            st.warning(
                f"Run {run.run_id} succeeded, but {cfg.shelf_results_endpoint!r} has no layout for it yet."
            )
            return
        results[run.run_id] = found
    result = results[run.run_id]
    layout = shelf.layout_frame(result)
    title = f"run {run.run_id} · store {result['store_id']} · {result['shelf_length_cm']:g} cm"
    if run.run_id not in pictures:
        pictures[run.run_id] = shelf.draw_shelf(layout, float(result["shelf_length_cm"]), title)
    cols = st.columns(4)
    cols[0].metric("Expected margin / week", f"{result['expected_weekly_margin']:,.0f}")
    cols[1].metric("Worst-20% weeks margin", f"{result['cvar_weekly_margin']:,.0f}")
    cols[2].metric("Expected units / week", f"{result['expected_weekly_units']:,.0f}")
    cols[3].metric("Shelf used (cm)", f"{result['used_width_cm']:g} / {result['shelf_length_cm']:g}")
    st.image(pictures[run.run_id], caption=f"Shelf layout of run {run.run_id}", width="stretch")
    st.dataframe(
        layout[["position", "name", "category", "facings", "width_cm", "x_start_cm", "expected_units",
                "expected_margin", "fill_rate"]],
        hide_index=True,
    )  # fmt: skip


polling = any(r.active for r in shelf.recent_runs(w, job_id, cfg.runs_shown))


@st.fragment(run_every=cfg.refresh_seconds if polling else None)
def runs_panel() -> None:
    runs = shelf.recent_runs(w, job_id, cfg.runs_shown)
    st.subheader("Runs")
    if not runs:
        st.write("No runs yet: fill in the form and press Optimize.")
        return
    st.dataframe(shelf.runs_frame(runs), hide_index=True)
    ids = [r.run_id for r in runs]
    if st.session_state.get("run_choice") not in ids:
        st.session_state["run_choice"] = ids[0]
    choice = st.selectbox("Show run", ids, key="run_choice")
    show_run(next(r for r in runs if r.run_id == choice))
    if polling and not any(r.active for r in runs):
        st.rerun()  # every run has ended: render once more, without the timer


runs_panel()
