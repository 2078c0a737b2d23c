"""Conversions between what users pass (pandas, Spark, Arrow) and the Arrow tables the twin stores."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa


def to_arrow(df: Any, argument: str = "df") -> pa.Table:
    """An Arrow table from a pandas, Spark or Arrow frame; ``TypeError`` naming ``argument`` otherwise."""
    if isinstance(df, pa.Table):
        return df
    if hasattr(df, "toPandas") and not isinstance(df, pd.DataFrame):  # a Spark DataFrame
        df = df.toPandas()
    if isinstance(df, pd.DataFrame):
        if not df.columns.is_unique:
            raise ValueError(f"{argument} has duplicate column names")
        table = pa.Table.from_pandas(df, preserve_index=False)
        return table.cast(pa.schema([f.with_type(_plain(f.type)) for f in table.schema]))
    raise TypeError(f"{argument} must be a pandas or Spark DataFrame, got {type(df).__name__}")


def _plain(kind: pa.DataType) -> pa.DataType:
    """Store strings as ``string`` and timestamps as naive microseconds, as Delta and Spark do."""
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", tz=kind.tz)
    return kind


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A pandas frame as Spark's ``toPandas`` gives it: a map column's values are dicts, and a timestamp
    inside a struct is a naive datetime (UTC), whether or not ``pyspark.pandas`` was imported (it sets
    ``PYARROW_IGNORE_TIMEZONE``, which makes pyarrow drop the zone of nested timestamps only)."""
    schema = pa.schema(
        [f.with_type(_naive_inside(f.type)) if pa.types.is_struct(f.type) else f for f in table.schema]
    )
    return table.cast(schema).to_pandas(maps_as_pydicts="strict")


def _naive_inside(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(kind):
        return pa.struct([child.with_type(_naive_inside(child.type)) for child in kind])
    if pa.types.is_timestamp(kind):
        return pa.timestamp(kind.unit)  # the same instants, as UTC wall-clock time
    return kind
