"""Data profiling: the metric tables a Databricks data-profiling monitor computes, from a table's rows.

A refresh reads the monitored table (and a baseline table, if any), groups its rows by time window
(per granularity), model id (each id and ``*`` for all) and slice, and writes two plain Delta tables with
Databricks' names and columns: ``{output_schema}.{table}_profile_metrics`` (summary statistics per column,
``:table`` rows with model quality) and ``{output_schema}.{table}_drift_metrics`` (each window against the
previous one, ``CONSECUTIVE``, and against the baseline, ``BASELINE``). Pure pandas/NumPy; the statistics
themselves are in ``helpers.local.profile_statistics``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from helpers.local.profile_statistics import (
    categorical_drift,
    classification_quality,
    ks_test,
    population_stability_index,
    regression_quality,
    wasserstein,
)
from helpers.local.tables import DeltaTables

ALL_MODELS = "*"  # the model id of rows over every model (what Databricks writes)
TABLE = ":table"  # the column name of table-level rows
FREQUENT_ITEMS = 100  # top values kept per categorical column, and per slicing column
QUANTILES = np.linspace(0, 1, 101)  # twin choice: 101 quantiles (0%, 1%, ..., 100%)
GRANULARITIES = {
    "5 minutes": pd.Timedelta(minutes=5),
    "30 minutes": pd.Timedelta(minutes=30),
    "1 hour": pd.Timedelta(hours=1),
    "1 day": pd.Timedelta(days=1),
    "1 week": pd.Timedelta(weeks=1),
    "2 weeks": pd.Timedelta(weeks=2),
    "3 weeks": pd.Timedelta(weeks=3),
    "4 weeks": pd.Timedelta(weeks=4),
    "1 month": pd.DateOffset(months=1),
    "1 year": pd.DateOffset(years=1),
}
_WEEK_ORIGIN = pd.Timestamp("1970-01-05", tz="UTC")  # a Monday: weeks start on Mondays


class ProfilingError(ValueError):
    """A configuration or a table the monitor cannot profile; the message names what to change."""


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile: the analysis type and its columns (the API's ``DataProfilingConfig``)."""

    kind: str  # "inference_log", "time_series" or "snapshot"
    timestamp_col: str | None = None
    granularities: tuple[str, ...] = ()
    problem_type: str | None = None  # "classification" or "regression" (inference_log)
    prediction_col: str | None = None
    label_col: str | None = None
    model_id_col: str | None = None
    slicing_exprs: tuple[str, ...] = ()

    def named_columns(self) -> dict[str, str]:
        """The configuration's column arguments that are set: argument -> column."""
        named = {
            "timestamp_col": self.timestamp_col,
            "prediction_col": self.prediction_col,
            "label_col": self.label_col,
            "model_id_col": self.model_id_col,
        }
        return {argument: column for argument, column in named.items() if column}


