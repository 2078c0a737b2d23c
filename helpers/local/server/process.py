"""Start, find and stop the local workspace server process.

The server writes ``<state_dir>/server.json`` (url, token, pid; mode 0600) once it listens, and logs to
``<state_dir>/server.log``. ``ensure_server`` reuses a healthy server or starts one, detached, so it outlives
the notebook that started it; ``stop_server`` (``make stop``) ends it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.local import detached
from helpers.local.server.layout import server_info as info_path
from helpers.local.server.layout import server_lock
from helpers.local.server.layout import server_log as log_path

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class ServerInfo:
    url: str
    token: str
    pid: int


def write_info(state_dir: Path, info: ServerInfo) -> None:
    """Write ``server.json`` readable by the owner only (it holds the token)."""
    path = info_path(state_dir)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(info), handle)
    tmp.replace(path)


def read_info(state_dir: Path) -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads(info_path(state_dir).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def remove_info(state_dir: Path, pid: int) -> None:
    """Remove ``server.json`` if it still describes the server ``pid``."""
    info = read_info(state_dir)
    if info is not None and info.pid == pid:
        info_path(state_dir).unlink(missing_ok=True)


def _is_server(pid: int) -> bool:
    """Whether ``pid`` runs this server (a pid in a stale ``server.json`` may belong to someone else now)."""
    try:
        return b"helpers.local.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def healthy(info: ServerInfo, timeout: float = 3.0) -> bool:
    """Whether the server answers an authenticated request."""
    request = urllib.request.Request(
        f"{info.url}/api/2.0/serving-endpoints", headers={"Authorization": f"Bearer {info.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def _start_lock(state_dir: Path) -> Iterator[None]:
    """One starter at a time per state directory (two notebooks must not start two servers)."""
    with open(server_lock(state_dir), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log_tail(state_dir: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path(state_dir).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no server log)"


def _running(state_dir: Path) -> ServerInfo | None:
    info = read_info(state_dir)
    return info if info is not None and detached.alive(info.pid) and healthy(info) else None


def ensure_server(state_dir: Path, timeout: float = START_TIMEOUT_SECONDS) -> ServerInfo:
    """The running server for ``state_dir``, started (detached) if there is none."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _start_lock(state_dir):
        info = _running(state_dir)
        if info is not None:
            return info
        return _spawn(state_dir, timeout)


def _spawn(state_dir: Path, timeout: float) -> ServerInfo:
    child = detached.spawn("helpers.local.server", ["serve"], state_dir, log_path(state_dir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(
                f"the local workspace server exited with code {child.returncode} while starting; "
                f"log {log_path(state_dir)}:\n{_log_tail(state_dir)}"
            )
        info = read_info(state_dir)
        if info is not None and info.pid == child.pid and healthy(info):
            return info
        time.sleep(0.1)
    detached.terminate(child.pid, STOP_TIMEOUT_SECONDS)
    raise RuntimeError(
        f"the local workspace server did not become healthy within {timeout:.0f} s; "
        f"log {log_path(state_dir)}:\n{_log_tail(state_dir)}"
    )


def stop_server(state_dir: Path) -> bool:
    """Stop the server of ``state_dir``; ``False`` if none was running."""
    state_dir = Path(state_dir).resolve()
    info = read_info(state_dir)
    if info is None:
        return False
    running = detached.alive(info.pid) and _is_server(info.pid)
    if running:
        detached.terminate(info.pid, STOP_TIMEOUT_SECONDS)
    remove_info(state_dir, info.pid)
    return running


@contextmanager
def running_server(state_dir: Path) -> Iterator[ServerInfo]:
    """A server for the duration of the block; stopped at the end if this block started it."""
    before = _running(Path(state_dir).resolve())
    info = ensure_server(state_dir)
    try:
        yield info
    finally:
        if before is None or before.pid != info.pid:
            stop_server(state_dir)
