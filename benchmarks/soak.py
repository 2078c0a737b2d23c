"""``python -m benchmarks.soak``: a bounded soak of the local workspace server at a fixed request rate.

Builds small data (``benchmarks.build``), serves the Feature Serving and fraud model endpoints, and sends
requests open loop (request ``i`` leaves at ``i / rate`` seconds whatever the answers do; ``--fraud-share`` of
them to the fraud model, the rest to the feature lookup) for ``--warmup`` plus ``--duration`` seconds, to
127.0.0.1 only. The RSS of the server and its model processes is sampled every second. Latency is counted
from the scheduled send time, so a server that falls behind shows it (no coordinated omission).

Writes ``benchmarks/results/soak-latest.md`` and ``soak-latest.png``; exits 1 if any request failed or the
RSS grew faster than ``--max-slope`` MB/min after the ``--warmup`` seconds (load at the same rate, with
its requests counted, but not its memory growth). The warm-up is long because the server's memory settles
slowly: at 200 req/s on a shared 2-core machine its RSS climbed ~9 MB over three minutes, then stayed within
a MB for the next two (measured: slope per minute 3.6, 3.5, 1.7, -0.0, 0.6); worker threads coming and going
move it in steps of about a MB, hence a limit of 2 MB/min (170 bytes a request at 200 req/s).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
N_BODIES = 2_000
SENDERS = 32  # connections: enough that a slow answer never delays the next scheduled request
ANSWER_GRACE = 30.0  # seconds after the last request is due: what is still unanswered then has failed
IDLE_CLOSE = 2.0  # seconds: a connection idle longer is replaced (uvicorn closes idle ones after 5 s)


@dataclass(frozen=True)
class Sample:
    """One request: when it was due (s from the start), which endpoint, its latency and its error, if any."""

    due_s: float
    endpoint: str
    latency_ms: float
    error: str = ""  # "" for a 2xx answer, else "HTTP <status>" or the exception's name


@dataclass(frozen=True)
class Summary:
    sent: int
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float
    p99_ms: float
    per_endpoint: dict[str, tuple[int, float, float]]  # requests, p50, p99
    rss_start_mb: float
    rss_end_mb: float
    slope_mb_per_min: float  # least-squares slope of RSS after the warm-up

    def flat(self, max_slope: float) -> bool:
        return self.slope_mb_per_min < max_slope


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, in all")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--customers", type=int, default=20_000, help="customers in the online store")
    parser.add_argument("--train-customers", type=int, default=5_000, help="customers behind training rows")
    parser.add_argument(
        "--fraud-share", type=float, default=0.1, help="share of the requests that go to the fraud model"
    )
    parser.add_argument(
        "--warmup", type=float, default=180.0, help="seconds of load before the memory counts (see above)"
    )
    parser.add_argument("--max-slope", type=float, default=2.0, help="flat memory: RSS slope below MB/min")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if min(args.rate, args.duration, args.customers, args.train_customers) <= 0 or args.warmup < 0:
        parser.error("--rate, --duration, --customers and --train-customers must be positive, --warmup >= 0")
    if not 0 <= args.fraud_share <= 1:
        parser.error("--fraud-share must be between 0 and 1")
    return args


def send_open_loop(
    targets: dict[str, tuple[str, list[str]]],
    headers: dict[str, str],
    rate: float,
    duration: float,
    shares: dict[str, float] | None = None,
) -> list[Sample]:
    """POST to ``targets`` (name -> (url, bodies)) at ``rate`` per second for ``duration`` seconds.

    Request ``i`` goes to a target drawn with ``shares`` (default: equal); a request still unanswered
    ``ANSWER_GRACE`` seconds after the last one was due counts as failed.
    """
    for url, _ in targets.values():
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the soak only targets 127.0.0.1, got {url!r}")
    weights = np.array([(shares or {}).get(name, 1.0) for name in targets])
    n = int(rate * duration)
    names = list(np.random.default_rng(0).choice(list(targets), n, p=weights / weights.sum()))
    due: queue.Queue[tuple[int, float] | None] = queue.Queue()
    samples: list[Sample] = []
    lock = threading.Lock()
    all_headers = {"Content-Type": "application/json", **headers}
    start = time.perf_counter() + 0.5

    def sender() -> None:
        connections: dict[str, tuple[http.client.HTTPConnection, float]] = {}  # name -> (conn, last used)
        while (item := due.get()) is not None:
            i, at = item
            name = names[i]
            url, bodies = targets[name]
            parts = urlsplit(url)
            conn, used = connections.pop(name, (None, 0.0))
            if conn is not None and time.perf_counter() - used > IDLE_CLOSE:
                conn.close()  # the server may be closing it right now: never race its keep-alive timeout
                conn = None
            conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=ANSWER_GRACE)
            error = ""
            try:
                conn.request("POST", parts.path, body=bodies[i % len(bodies)], headers=all_headers)
                response = conn.getresponse()
                response.read()
                if not 200 <= response.status < 300:
                    error = f"HTTP {response.status}"
                connections[name] = (conn, time.perf_counter())
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
                conn.close()
            latency = (time.perf_counter() - at) * 1000
            with lock:
                samples.append(Sample(at - start, name, latency, error))
        for conn, _ in connections.values():
            conn.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for i in range(n):
        at = start + i / rate
        time.sleep(max(0.0, at - time.perf_counter()))
        due.put((i, at))
    for _ in threads:
        due.put(None)
    cutoff = time.perf_counter() + ANSWER_GRACE
    for thread in threads:
        thread.join(timeout=max(0.0, cutoff - time.perf_counter()))
    with lock:
        answered = list(samples)
    unanswered = Sample(duration, "unanswered", ANSWER_GRACE * 1000, "unanswered")
    answered += [unanswered] * (n - len(answered))  # still queued or waiting when time was up: failed
    return sorted(answered, key=lambda s: s.due_s)


class RssSampler:
    """Samples the resident set size of a process and its descendants (the server, its fork server and model
    replicas) every ``interval`` seconds in a background thread."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (seconds from start, MB)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            rss = _tree_rss(self._process) / 2**20
            self.samples.append((time.perf_counter() - started, rss))
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def summarize(samples: list[Sample], rss: list[tuple[float, float]], after_s: float) -> Summary:
    """Counts, latency percentiles and the RSS slope (MB/min) of the samples taken after ``after_s``."""
    latencies = np.array([s.latency_ms for s in samples] or [0.0])
    per_endpoint = {}
    for name in sorted({s.endpoint for s in samples}):
        mine = np.array([s.latency_ms for s in samples if s.endpoint == name])
        per_endpoint[name] = (len(mine), float(np.percentile(mine, 50)), float(np.percentile(mine, 99)))
    times = np.array([t for t, _ in rss])
    mb = np.array([m for _, m in rss])
    late = times >= after_s
    slope = float(np.polyfit(times[late] / 60, mb[late], 1)[0]) if late.sum() >= 3 else float("nan")
    return Summary(
        sent=len(samples),
        errors=sum(bool(s.error) for s in samples),
        error_kinds=dict(Counter(s.error for s in samples if s.error)),
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        per_endpoint=per_endpoint,
        rss_start_mb=float(mb[late][0]) if late.any() else float("nan"),
        rss_end_mb=float(mb[-1]) if len(mb) else float("nan"),
        slope_mb_per_min=slope,
    )


