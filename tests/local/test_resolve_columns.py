"""``resolve_columns`` (the served lookup model's path) gives what ``resolve_records`` gives the same rows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from helpers.local.feature_spec import (
    FeatureSpec,
    FunctionSpec,
    LookupSpec,
    resolve_columns,
    resolve_records,
)

SPEC = FeatureSpec(
    lookups=[
        LookupSpec("t.customers", ["customer_id"], ["spend", "segment"], default_values={"spend": -1.0}),
        LookupSpec("t.pairs", ["customer_id", "shop"], ["visits"], rename_outputs={"visits": "pair_visits"}),
    ],
    functions=[FunctionSpec("f.total", {"a": "amount", "b": "spend"}, "total")],
    exclude_columns=["segment"],
)
TABLES = {
    "t.customers": {
        (i,): {"spend": None if i % 4 == 0 else i * 2.5, "segment": f"s{i % 3}"} for i in range(8)
    },
    "t.pairs": {(i, s): {"visits": i + len(s)} for i in range(8) for s in ("a", "bb")},
}


class Reader:
    """The online store's contract over dicts; counts reads."""

    def __init__(self) -> None:
        self.reads = 0

    def read_latest(
        self, table_name: str, keys: Sequence[tuple[Any, ...]], feature_names: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        self.reads += 1
        rows = [TABLES[table_name].get(tuple(k)) for k in keys]
        return [None if r is None else {f: r[f] for f in feature_names} for r in rows]


def _functions(name: str) -> Any:
    return lambda a, b: a + b


@pytest.mark.parametrize("seed", range(20))
def test_columns_resolve_as_records_do(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    columns = {
        "customer_id": [rng.randint(0, 10) for _ in range(n)],  # 8 and up are unknown
        "shop": [rng.choice(["a", "bb", "c"]) for _ in range(n)],
        "amount": [rng.uniform(0, 9) for _ in range(n)],
    }
    if rng.random() < 0.5:
        columns["spend"] = [100.0] * n  # a request-time value overrides the looked-up one
    records = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    reader = Reader()
    resolved = resolve_columns(SPEC, columns, n, reader, _functions)
    expected = resolve_records(SPEC, records, Reader(), _functions)

    assert [{c: resolved[c][i] for c in resolved} for i in range(n)] == expected
    assert reader.reads == len(SPEC.lookups)  # one read per lookup table for all rows


def test_a_missing_key_or_function_input_fails_as_for_records() -> None:
    for drop in ("shop", "amount"):
        columns = {"customer_id": [1], "shop": ["a"], "amount": [1.0]}
        del columns[drop]
        with pytest.raises(KeyError) as by_columns:
            resolve_columns(SPEC, columns, 1, Reader(), _functions)
        with pytest.raises(KeyError) as by_records:
            resolve_records(SPEC, [{c: v[0] for c, v in columns.items()}], Reader(), _functions)
        assert by_columns.value.args == by_records.value.args