@dataclass(frozen=True)
class Slice:
    """One ``slicing_exprs`` entry: a column (a slice per value) or ``column <op> literal`` (true/false)."""

    expr: str
    column: str
    predicate: Callable[[pd.Series], pd.Series] | None = None

    def groups(self, frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
        if self.predicate is not None:
            mask = self.predicate(frame[self.column]).fillna(False).astype(bool)
            for value in (True, False):
                part = frame[mask == value]
                if len(part):
                    yield str(value).lower(), part
            return
        top = frame[self.column].dropna().value_counts().index[:FREQUENT_ITEMS]
        for value in top:
            yield _text(value), frame[frame[self.column] == value]


_OPERATORS = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_PREDICATE = re.compile(r"^\s*`?(?P<column>\w+)`?\s*(?P<op>==|!=|<>|<=|>=|=|<|>)\s*(?P<value>.+?)\s*$")


def parse_slice(expr: str) -> Slice:
    """``"col"`` or ``"col > 10"`` / ``"col = 'a'"``; anything else is refused, naming the expression."""
    if re.fullmatch(r"\s*`?\w+`?\s*", expr):
        return Slice(expr, expr.strip().strip("`"))
    match = _PREDICATE.match(expr)
    if match is None:
        raise ProfilingError(
            f"slicing expression {expr!r} is not supported locally: use a column name or "
            "'<column> <op> <literal>' with one of = != < <= > >="
        )
    raw = match["value"]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        literal: Any = raw[1:-1]
    elif raw.lower() in ("true", "false"):
        literal = raw.lower() == "true"
    else:
        try:
            literal = float(raw)
        except ValueError:
            raise ProfilingError(
                f"slicing expression {expr!r}: {raw!r} is not a number or a quoted string"
            ) from None
    compare = _OPERATORS[match["op"]]
    return Slice(expr, match["column"], lambda values: compare(values, literal))


def check_columns(
    config: ProfileConfig, columns: list[str], table: str, labels: dict[str, str] | None = None
) -> None:
    """Every column the configuration names must be a column of ``table``; raise naming the first that is not.

    ``labels`` names the arguments as the caller knows them (the API's field names).
    """
    for argument, column in config.named_columns().items():
        if column not in columns:
            where = (labels or {}).get(argument, argument)
            raise ProfilingError(
                f"{where} {column!r} is not a column of {table}; its columns are {', '.join(columns)}"
            )
    for expr in config.slicing_exprs:
        column = parse_slice(expr).column
        if column not in columns:
            raise ProfilingError(
                f"slicing expression {expr!r} names {column!r}, which is not a column of {table}"
            )
    if config.kind != "snapshot":
        if not config.granularities:
            raise ProfilingError("granularities must name at least one granularity, for example '1 day'")
        unknown = [g for g in config.granularities if g not in GRANULARITIES]
        if unknown:
            raise ProfilingError(f"granularities {unknown} are not supported; use {list(GRANULARITIES)}")


# Metric table schemas --------------------------------------------------------------------------------------
_TS = pa.timestamp("us", tz="UTC")
WINDOW = pa.struct([("start", _TS), ("end", _TS)])
TEST = pa.struct([("statistic", pa.float64()), ("pvalue", pa.float64())])
AVERAGED = pa.struct(
    [("one_vs_all", pa.map_(pa.string(), pa.float64())), ("macro", pa.float64()), ("weighted", pa.float64())]
)
_GROUPING = [
    ("window", WINDOW),
    ("granularity", pa.string()),
    ("monitor_version", pa.int64()),
    ("slice_key", pa.string()),
    ("slice_value", pa.string()),
    ("column_name", pa.string()),
    ("data_type", pa.string()),
]
PROFILE_FIELDS = [
    *_GROUPING[:2],
    ("log_type", pa.string()),
    ("logging_table_commit_version", pa.int32()),
    *_GROUPING[2:],
    ("count", pa.int64()),
    ("num_nulls", pa.int64()),
    ("avg", pa.float64()),
    ("quantiles", pa.list_(pa.float64())),
    ("distinct_count", pa.int64()),
    ("min", pa.float64()),
    ("max", pa.float64()),
    ("stddev", pa.float64()),
    ("num_zeros", pa.int64()),
    ("num_nan", pa.int64()),
    ("min_length", pa.float64()),
    ("max_length", pa.float64()),
    ("avg_length", pa.float64()),
    ("non_null_columns", pa.list_(pa.string())),
    ("frequent_items", pa.list_(pa.struct([("item", pa.string()), ("count", pa.int64())]))),
    ("median", pa.float64()),
    ("percent_nan", pa.float64()),
    ("percent_null", pa.float64()),
    ("percent_zeros", pa.float64()),
    ("percent_distinct", pa.float64()),
    ("accuracy_score", pa.float64()),
    (
        "confusion_matrix",
        pa.list_(pa.struct([("prediction", pa.string()), ("label", pa.string()), ("count", pa.int64())])),
    ),
    ("precision", AVERAGED),
    ("recall", AVERAGED),
    ("f1_score", AVERAGED),
    ("mean_squared_error", pa.float64()),
    ("root_mean_squared_error", pa.float64()),
    ("mean_average_error", pa.float64()),
    ("mean_absolute_percentage_error", pa.float64()),
    ("r2_score", pa.float64()),
]
DRIFT_FIELDS = [
    *_GROUPING,
    ("window_cmp", WINDOW),
    ("drift_type", pa.string()),
    ("count_delta", pa.float64()),
    ("avg_delta", pa.float64()),
    ("percent_null_delta", pa.float64()),
    ("percent_zeros_delta", pa.float64()),
    ("percent_distinct_delta", pa.float64()),
    ("non_null_columns_delta", pa.struct([("added", pa.int32()), ("missing", pa.int32())])),
    ("js_distance", pa.float64()),
    ("ks_test", TEST),
    ("wasserstein_distance", pa.float64()),
    ("population_stability_index", pa.float64()),
    ("chi_squared_test", TEST),
    ("tv_distance", pa.float64()),
    ("l_infinity_distance", pa.float64()),
]


def metric_schemas(config: ProfileConfig) -> tuple[pa.Schema, pa.Schema]:
    """The two tables' schemas: the model id column (its own name) after ``granularity``."""
    model = [(config.model_id_col, pa.string())] if config.model_id_col else []
    return (
        pa.schema(PROFILE_FIELDS[:2] + model + PROFILE_FIELDS[2:]),
        pa.schema(DRIFT_FIELDS[:2] + model + DRIFT_FIELDS[2:]),
    )


# The refresh -----------------------------------------------------------------------------------------------
@dataclass
class _Part:
    """One group of rows: its window, granularity, model id and slice."""

    rows: pd.DataFrame
    window: dict[str, pd.Timestamp] | None
    granularity: str | None
    model_id: str | None
    slice_key: str | None
    slice_value: str | None
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)

    def key(self) -> tuple[Any, ...]:
        return (self.granularity, self.model_id, self.slice_key, self.slice_value)


