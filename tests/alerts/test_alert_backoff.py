"""Retry gaps of the alert outbox: exponential, capped, jittered."""

from __future__ import annotations

import random

from alerts.dispatch import backoff


def test_gaps_double_within_equal_jitter_and_stop_at_the_cap() -> None:
    rng = random.Random(7)
    for attempts in range(1, 12):
        d = min(60.0, 0.5 * 2 ** (attempts - 1))
        for _ in range(50):
            gap = backoff(attempts, 0.5, 60.0, rng)
            assert d / 2 <= gap <= d, (attempts, gap)


def test_jitter_spreads_workers_that_failed_together() -> None:
    rng = random.Random(1)
    gaps = {round(backoff(5, 1.0, 300.0, rng), 3) for _ in range(20)}
    assert len(gaps) > 15


def test_no_backoff_configured_means_no_wait() -> None:
    assert backoff(3, 0.0, 10.0, random.Random(0)) == 0.0
