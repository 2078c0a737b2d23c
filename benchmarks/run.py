"""``python -m benchmarks``: build the data once, load each system in turn, write the table and plot.

Every server started here listens on 127.0.0.1 and is stopped before the run ends; durations are bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

from benchmarks import report
from benchmarks.load import generator_name, run_load
from benchmarks.report import LOGGED, OURS, UNLOGGED, Row

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
N_BODIES = 2_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers in the online store")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per load run")
    parser.add_argument("--repeat", type=int, default=3, help="load runs per workload (the fastest is shown)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each load run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="closed-loop connections")
    parser.add_argument(
        "--batch-rows", type=int, default=None, help="rows for score_batch (default: customers)"
    )
    parser.add_argument("--train-customers", type=int, default=20_000, help="customers behind training rows")
    parser.add_argument(
        "--logging-pairs", type=int, default=5, help="off/on run pairs behind the logging cost"
    )
    parser.add_argument(
        "--logging-duration", type=float, default=6.0, help="measured seconds per logging off/on run"
    )
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="worker processes per peer (default: cores)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-feast", action="store_true", help="no Feast peer (no venv install)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 customers, 5 s runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.duration, args.warmup = min(args.customers, 20_000), 5.0, 1.0
        args.logging_pairs, args.logging_duration, args.repeat = 2, 3.0, 1
    for name in ("customers", "train_customers", "cores"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.logging_pairs < 1 or args.logging_duration <= 0 or args.repeat < 1:
        parser.error("--repeat, --logging-pairs and --logging-duration must be positive")
    if args.duration <= 0 or args.warmup < 0 or any(c < 1 for c in args.concurrency):
        parser.error("--duration must be > 0, --warmup >= 0 and every --concurrency >= 1")
    if args.batch_rows is not None and args.batch_rows < 1:
        parser.error("--batch-rows must be positive")
    args.batch_rows = args.batch_rows or args.customers
    return args


def _json(value: object) -> str:
    return json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))


def _check(url: str, body: str, headers: dict[str, str]) -> None:
    """One request first: a broken endpoint fails the run loudly instead of measuring errors only."""
    request = urllib.request.Request(
        url, data=body.encode(), method="POST", headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        print(f"  check {url}: HTTP {response.status} {response.read(200).decode(errors='replace')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    state_dir = WORK / f"state-{args.customers}"
    os.environ["HELPERS_STATE_DIR"] = str(state_dir)
    if generator_name() != "wrk":
        print("wrk is not installed (`sudo apt-get install -y wrk`); using the in-repo Python load generator")

    from benchmarks import build as b
    from benchmarks import freshness, peers
    from helpers.local import continuous_sync

    started = time.perf_counter()
    steadiness_before = report.cpu_steadiness()
    built = b.build(state_dir, args.customers, args.seed, args.train_customers)
    rng = np.random.default_rng(args.seed)
    ids = built.features["customer_id"].to_numpy()
    by_id = built.features.set_index("customer_id")
    sample = built.transactions.sample(N_BODIES, replace=True, random_state=args.seed)[b.REQUEST_COLUMNS]
    requests = [
        dict(r, customer_id=int(c))
        for r, c in zip(sample.to_dict(orient="records"), rng.choice(ids, N_BODIES), strict=True)
    ]
    key_sets = {n: [rng.choice(ids, n).tolist() for _ in range(N_BODIES)] for n in (1, 10)}
    workloads = {f"lookup {n} key{'s' if n > 1 else ''}": keys for n, keys in key_sets.items()}

    def load(
        workload: str,
        system: str,
        url: str,
        bodies: list[str],
        headers: dict[str, str],
        concurrency: list[int] | None = None,
        *,
        duration: float | None = None,
        repeat: int | None = None,
        pid: int | None = None,
    ) -> list[Row]:
        """``repeat`` runs per concurrency, back to back after one warm-up; a row with the fastest.

        With the ``pid`` of a peer server, each run also records its busiest process's share of the CPU time
        its processes used (warm-up included): whether its workers shared the load.
        """
        out = []
        for c in concurrency or args.concurrency:
            runs, shares = [], []
            for i in range(repeat or args.repeat):
                processes = psutil.Process(pid).children(recursive=True) if pid else []
                before = [sum(p.cpu_times()[:2]) for p in processes]
                res = run_load(
                    url,
                    bodies,
                    WORK / "bodies.jsonl",
                    concurrency=c,
                    duration=duration or args.duration,
                    warmup=args.warmup if i == 0 else 0.0,
                    headers=headers,
                )
                used = [sum(p.cpu_times()[:2]) - b for p, b in zip(processes, before, strict=True)]
                if sum(used) > 0:
                    shares.append(max(used) / sum(used))
                print(
                    f"  {workload:<16} {system:<22} c={c:<3} {res.rps:9.1f} rps  p50 {res.p50_ms:7.2f}  "
                    f"p99 {res.p99_ms:7.2f} ms  errors {res.errors}/{res.requests}"
                )
                runs.append(
                    Row(
                        workload,
                        system,
                        c,
                        res.rps,
                        res.p50_ms,
                        res.p90_ms,
                        res.p99_ms,
                        res.errors,
                        res.requests,
                    )
                )
            out.append(report.fastest(runs))
            out[-1].busiest_share = shares or None
        return out

    rows: list[Row] = [Row("publish rows", OURS, None, args.customers / built.timings["publish_s"])]
    extra_facts = {
        "customers": f"{args.customers:,}",
        "load": f"{args.duration:g} s measured after "
        f"{args.warmup:g} s warm-up, closed loop, {N_BODIES} random bodies per workload",
    }
    from helpers import serving
    from helpers.local.server.process import read_info, stop_server

    try:
        print("local twin: deploying the Feature Serving and fraud endpoints")
        w, spec_url, fraud_url = b.deploy(built)
        auth = w.config.authenticate()
        for workload, keys in workloads.items():
            bodies = [_json({"dataframe_records": [{"customer_id": k} for k in ks]}) for ks in keys]
            _check(spec_url, bodies[0], auth)
            rows += load(workload, OURS, spec_url, bodies, auth)
        bodies = [_json({"dataframe_records": [r]}) for r in requests]
        _check(fraud_url, bodies[0], auth)
        rows += load("fraud model", OURS, fraud_url, bodies, auth)
        print(
            f"local twin: logging cost, the same lookups with the inference table off and on, "
            f"{args.logging_pairs} pair(s) in ABBA order"
        )
        bodies = [_json({"dataframe_records": [{"customer_id": k} for k in ks]}) for ks in key_sets[1]]

        def set_logging(on: bool) -> None:
            if on:
                serving.enable_inference_table(w, "bench-features", "bench", "serving", "bench_features")
            else:
                w.serving_endpoints.put_ai_gateway("bench-features")  # no inference table

        server = psutil.Process(read_info(state_dir).pid)

        for c in args.concurrency:

            def measure(on: bool, c: int = c) -> Row:
                system = LOGGED if on else UNLOGGED
                before = sum(server.cpu_times()[:2])
                row = load(
                    "lookup 1 key",
                    system,
                    spec_url,
                    bodies,
                    auth,
                    [c],
                    duration=args.logging_duration,
                    repeat=1,
                )[0]
                # The warm-up's requests are not counted, its CPU is: a slight overestimate, alike off and on.
                row.cpu_us = (sum(server.cpu_times()[:2]) - before) / (row.requests or 1) * 1e6
                return row

            rows += logging_rows(paired_runs(measure, set_logging, args.logging_pairs))
    finally:
        stop_server(state_dir)

    # Each peer gets as many worker processes as the machine has cores (the local twin uses a server process
    # and a process per served model), and is measured with one worker too.
    peer_workers = sorted({args.cores, 1}, reverse=True)
    extra_facts["peers"] = (
        f"`feast serve --workers N` and `mlflow models serve -w N`, N = {args.cores} (the cores) and N = 1; "
        "ratio = local twin ÷ the peer with N = cores"
    )
    if not args.skip_feast:
        venv = peers.feast_venv(WORK)
        extra_facts["feast"] = peers.feast_version(venv)
        repo = peers.feast_repo(WORK, built.features)
        print(f"feast: apply + materialize {args.customers:,} rows")
        seconds = peers.feast_apply_materialize(venv, repo, built.features)
        rows.append(Row("publish rows", "feast materialize", None, args.customers / seconds))
        names = [f"{peers.FEAST_VIEW}:{c}" for c in b.FEATURES]
        for workers in peer_workers:
            with peers.feast_serve(venv, repo, WORK, workers) as (url, pid):
                for workload, keys in workloads.items():
                    bodies = [_json({"features": names, "entities": {"customer_id": ks}}) for ks in keys]
                    _check(url, bodies[0], {})
                    system = report.peer("feast serve (sqlite)", workers)
                    rows += _with_workers(load(workload, system, url, bodies, {}, pid=pid), workers)

    bodies = []
    for r in requests:
        features = by_id.loc[r["customer_id"]]
        record = {c: (features[c] if c in b.FEATURES else r[c]) for c in built.model_columns}
        bodies.append(_json({"dataframe_records": [record]}))
    for workers in peer_workers:
        with peers.mlflow_serve(built.plain_model_uri, WORK, workers) as (url, pid):
            _check(url, bodies[0], {})
            system = report.peer("mlflow models serve", workers)
            rows += _with_workers(load("fraud model", system, url, bodies, {}, pid=pid), workers)

    print("local twin: continuous publish, commit-to-online time of single-row merges")
    fresh = freshness.continuous_freshness(state_dir, args.customers, seed=args.seed)
    extra_facts["continuous publish freshness"] = (
        f"{len(fresh)} single-row merges into a {args.customers:,}-row table published CONTINUOUS, from the "
        f"merge's commit to the row read online: median {np.median(fresh):.2f} s, max {max(fresh):.2f} s "
        f"(the tailer polls every {continuous_sync.POLL_SECONDS:g} s)"
    )
    print(f"  {extra_facts['continuous publish freshness']}")

    from benchmarks import job_start  # a job run's overhead beyond its notebook's work, with and without

    extra_facts |= job_start.facts(WORK)

    print(f"score_batch on {args.batch_rows:,} rows")
    rate, _ = b.score_batch_rate(built, args.batch_rows, args.seed)
    rows.append(Row("score_batch rows", OURS, None, rate))

    report.add_ratios(rows)
    extra_facts["CPU steadiness"] = f"at the start {steadiness_before}; at the end {report.cpu_steadiness()}"
    text = _document(args, rows, report.machine_facts(extra_facts), time.perf_counter() - started)
    print("\n" + text)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.md").write_text(text)
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / "latest.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    report.plot(rows, RESULTS / "latest.png")
    shutil.copyfile(RESULTS / "latest.png", RESULTS / f"{stamp}.png")
    print(f"wrote {RESULTS / 'latest.md'} and {RESULTS / 'latest.png'}")
    return 0


def _with_workers(rows: list[Row], workers: int) -> list[Row]:
    for row in rows:
        row.workers = workers
    return rows


def paired_runs(
    measure: Callable[[bool], Row], set_logging: Callable[[bool], None], n_pairs: int
) -> list[tuple[Row, Row]]:
    """``n_pairs`` (logging off, logging on) runs in ABBA order, so drift during the runs falls on both alike.

    After a logged run the next waits until the payload logger has written its last rows.
    """
    from helpers.local.server.inference_tables import FLUSH_SECONDS

    pairs = []
    for i in range(n_pairs):
        runs: dict[bool, Row] = {}
        for on in (False, True) if i % 2 == 0 else (True, False):
            set_logging(on)
            runs[on] = measure(on)
            if on:
                time.sleep(FLUSH_SECONDS + 1)
        pairs.append((runs[False], runs[True]))
    return pairs


def logging_rows(pairs: list[tuple[Row, Row]]) -> list[Row]:
    """A row for logging off and one for on, each its side's fastest run; the cost: on ÷ off."""
    off, on = report.fastest([p[0] for p in pairs]), report.fastest([p[1] for p in pairs])
    on.ratio = on.rps / off.rps if off.rps > 0 else None
    for row, side in ((off, 0), (on, 1)):  # the median server CPU per request of the side's runs
        row.cpu_us = float(np.median([p[side].cpu_us for p in pairs if p[side].cpu_us is not None]))
    return [off, on]


