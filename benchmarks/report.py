"""The results table (Markdown), machine facts and the PNG plot."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

OURS = "local twin"
LOGGED = "local twin + inference table"  # the same endpoint logging every request to its payload table
UNLOGGED = "local twin, logging off"  # the same endpoint, runs paired with the LOGGED ones
PACKAGES = (
    "mlflow",
    "databricks-feature-engineering",
    "databricks-sdk",
    "fastapi",
    "uvicorn",
    "deltalake",
    "pandas",
    "scikit-learn",
)


@dataclass
class Row:
    workload: str
    system: str
    concurrency: int | None
    rps: float  # requests/s, or rows/s for publish and batch rows
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    requests: int | None = None
    ratio: float | None = None  # ours ÷ peer (throughput); logging on ÷ off
    runs: list[tuple[float, float]] | None = None  # (rps, p99 ms) of every run; the row shows the fastest
    cpu_us: float | None = None  # the server's CPU time per request, all its threads (logging runs)
    workers: int | None = None  # a peer server's worker processes
    busiest_share: list[float] | None = None  # per run: a peer's busiest process's share of its CPU time


def peer(name: str, workers: int) -> str:
    """A peer's system name with its worker count: ``mlflow models serve, 2 workers``."""
    return f"{name}, {workers} worker{'s' if workers > 1 else ''}"


def fastest(runs: list[Row]) -> Row:
    """One row for repeated runs: the fastest run's figures; errors, requests and (rps, p99) of every run."""
    best = max(runs, key=lambda r: r.rps)
    return Row(
        best.workload,
        best.system,
        best.concurrency,
        best.rps,
        best.p50_ms,
        best.p90_ms,
        best.p99_ms,
        errors=sum(r.errors or 0 for r in runs),
        requests=sum(r.requests or 0 for r in runs),
        runs=[(r.rps, r.p99_ms or 0.0) for r in runs],
    )


def fair_peers(rows: list[Row]) -> dict[tuple[str, int | None], Row]:
    """The peer each local twin row is compared with: per workload and concurrency, the most workers."""
    peers: dict[tuple[str, int | None], Row] = {}
    for r in rows:
        if r.system in (OURS, LOGGED, UNLOGGED):
            continue
        best = peers.get((r.workload, r.concurrency))
        if best is None or (r.workers or 0) > (best.workers or 0):
            peers[(r.workload, r.concurrency)] = r
    return peers


def add_ratios(rows: list[Row]) -> None:
    """Set ``ratio`` on the local twin's rows: its rate over its fair peer's (``fair_peers``)."""
    peers = fair_peers(rows)
    for row in rows:
        base = peers.get((row.workload, row.concurrency)) if row.system == OURS else None
        if base is not None and base.rps > 0:
            row.ratio = row.rps / base.rps


def one_worker_ratios(rows: list[Row]) -> list[str]:
    """The local twin's rate over the one-worker peer's, where that is not the fair peer already."""
    ours = {(r.workload, r.concurrency): r for r in rows if r.system == OURS}
    fair = fair_peers(rows)
    lines = []
    for r in rows:
        key = (r.workload, r.concurrency)
        twin = ours.get(key)
        if r.workers == 1 and twin is not None and fair.get(key) is not r and r.rps > 0:
            lines.append(f"{r.workload}, c={r.concurrency}: {twin.rps / r.rps:.2f}× {r.system}")
    return lines


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| workload | system | concurrency | rps (rows/s) | p50 ms | p90 ms | p99 ms | errors "
        "| ratio to peer |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        errors = "—" if r.errors is None else f"{r.errors} / {r.requests}"
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}×"
        lines.append(
            f"| {r.workload} | {r.system} | {r.concurrency or '—'} | {_f(r.rps)} | {_f(r.p50_ms, 2)} | "
            f"{_f(r.p90_ms, 2)} | {_f(r.p99_ms, 2)} | {errors} | {ratio} |"
        )
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_steadiness(tries: int = 10) -> str:
    """How steady the CPU is right now: one fixed pure-Python loop, timed ``tries`` times."""
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        times.append((time.perf_counter() - started) * 1000)
    fastest, slowest = min(times), max(times)
    return (
        f"a fixed loop took {fastest:.0f}–{slowest:.0f} ms over {tries} tries (+{slowest / fastest - 1:.0%})"
    )


def machine_facts(extra: dict[str, str]) -> str:
    wrk = "absent (in-repo Python generator used)"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (out.stdout or out.stderr).split("\n")[0].strip()
    facts = {
        "cores": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load generator": wrk,
        **{name: _version(name) for name in PACKAGES},
        **extra,
    }
    return "\n".join(f"- {k}: {v}" for k, v in facts.items())


def plot(rows: list[Row], path: Path) -> None:
    """Bars of requests/s and p99 per workload and concurrency, the local twin next to its peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fair = fair_peers(rows)
    timed = [
        r
        for r in rows
        if r.p99_ms is not None and (r.system == OURS or fair.get((r.workload, r.concurrency)) is r)
    ]
    groups = list(dict.fromkeys((r.workload, r.concurrency) for r in timed))
    systems = list(dict.fromkeys(r.system if r.system == OURS else "peer" for r in timed))
    labels = [f"{w}\nc={c}" for w, c in groups]
    x = np.arange(len(groups))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.4 * len(groups)), 8), sharex=True)
    for i, system in enumerate(systems):
        pick = {(r.workload, r.concurrency): r for r in timed if (r.system == OURS) == (system == OURS)}
        for ax, attr in zip(axes, ("rps", "p99_ms"), strict=True):
            values = [getattr(pick[g], attr) if g in pick else 0 for g in groups]
            ax.bar(x + (i - 0.5) * 0.4, values, width=0.4, label=system)
    axes[0].set_ylabel("requests/s (higher is better)")
    axes[1].set_ylabel("p99 latency, ms, log scale (lower is better)")
    axes[1].set_yscale("log")
    axes[1].set_xticks(x, labels, fontsize=8)
    axes[0].legend(title="peer = feast serve (lookups) / mlflow models serve (fraud)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
