"""``publish_mode="CONTINUOUS"``: online tables that follow their source Delta table without another publish.

On Databricks a CONTINUOUS online table is a streaming pipeline that runs in the platform, independent of the
notebook that published it, until the online table is deleted. The twin's counterpart is the *tailer*: a
process of its own (``python -m helpers.local.continuous_sync serve``) that ``publish_table`` starts on
demand, detached like the workspace server, so it outlives the notebook kernel. Every ``poll_seconds`` it
looks for a new commit in each followed table's Delta log (a file test, no table load) and, when there is
one, syncs it with the same ``OnlineStore.publish`` a TRIGGERED publish uses: the changed rows from the
change data feed (a snapshot for a delete or an overwrite), and the published Delta version, in one SQLite
transaction. A killed tailer therefore leaves the online table at a version it fully published, and the
next tailer resumes from there.

Which online tables are continuous is kept in the online store's own database (table ``_continuous``), with a
state named as Databricks names an online table's (``ONLINE_CONTINUOUS_UPDATE`` while it streams,
``ONLINE_PIPELINE_FAILED`` when a sync fails; the twin retries at every poll). The tailer exits by itself
once no table is followed (the online table or its store was deleted), or when its state directory is gone;
``python -m helpers.local.continuous_sync stop`` (``make stop``) ends it; the next feature client (or
``... continuous_sync start``) resumes it while a table is followed. ``<state_dir>/continuous_sync.json``
holds its pid, ``<state_dir>/continuous_sync.log`` its log.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from helpers.config import get_settings
from helpers.local import detached
from helpers.local.online_store import OnlineStore, PublishResult
from helpers.local.tables import DeltaTables

log = logging.getLogger(__name__)

POLL_SECONDS = float(os.environ.get("HELPERS_CONTINUOUS_POLL_SECONDS", "0.5"))
STOP_TIMEOUT_SECONDS = 20.0
STREAMING = "ONLINE_CONTINUOUS_UPDATE"  # Databricks' OnlineTableState while a continuous pipeline runs
FAILED = "ONLINE_PIPELINE_FAILED"
_MODULE = "helpers.local.continuous_sync"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _continuous (
    online_table_name TEXT PRIMARY KEY,
    source_table_name TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    synced_at TEXT
)
"""


@dataclass(frozen=True)
class ContinuousStatus:
    """One followed online table, shaped like Databricks' ``ContinuousUpdateStatus`` plus the state."""

    online_table_name: str
    source_table_name: str
    state: str
    last_processed_commit_version: int | None  # the source's Delta version the online table holds
    timestamp: str | None  # when the last sync landed
    message: str | None


# The registry ----------------------------------------------------------------------------------------------
@contextmanager
def _connection(store: OnlineStore) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(store.path, timeout=600, isolation_level=None)
    try:
        conn.execute(_SCHEMA)  # a no-op once the table exists (and online.db may have been deleted since)
        yield conn
    finally:
        conn.close()


def follow(store: OnlineStore, source_table_name: str, online_table_name: str) -> None:
    """Mark ``online_table_name`` continuous: the tailer keeps it in step with ``source_table_name``."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with _connection(store) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO _continuous VALUES (?, ?, ?, NULL, ?)",
            (online_table_name, source_table_name, STREAMING, now),
        )


def unfollow(store: OnlineStore, online_table_name: str) -> bool:
    """Stop following ``online_table_name`` (its rows stay); ``False`` if it was not followed."""
    with _connection(store) as conn:
        removed = conn.execute("DELETE FROM _continuous WHERE online_table_name = ?", (online_table_name,))
        return removed.rowcount > 0


def statuses(store: OnlineStore) -> list[ContinuousStatus]:
    """Every followed online table with its state and the Delta version it holds (``None``: dropped)."""
    store.list_published()  # makes sure the store's own tables exist
    with _connection(store) as conn:  # one statement: the registry and the versions as of one moment
        rows = conn.execute(
            "SELECT c.online_table_name, c.source_table_name, c.state, p.delta_version, c.synced_at, "
            "c.message FROM _continuous c LEFT JOIN _published p USING (online_table_name) "
            "ORDER BY c.online_table_name"
        ).fetchall()
    return [ContinuousStatus(*row) for row in rows]


def _forget_dropped(store: OnlineStore, online_table_name: str) -> bool:
    """Unfollow ``online_table_name`` unless it was published again since the poll saw it gone."""
    with _connection(store) as conn:
        removed = conn.execute(
            "DELETE FROM _continuous WHERE online_table_name = ? AND NOT EXISTS "
            "(SELECT 1 FROM _published WHERE online_table_name = ?)",
            (online_table_name, online_table_name),
        )
        return removed.rowcount > 0


def _set_state(store: OnlineStore, online_table_name: str, state: str, message: str | None) -> None:
    with _connection(store) as conn:
        synced = datetime.now(UTC).isoformat(timespec="milliseconds") if state == STREAMING else None
        conn.execute(
            "UPDATE _continuous SET state = ?, message = ?, synced_at = COALESCE(?, synced_at) "
            "WHERE online_table_name = ?",
            (state, message, synced, online_table_name),
        )


# The tailer ------------------------------------------------------------------------------------------------
def _commit_file(tables: DeltaTables, name: str, version: int) -> Path:
    return tables.path(name) / "_delta_log" / f"{version:020d}.json"


class Tailer:
    """Syncs every followed online table whose source has a commit newer than the version it holds."""

    def __init__(self, state_dir: Path, poll_seconds: float = POLL_SECONDS) -> None:
        self.state_dir = Path(state_dir)
        self.poll_seconds = poll_seconds
        self.store = OnlineStore(self.state_dir)
        self.tables = DeltaTables(self.state_dir)
        self.following = 0

    def sync_once(self) -> list[PublishResult]:
        """One poll over the followed tables; returns the syncs that wrote something."""
        results = []
        followed = statuses(self.store)
        self.following = len(followed)
        for status in followed:
            if status.last_processed_commit_version is None:  # its online table was dropped
                if _forget_dropped(self.store, status.online_table_name):
                    log.info("%s was dropped; no longer following it", status.online_table_name)
                    self.following -= 1
                continue
            source, version = status.source_table_name, status.last_processed_commit_version
            idle = self.tables.exists(source) and not _commit_file(self.tables, source, version + 1).exists()
            if idle and status.state == STREAMING:
                continue
            try:
                result = self.store.publish(source, status.online_table_name, self.tables)
            except Exception as error:  # the pipeline fails, the tailer keeps polling the other tables
                if status.state != FAILED:
                    log.exception("continuous sync of %s failed", status.online_table_name)
                _set_state(self.store, status.online_table_name, FAILED, f"{type(error).__name__}: {error}")
                continue
            _set_state(self.store, status.online_table_name, STREAMING, None)
            if result.mode != "unchanged":
                committed = _commit_file(self.tables, source, result.delta_version).stat().st_mtime
                lag = time.time() - committed
                log.info(
                    "%s: %s sync to Delta version %s, %s row(s), %.2f s after the commit",
                    result.online_table_name, result.mode, result.delta_version, result.rows_written, lag,
                )  # fmt: skip
                results.append(result)
        return results

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set, no table is followed any more, or the state directory is gone."""
        while not stop.is_set():
            if not self.store.path.exists():
                log.info("%s is gone; stopping", self.store.path)
                return
            try:
                self.sync_once()
                if not self.following and _retire(self.state_dir, self.store):
                    log.info("no continuous online table left; stopping")
                    return
            except Exception:
                if not self.state_dir.exists():
                    return
                log.exception("continuous sync poll failed; retrying")
            stop.wait(self.poll_seconds)


