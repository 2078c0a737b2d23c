"""Durable jobs, job runs and task runs in SQLite (``<state_dir>/workspace.db``, WAL, tables ``jobs_*``).

Every state change is committed when it happens, so a server that dies loses nothing it reported.
Ids are Databricks-sized integers counting up from a random base chosen when the store is created; job
runs and task runs share one id space, as on Databricks.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ACTIVE_STATES = ("QUEUED", "PENDING", "BLOCKED", "RUNNING", "TERMINATING")
RUNNING_STATES = ("PENDING", "RUNNING", "TERMINATING")  # what max_concurrent_runs counts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs_ids (kind TEXT PRIMARY KEY, next_value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    created_time INTEGER NOT NULL,
    creator_user_name TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs_runs (
    run_id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    run_name TEXT NOT NULL,
    idempotency_token TEXT UNIQUE,
    settings TEXT NOT NULL,
    job_parameters TEXT NOT NULL,
    overriding_parameters TEXT NOT NULL,
    creator_user_name TEXT NOT NULL,
    workspace_url TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL DEFAULT 0,
    queue_duration INTEGER NOT NULL DEFAULT 0,
    run_page_url TEXT,
    life_cycle_state TEXT NOT NULL,
    result_state TEXT,
    state_message TEXT NOT NULL DEFAULT '',
    termination_code TEXT,
    termination_type TEXT,
    user_cancelled_or_timedout INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_runs_by_job ON jobs_runs (job_id, start_time);
CREATE TABLE IF NOT EXISTS jobs_task_runs (
    run_id INTEGER PRIMARY KEY,
    job_run_id INTEGER NOT NULL REFERENCES jobs_runs (run_id),
    position INTEGER NOT NULL,
    task_key TEXT NOT NULL,
    task TEXT NOT NULL,
    parameters TEXT,
    start_time INTEGER NOT NULL DEFAULT 0,
    end_time INTEGER NOT NULL DEFAULT 0,
    setup_duration INTEGER NOT NULL DEFAULT 0,
    execution_duration INTEGER NOT NULL DEFAULT 0,
    cleanup_duration INTEGER NOT NULL DEFAULT 0,
    output_path TEXT,
    exit_value TEXT,
    error TEXT,
    error_trace TEXT,
    pid INTEGER,
    pid_started REAL,
    life_cycle_state TEXT NOT NULL,
    result_state TEXT,
    state_message TEXT NOT NULL DEFAULT '',
    termination_code TEXT,
    termination_type TEXT,
    user_cancelled_or_timedout INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_task_runs_by_run ON jobs_task_runs (job_run_id, position);
"""
_JSON_COLUMNS = {"settings", "job_parameters", "overriding_parameters", "task", "parameters"}


@dataclass(frozen=True)
class State:
    """A run's state in Databricks' words: ``state`` (life cycle + result) and ``status`` (termination)."""

    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""
    termination_code: str | None = None
    termination_type: str | None = None
    user_cancelled_or_timedout: bool = False

    @property
    def active(self) -> bool:
        return self.life_cycle_state in ACTIVE_STATES

    @classmethod
    def success(cls) -> State:
        return cls("TERMINATED", "SUCCESS", "", "SUCCESS", "SUCCESS")

    @classmethod
    def failed(cls, message: str, code: str = "RUN_EXECUTION_ERROR") -> State:
        return cls("TERMINATED", "FAILED", message, code, "CLIENT_ERROR")

    @classmethod
    def canceled(cls, message: str = "Run canceled by the user.") -> State:
        return cls("TERMINATED", "CANCELED", message, "USER_CANCELED", "SUCCESS", True)

    @classmethod
    def timed_out(cls, seconds: int) -> State:
        message = f"Run timed out after the configured timeout of {seconds} seconds."
        return cls("TERMINATED", "TIMEDOUT", message, "CANCELED", "CLIENT_ERROR", True)

    @classmethod
    def skipped_max_concurrent(cls, limit: int) -> State:
        message = f"Skipping this run because the limit of {limit} maximum concurrent runs has been reached."
        return cls(
            "SKIPPED",
            "MAXIMUM_CONCURRENT_RUNS_REACHED",
            message,
            "MAX_CONCURRENT_RUNS_EXCEEDED",
            "CLIENT_ERROR",
        )

    @classmethod
    def upstream(cls, result_state: str, message: str) -> State:
        """A task never executed because an earlier task failed or the run stopped."""
        return cls("SKIPPED", result_state, message, "SKIPPED", "SUCCESS")

    @classmethod
    def internal_error(cls, message: str) -> State:
        return cls("INTERNAL_ERROR", "FAILED", message, "INTERNAL_ERROR", "INTERNAL_ERROR")


