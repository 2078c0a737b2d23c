"""The soak's verdict (``benchmarks.soak``): errors counted, memory slope measured after the warm-up."""

from __future__ import annotations

import pytest

from benchmarks.soak import Sample, send_open_loop, summarize


def _rss(mb_per_min: float, seconds: int = 60, start: float = 300.0) -> list[tuple[float, float]]:
    """One sample a second; the first 10 s climb steeply (warm-up), then ``mb_per_min``."""
    return [(t, start + min(t, 10) * 5 + max(t - 10, 0) * mb_per_min / 60) for t in range(seconds)]


def test_flat_memory_passes_and_growing_memory_fails() -> None:
    samples = [Sample(i / 10, "features" if i % 2 else "fraud", float(i % 7 + 1)) for i in range(600)]
    flat = summarize(samples, _rss(0.0), after_s=10)
    assert flat.sent == 600 and flat.errors == 0
    assert abs(flat.slope_mb_per_min) < 1e-6 and flat.flat(1.0)  # the warm-up climb is not counted
    assert flat.rss_start_mb == flat.rss_end_mb == 350.0
    assert set(flat.per_endpoint) == {"features", "fraud"} and flat.per_endpoint["fraud"][0] == 300

    leaking = summarize(samples, _rss(3.0), after_s=10)
    assert leaking.slope_mb_per_min == pytest.approx(3.0) and not leaking.flat(1.0)


def test_failed_requests_are_counted_and_too_few_rss_samples_are_not_flat() -> None:
    samples = [Sample(0.0, "fraud", 2.0, "HTTP 503" if i == 3 else "") for i in range(10)]
    summary = summarize(samples, _rss(0.0, seconds=12), after_s=10)
    assert summary.errors == 1 and summary.error_kinds == {"HTTP 503": 1}
    assert not summary.flat(1.0)  # two samples after the warm-up say nothing about a slope


def test_the_soak_targets_loopback_only() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        send_open_loop({"x": ("http://10.0.0.1:8080/x", ["{}"])}, {}, rate=1.0, duration=1.0)
