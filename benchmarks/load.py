"""Closed-loop HTTP load: ``wrk`` with ``post.lua`` when installed, else threads + ``http.client``.

Each run first sends traffic for ``warmup`` seconds (not measured), then measures for ``duration`` seconds.
Errors are non-2xx answers plus socket errors and timeouts; they are counted, never dropped.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

LUA_SCRIPT = Path(__file__).with_name("post.lua")


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def generator_name() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def run_load(
    url: str,
    bodies: list[str],
    bodies_file: Path,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Closed loop at ``concurrency`` connections against ``url`` (127.0.0.1 only), POSTing random bodies."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"url must point at 127.0.0.1, got {url!r}")
    bodies_file.write_text("\n".join(bodies) + "\n")
    headers = headers or {}
    if shutil.which("wrk"):
        if warmup > 0:
            _wrk(url, bodies_file, concurrency, warmup, headers)
        return _wrk(url, bodies_file, concurrency, duration, headers)
    if warmup > 0:
        _python_load(url, bodies, concurrency, warmup, headers)
    return _python_load(url, bodies, concurrency, duration, headers)


def _wrk(
    url: str, bodies_file: Path, concurrency: int, duration: float, headers: dict[str, str]
) -> LoadResult:
    command = [
        "wrk",
        "-t",
        str(min(concurrency, 2)),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(duration))}s",
    ]
    command += ["--timeout", "10s", "-s", str(LUA_SCRIPT)]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    command += [url, "--", str(bodies_file)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(line.removeprefix("BENCH_JSON "))
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return LoadResult(
        requests=s["requests"],
        errors=errors,
        seconds=s["duration_us"] / 1e6,
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        generator="wrk",
    )


def _python_load(
    url: str, bodies: list[str], concurrency: int, duration: float, headers: dict[str, str]
) -> LoadResult:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    all_headers = {"Content-Type": "application/json", **headers}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    deadline = time.perf_counter() + duration

    def worker(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        while time.perf_counter() < deadline:
            body = bodies[rng.randrange(len(bodies))].encode()
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=all_headers)
                response = conn.getresponse()
                response.read()
                if not 200 <= response.status < 300:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            latencies[i].append((time.perf_counter() - started) * 1000)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    flat = np.array([x for chunk in latencies for x in chunk] or [0.0])
    p50, p90, p99 = (float(v) for v in np.percentile(flat, [50, 90, 99]))
    return LoadResult(sum(map(len, latencies)), sum(errors), seconds, p50, p90, p99, "python")