def profile(
    data: pd.DataFrame,
    config: ProfileConfig,
    *,
    baseline: pd.DataFrame | None = None,
    monitor_version: int = 1,
    table_version: int = 0,
    now: pd.Timestamp | None = None,
) -> tuple[pa.Table, pa.Table]:
    """The profile and drift metric tables for ``data`` (and ``baseline``), as Arrow tables."""
    if data.empty:
        raise ProfilingError("the monitored table has no rows to profile; write rows to it, then refresh")
    columns = _profiled_columns(data, config)
    types = {name: _spark_type(data[name]) for name in columns}
    data = _prepared(data, columns)
    parts = list(_parts(data, config, now or pd.Timestamp.now(tz="UTC")))
    base_parts = {}
    if baseline is not None and not baseline.empty:
        base_parts = _baseline_parts(
            _prepared(baseline, {c: k for c, k in columns.items() if c in baseline}), config
        )
    profile_rows, drift_rows = [], []
    common = {"monitor_version": monitor_version, "logging_table_commit_version": table_version}
    for part in parts:
        part.profile = _profile_part(part.rows, columns, config, types)
        profile_rows += _rows(part, config, common | {"log_type": "INPUT"})
    for base in base_parts.values():
        shared = {c: k for c, k in columns.items() if c in base.rows}
        base.profile = _profile_part(base.rows, shared, config, types)
        profile_rows += _rows(base, config, common | {"log_type": "BASELINE"})
    by_window = {(p.key(), p.window["start"]): p for p in parts if p.window}
    for part in parts:
        if part.window is None or part.granularity is None:
            comparisons = []
        else:
            previous = part.window["start"] - GRANULARITIES[part.granularity]  # type: ignore[index]
            comparisons = [("CONSECUTIVE", by_window.get((part.key(), previous)))]
        comparisons.append(("BASELINE", base_parts.get((part.slice_key, part.slice_value))))
        for drift_type, other in comparisons:
            if other is not None:
                drift_rows += _drift_rows(part, other, drift_type, columns, config, monitor_version)
    profile_schema, drift_schema = metric_schemas(config)
    return (
        pa.Table.from_pylist(profile_rows, schema=profile_schema),
        pa.Table.from_pylist(drift_rows, schema=drift_schema),
    )


def write_metric_tables(
    tables: DeltaTables, names: tuple[str, str], metrics: tuple[pa.Table, pa.Table]
) -> None:
    """Replace both metric tables (plain Delta tables, no primary key) with this refresh's rows."""
    for name, data in zip(names, metrics, strict=True):
        path = tables.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tables.lock(name):
            write_deltalake(str(path), data, mode="overwrite", schema_mode="overwrite")


def _profiled_columns(data: pd.DataFrame, config: ProfileConfig) -> dict[str, str]:
    """Column -> kind ("numeric" or "categorical") for every column profiled (not the grouping ones)."""
    grouping = {config.timestamp_col, config.model_id_col}
    categorical = (
        {config.prediction_col, config.label_col} if config.problem_type == "classification" else set()
    )
    kinds = {}
    for name in data.columns:
        if name in grouping:
            continue
        series = data[name]
        if name in categorical or pd.api.types.is_bool_dtype(series):
            kinds[name] = "categorical"
        elif pd.api.types.is_numeric_dtype(series):
            kinds[name] = "numeric"
        elif series.dropna().map(lambda v: isinstance(v, str)).all():
            kinds[name] = "categorical"
    return kinds


