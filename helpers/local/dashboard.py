"""``python -m helpers.local.dashboard start|stop``: the dashboard (``app/``) against the local twin.

``start`` makes sure the local workspace server runs, then starts ``streamlit run app/app.py`` on
127.0.0.1, detached, with ``DATABRICKS_HOST`` / ``DATABRICKS_TOKEN`` pointing at that server — exactly the
two variables Databricks Apps provides — and prints the URL. ``stop`` ends the app (``make stop`` also
stops the server). The app's pid is in ``<state_dir>/app.json``, its log in ``<state_dir>/app.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from helpers.config import PROJECT_ROOT, get_settings
from helpers.local.server.process import ensure_server

START_TIMEOUT_SECONDS = 60.0
APP_SCRIPT = PROJECT_ROOT / "app" / "app.py"


def _info_path(state_dir: Path) -> Path:
    return state_dir / "app.json"


def _running_pid(state_dir: Path) -> int | None:
    try:
        pid = int(json.loads(_info_path(state_dir).read_text())["pid"])
        if b"streamlit" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    except (FileNotFoundError, ValueError, KeyError, OSError):
        pass
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def app_environment(state_dir: Path) -> dict[str, str]:
    """This process's environment, the local server's host and token (other Databricks auth removed), and
    the project's job and endpoint names (``project.yml``) unless the environment sets them."""
    server = ensure_server(state_dir)
    cfg = get_settings()
    env = {
        "SHELF_JOB_NAME": cfg.job_name,
        "SHELF_RESULTS_ENDPOINT": cfg.job_endpoint,
        "FRAUD_ENDPOINT": cfg.model_endpoint,
        **{k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")},
    }
    env.update(
        DATABRICKS_HOST=server.url,
        DATABRICKS_TOKEN=server.token,
        HELPERS_STATE_DIR=str(state_dir),
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        STREAMLIT_CLIENT_TOOLBAR_MODE="minimal",
    )
    return env


def start(state_dir: Path, port: int, timeout: float = START_TIMEOUT_SECONDS) -> str:
    """Start the app (or find it running) and return its URL."""
    state_dir = state_dir.resolve()
    url = f"http://127.0.0.1:{port}"
    if _running_pid(state_dir) is not None and _healthy(url):
        return url
    env = app_environment(state_dir)
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.address", "127.0.0.1",
        "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with open(state_dir / "app.log", "ab") as log:
        child = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    _info_path(state_dir).write_text(json.dumps({"pid": child.pid, "url": url}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the app exited with code {child.returncode}; see {state_dir / 'app.log'}")
        if _healthy(url):
            return url
        time.sleep(0.2)
    stop(state_dir)
    raise RuntimeError(f"the app did not answer on {url} within {timeout:.0f} s; see {state_dir / 'app.log'}")


def stop(state_dir: Path) -> bool:
    """Stop the app of ``state_dir``; False if none was running."""
    state_dir = state_dir.resolve()
    pid = _running_pid(state_dir)
    _info_path(state_dir).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.local.dashboard", description=__doc__)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument(
        "--state-dir", type=Path, help="default: HELPERS_STATE_DIR or the project's .workspace"
    )
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or get_settings().state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "start":
        print(
            f"dashboard at {start(state_dir, args.port)} (log: {state_dir / 'app.log'}; `make stop` ends it)"
        )
    else:
        print("dashboard stopped" if stop(state_dir) else "no dashboard was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
