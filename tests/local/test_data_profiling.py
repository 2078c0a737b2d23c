"""The metric tables of ``helpers.local.data_profiling`` agree with scipy / scikit-learn on the same rows.

Each test selects a window's (or a slice's) rows from the input itself and recomputes the statistic with the
reference library, so a wrong grouping shows as much as a wrong formula.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn import metrics

from helpers.local.data_profiling import (
    ALL_MODELS,
    TABLE,
    ProfileConfig,
    ProfilingError,
    check_columns,
    profile,
    write_metric_tables,
)
from helpers.local.frames import to_pandas
from helpers.local.spark import LocalSparkSession
from helpers.local.tables import DeltaTables

DAY = pd.Timestamp("2026-11-01", tz="UTC")
NAIVE_DAY = DAY.tz_localize(None)  # a window read back: naive UTC, as Spark's toPandas gives it
CONFIG = ProfileConfig(
    "inference_log",
    timestamp_col="ts",
    granularities=("1 day",),
    problem_type="classification",
    prediction_col="prediction",
    label_col="label",
    model_id_col="model_version",
    slicing_exprs=("channel", "amount > 50"),
)


def scored(seed: int = 0, n: int = 1500, days: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day = rng.choice(days, n)
    ts = DAY + pd.to_timedelta(day, unit="D") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
    label = rng.choice(["no", "yes", "maybe"], n, p=[0.6, 0.3, 0.1])
    amount = rng.normal(50, 10, n) + 8 * (day == 2)
    amount[rng.random(n) < 0.05] = np.nan  # nulls
    return pd.DataFrame(
        {
            "ts": ts,
            "amount": amount,
            "channel": np.where(
                day == 2, rng.choice(["web", "app"], n), rng.choice(["web", "store", "app"], n)
            ),
            "model_version": rng.choice(["1", "2"], n),
            "prediction": np.where(rng.random(n) < 0.7, label, rng.choice(["no", "yes", "maybe"], n)),
            "label": label,
        }
    )


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return scored()


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    return scored(seed=7, n=800).drop(columns=["ts"])


@pytest.fixture(scope="module")
def tables(data: pd.DataFrame, baseline: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    profile_table, drift_table = profile(data, CONFIG, baseline=baseline)
    return to_pandas(profile_table), to_pandas(drift_table)


def day_rows(data: pd.DataFrame, day: int) -> pd.DataFrame:
    start = DAY + pd.Timedelta(days=day)
    return data[(data.ts >= start) & (data.ts < start + pd.Timedelta(days=1))]


def pick(frame: pd.DataFrame, day: int | None, column: str, **where: object) -> pd.Series:
    """The one row of ``frame`` for a window (``None``: the baseline's rows), column, model id and slice."""
    criteria = {"model_version": ALL_MODELS, "slice_key": None, "slice_value": None} | where
    mask = frame.column_name == column
    if day is None:
        mask &= frame.window.isna()
    else:
        mask &= frame.window.map(lambda w: w is not None and w["start"] == NAIVE_DAY + pd.Timedelta(days=day))
    for name, value in criteria.items():
        mask &= frame[name].isna() if value is None else frame[name] == value
    [row] = frame[mask].to_dict(orient="records")
    return pd.Series(row)


def test_profile_statistics_agree_with_pandas_on_each_window(
    data: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    profile_table, _ = tables
    for day in (0, 1, 2):
        rows = day_rows(data, day)
        amount = pick(profile_table[profile_table.log_type == "INPUT"], day, "amount")
        values = rows.amount.dropna()
        assert amount["count"] == len(values) and amount["num_nulls"] == rows.amount.isna().sum()
        assert amount["avg"] == pytest.approx(values.mean(), rel=1e-12)
        assert amount["stddev"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert amount["median"] == pytest.approx(values.median(), rel=1e-12)
        assert (amount["min"], amount["max"]) == (values.min(), values.max())
        assert amount["percent_null"] == pytest.approx(100 * rows.amount.isna().mean())
        assert amount["data_type"] == "double" and amount["granularity"] == "1 day"
        assert amount["window"]["end"] - amount["window"]["start"] == pd.Timedelta(days=1)
        channel = pick(profile_table, day, "channel")
        assert channel["distinct_count"] == rows.channel.nunique()
        assert {
            i["item"]: i["count"] for i in channel["frequent_items"]
        } == rows.channel.value_counts().to_dict()
        assert channel["max_length"] == rows.channel.str.len().max()
        assert pick(profile_table, day, TABLE)["count"] == len(rows)


def test_model_quality_agrees_with_scikit_learn_per_model_and_slice(
    data: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    profile_table, _ = tables
    worst = 0.0
    for day in (0, 1, 2):
        for model in (ALL_MODELS, "1", "2"):
            for slice_value in (None, "web"):
                rows = day_rows(data, day)
                rows = rows if model == ALL_MODELS else rows[rows.model_version == model]
                where = {"model_version": model}
                if slice_value:
                    rows = rows[rows.channel == slice_value]
                    where |= {"slice_key": "channel", "slice_value": slice_value}
                row = pick(profile_table, day, TABLE, **where)
                y, y_hat = rows.label, rows.prediction
                classes = sorted(set(y) | set(y_hat))
                p, r, f, _ = metrics.precision_recall_fscore_support(
                    y, y_hat, labels=classes, zero_division=0
                )
                expected = {
                    "accuracy": metrics.accuracy_score(y, y_hat),
                    "precision.macro": metrics.precision_score(y, y_hat, average="macro", zero_division=0),
                    "recall.weighted": metrics.recall_score(y, y_hat, average="weighted", zero_division=0),
                    "f1.macro": metrics.f1_score(y, y_hat, average="macro", zero_division=0),
                    "f1.weighted": metrics.f1_score(y, y_hat, average="weighted", zero_division=0),
                    **{f"precision.{c}": v for c, v in zip(classes, p, strict=True)},
                    **{f"recall.{c}": v for c, v in zip(classes, r, strict=True)},
                    **{f"f1.{c}": v for c, v in zip(classes, f, strict=True)},
                }
                got = {
                    "accuracy": row["accuracy_score"],
                    "precision.macro": row["precision"]["macro"],
                    "recall.weighted": row["recall"]["weighted"],
                    "f1.macro": row["f1_score"]["macro"],
                    "f1.weighted": row["f1_score"]["weighted"],
                    **{f"precision.{c}": v for c, v in row["precision"]["one_vs_all"].items()},
                    **{f"recall.{c}": v for c, v in row["recall"]["one_vs_all"].items()},
                    **{f"f1.{c}": v for c, v in row["f1_score"]["one_vs_all"].items()},
                }
                assert got.keys() == expected.keys()
                worst = max(worst, *(abs(got[k] - expected[k]) for k in expected))
                matrix = metrics.confusion_matrix(y, y_hat, labels=classes)
                cells = {(c["prediction"], c["label"]): c["count"] for c in row["confusion_matrix"]}
                for i, actual in enumerate(classes):
                    for j, predicted in enumerate(classes):
                        assert cells.get((predicted, actual), 0) == matrix[i, j]
    assert worst < 1e-12


def test_regression_quality_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(10, 3, 400)
    frame = pd.DataFrame({"ts": DAY, "model": "m", "y": y, "y_hat": y + rng.normal(0, 1, 400)})
    config = ProfileConfig("inference_log", "ts", ("1 day",), "regression", "y_hat", "y", "model")
    row = pick(to_pandas(profile(frame, config)[0]).rename(columns={"model": "model_version"}), 0, TABLE)
    assert row["mean_squared_error"] == pytest.approx(metrics.mean_squared_error(y, frame.y_hat), rel=1e-12)
    assert row["root_mean_squared_error"] == pytest.approx(
        np.sqrt(metrics.mean_squared_error(y, frame.y_hat))
    )
    assert row["mean_average_error"] == pytest.approx(metrics.mean_absolute_error(y, frame.y_hat), rel=1e-12)
    assert row["mean_absolute_percentage_error"] == pytest.approx(
        metrics.mean_absolute_percentage_error(y, frame.y_hat), rel=1e-12
    )
    assert row["r2_score"] == pytest.approx(metrics.r2_score(y, frame.y_hat), rel=1e-12)


def psi_by_formula(current: np.ndarray, reference: np.ndarray) -> float:
    """PSI written out: deciles of the reference as bin edges, shares floored at 1e-4."""
    edges = np.quantile(reference, np.linspace(0, 1, 11))
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.histogram(current, edges)[0] / len(current)
    q = np.histogram(reference, edges)[0] / len(reference)
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    return float(np.sum((p - q) * np.log(p / q)))


def test_numeric_drift_agrees_with_scipy_consecutive_and_baseline(
    data: pd.DataFrame, baseline: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, drift = tables
    for day, drift_type in ((1, "CONSECUTIVE"), (2, "CONSECUTIVE"), (2, "BASELINE")):
        current = day_rows(data, day).amount.dropna().to_numpy()
        if drift_type == "CONSECUTIVE":
            reference = day_rows(data, day - 1).amount.dropna().to_numpy()
        else:
            reference = baseline.amount.dropna().to_numpy()
        row = pick(drift[drift.drift_type == drift_type], day, "amount")
        ks = stats.ks_2samp(current, reference)
        assert row["ks_test"]["statistic"] == pytest.approx(ks.statistic, rel=1e-12)
        assert row["ks_test"]["pvalue"] == pytest.approx(ks.pvalue, rel=1e-9)
        assert row["wasserstein_distance"] == pytest.approx(
            stats.wasserstein_distance(current, reference), rel=1e-9
        )
        assert row["population_stability_index"] == pytest.approx(
            psi_by_formula(current, reference), rel=1e-9
        )
        assert row["avg_delta"] == pytest.approx(current.mean() - reference.mean(), rel=1e-9)
        if drift_type == "CONSECUTIVE":
            assert row["window_cmp"]["start"] == NAIVE_DAY + pd.Timedelta(days=day - 1)
        else:
            assert row["window_cmp"] is None
    shifted = pick(drift[drift.drift_type == "CONSECUTIVE"], 2, "amount")
    steady = pick(drift[drift.drift_type == "CONSECUTIVE"], 1, "amount")
    assert shifted["ks_test"]["pvalue"] < 1e-6 < steady["ks_test"]["pvalue"]


def test_categorical_drift_agrees_with_scipy(
    data: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, drift = tables
    for day in (1, 2):
        current, previous = day_rows(data, day).channel, day_rows(data, day - 1).channel
        categories = sorted(set(current) | set(previous))
        a = current.value_counts().reindex(categories, fill_value=0).to_numpy()
        b = previous.value_counts().reindex(categories, fill_value=0).to_numpy()
        p, q = a / a.sum(), b / b.sum()
        row = pick(drift[drift.drift_type == "CONSECUTIVE"], day, "channel")
        chi2, pvalue, _, _ = stats.chi2_contingency(np.vstack([a, b]), correction=False)
        assert row["chi_squared_test"]["statistic"] == pytest.approx(chi2, rel=1e-9)
        assert row["chi_squared_test"]["pvalue"] == pytest.approx(pvalue, rel=1e-9, abs=1e-300)
        assert row["js_distance"] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
        assert row["tv_distance"] == pytest.approx(0.5 * np.abs(p - q).sum(), rel=1e-12)
        assert row["l_infinity_distance"] == pytest.approx(np.abs(p - q).max(), rel=1e-12)
        assert row["ks_test"] is None and pd.isna(row["population_stability_index"])
    assert pick(drift[drift.drift_type == "CONSECUTIVE"], 2, "channel")["js_distance"] > 0.1  # "store" gone
    label = pick(drift[drift.drift_type == "CONSECUTIVE"], 1, "label")
    assert label["chi_squared_test"] is not None and label["ks_test"] is None  # a class label is categorical


def test_slices_split_the_rows_as_their_expressions_say(
    data: pd.DataFrame, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    profile_table, _ = tables
    rows = day_rows(data, 0)
    over = pick(profile_table, 0, TABLE, slice_key="amount > 50", slice_value="true")
    under = pick(profile_table, 0, TABLE, slice_key="amount > 50", slice_value="false")
    assert over["count"] == (rows.amount > 50).sum()
    assert under["count"] == len(rows) - over["count"]  # nulls compare false
    for value, count in rows.channel.value_counts().items():
        assert pick(profile_table, 0, TABLE, slice_key="channel", slice_value=value)["count"] == count
    baseline_rows = profile_table[profile_table.log_type == "BASELINE"]
    assert baseline_rows.window.isna().all() and len(baseline_rows)


def test_timestamps_as_epoch_seconds_or_text_fall_in_the_same_windows(data: pd.DataFrame) -> None:
    expected = to_pandas(profile(data, CONFIG)[0])
    for stamps in (
        (data.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1),
        data.ts.dt.strftime("%Y-%m-%d %H:%M:%S"),
    ):
        got = to_pandas(profile(data.assign(ts=stamps), CONFIG)[0])
        assert got["window"].tolist() == expected["window"].tolist()
        assert got["count"].tolist() == expected["count"].tolist()


def test_a_missing_window_gets_no_consecutive_drift() -> None:
    frame = scored(days=(0, 2), n=300)
    _, drift = profile(frame, CONFIG)
    rows = drift.to_pandas()
    assert set(rows.drift_type) == set()  # day 2 has no day 1 before it, and there is no baseline


def test_configuration_errors_name_the_column() -> None:
    columns = list(scored(n=10).columns)
    with pytest.raises(ProfilingError, match="label_col 'churned' is not a column of t"):
        check_columns(
            ProfileConfig(
                "inference_log", "ts", ("1 day",), "classification", "prediction", "churned", "model_version"
            ),
            columns,
            "t",
        )
    with pytest.raises(ProfilingError, match="'region', which is not a column"):
        check_columns(ProfileConfig("snapshot", slicing_exprs=("region = 'eu'",)), columns, "t")
    with pytest.raises(ProfilingError, match="granularities"):
        check_columns(ProfileConfig("time_series", "ts", ("2 days",)), columns, "t")
    with pytest.raises(ProfilingError, match="no rows to profile"):
        profile(scored(n=10).iloc[:0], CONFIG)


def test_the_metric_tables_are_plain_delta_tables_read_with_spark(
    state_dir: Path, data: pd.DataFrame
) -> None:
    names = ("main.mon.t_profile_metrics", "main.mon.t_drift_metrics")
    write_metric_tables(DeltaTables(state_dir), names, profile(data, CONFIG))
    spark = LocalSparkSession(state_dir)
    assert {"window", "granularity", "model_version", "log_type", "ks_test"} <= set(
        spark.table(names[0]).columns + spark.table(names[1]).columns
    )
    assert not DeltaTables(state_dir).exists(names[0])  # no primary key: not a feature table
    quality = spark.table(names[0]).toPandas().dropna(subset=["precision"]).iloc[0]
    assert set(quality["precision"]["one_vs_all"]) == {"maybe", "no", "yes"}  # a map reads as a dict
    write_metric_tables(
        DeltaTables(state_dir), names, profile(day_rows(data, 0), CONFIG)
    )  # a refresh replaces
    assert spark.table(names[1]).count() == 0


@pytest.mark.parametrize("ignore_timezone", [None, "1"])
def test_window_timestamps_read_back_naive_utc_whatever_pyspark_pandas_set(
    monkeypatch: pytest.MonkeyPatch, ignore_timezone: str | None
) -> None:
    """``import pyspark.pandas`` sets PYARROW_IGNORE_TIMEZONE=1, which changes how pyarrow converts nested
    timestamps; the twin's ``toPandas`` gives the same naive UTC values either way."""
    if ignore_timezone is None:
        monkeypatch.delenv("PYARROW_IGNORE_TIMEZONE", raising=False)
    else:
        monkeypatch.setenv("PYARROW_IGNORE_TIMEZONE", ignore_timezone)
    profile_table, _ = profile(scored(n=200), CONFIG)
    starts = set(to_pandas(profile_table).window.dropna().map(lambda w: w["start"]))
    assert starts == {NAIVE_DAY + pd.Timedelta(days=day) for day in (0, 1, 2)}
