"""Detached helper processes of the twin (the workspace server, the continuous sync): start, check, stop.

Each outlives the notebook kernel that started it (its own session); this module remembers the children it
started so it can reap them, and tells a live process from a zombie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.config import PROJECT_ROOT

_children: dict[int, subprocess.Popen] = {}  # processes started here (to reap them)


def spawn(module: str, args: list[str], state_dir: Path, log: Path) -> subprocess.Popen:
    """Start ``python -m module *args`` detached, for ``state_dir``, appending its output to ``log``."""
    env = {**os.environ, "HELPERS_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the notebook kernel that started it
        )  # fmt: skip
    _children[child.pid] = child
    return child


def started_here(pid: int) -> bool:
    """Whether this process started ``pid`` (and it has not been reaped yet)."""
    for known, child in list(_children.items()):  # reap children that ended on their own
        if child.poll() is not None:
            del _children[known]
    return pid in _children


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: its parent has yet to reap it)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, SIGKILL it if it is still running after ``timeout`` seconds, and reap it if ours."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    else:
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait()
