"""A responder's "false positive" teaches the detector, through real Redis and a real receiver.

The war room records the mark with :class:`alerts.controls.Controls` (its API test checks that);
here the same call is made directly, and the leader's next tick learns the incident's buckets as
normal. The proof is behavioural: the same spike again pages nobody after the mark, and pages
again without it; a spike clearly worse than the marked one still pages.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis.asyncio as aredis

from contract.records import EnrichedEvent, Incident
from tests.alerts.test_alerting import T0, Harness, minute_of, r, settings_for, stream

__all__ = ["r"]  # the Redis fixture (and its clean-up of the harnesses) of the alerting tests
from tools.receiver import HttpReceiver

pytestmark = pytest.mark.integration

SPIKE = (45, 26)  # a minute of 45 mentions, 26 negative, against 8-14 a minute at 12 % negative
WORSE = (80, 68)


def calm(start: int, end: int, seed: int) -> list[EnrichedEvent]:
    lo, hi = T0 + timedelta(minutes=start), T0 + timedelta(minutes=end)
    return [e for e in stream(end, crisis=None, seed=seed) if lo <= e.occurred_at < hi]


def opened(incidents: list[Incident]) -> list[int]:
    """Minute (from T0) of each thread's OPEN."""
    return [int((i.opened_at - T0).total_seconds() // 60) for i in incidents if i.status == "open"]


async def run(r: aredis.Redis, unique: str, rx: HttpReceiver, *, mark: bool) -> tuple[Harness, list[int]]:
    h = Harness(settings_for(unique, rx), r)
    h.engine.feedback = h.dispatcher.controls
    await h.feed(calm(0, 100, seed=3) + minute_of(100, *SPIKE) + calm(101, 125, seed=4))
    first = [i for i in h.incidents if i.status == "open"]
    assert len(first) == 1 and opened(first) == [100], [(s.signal, s.bucket_start, s.z, s.severity) for s in h.signals]
    assert [i.status for i in h.incidents][-1] == "resolved"  # the spike's thread is over
    if mark:
        buckets = sorted({int(s.bucket_start.timestamp()) for i in h.incidents for s in i.signals})
        await h.dispatcher.controls.record(
            first[0].incident_id,
            "false_positive",
            who="alice",
            why="the newsletter went out",
            fields={"state": "false_positive"},
            details={"entity": "northwind", "buckets": buckets},
        )
    await h.feed(minute_of(130, *SPIKE) + calm(131, 160, seed=5))
    await h.feed(minute_of(160, *WORSE) + calm(161, 180, seed=6))
    return h, opened(h.incidents)


async def test_a_false_positive_is_learned_as_normal_and_the_same_spike_pages_nobody(
    r: aredis.Redis, unique: str
) -> None:
    with HttpReceiver() as rx:
        h, opens = await run(r, unique, rx, mark=True)
        assert opens == [100, 160]  # the same spike at 130 is normal now; a worse one still pages
        assert h.engine.absorbed >= 1
        assert await h.dispatcher.controls.feedback() == []  # learned, so taken off the queue
    await h.dispatcher.aclose()
    await r.delete(*[k async for k in r.scan_iter(f"al{unique}:*")])
    with HttpReceiver() as rx:
        h, opens = await run(r, unique, rx, mark=False)
        assert opens == [100, 130, 160]  # the control: unmarked, the same spike pages again
        assert h.engine.absorbed == 0


async def test_a_malformed_false_positive_entry_is_skipped_and_the_next_is_learned(
    r: aredis.Redis, unique: str
) -> None:
    with HttpReceiver() as rx:
        h = Harness(settings_for(unique, rx), r)
        h.engine.feedback = h.dispatcher.controls
        await h.feed(calm(0, 100, seed=3) + minute_of(100, *SPIKE) + calm(101, 125, seed=4))
        spike = int((T0 + timedelta(minutes=100)).timestamp())
        ctl = h.dispatcher.controls
        await ctl.record("x", "false_positive", who="bob", details={"entity": "northwind", "buckets": ["soon"]})
        await ctl.record("y", "false_positive", who="bob", details={"entity": "northwind", "buckets": [spike]})
        await h.feed(calm(125, 127, seed=7))
        assert h.engine.absorbed == 1 and await ctl.feedback() == []
