"""Fail points: named places where a process of the local twin stops, so a fault test kills it exactly there.

A test starts a process with ``HELPERS_FAIL_POINT=<name>`` (and ``HELPERS_FAIL_POINT_FILE=<path>``). When
that process reaches the point, it writes its pid to the file and then waits until it is killed: the test
waits for the file and sends SIGKILL, with no timer and no race. The variable is read once, when this module
is imported, so an unset variable costs one string comparison per point reached (points sit on operations,
never on rows); an unknown name is refused at import, so a misspelt point cannot silently never fire.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NoReturn

FAIL_POINT_ENV = "HELPERS_FAIL_POINT"
FAIL_POINT_FILE_ENV = "HELPERS_FAIL_POINT_FILE"

POINTS = {
    "online_store.publish.before_commit": (
        "a publish wrote every row and its registry entry in its SQLite transaction, which is not committed"
    ),
    "tables.merge.locked": "a merge holds the table's lock and has written nothing yet",
    "tables.merge.committed": "a merge committed its Delta version and still holds the table's lock",
}

ARMED = os.environ.get(FAIL_POINT_ENV, "")
if ARMED and ARMED not in POINTS:
    raise ValueError(f"{FAIL_POINT_ENV}={ARMED!r} names no fail point; known points: {sorted(POINTS)}")


def fail_point(name: str) -> None:
    """Stop here for good when ``name`` is the armed point (announcing the pid first); otherwise return."""
    if name == ARMED:
        _stop()


def _stop() -> NoReturn:
    marker = os.environ.get(FAIL_POINT_FILE_ENV)
    if marker:
        staging = Path(f"{marker}.{os.getpid()}.tmp")
        staging.write_text(str(os.getpid()))
        staging.replace(marker)  # the test never reads a half-written pid
    while True:  # until killed: what the point is for
        time.sleep(3600)
