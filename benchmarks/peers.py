"""The peers: Feast's feature server (own venv, sqlite online store) and ``mlflow models serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from helpers.config import PROJECT_ROOT

FEAST_VIEW = "customer_stats"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def feast_venv(work: Path) -> Path:
    """``<work>/feast-venv`` with Feast installed (created on first use)."""
    venv = work / "feast-venv"
    if not (venv / "bin" / "feast").exists():
        print(f"installing Feast into {venv} (once)")
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--progress-bar", "off", "feast"], check=True
        )
    return venv


def feast_version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import feast; print(feast.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _feast_type(column: pd.Series) -> str:
    return "Int64" if pd.api.types.is_integer_dtype(column) else "Float64"


def feast_repo(work: Path, features: pd.DataFrame) -> Path:
    """A minimal feature repo over a Parquet of the same rows: entity, FileSource, FeatureView."""
    repo = work / f"feast-repo-{len(features)}"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    frame = features.assign(as_of=pd.to_datetime(features["as_of"]).dt.tz_localize("UTC"))
    frame.to_parquet(repo / "data" / "customer_features.parquet", index=False)
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent("""\
        project: bench
        registry: data/registry.db
        provider: local
        online_store:
          type: sqlite
          path: data/online.db
        entity_key_serialization_version: 3
        """)
    )
    fields = "\n".join(
        f'        Field(name="{c}", dtype={_feast_type(features[c])}),'
        for c in features.columns
        if c not in ("customer_id", "as_of")
    )
    (repo / "definitions.py").write_text(
        "from datetime import timedelta\n\n"
        "from feast import Entity, FeatureView, Field, FileSource\n"
        "from feast.types import Float64, Int64\n\n"
        'customer = Entity(name="customer_id", join_keys=["customer_id"])\n'
        'source = FileSource(path="data/customer_features.parquet", timestamp_field="as_of")\n'
        f'{FEAST_VIEW} = FeatureView(\n    name="{FEAST_VIEW}",\n    entities=[customer],\n'
        f"    ttl=timedelta(days=3650),\n    schema=[\n{fields}\n    ],\n    source=source,\n)\n"
    )
    return repo


def feast_apply_materialize(venv: Path, repo: Path, features: pd.DataFrame) -> float:
    """``feast apply`` then ``feast materialize`` of every row; returns materialize's seconds."""
    feast = str(venv / "bin" / "feast")
    subprocess.run([feast, "apply"], cwd=repo, check=True, capture_output=True, text=True)
    start = (pd.Timestamp(features["as_of"].min()) - pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    end = (pd.Timestamp(features["as_of"].max()) + pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    started = time.perf_counter()
    subprocess.run([feast, "materialize", start, end], cwd=repo, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s; see {log}")


@contextmanager
def _server(command: list[str], cwd: Path, health: str, log: Path, env: dict[str, str]) -> Iterator[int]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_ready(health, proc, 180, log)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def feast_serve(venv: Path, repo: Path, work: Path, workers: int) -> Iterator[tuple[str, int]]:
    """``feast serve --workers <workers>`` on 127.0.0.1; yields the ``/get-online-features`` URL, the pid."""
    port = free_port()
    # No access log and no worker recycling (its default restarts a worker every ~1,000 requests, which
    # would put restarts into Feast's tail latency).
    command = [str(venv / "bin" / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port)]
    command += ["--workers", str(workers), "--no-access-log", "--max-requests", "100000000"]
    with _server(
        command, repo, f"http://127.0.0.1:{port}/health", work / "feast-serve.log", dict(os.environ)
    ) as pid:
        yield f"http://127.0.0.1:{port}/get-online-features", pid


@contextmanager
def mlflow_serve(model_uri: str, work: Path, workers: int) -> Iterator[tuple[str, int]]:
    """``mlflow models serve -w <workers>`` (project venv, ``--env-manager local``); yields the
    ``/invocations`` URL and the pid.

    Each worker scores with one OpenMP/BLAS thread, as the local twin's model process does: one worker per
    core with a thread per core each would have every worker's trees wait for a busy core.
    """
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **ONE_THREAD}
    command = [
        str(bin_dir / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(workers),
    ]
    with _server(
        command, PROJECT_ROOT, f"http://127.0.0.1:{port}/ping", work / "mlflow-serve.log", env
    ) as pid:
        yield f"http://127.0.0.1:{port}/invocations", pid