def _parts(data: pd.DataFrame, config: ProfileConfig, now: pd.Timestamp) -> Iterator[_Part]:
    slices = [parse_slice(expr) for expr in config.slicing_exprs]
    if config.kind == "snapshot":
        windows: list[tuple[str | None, dict[str, pd.Timestamp] | None, pd.DataFrame]] = [
            (None, {"start": now, "end": now}, data)
        ]
    else:
        stamps = timestamps(data[config.timestamp_col])
        windows = []
        for granularity in config.granularities:
            starts = window_starts(stamps, granularity)
            for start, rows in data.groupby(starts, sort=True):
                start = (
                    pd.Timestamp(start).tz_convert("UTC")
                    if pd.Timestamp(start).tz
                    else pd.Timestamp(start, tz="UTC")
                )
                windows.append(
                    (granularity, {"start": start, "end": start + GRANULARITIES[granularity]}, rows)
                )
    for granularity, window, rows in windows:
        models: list[tuple[str | None, pd.DataFrame]] = [(None, rows)]
        if config.model_id_col:
            models = [(ALL_MODELS, rows)] + [
                (_text(m), r) for m, r in rows.groupby(config.model_id_col, sort=True, dropna=True)
            ]
        for model_id, model_rows in models:
            yield _Part(model_rows, window, granularity, model_id, None, None)
            for piece in slices:
                for value, sliced in piece.groups(model_rows):
                    yield _Part(sliced, window, granularity, model_id, piece.expr, value)


def _baseline_parts(
    baseline: pd.DataFrame, config: ProfileConfig
) -> dict[tuple[str | None, str | None], _Part]:
    model_id = ALL_MODELS if config.model_id_col else None
    parts = {(None, None): _Part(baseline, None, None, model_id, None, None)}
    for expr in config.slicing_exprs:
        piece = parse_slice(expr)
        if piece.column in baseline.columns:
            for value, sliced in piece.groups(baseline):
                parts[(expr, value)] = _Part(sliced, None, None, model_id, expr, value)
    return parts


def timestamps(column: pd.Series) -> pd.Series:
    """UTC timestamps from a timestamp column, or what Spark's ``to_timestamp`` reads as one.

    Numbers are seconds since the epoch (as ``to_timestamp`` reads a long), strings are parsed.
    """
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return pd.to_datetime(column, unit="s", utc=True)
    return pd.to_datetime(column, utc=True)


