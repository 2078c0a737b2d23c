"""The SQLite online store: snapshot and incremental publishing, typed lookups, atomic swaps."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from helpers.local import online_store as online_store_module
from helpers.local.online_store import KeyTypeError, OnlineStore, TableNotPublishedError
from helpers.local.tables import DeltaTables, TableMeta

CUSTOMERS = "main.test.customers"
ONLINE = "main.test.customers_online"


@pytest.fixture
def tables(state_dir: Path) -> DeltaTables:
    return DeltaTables(state_dir)


@pytest.fixture
def store(state_dir: Path) -> OnlineStore:
    return OnlineStore(state_dir)


def customers(ids: list[int], spend: float = 1.0) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "age": pa.array([20 + i % 50 for i in ids], pa.int64()),
            "spend": pa.array([spend * i for i in ids], pa.float64()),
        }
    )


def test_first_publish_is_a_snapshot_of_every_key(tables: DeltaTables, store: OnlineStore) -> None:
    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers([1, 2, 3]), None)

    result = store.publish(CUSTOMERS, ONLINE, tables)

    assert (result.mode, result.rows_written, result.row_count, result.delta_version) == ("snapshot", 3, 3, 0)
    assert store.read_latest(CUSTOMERS, [(2,), (1,)], ["age", "spend"]) == [
        {"age": 22, "spend": 2.0},
        {"age": 21, "spend": 1.0},
    ]
    [info] = store.list_published()
    assert (info.source_table_name, info.online_table_name, info.primary_keys) == (
        CUSTOMERS,
        ONLINE,
        ["customer_id"],
    )
    assert info.feature_columns == ["age", "spend"]


def test_timeseries_table_keeps_the_newest_row_per_key(tables: DeltaTables, store: OnlineStore) -> None:
    name = "main.test.balances"
    rows = pa.table(
        {
            "customer_id": [1, 1, 1, 2],
            "ts": pa.array([datetime(2024, 1, d) for d in (1, 3, 2, 1)], pa.timestamp("us")),
            "balance": [10.0, 30.0, 20.0, 5.0],
        }
    )
    tables.create(TableMeta(name, ["customer_id"], "ts"), rows, None)
    store.publish(name, "main.test.balances_online", tables)
    assert store.read_latest(name, [(1,), (2,)], ["balance", "ts"]) == [
        {"balance": 30.0, "ts": datetime(2024, 1, 3)},
        {"balance": 5.0, "ts": datetime(2024, 1, 1)},
    ]

    late = pa.table(
        {
            "customer_id": [1, 2],
            "ts": pa.array([datetime(2023, 12, 31), datetime(2024, 2, 1)], pa.timestamp("us")),
            "balance": [-1.0, 50.0],
        }
    )
    tables.merge(name, late)
    result = store.publish(name, "main.test.balances_online", tables)

    assert result.mode == "incremental"
    # An older observation that arrives late never replaces the newest one.
    assert store.read_latest(name, [(1,), (2,)], ["balance"]) == [{"balance": 30.0}, {"balance": 50.0}]


def test_republish_after_a_merge_writes_only_the_changed_rows(
    tables: DeltaTables, store: OnlineStore, state_dir: Path
) -> None:
    cdf = {"delta.enableChangeDataFeed": "true"}  # what TRIGGERED publishes need (publish_table checks it)
    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers(list(range(1, 1001))), None, cdf)
    store.publish(CUSTOMERS, ONLINE, tables)
    # Mark an untouched row in the online copy: an incremental publish must leave it alone.
    with sqlite3.connect(state_dir / "online.db") as db:
        db.execute(f'UPDATE "{ONLINE}" SET spend = -7 WHERE customer_id = 500')

    tables.merge(CUSTOMERS, customers([3, 4, 1001], spend=100.0))
    tables.merge(CUSTOMERS, customers([4], spend=1000.0))  # the same key changed twice: the last one wins
    result = store.publish(CUSTOMERS, ONLINE, tables)

    assert (result.mode, result.rows_written, result.row_count, result.delta_version) == (
        "incremental",
        3,
        1001,
        2,
    )
    assert store.read_latest(CUSTOMERS, [(3,), (4,), (1001,), (500,), (5,)], ["spend"]) == [
        {"spend": 300.0},
        {"spend": 4000.0},
        {"spend": 100100.0},
        {"spend": -7.0},
        {"spend": 5.0},
    ]
    again = store.publish(CUSTOMERS, ONLINE, tables)
    assert (again.mode, again.rows_written) == ("unchanged", 0)


def test_an_overwrite_is_republished_as_a_snapshot(tables: DeltaTables, store: OnlineStore) -> None:
    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers([1, 2, 3]), None)
    store.publish(CUSTOMERS, ONLINE, tables)
    write_deltalake(tables.delta(CUSTOMERS), customers([2, 9]), mode="overwrite")

    result = store.publish(CUSTOMERS, ONLINE, tables)

    assert (result.mode, result.row_count) == ("snapshot", 2)
    assert store.read_latest(CUSTOMERS, [(1,), (9,)], ["age"]) == [None, {"age": 29}]


def test_keys_are_coerced_to_the_stored_type_and_keys_of_another_type_are_refused(
    tables: DeltaTables, store: OnlineStore
) -> None:
    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers([1, 2, 3]), None)
    store.publish(CUSTOMERS, ONLINE, tables)

    found = store.read_latest(CUSTOMERS, [("3",), (" 2 ",), (3.0,), (None,), (999,)], ["age"])

    assert found == [{"age": 23}, {"age": 22}, {"age": 23}, None, None]
    for bad in ("abc", 2.5, "1; DROP TABLE x"):
        with pytest.raises(KeyTypeError, match="customer_id .* must be an integer"):
            store.read_latest(CUSTOMERS, [(bad,)], ["age"])


def test_composite_keys(tables: DeltaTables, store: OnlineStore) -> None:
    name = "main.test.stock"
    stock = pa.table({"store_id": [1, 1, 2], "sku": ["a", "b", "a"], "qty": [5, 6, 7]})
    tables.create(TableMeta(name, ["store_id", "sku"]), stock, None)
    store.publish(name, "main.test.stock_online", tables)

    found = store.read_latest(name, [("2", "a"), (1, "b"), (2, "b")], ["qty"])

    assert found == [{"qty": 7}, {"qty": 6}, None]
    with pytest.raises(ValueError, match="one value per primary key"):
        store.read_latest(name, [(1,)], ["qty"])


def test_values_come_back_with_their_types(tables: DeltaTables, store: OnlineStore) -> None:
    name = "main.test.typed"
    typed = pa.table(
        {
            "id": ["k1"],
            "flag": [True],
            "day": pa.array([date(2024, 5, 6)], pa.date32()),
            "at": pa.array([datetime(2024, 5, 6, 7, 8, 9, 123456)], pa.timestamp("us")),
            "tags": pa.array([["x", "y"]], pa.list_(pa.string())),
            "missing": pa.array([None], pa.float64()),
        }
    )
    tables.create(TableMeta(name, ["id"]), typed, None)
    store.publish(name, "main.test.typed_online", tables)

    [row] = store.read_latest(name, [("k1",)], ["flag", "day", "at", "tags", "missing"])

    assert row == {
        "flag": True,
        "day": date(2024, 5, 6),
        "at": datetime(2024, 5, 6, 7, 8, 9, 123456),
        "tags": ["x", "y"],
        "missing": None,
    }


def test_unpublished_tables_and_unknown_features_are_clear_errors(
    tables: DeltaTables, store: OnlineStore
) -> None:
    with pytest.raises(TableNotPublishedError, match=CUSTOMERS) as caught:
        store.read_latest(CUSTOMERS, [(1,)], ["age"])
    assert isinstance(caught.value, LookupError)

    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers([1]), None)
    store.publish(CUSTOMERS, ONLINE, tables)
    with pytest.raises(ValueError, match="height"):
        store.read_latest(CUSTOMERS, [(1,)], ["height"])

    store.drop(ONLINE)
    assert store.list_published() == []
    with pytest.raises(TableNotPublishedError):
        store.read_latest(CUSTOMERS, [(1,)], ["age"])


def test_one_source_one_online_table(tables: DeltaTables, store: OnlineStore) -> None:
    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers([1]), None)
    tables.create(TableMeta("main.test.other", ["customer_id"]), customers([1]), None)
    store.publish(CUSTOMERS, ONLINE, tables)

    with pytest.raises(ValueError, match="already published as"):
        store.publish(CUSTOMERS, "main.test.second_copy", tables)
    with pytest.raises(ValueError, match="already holds"):
        store.publish("main.test.other", ONLINE, tables)


def test_a_reader_sees_the_old_table_or_the_new_one_never_a_mix(
    tables: DeltaTables, store: OnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(online_store_module, "_BATCH_ROWS", 500)  # many insert batches per publish
    ids = list(range(1, 5001))
    tables.create(TableMeta(CUSTOMERS, ["customer_id"]), customers(ids, spend=0.0), None)
    store.publish(CUSTOMERS, ONLINE, tables)
    probe = [(i,) for i in range(1, 5001, 50)]
    seen: list[set[float]] = []
    done = threading.Event()

    def read_continuously() -> None:
        reader = OnlineStore(store.path.parent)
        while not done.is_set():
            rows = reader.read_latest(CUSTOMERS, probe, ["spend"])
            seen.append({row["spend"] / key[0] for row, key in zip(rows, probe, strict=True)})  # type: ignore[index]

    thread = threading.Thread(target=read_continuously)
    thread.start()
    try:
        tables.merge(CUSTOMERS, customers(ids, spend=1.0))
        assert store.publish(CUSTOMERS, ONLINE, tables).mode == "incremental"
        tables.merge(CUSTOMERS, customers(ids, spend=2.0))
        assert store.publish(CUSTOMERS, ONLINE, tables, snapshot=True).mode == "snapshot"
    finally:
        done.set()
        thread.join()

    assert seen, "the reader thread never read"
    mixed = [s for s in seen if len(s) != 1]
    assert not mixed, f"a reader saw rows of different publishes together: {mixed[:3]}"
    assert store.read_latest(CUSTOMERS, [(10,)], ["spend"]) == [{"spend": 20.0}]
