"""Concurrent writers: merges to one Delta table serialize, and an endpoint under load during merges and
publishes never fails a request nor answers a mix of two publishes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import requests
from jobs_server import serve_jobs

from helpers.local.feature_spec import FeatureSpec, LookupSpec
from helpers.local.online_store import OnlineStore
from helpers.local.publishing import feature_spec_path
from helpers.local.tables import DeltaTables, TableMeta

SOURCE = "main.conc.customers"
ONLINE = "main.conc.customers_online"
SPEC = "main.conc.spend"
IDS = list(range(1, 201))


def _rows(ids: list[int], generation: int) -> pa.Table:
    """Every row of one generation carries ``spend = generation * id``: a reader can tell which it saw."""
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "spend": pa.array([float(generation * i) for i in ids], pa.float64()),
        }
    )


def test_concurrent_merges_to_one_table_lose_no_rows(tmp_path: Path) -> None:
    DeltaTables(tmp_path).create(TableMeta(SOURCE, ["customer_id"]), _rows([0], 1), None)

    def merge(writer: int) -> None:  # each writer its own client, as separate notebooks would be
        ids = list(range(writer * 10 + 1, writer * 10 + 11))
        DeltaTables(tmp_path).merge(SOURCE, _rows([0, *ids], writer + 2))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(merge, range(6)))

    table = DeltaTables(tmp_path).read(SOURCE)
    assert sorted(table["customer_id"].to_pylist()) == list(range(61))
    shared = table.filter(pc.equal(table["customer_id"], 0))["spend"].to_pylist()
    assert shared == [0.0]  # updated by every writer; one row, never duplicated


def test_an_endpoint_serving_during_merges_and_publishes_answers_every_request_whole(tmp_path: Path) -> None:
    tables, store = DeltaTables(tmp_path), OnlineStore(tmp_path)
    tables.create(TableMeta(SOURCE, ["customer_id"]), _rows(IDS, 1), None)
    store.publish(SOURCE, ONLINE, tables)
    FeatureSpec(lookups=[LookupSpec(SOURCE, ["customer_id"], ["spend"])]).save(
        feature_spec_path(tmp_path, SPEC)
    )
    probe = {"dataframe_records": [{"customer_id": i} for i in IDS[::20]]}
    generations: list[set[float]] = []
    failures: list[str] = []
    done = threading.Event()

    with serve_jobs(tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        config = {"served_entities": [{"entity_name": SPEC, "workload_size": "Small"}]}
        created = requests.post(
            f"{server.url}/api/2.0/serving-endpoints",
            json={"name": "conc", "config": config},
            headers=headers,
            timeout=30,
        )
        assert created.ok, created.text

        def query_continuously() -> None:
            with requests.Session() as session:
                while not done.is_set():
                    answer = session.post(
                        f"{server.url}/serving-endpoints/conc/invocations",
                        json=probe,
                        headers=headers,
                        timeout=60,
                    )
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text[:300]}")
                        continue
                    rows = answer.json()["outputs"]
                    generations.append({row["spend"] / row["customer_id"] for row in rows})

        endpoint = f"{server.url}/api/2.0/serving-endpoints/conc"
        deadline = time.monotonic() + 120
        while requests.get(endpoint, headers=headers, timeout=30).json()["state"]["ready"] != "READY":
            assert time.monotonic() < deadline, "the endpoint did not deploy"
            time.sleep(0.05)
        readers = [threading.Thread(target=query_continuously) for _ in range(3)]
        for reader in readers:
            reader.start()
        try:
            for generation in (2, 3, 4):
                tables.merge(SOURCE, _rows(IDS, generation))
                store.publish(SOURCE, ONLINE, tables, snapshot=generation == 4)
        finally:
            done.set()
            for reader in readers:
                reader.join()

    assert not failures, failures[:3]
    assert generations, "no request was answered while publishing"
    torn = [g for g in generations if len(g) != 1]
    assert not torn, f"answers mixing rows of two publishes: {torn[:3]}"
    assert set().union(*generations) <= {1.0, 2.0, 3.0, 4.0}
