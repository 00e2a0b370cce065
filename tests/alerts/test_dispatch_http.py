"""alerts.dispatch through real Redis and real Apprise, posting to a real local HTTP receiver.

Nothing is mocked: Apprise's json:// and form:// plugins make real HTTP requests to
:class:`tools.receiver.HttpReceiver`, and every dedupe mark, claim, held update and counter lives
in the Redis of ``REPMON_TEST_REDIS`` under a key prefix unique to the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aredis

from alerts.dispatch import Delivery, Dispatcher
from contract.records import Incident, Signal, TopMention
from infra.settings import AlertSettings, Route
from tests.conftest import free_port, redis_server
from tools.receiver import HttpReceiver, Received

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 20, tzinfo=UTC)


def incident(
    status: str = "open",
    seq: int = 1,
    severity: str = "warning",
    *,
    entity: str = "northwind",
    iid: str = "inc-northwind-20261102T0920-e7b252d5",
    team: str | None = "cx",
) -> Incident:
    signal = Signal(
        signal_id=f"sig-{seq}",
        entity=entity,
        signal="negative_share",
        bucket_start=T0 + timedelta(minutes=seq - 1),
        bucket_seconds=60,
        value=0.62,
        baseline=0.14,
        scale=0.05,
        z=9.1,
        support=80,
        severity="critical" if severity == "critical" else "warning",
        detector="ew-seasonal-binomial-v1",
    )
    resolved = status == "resolved"
    return Incident(
        incident_id=iid,
        entity=entity,
        status=status,
        seq=seq,
        severity=severity,
        opened_at=T0,
        updated_at=T0 + timedelta(minutes=seq),
        resolved_at=T0 + timedelta(minutes=seq) if resolved else None,
        title=f"{entity} - negative share",
        summary="No crisis signal for 15 buckets." if resolved else "negative share 62% vs baseline 14%",
        signals=[] if resolved else [signal],
        top_mentions=[
            TopMention(
                event_id="t:1",
                text="the app is down again and support is useless " * 4,
                sentiment=-0.8,
                impact=3.0,
                url="https://social.example/p/1",
            )
        ],
        top_aspects=[("app", 40), ("support", 12)],
        top_terms=[("down", 31)],
        evidence={
            "window": [T0.isoformat(), (T0 + timedelta(minutes=1)).isoformat()],
            "bucket_seconds": 60,
            "detectors": ["ew-seasonal-binomial-v1"],
            "sentiment_model": "vader+sgd-7",
            "team": team,
        },
    )


def settings(*routes: Route, **kw: Any) -> AlertSettings:
    base: dict[str, Any] = {
        "routes": list(routes),
        "console": False,
        "cooldown_seconds": 600,
        "retry_backoff_seconds": 0.05,
        "timeout_seconds": 5,
    }
    base.update(kw)
    return AlertSettings.model_validate(base)


def route(name: str, *urls: str, **kw: Any) -> Route:
    return Route.model_validate({"name": name, "urls": list(urls), "rate_per_second": 50, **kw})


@pytest.fixture
def prefix(unique: str) -> str:
    return f"t{unique}"


@pytest.fixture
async def r(aredis: aredis.Redis, prefix: str) -> AsyncIterator[aredis.Redis]:
    yield aredis
    keys = [k async for k in aredis.scan_iter(f"{prefix}:*")]
    if keys:
        await aredis.delete(*keys)


@pytest.fixture
def rx() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


def statuses(ds: list[Delivery]) -> dict[str, str]:
    return {d.route: d.status for d in ds}


FINAL = frozenset({"delivered", "dead", "duplicate", "filtered"})


class Outcomes:
    """What the route senders report to ``on_delivery``, with a wait on a condition."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self._cond = asyncio.Condition()

    async def add(self, d: Delivery) -> None:
        async with self._cond:
            self.items.append(d)
            self._cond.notify_all()

    async def wait(self, pred: Callable[[list[Delivery]], bool], timeout: float = 10.0) -> list[Delivery]:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: pred(self.items)), timeout)
            return list(self.items)

    def final(self, route: str, iid: str, seq: int, since: int = 0) -> Delivery | None:
        """The last final outcome of a message (among the outcomes from index ``since`` on)."""
        done = [
            x for x in self.items[since:] if (x.route, x.incident_id, x.seq) == (route, iid, seq) and x.status in FINAL
        ]
        return done[-1] if done else None