def _retire(state_dir: Path, store: OnlineStore) -> bool:
    """Give up the pid file if still nothing is followed, under the start lock (a racing ``follow`` then
    finds no tailer and starts a new one)."""
    with _start_lock(state_dir):
        if statuses(store):
            return False
        _remove_pid(state_dir, os.getpid())
        return True


# The process -----------------------------------------------------------------------------------------------
def _pid_path(state_dir: Path) -> Path:
    return Path(state_dir) / "continuous_sync.json"


def log_path(state_dir: Path) -> Path:
    return Path(state_dir) / "continuous_sync.log"


@contextmanager
def _start_lock(state_dir: Path) -> Iterator[None]:
    with open(Path(state_dir) / "continuous_sync.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_pid(state_dir: Path, pid: int) -> None:
    if running_pid(state_dir) in (pid, None):
        _pid_path(state_dir).unlink(missing_ok=True)


def running_pid(state_dir: Path) -> int | None:
    """The pid of the tailer of ``state_dir``, if one runs."""
    try:
        pid = int(json.loads(_pid_path(state_dir).read_text())["pid"])
        # A child started here may not have exec'd yet: its cmdline would still be this process's.
        ours = detached.started_here(pid) or _MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return None
    return pid if ours and detached.alive(pid) else None


def ensure_tailer(state_dir: Path) -> int:
    """The running tailer's pid, after starting one (detached) if there is none."""
    state_dir = Path(state_dir).resolve()
    with _start_lock(state_dir):
        pid = running_pid(state_dir)
        if pid is not None:
            return pid
        child = detached.spawn(
            _MODULE, ["serve", "--state-dir", str(state_dir)], state_dir, log_path(state_dir)
        )
        _pid_path(state_dir).write_text(json.dumps({"pid": child.pid}))
        return child.pid


def resume(state_dir: Path) -> int | None:
    """Start a tailer if a table is followed and none runs (after ``make stop`` or a reboot); its pid."""
    store = OnlineStore(state_dir)
    if not store.path.exists() or not statuses(store):
        return None
    return ensure_tailer(state_dir)


def stop_tailer(state_dir: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the tailer of ``state_dir`` (SIGTERM: it ends between two syncs); ``False`` if none ran."""
    state_dir = Path(state_dir).resolve()
    pid = running_pid(state_dir)
    _pid_path(state_dir).unlink(missing_ok=True)
    if pid is None:
        return False
    detached.terminate(pid, timeout)
    return True


def serve(state_dir: Path, poll_seconds: float = POLL_SECONDS) -> None:
    """Run the tailer in this process until SIGTERM/SIGINT (or nothing is left to follow)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("following continuous online tables in %s every %.2f s", state_dir, poll_seconds)
    try:
        Tailer(state_dir, poll_seconds).run(stop)
    finally:
        _remove_pid(state_dir, os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__)
    parser.add_argument("command", choices=["serve", "start", "stop", "status"])
    parser.add_argument(
        "--state-dir", type=Path, help="default: HELPERS_STATE_DIR or the project's .workspace"
    )
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS)
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or get_settings().state_dir).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(state_dir, args.poll_seconds)
    elif args.command == "start":
        pid = resume(state_dir)
        print(
            f"continuous sync running (pid {pid}); log: {log_path(state_dir)}" if pid else "nothing to follow"
        )
    elif args.command == "stop":
        print("continuous sync stopped" if stop_tailer(state_dir) else "no continuous sync was running")
    else:
        for status in statuses(OnlineStore(state_dir)):
            print(status)
        pid = running_pid(state_dir)
        print(f"continuous sync running (pid {pid})" if pid else "continuous sync not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
