"""publish_mode="CONTINUOUS": a real tailer process keeps the online table in step with its Delta table."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from polling import process_gone, wait_for
from publishing_client import PublishingClient as Client

from helpers.local import continuous_sync
from helpers.local.online_store import OnlineStore, latest_per_key
from helpers.local.tables import TableMeta

LIVE = "main.test.live"
BATCH = "main.test.batch"


@pytest.fixture
def client(state_dir: Path) -> Iterator[Client]:
    client = Client(state_dir)
    for name in (LIVE, BATCH):
        data = pa.table({"customer_id": [1, 2, 3], "score": [0.1, 0.2, 0.3]})
        cdf = {"delta.enableChangeDataFeed": "true"}  # TRIGGERED and CONTINUOUS need it, as on Databricks
        client._tables.create(TableMeta(name, ["customer_id"]), data, None, properties=cdf)
    client.create_online_store(name="store", capacity="CU_1")
    yield client
    pid = continuous_sync.running_pid(state_dir)
    continuous_sync.stop_tailer(state_dir)
    assert pid is None or process_gone(pid), "the tailer outlived its test"


def publish(client: Client, name: str, mode: str) -> None:
    store = client.get_online_store(name="store")
    client.publish_table(
        online_store=store, source_table_name=name, online_table_name=f"{name}_online", publish_mode=mode
    )


def score(state_dir: Path, name: str, key: int) -> float | None:
    row = OnlineStore(state_dir).read_latest(name, [(key,)], ["score"])[0]
    return None if row is None else row["score"]


def merge(client: Client, name: str, keys: list[int], value: float) -> None:
    client._tables.merge(name, pa.table({"customer_id": keys, "score": [value] * len(keys)}))


def test_a_merge_reaches_a_continuous_online_table_without_another_publish(
    client: Client, state_dir: Path
) -> None:
    publish(client, LIVE, "CONTINUOUS")

    merge(client, LIVE, [2, 4], 0.9)

    wait_for(
        lambda: score(state_dir, LIVE, 2) == 0.9 and score(state_dir, LIVE, 4) == 0.9, "the merge online"
    )
    [status] = continuous_sync.statuses(OnlineStore(state_dir))
    assert (status.online_table_name, status.state) == (f"{LIVE}_online", "ONLINE_CONTINUOUS_UPDATE")
    assert status.last_processed_commit_version == client._tables.version(LIVE)


def test_deletes_and_updates_propagate(client: Client, state_dir: Path) -> None:
    publish(client, LIVE, "CONTINUOUS")

    client._tables.delta(LIVE).delete("customer_id = 1")  # DELETE FROM, as Spark SQL would write it
    merge(client, LIVE, [3], 0.7)

    wait_for(lambda: score(state_dir, LIVE, 3) == 0.7, "the update online")
    assert score(state_dir, LIVE, 1) is None
    assert score(state_dir, LIVE, 2) == 0.2


def test_a_triggered_table_is_not_tailed(client: Client, state_dir: Path) -> None:
    publish(client, BATCH, "TRIGGERED")
    publish(client, LIVE, "CONTINUOUS")

    merge(client, BATCH, [1], 0.5)  # committed before LIVE's merge: a poll that sees LIVE's sees this one too
    merge(client, LIVE, [1], 0.5)

    wait_for(lambda: score(state_dir, LIVE, 1) == 0.5, "the continuous table's merge online")
    assert score(state_dir, BATCH, 1) == 0.1
    assert [s.online_table_name for s in continuous_sync.statuses(OnlineStore(state_dir))] == [
        f"{LIVE}_online"
    ]


def test_publishing_again_as_triggered_stops_following(client: Client, state_dir: Path) -> None:
    publish(client, LIVE, "CONTINUOUS")
    pid = continuous_sync.running_pid(state_dir)
    assert pid is not None

    publish(client, LIVE, "TRIGGERED")

    assert continuous_sync.statuses(OnlineStore(state_dir)) == []
    wait_for(lambda: process_gone(pid), "the tailer to exit with nothing left to follow")


def test_dropping_the_online_table_ends_the_tailer(client: Client, state_dir: Path) -> None:
    publish(client, LIVE, "CONTINUOUS")
    pid = continuous_sync.running_pid(state_dir)
    assert pid is not None

    client.drop_online_table(f"{LIVE}_online", client.get_online_store(name="store"))

    wait_for(lambda: process_gone(pid), "the tailer to exit once its table is dropped")
    assert continuous_sync.running_pid(state_dir) is None


def test_a_killed_tailer_leaves_the_store_whole_and_the_next_one_resumes(
    client: Client, state_dir: Path
) -> None:
    publish(client, LIVE, "CONTINUOUS")
    pid = continuous_sync.running_pid(state_dir)
    assert pid is not None

    for i in range(6):  # commits keep coming while the tailer syncs them, then it is killed mid-stream
        merge(client, LIVE, [1, 2, 3, 10 + i], float(i))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), "the tailer to die")

    store = OnlineStore(state_dir)
    [info] = store.list_published()
    held = latest_per_key(client._tables.read(LIVE, version=info.delta_version), ["customer_id"], None)
    keys = [(k,) for k in held["customer_id"].to_pylist()]
    assert store.read_latest(LIVE, keys, ["score"]) == [{"score": s} for s in held["score"].to_pylist()]
    assert info.row_count == held.num_rows  # the rows and the recorded version moved together

    continuous_sync.ensure_tailer(state_dir)
    wait_for(lambda: score(state_dir, LIVE, 15) == 5.0, "a new tailer to catch up from the recorded version")
    assert store.list_published()[0].delta_version == client._tables.version(LIVE)


def test_stop_ends_the_tailer_between_syncs_and_resume_follows_again(client: Client, state_dir: Path) -> None:
    publish(client, LIVE, "CONTINUOUS")
    pid = continuous_sync.running_pid(state_dir)

    assert continuous_sync.stop_tailer(state_dir)

    assert pid is not None and process_gone(pid)
    assert continuous_sync.stop_tailer(state_dir) is False
    merge(client, LIVE, [1], 0.4)  # while nothing follows
    assert continuous_sync.statuses(OnlineStore(state_dir))[0].state == "ONLINE_CONTINUOUS_UPDATE"
    assert continuous_sync.resume(state_dir) is not None
    wait_for(lambda: score(state_dir, LIVE, 1) == 0.4, "the resumed tailer to sync the merge")


def test_resume_starts_nothing_without_a_continuous_table(client: Client, state_dir: Path) -> None:
    publish(client, BATCH, "TRIGGERED")

    assert continuous_sync.resume(state_dir) is None
    assert continuous_sync.resume(state_dir / "elsewhere") is None
    assert continuous_sync.running_pid(state_dir) is None


def test_a_failing_sync_shows_the_failed_state_and_keeps_the_rows(client: Client, state_dir: Path) -> None:
    publish(client, LIVE, "CONTINUOUS")

    client._tables.drop(LIVE)  # the source goes away under a running pipeline

    store = OnlineStore(state_dir)
    wait_for(lambda: continuous_sync.statuses(store)[0].state == "ONLINE_PIPELINE_FAILED", "the failed state")
    assert LIVE in (continuous_sync.statuses(store)[0].message or "")
    assert score(state_dir, LIVE, 1) == 0.1
