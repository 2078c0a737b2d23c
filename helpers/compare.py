"""Plumbing of notebook 08 (the three architectures side by side): measuring throughput, the slide chart."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

TWIN_NOTE = "measured on the local twin: shapes, not a workspace's milliseconds"


def throughput(call: Callable[[int], Any], n: int, concurrency: int) -> float:
    """Answers per second when ``concurrency`` callers share ``n`` calls of ``call(i)``."""
    if n < 1 or concurrency < 1:
        raise ValueError(f"n and concurrency must be at least 1, got {n} and {concurrency}")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(call, range(n)))
    return n / (time.perf_counter() - started)


def summary(latencies_ms: Mapping[str, np.ndarray], per_second: Mapping[str, float]) -> pd.DataFrame:
    """One row per architecture: requests timed, p50/p90/p99 latency (ms) and answers per second."""
    rows = []
    for name, values in latencies_ms.items():
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        rows.append(
            {
                "architecture": name,
                "requests": len(values),
                "p50_ms": float(p50),
                "p90_ms": float(p90),
                "p99_ms": float(p99),
                "answers_per_s": float(per_second[name]),
            }
        )
    return pd.DataFrame(rows)


def plot_side_by_side(table: pd.DataFrame, overhead_limit_ms: float | None = None) -> Any:
    """The slide: time to an answer per architecture (p50 bar, p90-p99 whisker, log scale), throughput noted.

    ``overhead_limit_ms`` draws Databricks' published serving overhead as a labelled reference line.
    """
    import matplotlib.pyplot as plt

    rows = table.iloc[::-1].reset_index(drop=True)  # the first architecture on top
    fig, ax = plt.subplots(figsize=(12, 1.4 + 1.1 * len(rows)))
    positions = np.arange(len(rows))
    colours = plt.get_cmap("tab10")(np.arange(len(rows)))
    ax.barh(positions, rows.p50_ms, height=0.55, color=colours, alpha=0.85)
    ax.hlines(positions, rows.p90_ms, rows.p99_ms, color="k", lw=2)
    ax.plot(rows.p99_ms, positions, "k|", ms=14)
    for y, row in zip(positions, rows.itertuples(), strict=True):  # a column of figures right of the plot
        label = f"p50 {_ms(row.p50_ms)} · p99 {_ms(row.p99_ms)}\n{_rate(row.answers_per_s)}"
        ax.text(1.02, y, label, transform=ax.get_yaxis_transform(), va="center", fontsize=10)
    if overhead_limit_ms is not None:
        ax.axvline(overhead_limit_ms, color="grey", ls="--", lw=1)
        label = f"Databricks' published serving overhead: < {overhead_limit_ms:g} ms"
        ax.text(overhead_limit_ms * 1.08, -0.55, label, fontsize=8, color="grey", va="bottom")
    ax.set_xscale("log")
    ax.set_xlim(min(1.0, rows.p50_ms.min() / 2), rows.p99_ms.max() * 3)
    ax.set_yticks(positions, rows.architecture)
    ax.set_xlabel("time from request to answer (ms, log scale): bar = p50, whisker = p90 to p99")
    ax.set_ylim(-0.7, len(rows) - 0.4)
    ax.set_title(f"Three ways to serve the same model on the same data\n{TWIN_NOTE}", fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f} answers/s" if per_second >= 1 else f"{per_second * 60:,.1f} answers/min"


def _ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.1f} ms"
