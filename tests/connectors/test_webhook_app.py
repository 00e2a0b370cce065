"""The webhook app with an in-memory sink: concurrency of the replay cache (no broker needed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp import web

from connectors.base import DeliveryError, ListSink
from connectors.webhook import HEADER, WebhookApp, sign

SECRET = b"k"
BODY = orjson.dumps(
    {"kind": "review", "event_id": "s:1", "source": "s", "occurred_at": "2026-11-20T10:00:00+00:00", "rating": 2}
)


class GatedSink(ListSink):
    """Acknowledges only when the test says so, or reports the records lost."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.lose = False

    def flush(self, timeout: float | None = None) -> None:
        self.entered.set()
        assert self.gate.wait(10)
        if self.lose:
            self.lose = False
            self.items.clear()
            raise DeliveryError(1, 1, "127.0.0.1:9", "gone")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, GatedSink, WebhookApp]]:
    sink = GatedSink()
    app = WebhookApp(sink, [SECRET])
    runner = web.AppRunner(app.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/events", sink, app
    finally:
        sink.gate.set()
        await runner.cleanup()


async def test_the_same_signature_while_it_is_being_produced_gets_409_then_200(
    served: tuple[str, GatedSink, WebhookApp],
) -> None:
    url, sink, _ = served
    headers = {HEADER: sign(BODY, SECRET)}
    async with httpx.AsyncClient() as client:
        first = asyncio.create_task(client.post(url, content=BODY, headers=headers))
        assert await asyncio.to_thread(sink.entered.wait, 10)
        second = await client.post(url, content=BODY, headers=headers)
        assert second.status_code == 409 and second.headers["Retry-After"]
        sink.gate.set()
        assert (await first).status_code == 202
        third = await client.post(url, content=BODY, headers=headers)
        assert third.status_code == 200 and third.json() == {"accepted": 0, "invalid": 0, "duplicate": True}
    assert len(sink.items) == 1


async def test_a_request_that_was_not_acknowledged_can_be_sent_again(
    served: tuple[str, GatedSink, WebhookApp],
) -> None:
    url, sink, app = served
    sink.lose = True
    sink.gate.set()
    headers = {HEADER: sign(BODY, SECRET)}
    async with httpx.AsyncClient() as client:
        lost = await client.post(url, content=BODY, headers=headers)
        assert lost.status_code == 503 and lost.headers["Retry-After"] == "30"
        assert "nothing was accepted" in lost.json()["error"]
        again = await client.post(url, content=BODY, headers=headers)
        assert again.status_code == 202
    assert len(sink.items) == 1 and app.stats["accepted"] == 1 and app.stats["failed"] == 1
