"""The feature spec: which features to look up and compute for a row, stored as plain JSON.

One data model serves three places: training sets (offline joins), models logged with a training set
(online lookups at predict time) and Feature Serving endpoints. It imports nothing heavy, so the serving
path stays light.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class LookupSpec:
    """One ``FeatureLookup``: ``feature_names`` of ``table_name`` joined on ``lookup_key`` (in PK order)."""

    table_name: str
    lookup_key: list[str]
    feature_names: list[str]
    rename_outputs: dict[str, str] = field(default_factory=dict)
    default_values: dict[str, Any] = field(default_factory=dict)
    timestamp_lookup_key: str | None = None
    lookback_window_seconds: float | None = None

    def output_name(self, feature: str) -> str:
        return self.rename_outputs.get(feature, feature)

    @property
    def output_names(self) -> list[str]:
        return [self.output_name(f) for f in self.feature_names]


@dataclass(frozen=True)
class FunctionSpec:
    """One ``FeatureFunction``: ``output_name = udf_name(**{param: row[column]})``."""

    udf_name: str
    input_bindings: dict[str, str]
    output_name: str


@dataclass
class FeatureSpec:
    """Lookups, then functions, applied in order; ``exclude_columns`` dropped from the output."""

    lookups: list[LookupSpec] = field(default_factory=list)
    functions: list[FunctionSpec] = field(default_factory=list)
    exclude_columns: list[str] = field(default_factory=list)
    # For a model logged with a training set: the columns the raw model was trained on, in order.
    model_input_columns: list[str] = field(default_factory=list)

    @property
    def request_columns(self) -> list[str]:
        """Columns a request must carry: keys, function inputs and model inputs the spec does not produce."""
        produced = {n for lk in self.lookups for n in lk.output_names} | {
            f.output_name for f in self.functions
        }
        needed = [k for lk in self.lookups for k in lk.lookup_key]
        needed += [c for fn in self.functions for c in fn.input_bindings.values()]
        needed += self.model_input_columns
        return [c for c in dict.fromkeys(needed) if c not in produced]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(
            lookups=[LookupSpec(**lk) for lk in data.get("lookups", [])],
            functions=[FunctionSpec(**fn) for fn in data.get("functions", [])],
            exclude_columns=list(data.get("exclude_columns", [])),
            model_input_columns=list(data.get("model_input_columns", [])),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        return cls.from_dict(json.loads(path.read_text()))


class FeatureReader(Protocol):
    """Where looked-up features come from: the online store when serving, Delta tables offline."""

    def read_latest(
        self, table_name: str, keys: Sequence[tuple[Any, ...]], feature_names: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        """Latest feature values per primary-key tuple, in order; ``None`` where the key is unknown."""
        ...


FunctionResolver = Callable[[str], Callable[..., Any]]


def resolve_records(
    spec: FeatureSpec,
    records: list[dict[str, Any]],
    reader: FeatureReader,
    functions: FunctionResolver,
) -> list[dict[str, Any]]:
    """Add looked-up and computed features to request rows (new dicts; the input is left alone).

    A value present in the request overrides a looked-up one, as on Databricks. A key that is not found
    gives the lookup's ``default_values`` entry, else ``None``.
    """
    rows = [dict(r) for r in records]
    for lk in spec.lookups:
        missing = [k for k in lk.lookup_key if any(k not in r for r in rows)]
        if missing:
            raise KeyError(f"request is missing lookup key column(s) {missing} for table {lk.table_name}")
        keys = [tuple(r[k] for k in lk.lookup_key) for r in rows]
        found = reader.read_latest(lk.table_name, keys, lk.feature_names)
        for row, values in zip(rows, found):
            for feature in lk.feature_names:
                out = lk.output_name(feature)
                if out in row:
                    continue
                value = None if values is None else values.get(feature)
                row[out] = lk.default_values.get(feature) if value is None else value
    for fn in spec.functions:
        udf = functions(fn.udf_name)
        for row in rows:
            if fn.output_name in row:
                continue
            missing = [c for c in fn.input_bindings.values() if c not in row]
            if missing:
                raise KeyError(f"request is missing column(s) {missing} needed by function {fn.udf_name}")
            row[fn.output_name] = udf(**{p: row[c] for p, c in fn.input_bindings.items()})
    if spec.exclude_columns:
        for row in rows:
            for col in spec.exclude_columns:
                row.pop(col, None)
    return rows


def resolve_columns(
    spec: FeatureSpec,
    columns: dict[str, list[Any]],
    n_rows: int,
    reader: FeatureReader,
    functions: FunctionResolver,
) -> dict[str, list[Any]]:
    """``resolve_records`` for rows that all carry the same columns, column by column (a new dict).

    Each lookup reads the online store once for all ``n_rows`` rows; values and errors are those
    ``resolve_records`` gives the same rows.
    """
    out = dict(columns)
    for lk in spec.lookups:
        missing = [k for k in lk.lookup_key if k not in out]
        if missing:
            raise KeyError(f"request is missing lookup key column(s) {missing} for table {lk.table_name}")
        keys = list(zip(*(out[k] for k in lk.lookup_key), strict=True))
        found = reader.read_latest(lk.table_name, keys, lk.feature_names)
        for feature in lk.feature_names:
            name = lk.output_name(feature)
            if name in out:
                continue
            default = lk.default_values.get(feature)
            values = (None if row is None else row.get(feature) for row in found)
            out[name] = [default if value is None else value for value in values]
    for fn in spec.functions:
        udf = functions(fn.udf_name)
        if fn.output_name in out:
            continue
        missing = [c for c in fn.input_bindings.values() if c not in out]
        if missing:
            raise KeyError(f"request is missing column(s) {missing} needed by function {fn.udf_name}")
        bound = [(p, out[c]) for p, c in fn.input_bindings.items()]
        out[fn.output_name] = [udf(**{p: values[i] for p, values in bound}) for i in range(n_rows)]
    for col in spec.exclude_columns:
        out.pop(col, None)
    return out