def window_starts(stamps: pd.Series, granularity: str) -> pd.Series:
    """Each timestamp's window start: epoch-aligned minutes, hours and days, Monday weeks, calendar months."""
    if granularity == "1 month":
        return stamps.dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.tz_localize("UTC")
    if granularity == "1 year":
        return stamps.dt.tz_localize(None).dt.to_period("Y").dt.start_time.dt.tz_localize("UTC")
    width = GRANULARITIES[granularity]
    if "week" in granularity:
        return _WEEK_ORIGIN + ((stamps - _WEEK_ORIGIN) // width) * width
    return stamps.dt.floor(width)


def texts(series: pd.Series) -> pd.Series:
    """Categories as the metric tables write them (Spark's string form); nulls stay null."""
    return series.map(_text, na_action="ignore").astype(object)


def _prepared(data: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """``data`` with each categorical column in its text form, converted once for every group."""
    prepared = data.copy()
    for name, kind in columns.items():
        if kind == "categorical":
            prepared[name] = texts(data[name])
    return prepared


def _profile_part(
    rows: pd.DataFrame, columns: dict[str, str], config: ProfileConfig, types: dict[str, str]
) -> dict[str, dict[str, Any]]:
    profiles: dict[str, dict[str, Any]] = {
        name: _column_profile(rows[name], kind, types[name]) for name, kind in columns.items()
    }
    table: dict[str, Any] = {
        "count": len(rows),
        "non_null_columns": [c for c in rows.columns if rows[c].notna().any()],
    }
    if config.kind == "inference_log" and config.label_col and config.prediction_col:
        labelled = rows[[config.prediction_col, config.label_col]].dropna()
        if len(labelled):
            prediction, label = (
                labelled[config.prediction_col].to_numpy(),
                labelled[config.label_col].to_numpy(),
            )
            if config.problem_type == "classification":
                table |= classification_quality(prediction.astype(str), label.astype(str))
            else:
                table |= regression_quality(prediction.astype(float), label.astype(float))
    profiles[TABLE] = table
    return profiles


def _column_profile(series: pd.Series, kind: str, data_type: str) -> dict[str, Any]:
    total = len(series)
    present = series.dropna().to_numpy()
    answer: dict[str, Any] = {
        "data_type": data_type,
        "count": int(len(present)),
        "num_nulls": int(total - len(present)),
        "percent_null": 100.0 * (total - len(present)) / total if total else None,
    }
    if kind == "numeric":
        values = present.astype(float)
        distinct = len(np.unique(values))
        answer |= {
            "num_nan": 0,  # pandas reads Spark's NaN and NULL alike: both count as nulls here
            "percent_nan": 0.0,
            "num_zeros": int((values == 0).sum()),
            "percent_zeros": 100.0 * (values == 0).sum() / total if total else None,
        }
        if len(values):
            answer |= {
                "avg": float(values.mean()),
                "stddev": float(values.std(ddof=1)) if len(values) > 1 else None,
                "min": float(values.min()),
                "max": float(values.max()),
                "median": float(np.median(values)),
                "quantiles": [float(q) for q in np.quantile(values, QUANTILES)],
            }
        answer["_values"] = values
    else:
        items, counts = np.unique(present.astype(str), return_counts=True)
        distinct = len(items)
        order = np.argsort(-counts, kind="stable")[:FREQUENT_ITEMS]
        answer["frequent_items"] = [{"item": str(items[i]), "count": int(counts[i])} for i in order]
        if len(present) and data_type == "string":
            lengths = np.char.str_len(present.astype(str))
            answer |= {
                "min_length": float(lengths.min()),
                "max_length": float(lengths.max()),
                "avg_length": float(lengths.mean()),
            }
        answer["_counts"] = dict(zip(items.tolist(), counts.tolist(), strict=True))
    answer["distinct_count"] = distinct
    answer["percent_distinct"] = 100.0 * distinct / len(present) if len(present) else None
    return answer


def _rows(part: _Part, config: ProfileConfig, common: dict[str, Any]) -> list[dict[str, Any]]:
    head = {
        "window": part.window,
        "granularity": part.granularity,
        "slice_key": part.slice_key,
        "slice_value": part.slice_value,
        **common,
    }
    if config.model_id_col:
        head[config.model_id_col] = part.model_id
    rows = []
    for column, values in part.profile.items():
        rows.append(
            head | {"column_name": column} | {k: v for k, v in values.items() if not k.startswith("_")}
        )
    return rows


def _drift_rows(
    part: _Part, other: _Part, drift_type: str, columns: dict[str, str], config: ProfileConfig, version: int
) -> list[dict[str, Any]]:
    head = {
        "window": part.window,
        "granularity": part.granularity,
        "monitor_version": version,
        "slice_key": part.slice_key,
        "slice_value": part.slice_value,
        "window_cmp": other.window,
        "drift_type": drift_type,
    }
    if config.model_id_col:
        head[config.model_id_col] = part.model_id
    now_cols, then_cols = (
        set(part.profile[TABLE]["non_null_columns"]),
        set(other.profile[TABLE]["non_null_columns"]),
    )
    rows = [
        head
        | {
            "column_name": TABLE,
            "count_delta": float(part.profile[TABLE]["count"] - other.profile[TABLE]["count"]),
            "non_null_columns_delta": {
                "added": len(now_cols - then_cols),
                "missing": len(then_cols - now_cols),
            },
        }
    ]
    for column, kind in columns.items():
        current, reference = part.profile[column], other.profile.get(column)
        if reference is None:
            continue
        row = head | {
            "column_name": column,
            "data_type": current["data_type"],
            "count_delta": float(current["count"] - reference["count"]),
        }
        for metric in ("avg", "percent_null", "percent_zeros", "percent_distinct"):
            if current.get(metric) is not None and reference.get(metric) is not None:
                row[f"{metric}_delta"] = float(current[metric] - reference[metric])
        if kind == "numeric" and current["count"] and reference["count"]:
            a, b = current["_values"], reference["_values"]
            row |= {
                "ks_test": ks_test(a, b),
                "wasserstein_distance": wasserstein(a, b),
                "population_stability_index": population_stability_index(a, b),
            }
        elif kind == "categorical" and current["count"] and reference["count"]:
            row |= categorical_drift(current["_counts"], reference["_counts"])
        rows.append(row)
    return rows


def _spark_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return {1: "tinyint", 2: "smallint", 4: "int"}.get(series.dtype.itemsize, "bigint")
    if pd.api.types.is_float_dtype(series):
        return "float" if series.dtype.itemsize == 4 else "double"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp"
    return "string"


def _text(value: Any) -> str:
    """A category as the metric tables write it: Spark's string form (``true``, ``1``, ``1.5``, ``a``)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
