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
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

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
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per load run")
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
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-feast", action="store_true", help="no Feast peer (no venv install)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 customers, 5 s runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.duration, args.warmup = min(args.customers, 20_000), 5.0, 1.0
        args.logging_pairs, args.logging_duration = 2, 3.0
    for name in ("customers", "train_customers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.logging_pairs < 1 or args.logging_duration <= 0:
        parser.error("--logging-pairs and --logging-duration must be positive")
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
    from benchmarks import peers

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
        duration: float | None = None,
    ) -> list[Row]:
        out = []
        for c in concurrency or args.concurrency:
            res = run_load(
                url,
                bodies,
                WORK / "bodies.jsonl",
                concurrency=c,
                duration=duration or args.duration,
                warmup=args.warmup,
                headers=headers,
            )
            print(
                f"  {workload:<16} {system:<22} c={c:<3} {res.rps:9.1f} rps  p50 {res.p50_ms:7.2f}  "
                f"p99 {res.p99_ms:7.2f} ms  errors {res.errors}/{res.requests}"
            )
            out.append(
                Row(
                    workload, system, c, res.rps, res.p50_ms, res.p90_ms, res.p99_ms, res.errors, res.requests
                )
            )
        return out

    rows: list[Row] = [Row("publish rows", OURS, None, args.customers / built.timings["publish_s"])]
    extra_facts = {
        "customers": f"{args.customers:,}",
        "load": f"{args.duration:g} s measured after "
        f"{args.warmup:g} s warm-up, closed loop, {N_BODIES} random bodies per workload",
    }
    from helpers import serving
    from helpers.local.server.process import stop_server

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

        for c in args.concurrency:

            def measure(on: bool, c: int = c) -> Row:
                system = LOGGED if on else UNLOGGED
                return load("lookup 1 key", system, spec_url, bodies, auth, [c], args.logging_duration)[0]

            rows += logging_rows(paired_runs(measure, set_logging, args.logging_pairs))
    finally:
        stop_server(state_dir)

    if not args.skip_feast:
        venv = peers.feast_venv(WORK)
        extra_facts["feast"] = peers.feast_version(venv)
        repo = peers.feast_repo(WORK, built.features)
        print(f"feast: apply + materialize {args.customers:,} rows")
        seconds = peers.feast_apply_materialize(venv, repo, built.features)
        rows.append(Row("publish rows", "feast materialize", None, args.customers / seconds))
        with peers.feast_serve(venv, repo, WORK) as url:
            names = [f"{peers.FEAST_VIEW}:{c}" for c in b.FEATURES]
            for workload, keys in workloads.items():
                bodies = [_json({"features": names, "entities": {"customer_id": ks}}) for ks in keys]
                _check(url, bodies[0], {})
                rows += load(workload, "feast serve (sqlite)", url, bodies, {})

    with peers.mlflow_serve(built.plain_model_uri, WORK) as url:
        bodies = []
        for r in requests:
            features = by_id.loc[r["customer_id"]]
            record = {c: (features[c] if c in b.FEATURES else r[c]) for c in built.model_columns}
            bodies.append(_json({"dataframe_records": [record]}))
        _check(url, bodies[0], {})
        rows += load("fraud model", "mlflow models serve", url, bodies, {})

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
    """A row for logging off and one for on, each its side's fastest run; the cost: fastest on ÷ fastest off.

    The fastest run, as ``timeit`` takes the fastest: on a shared machine the rest of it only ever slows a
    run down. Errors and requests count every run.
    """
    best = []
    for runs in ([p[0] for p in pairs], [p[1] for p in pairs]):
        row = replace(max(runs, key=lambda r: r.rps))
        row.errors = sum(r.errors or 0 for r in runs)
        row.requests = sum(r.requests or 0 for r in runs)
        row.pair_ratios = None
        best.append(row)
    best[1].ratio = best[1].rps / best[0].rps if best[0].rps > 0 else None
    best[1].pair_ratios = [on.rps / off.rps for off, on in pairs if off.rps > 0]
    best[1].run_rates = [[off.rps, on.rps] for off, on in pairs]
    return best


def _logging_runs(rows: list[Row]) -> str:
    parts = []
    for r in rows:
        if r.pair_ratios is not None and r.run_rates is not None:
            off = ", ".join(f"{a:,.0f}" for a, _ in r.run_rates)
            on = ", ".join(f"{b:,.0f}" for _, b in r.run_rates)
            parts.append(
                f"c={r.concurrency}: off {off}; on {on}; median of the pairs' on ÷ off "
                f"{np.median(r.pair_ratios):.3f}"
            )
    return "\n".join(f"- {p}" for p in parts)


def _document(args: argparse.Namespace, rows: list[Row], facts: str, seconds: float) -> str:
    command = "python -m benchmarks " + (
        "--quick" if args.quick else f"--customers {args.customers} --duration {args.duration:g}"
    )
    return (
        f"## Benchmark results ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`, "
        f"{seconds / 60:.1f} min)\n\n"
        f"{report.table(rows)}\n\n"
        "rps = requests/s (rows/s for `publish rows` and `score_batch rows`); ratio = local twin ÷ peer.\n"
        f"Logging cost: the same endpoint with its inference table off (`{UNLOGGED}`) and on (`{LOGGED}`), "
        f"{args.logging_pairs} pair(s) of {args.logging_duration:g} s runs per concurrency in ABBA order "
        "(off-on, on-off, ...). Each row is its side's fastest run, as `timeit` takes the fastest: on a "
        "shared machine other work only ever slows a run down (errors and requests count every run). "
        "The ratio is fastest on ÷ fastest off. Every run's requests/s:\n"
        f"{_logging_runs(rows)}\n"
        "Errors are non-2xx answers plus socket errors and timeouts. The fraud peer, `mlflow models serve`, "
        "does less work: every feature arrives in the request, it does no online lookup. `publish rows` for "
        "the local twin is its first `publish_table` (full snapshot), measured when the data was built. "
        "Both fraud servers serve the same model (`benchmarks/model.py`).\n\n"
        f"Machine:\n{facts}\n"
    )