@dataclass(frozen=True)
class JobRecord:
    job_id: int
    created_time: int
    creator_user_name: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class TaskRunRecord:
    run_id: int
    job_run_id: int
    position: int
    task_key: str
    task: dict[str, Any]
    state: State
    parameters: dict[str, str] | None = None
    start_time: int = 0
    end_time: int = 0
    setup_duration: int = 0
    execution_duration: int = 0
    cleanup_duration: int = 0
    output_path: str | None = None
    exit_value: str | None = None
    error: str | None = None
    error_trace: str | None = None
    pid: int | None = None
    pid_started: float | None = None


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    job_id: int
    run_name: str
    settings: dict[str, Any]
    job_parameters: list[dict[str, str]]
    overriding_parameters: dict[str, Any]
    creator_user_name: str
    workspace_url: str
    start_time: int
    state: State
    idempotency_token: str | None = None
    end_time: int = 0
    queue_duration: int = 0
    run_page_url: str | None = None
    tasks: list[TaskRunRecord] = field(default_factory=list)


_STATE_FIELDS = [f.name for f in fields(State)]


class JobStore:
    """Jobs and runs in one SQLite file; safe to share between the API threads and the runner threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._tx() as db:
            db.executescript(_SCHEMA)
            for kind in ("job", "run", "workspace"):
                # Databricks ids are 15-16 digit integers; start at a random one, then count up.
                base = secrets.randbelow(9 * 10**14) + 10**14
                db.execute("INSERT OR IGNORE INTO jobs_ids VALUES (?, ?)", (kind, base))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._conn:
            yield self._conn

    def _next_id(self, db: sqlite3.Connection, kind: str) -> int:
        row = db.execute(
            "UPDATE jobs_ids SET next_value = next_value + 1 WHERE kind = ? RETURNING next_value - 1", (kind,)
        ).fetchone()
        return int(row[0])

    @property
    def workspace_id(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT next_value FROM jobs_ids WHERE kind = 'workspace'").fetchone()[0])

    # Jobs

    def insert_job(self, settings: dict[str, Any], creator: str, created_time: int) -> JobRecord:
        with self._tx() as db:
            job_id = self._next_id(db, "job")
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?)", (job_id, created_time, creator, json.dumps(settings))
            )
        return JobRecord(job_id, created_time, creator, settings)

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, name: str | None, offset: int, limit: int) -> tuple[list[JobRecord], bool]:
        """Newest first; ``name`` filters on the exact name, ignoring case."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created_time DESC, job_id DESC").fetchall()
        jobs = [_job(r) for r in rows]
        if name is not None:
            jobs = [j for j in jobs if str(j.settings.get("name", "")).lower() == name.lower()]
        return jobs[offset : offset + limit], len(jobs) > offset + limit

    def replace_settings(self, job_id: int, settings: dict[str, Any]) -> bool:
        with self._tx() as db:
            query = "UPDATE jobs SET settings = ? WHERE job_id = ?"
            return db.execute(query, (json.dumps(settings), job_id)).rowcount > 0

    def delete_job(self, job_id: int) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount > 0

    # Runs

    def insert_run(self, run: RunRecord, tasks: list[dict[str, Any]]) -> RunRecord:
        """Store ``run`` (its ``run_id`` is ignored) and one task run per task; returns it with ids."""
        with self._tx() as db:
            run_id = self._next_id(db, "run")
            run = replace(run, run_id=run_id)
            _insert(db, "jobs_runs", _run_columns(run))
            task_runs = []
            for position, task in enumerate(tasks):
                task_run = TaskRunRecord(
                    run_id=self._next_id(db, "run"),
                    job_run_id=run_id,
                    position=position,
                    task_key=task["task_key"],
                    task=task,
                    state=State(run.state.life_cycle_state) if run.state.active else run.state,
                )
                _insert(db, "jobs_task_runs", _task_columns(task_run))
                task_runs.append(task_run)
        return replace(run, tasks=task_runs)

    def run_by_token(self, token: str) -> RunRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT run_id FROM jobs_runs WHERE idempotency_token = ?", (token,)).fetchone()
        return self.get_run(row[0]) if row else None

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            task_rows = db.execute(
                "SELECT * FROM jobs_task_runs WHERE job_run_id = ? ORDER BY position", (run_id,)
            ).fetchall()
        return _run(row, [_task(r) for r in task_rows])

    def get_task_run(self, run_id: int) -> TaskRunRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs_task_runs WHERE run_id = ?", (run_id,)).fetchone()
        return _task(row) if row else None

    def list_runs(
        self,
        job_id: int | None,
        states: tuple[str, ...] | None,
        exclude_states: tuple[str, ...] | None,
        offset: int,
        limit: int,
        start_time_from: int | None = None,
        start_time_to: int | None = None,
    ) -> tuple[list[RunRecord], bool]:
        """Newest first (by start time, then id)."""
        where, args = ["1 = 1"], []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        for column, values, op in (
            ("life_cycle_state", states, "IN"),
            ("life_cycle_state", exclude_states, "NOT IN"),
        ):
            if values:
                where.append(f"{column} {op} ({', '.join('?' * len(values))})")
                args.extend(values)
        if start_time_from is not None:
            where.append("start_time >= ?")
            args.append(start_time_from)
        if start_time_to is not None:
            where.append("start_time <= ?")
            args.append(start_time_to)
        sql = (
            f"SELECT run_id FROM jobs_runs WHERE {' AND '.join(where)} "
            "ORDER BY start_time DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        with self._tx() as db:
            ids = [r[0] for r in db.execute(sql, [*args, limit + 1, offset]).fetchall()]
        runs = [run for run_id in ids[:limit] if (run := self.get_run(run_id)) is not None]
        return runs, len(ids) > limit

    def count_running(self, job_id: int) -> int:
        with self._tx() as db:
            sql = f"SELECT COUNT(*) FROM jobs_runs WHERE job_id = ? AND life_cycle_state IN {RUNNING_STATES}"
            return int(db.execute(sql, (job_id,)).fetchone()[0])

    def oldest_queued(self, job_id: int) -> RunRecord | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT run_id FROM jobs_runs WHERE job_id = ? AND life_cycle_state = 'QUEUED' "
                "ORDER BY start_time, run_id LIMIT 1",
                (job_id,),
            ).fetchone()
        return self.get_run(row[0]) if row else None

    def active_runs(self) -> list[RunRecord]:
        with self._tx() as db:
            sql = f"SELECT run_id FROM jobs_runs WHERE life_cycle_state IN {ACTIVE_STATES} ORDER BY run_id"
            ids = [r[0] for r in db.execute(sql).fetchall()]
        return [run for run_id in ids if (run := self.get_run(run_id)) is not None]

    def update_run(self, run_id: int, state: State | None = None, **values: Any) -> None:
        self._update("jobs_runs", run_id, state, values)

    def update_task(self, run_id: int, state: State | None = None, **values: Any) -> None:
        self._update("jobs_task_runs", run_id, state, values)

    def _update(self, table: str, run_id: int, state: State | None, values: dict[str, Any]) -> None:
        if state is not None:
            values.update(_state_columns(state))
        values = {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in values.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)  # column names come from code only
        with self._tx() as db:
            db.execute(f"UPDATE {table} SET {assignments} WHERE run_id = ?", [*values.values(), run_id])