def _every_run(rows: list[Row]) -> str:
    lines = []
    for r in rows:
        if r.runs and len(r.runs) > 1:
            rates = ", ".join(f"{rps:,.0f}" for rps, _ in r.runs)
            p99s = ", ".join(f"{p99:.1f}" for _, p99 in r.runs)
            lines.append(f"- {r.workload}, {r.system}, c={r.concurrency}: {rates} rps (p99 {p99s} ms)")
    pairs = {(r.concurrency, r.system): r.runs for r in rows if r.system in (LOGGED, UNLOGGED) and r.runs}
    for c in sorted({c for c, _ in pairs}):
        off, on = pairs.get((c, UNLOGGED)), pairs.get((c, LOGGED))
        if off and on:
            ratios = [b[0] / a[0] for a, b in zip(off, on, strict=True) if a[0] > 0]
            lines.append(f"- logging on ÷ off, pair by pair, c={c}: {', '.join(f'{x:.3f}' for x in ratios)}")
    lines += [f"- local twin ÷ one-worker peer, {line}" for line in report.one_worker_ratios(rows)]
    for r in rows:
        if r.busiest_share and (r.workers or 0) > 1:
            shares = ", ".join(f"{x:.0%}" for x in r.busiest_share)
            lines.append(
                f"- {r.system}, {r.workload}, c={r.concurrency}: the busiest process's share of the CPU its "
                f"processes used, run by run: {shares}"
            )
    for r in rows:
        if r.cpu_us is not None:
            lines.append(
                f"- server CPU per request (median of runs), {r.system}, c={r.concurrency}: {r.cpu_us:.0f} µs"
            )
    return "\n".join(lines)


