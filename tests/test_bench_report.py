"""The benchmark's ratios (``benchmarks.report``): the local twin against the peer with a worker per core."""

from __future__ import annotations

from benchmarks.report import OURS, Row, add_ratios, one_worker_ratios, peer


def test_the_ratio_is_to_the_peer_with_most_workers_and_the_one_worker_ratio_is_listed() -> None:
    rows = [
        Row("fraud model", OURS, 8, 1200.0),
        Row("fraud model", peer("mlflow models serve", 2), 8, 400.0, workers=2),
        Row("fraud model", peer("mlflow models serve", 1), 8, 300.0, workers=1),
        Row("publish rows", OURS, None, 100.0),
        Row("publish rows", "feast materialize", None, 50.0),
    ]
    add_ratios(rows)
    assert rows[0].ratio == 3.0  # 1200 / 400: the two-worker peer, whichever row comes last
    assert rows[3].ratio == 2.0  # a peer without workers still counts
    assert one_worker_ratios(rows) == ["fraud model, c=8: 4.00× mlflow models serve, 1 worker"]
    assert peer("feast serve (sqlite)", 2) == "feast serve (sqlite), 2 workers"