Make = Callable[..., tuple[Dispatcher, Outcomes]]


@pytest.fixture
async def make(r: aredis.Redis, prefix: str) -> AsyncIterator[Make]:
    """Dispatchers on the test's Redis and prefix (as many workers as asked), stopped at the end."""
    made: list[Dispatcher] = []

    def _make(s: AlertSettings, redis: aredis.Redis | None = None) -> tuple[Dispatcher, Outcomes]:
        out = Outcomes()
        d = Dispatcher(s, redis or r, key_prefix=prefix)
        d.on_delivery = out.add
        made.append(d)
        return d, out

    yield _make
    for d in made:
        await d.aclose()


async def send(d: Dispatcher, out: Outcomes, inc: Incident, timeout: float = 10.0) -> list[Delivery]:
    """``dispatch``, then wait for the final outcome of every queued message: what reached the channel."""
    since = len(out.items)
    first = await d.dispatch(inc)
    queued = [x for x in first if x.status == "queued"]
    await out.wait(lambda _: all(out.final(x.route, x.incident_id, x.seq, since) for x in queued), timeout)
    return [out.final(x.route, x.incident_id, x.seq, since) or x if x.status == "queued" else x for x in first]


async def wait_for(rx: HttpReceiver, what: Any, timeout: float = 10.0) -> list[Received]:
    """Wait on the receiver's condition in a thread, keeping the event loop free."""
    return await asyncio.to_thread(rx.wait_for, what, timeout)


# (a) ---------------------------------------------------------------------------------------
async def test_open_incident_arrives_once_explained_and_redelivery_is_a_duplicate(
    r: aredis.Redis, prefix: str, rx: HttpReceiver, make: Make
) -> None:
    d, out = make(settings(route("cx", rx.apprise_url("/cx"))))
    inc = incident("open", 1, "critical")

    first = await send(d, out, inc)
    assert [(x.route, x.status, x.attempts) for x in first] == [("cx", "delivered", 1)]
    [got] = rx.requests
    assert got.path == "/cx" and got.headers["Content-Type"].startswith("application/json")
    assert got.idempotency_key == d.idempotency_key("cx", inc.incident_id, 1)
    assert got.json["type"] == "failure"
    assert got.title.startswith("[CRITICAL] OPEN: northwind") and f"{inc.incident_id} #1" in got.title
    body = got.message
    assert "negative share 62% vs baseline 14% (z=9.1, n=80)" in body
    assert "Active since 2026-11-02T09:20:00Z" in body
    assert "the app is down again" in body and "https://social.example/p/1" in body
    assert "Top aspects: app (40), support (12)" in body and "Evidence: window" in body
    assert await r.exists(f"{prefix}:alert:delivered:cx:{inc.incident_id}:1")
    assert 29 * 86400 < await r.ttl(f"{prefix}:alert:delivered:cx:{inc.incident_id}:1") <= 30 * 86400

    again = await d.dispatch(inc)
    assert statuses(again) == {"cx": "duplicate"}
    # a restarted worker (new Dispatcher, same Redis) does not send it either
    d2, _ = make(d.settings)
    again2 = await d2.dispatch(inc)
    assert statuses(again2) == {"cx": "duplicate"}
    assert len(rx.attempts) == 1
    assert await d.stats() == {"delivered": 1, "duplicate": 2}
    assert await d.pending() == {"cx": 0}


# (b) ---------------------------------------------------------------------------------------
async def test_failing_channel_is_retried_and_gets_the_message_once(make: Make) -> None:
    with HttpReceiver(fail_first=2) as rx:
        d, out = make(settings(route("cx", rx.apprise_url("/cx"))))
        [res] = await send(d, out, incident())
        assert (res.status, res.attempts, res.error) == ("delivered", 3, None)
        assert [a.status for a in rx.attempts] == [500, 500, 200]
        assert len({a.idempotency_key for a in rx.attempts}) == 1  # the same key on every attempt
        assert len(rx.requests) == 1
        assert [x.status for x in out.items] == ["retrying", "retrying", "delivered"]
        assert statuses(await d.dispatch(incident())) == {"cx": "duplicate"}
        assert len(rx.attempts) == 3