def _insert(db: sqlite3.Connection, table: str, values: dict[str, Any]) -> None:
    columns = ", ".join(values)
    db.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(values))})", list(values.values())
    )


def _state_columns(state: State) -> dict[str, Any]:
    return {name: getattr(state, name) for name in _STATE_FIELDS}


def _run_columns(run: RunRecord) -> dict[str, Any]:
    skip = {"state", "tasks"}
    values = {f.name: getattr(run, f.name) for f in fields(RunRecord) if f.name not in skip}
    values.update(_state_columns(run.state))
    return {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in values.items()}


def _task_columns(task: TaskRunRecord) -> dict[str, Any]:
    values = {f.name: getattr(task, f.name) for f in fields(TaskRunRecord) if f.name != "state"}
    values.update(_state_columns(task.state))
    return {k: json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in values.items()}


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    values = {k: json.loads(v) if k in _JSON_COLUMNS and v is not None else v for k, v in dict(row).items()}
    state = {name: values.pop(name) for name in _STATE_FIELDS}
    state["user_cancelled_or_timedout"] = bool(state["user_cancelled_or_timedout"])
    values["state"] = State(**state)
    return values


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        row["job_id"], row["created_time"], row["creator_user_name"], json.loads(row["settings"])
    )


def _run(row: sqlite3.Row, tasks: list[TaskRunRecord]) -> RunRecord:
    return RunRecord(**_decode(row), tasks=tasks)


def _task(row: sqlite3.Row) -> TaskRunRecord:
    return TaskRunRecord(**_decode(row))
