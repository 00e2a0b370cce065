"""An agent that raises stops the worker (and says so in its exit code); cancellation does not."""

from __future__ import annotations

import asyncio

import pytest

from streams import supervise


async def test_an_escaping_exception_asks_for_a_stop_and_marks_the_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    armed: list[int] = []
    monkeypatch.setattr(supervise, "shutdown_deadline", lambda seconds=30.0, code=75: armed.append(code))
    stops: list[str] = []

    @supervise.fatal_on_error("enrich", stop=lambda: stops.append("stop"))
    async def agent() -> None:
        raise RuntimeError("producer wedged")

    with pytest.raises(RuntimeError):
        await agent()
    assert stops == ["stop"] and armed == [supervise.EXIT_AGENT_CRASHED] and supervise.crashed()


async def test_cancellation_is_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    stops: list[str] = []

    @supervise.fatal_on_error("labels", stop=lambda: stops.append("stop"))
    async def agent() -> None:
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(agent())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stops == []
