"""The monitor store: data-profiling monitors and their refreshes, in ``workspace.db``.

A monitor is kept as its wire document (``Monitor``) by table id; a refresh as its wire document
(``Refresh``) with an id from SQLite. Both survive a server restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from helpers.local.server.layout import workspace_db


class MonitorStore:
    """Monitor documents by ``object_id`` and refresh documents by ``refresh_id``."""

    def __init__(self, state_dir: Path) -> None:
        self._db = sqlite3.connect(workspace_db(state_dir), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS data_profiling_monitors "
            "(object_id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS data_profiling_refreshes "
            "(refresh_id INTEGER PRIMARY KEY AUTOINCREMENT, object_id TEXT NOT NULL, doc TEXT NOT NULL)"
        )

    def monitor(self, object_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT doc FROM data_profiling_monitors WHERE object_id = ?", (object_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def monitors(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM data_profiling_monitors ORDER BY object_id").fetchall()
        return [json.loads(doc) for (doc,) in rows]

    def add_monitor(self, object_id: str, doc: dict[str, Any]) -> bool:
        """Store a new monitor; ``False`` if the table already has one."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO data_profiling_monitors VALUES (?, ?)", (object_id, json.dumps(doc))
            )
        return cursor.rowcount == 1

    def save_monitor(self, object_id: str, doc: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE data_profiling_monitors SET doc = ? WHERE object_id = ?", (json.dumps(doc), object_id)
            )

    def delete_monitor(self, object_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM data_profiling_monitors WHERE object_id = ?", (object_id,))

    def add_refresh(self, object_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Store a new refresh; the document comes back with its ``refresh_id``."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO data_profiling_refreshes (object_id, doc) VALUES (?, '{}')", (object_id,)
            )
            doc = doc | {"refresh_id": cursor.lastrowid}
            self._db.execute(
                "UPDATE data_profiling_refreshes SET doc = ? WHERE refresh_id = ?",
                (json.dumps(doc), cursor.lastrowid),
            )
        return doc

    def save_refresh(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE data_profiling_refreshes SET doc = ? WHERE refresh_id = ?",
                (json.dumps(doc), doc["refresh_id"]),
            )

    def refresh(self, object_id: str, refresh_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT doc FROM data_profiling_refreshes WHERE object_id = ? AND refresh_id = ?",
                (object_id, refresh_id),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def refreshes(self, object_id: str) -> list[dict[str, Any]]:
        """The table's refreshes, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT doc FROM data_profiling_refreshes WHERE object_id = ? ORDER BY refresh_id DESC",
                (object_id,),
            ).fetchall()
        return [json.loads(doc) for (doc,) in rows]

    def active_refreshes(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM data_profiling_refreshes").fetchall()
        docs = [json.loads(doc) for (doc,) in rows]
        return [d for d in docs if d["state"] in (PENDING, RUNNING)]

    def close(self) -> None:
        with self._lock:
            self._db.close()


PENDING = "MONITOR_REFRESH_STATE_PENDING"
RUNNING = "MONITOR_REFRESH_STATE_RUNNING"
SUCCESS = "MONITOR_REFRESH_STATE_SUCCESS"
FAILED = "MONITOR_REFRESH_STATE_FAILED"
CANCELED = "MONITOR_REFRESH_STATE_CANCELED"
