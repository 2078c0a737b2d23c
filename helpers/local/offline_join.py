"""Offline feature joins with DuckDB: exact-key lookups, latest-per-key, and point-in-time ASOF joins."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from helpers.local.feature_spec import FeatureSpec, FunctionResolver, LookupSpec
from helpers.local.tables import DeltaTables

_ROW = "__row_order"


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _align_key_types(
    left: pa.Table, lookup: LookupSpec, right_schema: pa.Schema, pks: Sequence[str]
) -> pa.Table:
    """Cast the request's key columns to the table's key types (keys often arrive as strings)."""
    for key, pk in zip(lookup.lookup_key, pks):
        if key not in left.column_names:
            raise ValueError(f"df is missing lookup key column {key!r} needed for {lookup.table_name}")
        target = right_schema.field(pk).type
        if left[key].type != target:
            try:
                cast = left[key].cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(
                    f"lookup key {key!r} ({left[key].type}) does not convert to the type of {pk!r} in "
                    f"{lookup.table_name} ({target}): {err}"
                ) from None
            left = left.set_column(left.schema.get_field_index(key), key, cast)
    return left


def _lookup_sql(
    lookup: LookupSpec, pks: list[str], ts_col: str | None, present: set[str]
) -> tuple[str, list]:
    """SQL joining view ``l`` with view ``r`` for one lookup; request columns win over looked-up ones."""
    on = " AND ".join(f"l.{_q(k)} = r.{_q(pk)}" for k, pk in zip(lookup.lookup_key, pks))
    params: list = []
    selected = []
    point_in_time = ts_col is not None and lookup.timestamp_lookup_key is not None
    for feature in lookup.feature_names:
        out = lookup.output_name(feature)
        if out in present:
            continue
        value = f"r.{_q(feature)}"
        if point_in_time and lookup.lookback_window_seconds is not None:
            value = (
                f"CASE WHEN r.{_q(ts_col)} >= l.{_q(lookup.timestamp_lookup_key)} - "
                f"to_microseconds(CAST(? AS BIGINT)) THEN {value} END"
            )
            params.append(int(lookup.lookback_window_seconds * 1_000_000))
        if feature in lookup.default_values:
            value = f"coalesce({value}, ?)"
            params.append(lookup.default_values[feature])
        selected.append(f"{value} AS {_q(out)}")
    columns = ", ".join(["l.*", *selected])
    if point_in_time:
        condition = f"{on} AND l.{_q(lookup.timestamp_lookup_key)} >= r.{_q(ts_col)}"
        return f"SELECT {columns} FROM l ASOF LEFT JOIN r ON {condition}", params
    if ts_col is not None:  # time-series table without a lookup timestamp: the latest row per key
        partition = ", ".join(_q(pk) for pk in pks)
        newest_first = f"PARTITION BY {partition} ORDER BY {_q(ts_col)} DESC"
        latest = f"(SELECT * FROM r QUALIFY row_number() OVER ({newest_first}) = 1)"
        return f"SELECT {columns} FROM l LEFT JOIN {latest} r ON {on}", params
    return f"SELECT {columns} FROM l LEFT JOIN r ON {on}", params


def join_features(
    df: pa.Table, spec: FeatureSpec, tables: DeltaTables, functions: FunctionResolver
) -> pa.Table:
    """``df`` plus every feature of ``spec``, rows in their original order, ``exclude_columns`` dropped."""
    left = df.append_column(_ROW, pa.array(range(df.num_rows), pa.int64()))
    con = duckdb.connect()
    for lookup in spec.lookups:
        meta = tables.meta(lookup.table_name)
        if len(lookup.lookup_key) != len(meta.entity_keys):
            raise ValueError(
                f"lookup_key {lookup.lookup_key} must have one column per primary key {meta.entity_keys} "
                f"of {lookup.table_name}"
            )
        ts_col = meta.timeseries_column
        if lookup.timestamp_lookup_key and lookup.timestamp_lookup_key not in left.column_names:
            raise ValueError(f"df is missing timestamp_lookup_key column {lookup.timestamp_lookup_key!r}")
        wanted = list(dict.fromkeys([*meta.key_columns, *lookup.feature_names]))
        right = tables.read(lookup.table_name).select(wanted)
        left = _align_key_types(left, lookup, right.schema, meta.entity_keys)
        if ts_col and lookup.timestamp_lookup_key:
            tlk = lookup.timestamp_lookup_key
            target = right.schema.field(ts_col).type
            if left[tlk].type != target:
                left = left.set_column(left.schema.get_field_index(tlk), tlk, left[tlk].cast(target))
        sql, params = _lookup_sql(lookup, meta.entity_keys, ts_col, set(left.column_names))
        con.register("l", left)
        con.register("r", right)
        left = con.sql(sql, params=params).to_arrow_table()
        con.unregister("l")
        con.unregister("r")
    left = left.sort_by(_ROW).drop_columns([_ROW])
    for fn in spec.functions:
        if fn.output_name in left.column_names:
            continue
        missing = [c for c in fn.input_bindings.values() if c not in left.column_names]
        if missing:
            raise ValueError(
                f"column(s) {missing} needed by function {fn.udf_name} are neither in df nor looked up"
            )
        udf = functions(fn.udf_name)
        inputs = {p: left[c].to_pylist() for p, c in fn.input_bindings.items()}
        values = [udf(**dict(zip(inputs, args))) for args in zip(*inputs.values())]
        left = left.append_column(fn.output_name, pa.array(values))
    drop = [c for c in spec.exclude_columns if c in left.column_names]
    return left.drop_columns(drop) if drop else left