async def test_multi_url_route_retries_only_the_url_that_failed(make: Make) -> None:
    with HttpReceiver() as ok, HttpReceiver(fail_first=1) as flaky:
        d, out = make(settings(route("both", ok.apprise_url("/ok"), flaky.apprise_url("/flaky"))))
        [res] = await send(d, out, incident())
        assert (res.status, res.attempts) == ("delivered", 2)
        assert len(ok.attempts) == 1 and len(ok.requests) == 1
        assert len(flaky.attempts) == 2 and len(flaky.requests) == 1


async def test_two_workers_never_send_the_same_message_concurrently(make: Make) -> None:
    with HttpReceiver(delay=0.3) as rx:
        s = settings(route("cx", rx.apprise_url("/cx")))
        (a, out_a), (b, out_b) = make(s), make(s)
        ra, rb = await asyncio.gather(a.dispatch(incident()), b.dispatch(incident()))
        assert sorted([ra[0].status, rb[0].status]) == ["duplicate", "queued"]
        waits = [
            asyncio.create_task(o.wait(lambda xs: any(x.status == "delivered" for x in xs))) for o in (out_a, out_b)
        ]
        await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        assert len(rx.attempts) == 1
        assert [x.status for x in out_a.items + out_b.items] == ["delivered"]


async def test_slow_channel_times_out_without_blocking_the_loop(make: Make) -> None:
    with HttpReceiver(delay=3.0) as rx:
        d, out = make(settings(route("cx", rx.apprise_url("/cx")), timeout_seconds=0.5, retry_backoff_seconds=5))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        t = time.monotonic()
        [queued] = await d.dispatch(incident())
        assert queued.status == "queued" and time.monotonic() - t < 0.5  # dispatch never waits for a channel
        [res] = await out.wait(lambda xs: bool(xs))
        took = time.monotonic() - t
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert res.status == "retrying" and res.error is not None and res.retry_at is not None
        assert took < 2.5, took
        assert ticks >= took / 0.02 * 0.5, (ticks, took)  # the loop kept running while Apprise waited


# (c) ---------------------------------------------------------------------------------------
async def test_one_crisis_is_one_thread_updates_held_then_flushed(
    r: aredis.Redis, rx: HttpReceiver, make: Make
) -> None:
    cooldown = 0.5
    d, out = make(settings(route("cx", rx.apprise_url("/cx")), cooldown_seconds=cooldown))

    stop = asyncio.Event()

    async def timer() -> None:  # what the worker does: flush held updates every so often
        # stops on a flag, not only on cancel: a cancellation that lands inside a Redis call can
        # be swallowed on Python 3.11 (asyncio.wait_for), and awaiting the task then never returned
        while not stop.is_set():
            await asyncio.sleep(0.05)
            await d.flush_due()

    def titles(rs: list[Received]) -> list[str]:
        return [x.title.split("] ", 1)[1].split(":", 1)[0] + x.title.rsplit(" ", 1)[1].rstrip(")") for x in rs]

    assert statuses(await send(d, out, incident("open", 1))) == {"cx": "delivered"}
    assert statuses(await d.dispatch(incident("update", 2))) == {"cx": "cooldown"}
    assert statuses(await d.dispatch(incident("update", 3))) == {"cx": "cooldown"}  # replaces #2 as the held one
    assert statuses(await d.dispatch(incident("update", 2))) == {"cx": "cooldown"}  # a late #2 does not replace #3
    assert titles(rx.requests) == ["OPEN#1"]

    task = asyncio.create_task(timer())
    try:
        got = await wait_for(rx, 2)
        assert titles(got) == ["OPEN#1", "UPDATE#3"]  # only the latest held update, once
        await out.wait(lambda xs: any((x.seq, x.status) == (3, "delivered") for x in xs), 5)  # and it is recorded
        assert got[1].at - got[0].at >= cooldown * 0.9

        # escalation goes out at once, and a held update it supersedes is dropped
        assert statuses(await d.dispatch(incident("update", 4))) == {"cx": "cooldown"}
        assert statuses(await send(d, out, incident("escalated", 5, "critical"))) == {"cx": "delivered"}
        assert statuses(await d.dispatch(incident("update", 6, "critical"))) == {"cx": "cooldown"}
        assert statuses(await send(d, out, incident("resolved", 7, "critical"))) == {"cx": "delivered"}
        got = rx.requests
        assert titles(got) == ["OPEN#1", "UPDATE#3", "ESCALATED#5", "RESOLVED#7"]
        assert got[3].json["type"] == "success" and got[2].json["type"] == "failure"
    finally:
        stop.set()
        task.cancel()
        await asyncio.wait([task], timeout=10)
    assert task.done()
    # nothing is left held once the thread resolved; stale updates stay quiet
    assert await d.flush_due() == []
    assert await r.zcard(f"{d.p}:held") == 0
    [late] = await d.dispatch(incident("update", 4))
    assert (late.status, late.error) == ("filtered", "superseded by #7")
    assert len(rx.attempts) == 4
    stats = await d.stats()
    assert stats["delivered"] == 4 and stats["cooldown"] == 5


