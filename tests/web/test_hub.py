"""The live hub: reconnects with Last-Event-ID miss nothing, a slow client is cut off instead of
buffered without bound, and an id the replay buffer no longer holds asks the page to reload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from web.hub import Hub, HubFull, LiveEvent


async def take(stream: AsyncIterator[LiveEvent], n: int) -> list[LiveEvent]:
    out = []
    async with asyncio.timeout(5):
        async for ev in stream:
            out.append(ev)
            if len(out) == n:
                break
    return out


async def test_reconnect_with_last_event_id_gets_exactly_what_was_missed() -> None:
    hub = Hub(keep=100, queue_size=16)
    first = await hub.subscribe()
    hub.publish("incident", {"n": 1})
    hub.publish("incident", {"n": 2})
    got = await take(first, 2)
    await first.aclose()  # the browser lost its connection here
    assert hub.clients == 0
    for n in (3, 4, 5):
        hub.publish("incident", {"n": n})
    again = await hub.subscribe(got[-1].id)
    hub.publish("incident", {"n": 6})
    rest = await take(again, 4)
    assert [ev.data for ev in rest] == ['{"n":3}', '{"n":4}', '{"n":5}', '{"n":6}']
    await again.aclose()


async def test_a_client_that_falls_behind_is_cut_off_and_catches_up_on_reconnect() -> None:
    hub = Hub(keep=1000, queue_size=8)
    slow = await hub.subscribe()
    for n in range(50):  # the client reads nothing meanwhile: at most 8 are held for it
        hub.publish("signal", {"n": n})
    assert hub.cut_off == 1
    got = [ev async for ev in slow]  # the stream ends once it is cut off (the browser reconnects)
    assert got == []
    catch_up = await hub.subscribe(f"{hub.boot}-0")
    assert [ev.data for ev in await take(catch_up, 50)] == [f'{{"n":{n}}}' for n in range(50)]
    await catch_up.aclose()


async def test_an_id_beyond_the_replay_buffer_or_from_another_process_resets() -> None:
    hub = Hub(keep=100, queue_size=8)
    for n in range(300):
        hub.publish("incident", {"n": n})
    old = await hub.subscribe(f"{hub.boot}-5")
    assert (await take(old, 1))[0].event == "reset"
    await old.aclose()
    other = await hub.subscribe("deadbeef-299")  # an id of an earlier web process
    assert (await take(other, 1))[0].event == "reset"
    await other.aclose()


async def test_too_many_clients_are_refused() -> None:
    hub = Hub(max_clients=2)
    a, b = await hub.subscribe(), await hub.subscribe()
    hub.publish("incident", {})
    await take(a, 1), await take(b, 1)
    with pytest.raises(HubFull, match=r"web\.max_sse_clients"):
        await hub.subscribe()
    await a.aclose()
    await b.aclose()
