"""Your own events instead of the demo's: read a source, validate it, split it into feature tables.

A source is one labelled table of events (a CSV or Parquet file, or an existing table) and the settings name
its columns: the entity key (who the event is about), the event key (unique per row), the event timestamp,
the binary label and the request-time columns (known only when the event happens). Every other column is an
entity attribute as observed at the event; they become a time-series feature table keyed by (entity key,
event timestamp), which the model looks up point-in-time, exactly like the demo's ``customer_features``.

Validation (pandera) runs before anything is written, and reports every problem at once, naming the columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from helpers import platform
from helpers.config import PROJECT_ROOT, Settings
from helpers.names import parse_uc_name

READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


class SourceError(ValueError):
    """The source cannot be used as it is; the message names the file or the columns at fault."""


@dataclass(frozen=True)
class EventTables:
    """A validated source split into the two tables the notebooks write."""

    features: pd.DataFrame  # entity key + its timestamp + entity attributes
    events: pd.DataFrame  # event key + entity key + event timestamp + request-time columns + label
    timeseries_column: str  # the features' timestamp: the demo's weekly ``as_of``, or the event timestamp


def demo_event_tables(demo: Any) -> EventTables:
    """The demo's customer snapshots and card transactions (``helpers.data.DemoData``)."""
    return EventTables(features=demo.customer_features, events=demo.transactions, timeseries_column="as_of")


def own_event_tables(cfg: Settings) -> EventTables:
    """``cfg.source`` read, validated against the column mapping and split; nothing is written."""
    return split_events(validate_events(read_source(cfg.source), cfg), cfg)


def read_source(source: str) -> pd.DataFrame:
    """The rows of ``source``: a ``.csv``/``.parquet`` path (relative to the project root) or a table name.

    A table is read with ``spark.table``: a source table is usually a plain Delta table, which
    ``fe.read_table`` refuses (it reads only feature tables, those with a primary key).
    """
    path = Path(source).expanduser()
    path = path if path.is_absolute() else PROJECT_ROOT / path
    reader = READERS.get(path.suffix.lower())
    if reader is not None or path.exists():
        if reader is None:
            raise SourceError(f"source {source!r}: unsupported file type; use one of {sorted(READERS)}")
        if not path.is_file():
            raise SourceError(f"source {source!r}: no such file ({path})")
        try:
            return reader(path)
        except pd.errors.EmptyDataError:
            raise SourceError(f"source {source!r} is empty: no header and no rows") from None
        except (ValueError, OSError) as error:
            raise SourceError(f"source {source!r} could not be read: {error}") from None
    try:
        parse_uc_name(source, "source table")
    except ValueError:
        raise SourceError(
            f"source {source!r} is neither a .csv/.parquet file nor a table name catalog.schema.table"
        ) from None
    return platform.to_pandas(platform.spark_session().table(source))


def events_schema(cfg: Settings) -> Any:
    """The contract a source must meet (a ``pandera`` schema), for the columns ``cfg`` names.

    Entity attributes (the unnamed columns) keep their own types.
    """
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            cfg.entity_key: pa.Column(nullable=False),
            cfg.event_key: pa.Column(nullable=False, unique=True),
            cfg.event_timestamp: pa.Column("datetime64[us]", nullable=False, coerce=True),
            cfg.label: pa.Column("int64", pa.Check.isin([0, 1]), nullable=False, coerce=True),
            **{name: pa.Column(nullable=True) for name in cfg.request_columns},
        },
        strict=False,
    )


def validate_events(df: pd.DataFrame, cfg: Settings) -> pd.DataFrame:
    """``df`` checked against the mapping in ``cfg``; raises :class:`SourceError` listing every problem."""
    import pandera.pandas as pa

    if df.empty:
        raise SourceError(f"source {cfg.source!r} has no rows")
    mapped = [cfg.entity_key, cfg.event_key, cfg.event_timestamp, cfg.label, *cfg.request_columns]
    repeated = sorted({name for name in mapped if mapped.count(name) > 1})
    if repeated:
        raise SourceError(f"column mapping names {repeated} for more than one role")
    try:
        valid = events_schema(cfg).validate(df, lazy=True)
    except pa.errors.SchemaErrors as errors:
        raise SourceError(_describe(errors.failure_cases, cfg)) from None
    return valid.astype({cfg.event_timestamp: "datetime64[us]"})


def _describe(failures: pd.DataFrame, cfg: Settings) -> str:
    """One line per column: what is wrong and a few of the offending values."""
    lines = []
    for (column, check), cases in failures.groupby(["column", "check"], dropna=False, sort=False):
        name = column if isinstance(column, str) else str(cases["failure_case"].iloc[0])
        lines.append(f"  {name}: {_explain(str(check), cases, cfg)}")
    return f"source {cfg.source!r} does not match the column mapping:\n" + "\n".join(sorted(set(lines)))


def _explain(check: str, cases: pd.DataFrame, cfg: Settings) -> str:
    examples = ", ".join(repr(v) for v in cases["failure_case"].drop_duplicates().head(3))
    rows = f"{len(cases)} row(s)"
    if check == "column_in_dataframe":
        return "missing column (named in the column mapping)"
    if check == "not_nullable":
        return f"{rows} with a null value; keys, timestamp and label may not be null"
    if check == "field_uniqueness":
        return f"duplicate values ({examples}); the event key must be unique"
    if check.startswith(("coerce_dtype", "dtype")):
        expected = "a timestamp" if "datetime" in check else "an integer"
        return f"wrong type: expected {expected}, got values like {examples}"
    if check.startswith("isin"):
        return f"{rows} with values other than 0 and 1 ({examples}); the label must be binary"
    return f"{check}: {rows}, e.g. {examples}"


def split_events(df: pd.DataFrame, cfg: Settings) -> EventTables:
    """Split validated events into the entity feature table and the events (label) table."""
    event_columns = [cfg.event_key, cfg.entity_key, cfg.event_timestamp, *cfg.request_columns, cfg.label]
    feature_columns = [name for name in df.columns if name not in event_columns]
    if not feature_columns:
        raise SourceError(
            f"source {cfg.source!r} has no entity attributes to look up: every column is a key, the "
            "timestamp, the label or a request-time column"
        )
    keys = [cfg.entity_key, cfg.event_timestamp]
    features = df[keys + feature_columns].drop_duplicates()
    clashing = features[features.duplicated(keys, keep=False)]
    if not clashing.empty:
        first = clashing.iloc[0]
        raise SourceError(
            f"entity {first[cfg.entity_key]} has different attributes ({feature_columns}) for the same "
            f"{cfg.event_timestamp} {first[cfg.event_timestamp]}; one value per key and timestamp is needed"
        )
    return EventTables(
        features=features.reset_index(drop=True),
        events=df[event_columns].reset_index(drop=True),
        timeseries_column=cfg.event_timestamp,
    )


def absent_key(keys: pd.Series) -> Any:
    """A key of the same kind as ``keys`` that none of them has (to show what an unknown entity gets)."""
    if pd.api.types.is_numeric_dtype(keys):
        return int(keys.max()) + 1_000_000
    return f"unknown-{len(keys)}"
