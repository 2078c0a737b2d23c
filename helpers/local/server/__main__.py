"""``python -m helpers.local.server serve|start|stop|status`` (the state directory: ``HELPERS_STATE_DIR``).

``serve`` runs the server in the foreground on a free loopback port; ``start`` makes sure one runs in the
background; ``stop`` ends it; ``status`` says whether one answers.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

from helpers.config import get_settings
from helpers.local.server.layout import mlflow_uri
from helpers.local.server.process import (
    ServerInfo,
    ensure_server,
    healthy,
    log_path,
    read_info,
    remove_info,
    stop_server,
    write_info,
)


def serve(state_dir: Path, port: int = 0) -> None:
    """Run the server until SIGTERM/SIGINT; ``server.json`` exists while it runs."""
    # One OpenMP thread per predict: requests are a row or a few, and a thread team per call costs far more
    # than it saves (measured: HistGradientBoosting p50 208 ms -> 22 ms for one row on a busy 2-core machine).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from helpers.local.server.app import create_app

    state_dir.mkdir(parents=True, exist_ok=True)
    os.environ["HELPERS_STATE_DIR"] = str(state_dir)  # models loaded here read the same state
    uri = os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow_uri(state_dir))
    os.environ.setdefault("MLFLOW_REGISTRY_URI", uri)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so (else +40 ms a request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", port))
    info = ServerInfo(
        f"http://127.0.0.1:{sock.getsockname()[1]}", "dapi" + secrets.token_hex(16), os.getpid()
    )
    # httptools and uvloop: uvicorn's C HTTP parser and event loop. No proxy in front: no proxy headers.
    config = uvicorn.Config(
        create_app(state_dir, info.token),
        http="httptools",
        loop="uvloop",
        proxy_headers=False,
        log_level="info",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    write_info(state_dir, info)
    try:
        server.run(sockets=[sock])
    finally:
        remove_info(state_dir, info.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.local.server", description=__doc__)
    parser.add_argument("command", choices=["serve", "start", "stop", "status"])
    parser.add_argument(
        "--state-dir", type=Path, help="default: HELPERS_STATE_DIR or the project's .workspace"
    )
    parser.add_argument("--port", type=int, default=0, help="serve: the port (default: a free one)")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or get_settings().state_dir).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(state_dir, args.port)
    elif args.command == "start":
        info = ensure_server(state_dir)
        print(f"local workspace server at {info.url} (pid {info.pid}); log: {log_path(state_dir)}")
    elif args.command == "stop":
        print("stopped" if stop_server(state_dir) else "no server was running")
    else:
        info = read_info(state_dir)
        if info is None or not healthy(info):
            print("not running")
            return 1
        print(f"running at {info.url} (pid {info.pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
