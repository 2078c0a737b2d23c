"""Freshness of ``publish_mode="CONTINUOUS"``: seconds from a merge's commit to its row being read online."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.local import continuous_sync
from helpers.local.feature_client import LocalFeatureEngineeringClient
from helpers.local.online_store import OnlineStore
from helpers.local.tables import DeltaTables

TABLE = "bench.serving.freshness"
TIMEOUT_SECONDS = 120.0


def continuous_freshness(state_dir: Path, n_rows: int, n_writes: int = 10, seed: int = 0) -> list[float]:
    """Publish an ``n_rows`` table CONTINUOUS, merge ``n_writes`` single rows one after another and time each
    from the merge's return (its commit) to the new value being read from the online store; then clean up."""
    fe = LocalFeatureEngineeringClient(state_dir)
    store_reader = OnlineStore(state_dir)
    tables = DeltaTables(state_dir)
    if tables.exists(TABLE):  # left over by an interrupted run
        fe.drop_table(name=TABLE)
    fe.create_table(
        name=TABLE,
        primary_keys=["customer_id"],
        df=pd.DataFrame({"customer_id": np.arange(n_rows), "value": np.zeros(n_rows)}),
    )
    tables.set_properties(TABLE, {"delta.enableChangeDataFeed": "true"})  # CONTINUOUS needs the feed
    store = fe.get_online_store(name="bench-store") or fe.create_online_store(
        name="bench-store", capacity="CU_1"
    )
    online = f"{TABLE}_online"
    fe.publish_table(
        online_store=store, source_table_name=TABLE, online_table_name=online, publish_mode="CONTINUOUS"
    )
    seconds = []
    try:
        rng = np.random.default_rng(seed)
        for i, key in enumerate(rng.choice(n_rows, n_writes, replace=False)):
            time.sleep(rng.uniform(0, continuous_sync.POLL_SECONDS))  # writes land anywhere in a poll cycle
            value = float(i + 1)
            fe.write_table(
                name=TABLE, df=pd.DataFrame({"customer_id": [key], "value": [value]}), mode="merge"
            )
            started = time.monotonic()
            while store_reader.read_latest(TABLE, [(int(key),)], ["value"]) != [{"value": value}]:
                if time.monotonic() - started > TIMEOUT_SECONDS:
                    raise TimeoutError(f"merge {i} not online after {TIMEOUT_SECONDS:.0f} s")
                time.sleep(0.01)
            seconds.append(time.monotonic() - started)
    finally:
        fe.drop_online_table(online, store)
        continuous_sync.stop_tailer(state_dir)
        fe.drop_table(name=TABLE)
    return seconds
