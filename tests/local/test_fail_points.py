"""Fail points (``helpers.local.fail_points``): an armed point stops its process and says where; a misspelt
one is refused at import rather than never firing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from polling import wait_for

from helpers.local.fail_points import FAIL_POINT_ENV, FAIL_POINT_FILE_ENV


def _python(code: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, **env}, stderr=subprocess.PIPE, text=True
    )


def test_an_unknown_point_is_refused_naming_the_known_ones() -> None:
    process = _python("import helpers.local.fail_points", **{FAIL_POINT_ENV: "publish.after_rows"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "names no fail point" in stderr and "online_store.publish.before_commit" in stderr


def test_an_armed_point_stops_its_process_there_and_other_points_pass(tmp_path: Path) -> None:
    marker = tmp_path / "stopped.pid"
    code = (
        "from helpers.local.fail_points import fail_point\n"
        "fail_point('tables.merge.locked')\n"  # not the armed one: passes
        "fail_point('tables.merge.committed')\n"
        "raise SystemExit('went past its fail point')\n"
    )
    process = _python(code, **{FAIL_POINT_ENV: "tables.merge.committed", FAIL_POINT_FILE_ENV: str(marker)})
    try:
        wait_for(lambda: marker.exists() or process.poll() is not None, "the process to stop at its point")
        assert process.poll() is None and int(marker.read_text()) == process.pid
    finally:
        process.kill()
        process.communicate()