def plot(samples: list[Sample], rss: list[tuple[float, float]], path: Path) -> None:
    """RSS over time above, per-second latency p50/p99 per endpoint below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot([t for t, _ in rss], [m for _, m in rss], color="tab:purple")
    top.set_ylabel("server + model processes RSS (MB)")
    top.set_title("Soak: server memory and latency at a fixed request rate")
    for name in sorted({s.endpoint for s in samples}):
        by_second: dict[int, list[float]] = {}
        for s in samples:
            if s.endpoint == name:
                by_second.setdefault(int(s.due_s), []).append(s.latency_ms)
        seconds = sorted(by_second)
        for q, style in ((50, "-"), (99, ":")):
            values = [np.percentile(by_second[x], q) for x in seconds]
            bottom.plot(seconds, values, style, label=f"{name} p{q}")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def document(args: argparse.Namespace, summary: Summary, verdict: str) -> str:
    rows = "\n".join(
        f"| {name} | {n:,} | {p50:.1f} | {p99:.1f} |" for name, (n, p50, p99) in summary.per_endpoint.items()
    )
    features = 1 - args.fraud_share
    return f"""# Soak of the local workspace server

{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {args.customers:,} customers online: `python -m benchmarks.soak
--rate {args.rate:g} --warmup {args.warmup:g} --duration {args.duration:g} --fraud-share {args.fraud_share}`.
Open loop: requests leave on a fixed schedule over {SENDERS} keep-alive connections, {features:.0%} to the
Feature Serving endpoint (one key) and {args.fraud_share:.0%} to the fraud model endpoint (one transaction,
its features looked up); latency counts from the scheduled send time. Shared 2-core machine: noisy.

**{verdict}**

| figure | value |
|---|---|
| requests sent | {summary.sent:,} |
| errors | {summary.errors} {summary.error_kinds or ""} |
| latency p50 / p99 (ms) | {summary.p50_ms:.1f} / {summary.p99_ms:.1f} |
| RSS (server + models) after warm-up / at end, MB | {summary.rss_start_mb:.0f} / {summary.rss_end_mb:.0f} |
| RSS slope after the warm-up (MB/min) | {summary.slope_mb_per_min:+.2f} (flat: below {args.max_slope:g}) |

| endpoint | requests | p50 (ms) | p99 (ms) |
|---|---|---|---|
{rows}

![RSS and latency over time](soak-latest.png)
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state_dir = WORK / f"soak-{args.customers}"
    os.environ["HELPERS_STATE_DIR"] = str(state_dir)
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)

    from benchmarks import build as b
    from helpers.local.server.process import read_info, stop_server

    built = b.build(state_dir, args.customers, args.seed, args.train_customers)
    rng = np.random.default_rng(args.seed)
    ids = rng.choice(built.features["customer_id"].to_numpy(), N_BODIES)
    rows = built.transactions.sample(N_BODIES, replace=True, random_state=args.seed)[b.REQUEST_COLUMNS]
    records = [dict(r, customer_id=int(c)) for r, c in zip(rows.to_dict(orient="records"), ids, strict=True)]
    try:
        w, spec_url, fraud_url = b.deploy(built)
        info = read_info(state_dir)
        assert info is not None
        lookups = [json.dumps({"dataframe_records": [{"customer_id": int(c)}]}) for c in ids]
        scores = [json.dumps({"dataframe_records": [r]}, default=str) for r in records]
        targets = {"features": (spec_url, lookups), "fraud": (fraud_url, scores)}
        headers = w.config.authenticate()  # type: ignore[attr-defined]
        shares = {"features": 1 - args.fraud_share, "fraud": args.fraud_share}
        seconds = args.warmup + args.duration
        print(f"soak: {args.rate:g} req/s for {seconds:g} s against server pid {info.pid}")
        with RssSampler(info.pid) as sampler:
            samples = send_open_loop(targets, headers, args.rate, seconds, shares)
    finally:
        stop_server(state_dir)

    summary = summarize(samples, sampler.samples, args.warmup)
    failed = []
    if summary.errors:
        failed.append(f"{summary.errors} request(s) failed")
    if not summary.flat(args.max_slope):
        failed.append(f"RSS grew {summary.slope_mb_per_min:+.2f} MB/min (limit {args.max_slope:g})")
    verdict = "FAILED: " + "; ".join(failed) if failed else "PASSED: 0 errors, flat memory"
    text = document(args, summary, verdict)
    (RESULTS / "soak-latest.md").write_text(text)
    plot(samples, sampler.samples, RESULTS / "soak-latest.png")
    print(text)
    print(f"wrote {RESULTS / 'soak-latest.md'} and {RESULTS / 'soak-latest.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
