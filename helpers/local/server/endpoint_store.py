"""The endpoint store: serving endpoints and every served entity ever deployed, in ``workspace.db``.

``served_entities`` is the local ``system.serving.served_entities``: it maps an inference table's
``served_entity_id`` to the served entity's name and model version, also after the endpoint is gone.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

from helpers.local.server.layout import workspace_db
from helpers.local.server.records import Endpoint

SERVED_ENTITY_COLUMNS = ("served_entity_id", "served_entity_name", "entity_name", "entity_version")


class EndpointStore:
    """Endpoint records by name (one JSON document each) and the served-entity history."""

    def __init__(self, state_dir: Path) -> None:
        self._db = sqlite3.connect(workspace_db(state_dir), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS serving_endpoints (name TEXT PRIMARY KEY, doc TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS served_entities (served_entity_id TEXT PRIMARY KEY, "
            "endpoint_name TEXT, served_entity_name TEXT, entity_name TEXT, entity_version TEXT, "
            "change_time INTEGER)"
        )

    def load(self) -> list[Endpoint]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM serving_endpoints ORDER BY name").fetchall()
        return [Endpoint.from_doc(text) for (text,) in rows]

    def save(self, endpoint: Endpoint) -> None:
        entities = [
            (e.id, endpoint.name, e.name, e.entity_name, e.entity_version, e.creation_timestamp)
            for config in (endpoint.config, endpoint.pending_config)
            if config is not None
            for e in config.served_entities
        ]
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO serving_endpoints (name, doc) VALUES (?, ?)",
                (endpoint.name, endpoint.doc()),
            )
            self._db.executemany("INSERT OR IGNORE INTO served_entities VALUES (?, ?, ?, ?, ?, ?)", entities)

    def delete(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM serving_endpoints WHERE name = ?", (name,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def served_entities(state_dir: Path, endpoint_name: str) -> list[tuple[str, str, str, str | None]]:
    """Every served entity ``endpoint_name`` ever had, as ``SERVED_ENTITY_COLUMNS`` rows."""
    path = workspace_db(state_dir)
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as db:
        try:
            return db.execute(
                f"SELECT {', '.join(SERVED_ENTITY_COLUMNS)} FROM served_entities WHERE endpoint_name = ?",
                (endpoint_name,),
            ).fetchall()
        except sqlite3.OperationalError:  # no endpoint was ever created here
            return []