async def test_update_after_cooldown_goes_out_directly(rx: HttpReceiver, make: Make) -> None:
    d, out = make(settings(route("cx", rx.apprise_url("/cx")), cooldown_seconds=0))
    for i, status in enumerate(["open", "update", "update"], 1):
        assert statuses(await send(d, out, incident(status, i))) == {"cx": "delivered"}
    assert len(rx.requests) == 3


# (d) ---------------------------------------------------------------------------------------
async def test_rate_limit_spaces_messages_on_a_route(rx: HttpReceiver, make: Make) -> None:
    d, out = make(settings(route("slack-like", rx.apprise_url("/s"), rate_per_second=5)))
    incs = [incident("open", 1, iid=f"inc-{i}", entity=f"brand{i}") for i in range(5)]
    t = time.monotonic()
    results = await asyncio.gather(*(send(d, out, i) for i in incs))  # concurrent callers share the bucket
    assert all(res[0].status == "delivered" for res in results)
    got = rx.wait_for(5, 5)
    assert len(got) == 5
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(g >= 0.15 for g in gaps), gaps
    assert time.monotonic() - t >= 0.75


# (e) ---------------------------------------------------------------------------------------
async def test_routing_by_severity_entity_and_team(rx: HttpReceiver, make: Make) -> None:
    s = settings(
        route("all", rx.apprise_url("/all")),
        route("oncall", rx.apprise_url("/oncall"), min_severity="critical"),
        route("acme", rx.apprise_url("/acme"), entities=["Acme"], min_severity="info"),
        route("cx-team", rx.apprise_url("/cx"), teams=["cx"]),
    )
    d, out = make(s)
    nw = "inc-northwind-1"
    got = await send(d, out, incident("open", 1, "warning", iid=nw))
    assert statuses(got) == {"all": "delivered", "oncall": "filtered", "acme": "filtered", "cx-team": "delivered"}
    got = await send(d, out, incident("open", 1, "critical", entity="acme/rocket", iid="inc-acme-1", team=None))
    assert statuses(got) == {"all": "delivered", "oncall": "delivered", "acme": "delivered", "cx-team": "filtered"}
    got = await send(d, out, incident("open", 1, "info", entity="acme", iid="inc-acme-2", team="cx"))
    assert statuses(got) == {"all": "filtered", "oncall": "filtered", "acme": "delivered", "cx-team": "filtered"}
    got = await send(d, out, incident("open", 1, "warning", entity="globex", iid="inc-globex-1", team="marketing"))
    assert statuses(got) == {"all": "delivered", "oncall": "filtered", "acme": "filtered", "cx-team": "filtered"}

    # the northwind thread escalates (now on-call hears of it), then resolves: every route it used hears that
    got = await send(d, out, incident("escalated", 2, "critical", iid=nw))
    assert statuses(got) == {"all": "delivered", "oncall": "delivered", "acme": "filtered", "cx-team": "delivered"}
    got = await send(d, out, incident("resolved", 3, "critical", iid=nw, team=None))
    assert statuses(got) == {"all": "delivered", "oncall": "delivered", "acme": "filtered", "cx-team": "delivered"}

    by_path: dict[str, int] = {}
    for x in rx.requests:
        by_path[x.path] = by_path.get(x.path, 0) + 1
    assert by_path == {"/all": 5, "/oncall": 3, "/acme": 2, "/cx": 3}