def _document(args: argparse.Namespace, rows: list[Row], facts: str, seconds: float) -> str:
    command = "python -m benchmarks " + (
        "--quick"
        if args.quick
        else f"--customers {args.customers} --duration {args.duration:g} --repeat {args.repeat}"
    )
    return (
        f"## Benchmark results ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`, "
        f"{seconds / 60:.1f} min)\n\n"
        f"{report.table(rows)}\n\n"
        "rps = requests/s (rows/s for `publish rows` and `score_batch rows`); ratio = local twin ÷ the peer "
        f"with {args.cores} workers, one per core (the local twin runs a server process, plus one process "
        "per served model version); the ratios to the one-worker peers are listed below. Each peer worker "
        "and the twin's model process score with one OpenMP/BLAS thread. "
        f"Each row is the fastest of {args.repeat} back-to-back runs of {args.duration:g} s (after one "
        "warm-up), as `timeit` takes the fastest: on a shared machine other work only ever slows a run down; "
        "errors and requests count every run, and every run is listed below.\n"
        f"Logging cost: the same endpoint with its inference table off (`{UNLOGGED}`) and on (`{LOGGED}`), "
        f"{args.logging_pairs} pairs of {args.logging_duration:g} s runs per concurrency in ABBA order "
        "(off-on, on-off, ...); the ratio is the fastest on ÷ the fastest off. The server's CPU time per "
        "request (all its threads, median of the runs) is listed below for both.\n"
        "Errors are non-2xx answers plus socket errors and timeouts. The fraud peer, `mlflow models serve`, "
        "does less work: every feature arrives in the request, it does no online lookup. `publish rows` for "
        "the local twin is its first `publish_table` (full snapshot), measured when the data was built. "
        "Both fraud servers serve the same model (`benchmarks/model.py`).\n\n"
        f"Machine:\n{facts}\n\n"
        f"Every run:\n{_every_run(rows)}\n"
    )