# (f) ---------------------------------------------------------------------------------------
async def test_sms_route_gets_a_single_segment_body(rx: HttpReceiver, make: Make) -> None:
    s = settings(
        route("sms-form", rx.apprise_url("/sms", "form"), sms=True),
        route("sms-json", rx.apprise_url("/sms-json"), sms=True),
        route("chat", rx.apprise_url("/chat")),
    )
    d, _ = make(s)
    long_entity = "northwind/" + "very-long-product-name-" * 5
    await d.dispatch(incident("open", 1, "critical", entity=long_entity))
    got = {x.path: x for x in await wait_for(rx, 3, 5)}
    form = got["/sms"]
    assert form.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert form.form["type"] == "failure" and form.form["title"] == ""
    for sms in (form.message, got["/sms-json"].message):
        assert 0 < len(sms) <= 160, sms
        assert sms.startswith("OPEN critical northwind/very-long-product-name")
        assert "ref e7b252d5#1" in sms
    assert len(got["/chat"].message) > 300  # the chat route gets the full explanation


async def test_console_logs_the_rendered_message(
    rx: HttpReceiver, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    d, _ = make(settings(route("cx", rx.apprise_url("/cx")), console=True))
    with caplog.at_level(logging.WARNING, logger="repmon.alerts"):
        await d.dispatch(incident("open", 1, "critical"))
    [rec] = [x for x in caplog.records if x.name == "repmon.alerts"]
    assert rec.levelno == logging.WARNING and "negative share 62% vs baseline 14%" in rec.getMessage()


def test_bad_apprise_url_fails_at_start_naming_the_route() -> None:
    s = settings(route("pager", "nosuchscheme://x/y"))
    with pytest.raises(ValueError, match=r"alerts\.routes\[pager\]\.urls\[0\]"):
        Dispatcher(s, aredis.Redis())


# (g) faults: nothing stuck, nothing lost ------------------------------------------------------
def fast(*routes: Route, **kw: Any) -> AlertSettings:
    """Small timings: retries 50-200 ms apart, no cooldown."""
    base: dict[str, Any] = {"cooldown_seconds": 0, "retry_backoff_seconds": 0.05, "retry_backoff_max_seconds": 0.2}
    return settings(*routes, **{**base, **kw})


def seqs_by_thread(rs: list[Received]) -> dict[str, list[tuple[int, str]]]:
    """Per thread, in arrival order: (seq, status word) from the titles."""
    out: dict[str, list[tuple[int, str]]] = {}
    for x in rs:
        word = x.title.split("] ", 1)[1].split(":", 1)[0]
        iid, seq = x.title.rsplit("(thread ", 1)[1].rstrip(")").split(" #")
        out.setdefault(iid, []).append((int(seq), word))
    return out


async def test_channel_down_then_back_gets_every_message_once_in_order_open_first(
    r: aredis.Redis, prefix: str, make: Make
) -> None:
    with HttpReceiver() as rx:
        rx.fail(500)
        d, out = make(fast(route("cx", rx.apprise_url("/cx"))))
        a, b = "inc-a", "inc-b"
        script = [
            incident("open", 1, iid=a),
            incident("open", 1, iid=b, entity="globex"),
            incident("update", 2, iid=a),
            incident("escalated", 3, "critical", iid=a),  # supersedes the pending update #2 of a
            incident("update", 2, iid=b, entity="globex"),
            incident("update", 4, "critical", iid=a),
            incident("resolved", 5, "critical", iid=a),  # supersedes the pending update #4 of a
        ]
        for inc in script:
            assert statuses(await d.dispatch(inc)) == {"cx": "queued"}
        # the channel is down for a while: several attempts fail, none is given up
        await asyncio.to_thread(rx.wait_for, 6, 10, attempts=True)
        assert rx.requests == [] and "dead" not in await d.stats()
        assert await d.pending() == {"cx": 5}  # a: open, escalated, resolved; b: open, update
        rx.recover()
        await out.wait(lambda xs: sum(x.status == "delivered" for x in xs) == 5)
        got = rx.requests
        assert seqs_by_thread(got) == {
            a: [(1, "OPEN"), (3, "ESCALATED"), (5, "RESOLVED")],
            b: [(1, "OPEN"), (2, "UPDATE")],
        }
        assert len({x.idempotency_key for x in got}) == 5  # one key per message
        superseded = sorted((x.incident_id, x.seq) for x in out.items if x.status == "filtered")
        assert superseded == [(a, 2), (a, 4)]
        stats = await d.stats()
        assert stats["delivered"] == 5 and stats["retrying"] >= 2 and "dead" not in stats
        assert await d.pending() == {"cx": 0}
        # redelivered incidents (the worker restarted) are duplicates: nothing more is sent
        for inc in script:
            [res] = await d.dispatch(inc)
            assert res.status in ("duplicate", "filtered"), res
        assert len(rx.requests) == 5


async def test_hanging_channel_gets_one_post_per_attempt_and_dedupes_on_the_key(make: Make) -> None:
    timeout = 0.4
    with HttpReceiver(delay=3.0, delay_first=3, dedupe=True) as rx:  # takes the post, then hangs 3 s
        s = fast(route("cx", rx.apprise_url("/cx")), timeout_seconds=timeout)
        (w1, out1), (w2, out2) = make(s), make(s)  # two workers on the same Redis
        inc = incident("open", 1)
        await asyncio.gather(w1.dispatch(inc), w2.dispatch(inc))
        posts = await asyncio.to_thread(rx.wait_for, 4, 15, attempts=True)
        assert len(rx.requests) == 1  # the channel shows the OPEN once
        waits = [asyncio.create_task(o.wait(lambda xs: any(x.status == "delivered" for x in xs))) for o in (out1, out2)]
        await asyncio.wait(waits, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        outcomes = out1.items + out2.items
        [done] = [x for x in outcomes if x.status == "delivered"]
        posts = rx.attempts
        assert done.attempts == len(posts) == 4  # 3 timed out (the receiver took the first), the 4th answered
        assert [x.status for x in outcomes].count("retrying") == 3
        assert {x.idempotency_key for x in posts} == {w1.idempotency_key("cx", inc.incident_id, 1)}
        assert [x.duplicate for x in posts] == [False, True, True, True]
        gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
        assert all(g >= timeout * 0.9 for g in gaps), gaps  # never a second post while one is in flight


async def test_a_hanging_route_does_not_delay_another_route(make: Make) -> None:
    with HttpReceiver(delay=5.0) as slow, HttpReceiver() as quick:
        s = fast(route("slow", slow.apprise_url("/slow")), route("quick", quick.apprise_url("/q")), timeout_seconds=3)
        d, _ = make(s)
        incs = [incident("open", 1, iid=f"inc-{i}", entity=f"brand{i}") for i in range(3)]

        async def worker() -> None:  # the incidents agent: one incident after the other
            for inc in incs:
                await d.dispatch(inc)

        t = time.monotonic()
        task = asyncio.create_task(worker())
        try:
            got = await wait_for(quick, 3, timeout=1.5)
            assert len(got) == 3, [x.title for x in got]  # while the slow route still hangs on its first post
            assert time.monotonic() - t < 1.5
            assert len(slow.attempts) == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_message_failing_past_the_horizon_is_a_dead_notification(
    r: aredis.Redis, prefix: str, make: Make
) -> None:
    with HttpReceiver() as rx:
        rx.fail(503)
        d, out = make(fast(route("cx", rx.apprise_url("/cx")), delivery_horizon_seconds=0.8))
        inc = incident("open", 1)
        t = time.monotonic()
        assert statuses(await d.dispatch(inc)) == {"cx": "queued"}
        await out.wait(lambda xs: any(x.status == "dead" for x in xs), 5)
        took = time.monotonic() - t
        [dead] = [x for x in out.items if x.status == "dead"]
        assert 0.8 <= took < 3, took
        assert dead.incident == inc and dead.attempts == len(rx.attempts) >= 3
        assert dead.error is not None and "503" in dead.error
        assert [x.status for x in out.items] == ["retrying"] * dead.attempts + ["dead"]
        stats = await d.stats()
        assert stats["dead"] == 1 and "delivered" not in stats
        assert await d.pending() == {"cx": 0}
        assert [k async for k in r.scan_iter(f"{prefix}:alert:outbox:*")] == []
        # it was never marked delivered: once the channel is back, a redelivery of the incident sends it
        rx.recover()
        assert statuses(await send(d, out, inc)) == {"cx": "delivered"}
        assert len(rx.requests) == 1


async def test_after_a_dead_open_the_next_message_of_the_thread_is_sent_as_an_open(make: Make) -> None:
    with HttpReceiver() as rx:
        rx.fail(503)
        d, out = make(fast(route("cx", rx.apprise_url("/cx")), delivery_horizon_seconds=0.5))
        await d.dispatch(incident("open", 1, "warning"))
        await out.wait(lambda xs: any(x.status == "dead" and x.seq == 1 for x in xs), 5)
        rx.recover()
        assert statuses(await send(d, out, incident("escalated", 2, "critical"))) == {"cx": "delivered"}
        [got] = rx.requests
        assert got.title.startswith("[CRITICAL] OPEN: northwind"), got.title
        # the idempotency key is still the message's own: a receiver dedupes it like any other
        assert got.idempotency_key == d.idempotency_key("cx", incident().incident_id, 2)
        # once the route has the thread's opening, later messages keep their own status
        assert statuses(await send(d, out, incident("update", 3, "critical"))) == {"cx": "delivered"}
        assert " UPDATE: " in rx.requests[-1].title, rx.requests[-1].title


async def test_an_info_thread_reaches_only_the_routes_that_asked_for_trending(make: Make) -> None:
    with HttpReceiver() as rx:
        routes = [
            route("pager", rx.apprise_url("/pager"), min_severity="info"),  # min_severity info opts in too
            route("trend", rx.apprise_url("/trend"), trending=True),
            route("oncall", rx.apprise_url("/oncall")),
        ]
        d, out = make(fast(*routes))
        got = statuses(await send(d, out, incident("open", 1, "info")))
        assert got == {"pager": "delivered", "trend": "delivered", "oncall": "filtered"}
        # the thread turns negative: the route that took no info gets its first message as an OPEN
        got = statuses(await send(d, out, incident("escalated", 2, "warning")))
        assert got == {"pager": "delivered", "trend": "delivered", "oncall": "delivered"}
        [first] = [x for x in rx.requests if x.path == "/oncall"]
        assert first.title.startswith("[WARNING] OPEN: northwind"), first.title
        assert {x.path for x in rx.requests if "ESCALATED" in x.title} == {"/pager", "/trend"}


async def test_a_page_budget_folds_the_excess_threads_into_one_digest(make: Make) -> None:
    with HttpReceiver() as rx:
        d, out = make(fast(route("cx", rx.apprise_url("/cx"), max_pages=2, digest_seconds=0.3)))
        ids = [f"inc-brand{i}-20261102T0920-0000000{i}" for i in range(4)]
        got = [statuses(await send(d, out, incident("open", 1, iid=i, entity=f"brand{n}"))) for n, i in enumerate(ids)]
        assert got == [{"cx": "delivered"}] * 2 + [{"cx": "folded"}] * 2
        # a thread within budget keeps its own messages; a folded one stays folded (its newest kept)
        assert statuses(await send(d, out, incident("escalated", 2, "critical", iid=ids[0]))) == {"cx": "delivered"}
        assert statuses(await d.dispatch(incident("escalated", 2, "critical", iid=ids[2], entity="brand2"))) == {
            "cx": "folded"
        }
        assert len(rx.requests) == 3

        async def digest_sent() -> list[Received]:
            while True:
                await d.flush_due()
                if len(rx.requests) == 4:
                    return rx.requests
                await asyncio.sleep(0.05)

        msgs = await asyncio.wait_for(digest_sent(), 10)
        digest = msgs[-1]
        assert digest.title.startswith("[CRITICAL] OPEN:") and "2 more incident threads" in digest.title
        assert "page budget 2 per 24 h" in digest.title
        assert f"brand2: escalated critical - brand2 - negative share ({ids[2]} #2)" in digest.message
        assert f"brand3: open warning - brand3 - negative share ({ids[3]} #1)" in digest.message
        assert (await d.stats())["folded"] == 3
        # nothing more is queued: a flush later sends no second digest
        await d.flush_due()
        assert len(rx.requests) == 4 and await d.pending() == {"cx": 0}


async def test_the_outbox_is_bounded(make: Make) -> None:
    with HttpReceiver() as rx:
        rx.fail(500)
        d, _ = make(fast(route("cx", rx.apprise_url("/cx")), max_pending_threads=2))
        got = [await d.dispatch(incident("open", 1, iid=f"inc-{i}", entity=f"brand{i}")) for i in range(3)]
        assert [g[0].status for g in got] == ["queued", "queued", "dead"]
        assert got[2][0].error is not None and "outbox full" in got[2][0].error
        assert (await d.stats())["dead"] == 1


async def test_the_dispatcher_survives_redis_going_away(rx: HttpReceiver, make: Make) -> None:
    port = free_port()
    client = aredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2, socket_connect_timeout=1)
    try:
        d, out = make(fast(route("cx", rx.apprise_url("/cx"))), client)
        with redis_server(port):
            assert statuses(await send(d, out, incident("open", 1, iid="inc-1"))) == {"cx": "delivered"}
        # Redis is gone: nothing raises, the incident is kept, the senders keep running
        [res] = await d.dispatch(incident("open", 1, iid="inc-2", entity="globex"))
        assert res.status == "queued" and res.error is not None and "Redis unavailable" in res.error
        assert await d.flush_due() == []
        assert all(not t.done() for t in d._tasks.values())
        with redis_server(port):  # back (empty: it kept nothing): the kept incident goes out
            got = await wait_for(rx, 2, 15)
            assert [x.title.rsplit("(thread ", 1)[1] for x in got] == ["inc-1 #1)", "inc-2 #1)"]
            await out.wait(lambda xs: any((x.incident_id, x.status) == ("inc-2", "delivered") for x in xs))
            await d.aclose()
    finally:
        await client.aclose()


async def test_the_horizon_is_measured_on_the_injected_clock(make: Make) -> None:
    now = [1_000_000.0]
    with HttpReceiver() as rx:
        rx.fail(500)
        s = fast(route("cx", rx.apprise_url("/cx")), delivery_horizon_seconds=6 * 3600, outbox_poll_seconds=0.1)
        d, out = make(s)
        d.clock = lambda: now[0]
        await d.dispatch(incident("open", 1))
        [first] = await out.wait(lambda xs: len(xs) >= 1)
        assert first.status == "retrying" and first.retry_at is not None
        assert now[0] + 0.025 <= first.retry_at <= now[0] + 0.05  # the gap, on the fake clock
        now[0] += 3600  # an hour later: tried again, not given up
        await out.wait(lambda xs: len(xs) >= 2)
        assert [x.status for x in out.items] == ["retrying", "retrying"]
        now[0] += 5 * 3600  # six hours after it was queued
        [dead] = [x for x in await out.wait(lambda xs: xs[-1].status == "dead") if x.status == "dead"]
        assert dead.seq == 1 and dead.attempts >= 2


async def test_a_restarted_worker_sends_what_the_stopped_one_left_pending(make: Make) -> None:
    with HttpReceiver() as rx:
        rx.fail(500)
        s = fast(route("cx", rx.apprise_url("/cx")))
        old, _ = make(s)
        for inc in (incident("open", 1), incident("update", 2)):
            assert statuses(await old.dispatch(inc)) == {"cx": "queued"}
        await asyncio.to_thread(rx.wait_for, 2, 10, attempts=True)
        await old.aclose()  # the worker stops with both messages pending (in Redis, not in its memory)
        rx.recover()
        new, out = make(s)
        assert await new.flush_due() == []  # the worker's timer starts the senders of the new process
        await out.wait(lambda xs: sum(x.status == "delivered" for x in xs) == 2)
        assert seqs_by_thread(rx.requests) == {incident().incident_id: [(1, "OPEN"), (2, "UPDATE")]}


async def test_two_workers_sharing_a_thread_keep_its_order_and_send_each_message_once(make: Make) -> None:
    with HttpReceiver() as rx:
        rx.fail(500)
        s = fast(route("cx", rx.apprise_url("/cx")), retry_backoff_max_seconds=0.1)
        (w1, out), (w2, _) = make(s), make(s)
        w2.on_delivery = out.add  # one record of both workers' outcomes
        iid = incident().incident_id
        assert statuses(await w1.dispatch(incident("open", 1))) == {"cx": "queued"}
        assert statuses(await w2.dispatch(incident("escalated", 2, "critical"))) == {"cx": "queued"}  # rebalanced
        assert statuses(await w1.dispatch(incident("resolved", 3, "critical"))) == {"cx": "queued"}
        await asyncio.to_thread(rx.wait_for, 4, 10, attempts=True)
        rx.recover()
        got = await wait_for(rx, 3)
        assert seqs_by_thread(got) == {iid: [(1, "OPEN"), (2, "ESCALATED"), (3, "RESOLVED")]}
        assert all(a.idempotency_key != b.idempotency_key for a, b in itertools.pairwise(got))
        done = await out.wait(lambda xs: sum(x.status == "delivered" for x in xs) == 3)
        assert sorted(x.seq for x in done if x.status == "delivered") == [1, 2, 3]
        assert len(rx.requests) == 3
