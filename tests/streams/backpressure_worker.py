"""A Faust worker built by the worker's own ``_faust_app``, with a stream buffer of a few messages
and an agent that is slow at first, so the fetch loop's hand-off meets a full buffer and must
suspend (``streams.consumer``'s slow path). Run by ``test_consumer.py`` in its own process:

    python tests/streams/backpressure_worker.py BOOTSTRAP APP_ID TOPIC N OUT

It consumes TOPIC from the start, writes ``{"values": [...], "resumed": k, "ahead": a}`` to OUT
once it has N messages and stops itself with SIGTERM, as a worker is stopped. ``resumed``: the
hand-offs that suspended and were carried on by ``consumer.resume``; ``ahead``: how far past the
message the agent took the fetch loop had got, at most (backpressure holds it near ``BUFFER``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

BUFFER = 4  # messages a stream holds before the hand-off must wait
SLOW = 30  # the first messages the agent takes slowly, long enough for the buffer to fill


def main(bootstrap: str, app_id: str, topic_name: str, n: int, out: str) -> None:
    import faust
    from faust.types import TP

    from infra.settings import load_settings
    from streams import consumer
    from streams.app import _faust_app

    resumed = [0]
    resume = consumer.resume

    async def counting(coro: Any, first: Any) -> Any:
        resumed[0] += 1
        return await resume(coro, first)

    consumer.resume = counting  # the fetch loop looks the name up at each slow hand-off
    s = load_settings(None, kafka={"bootstrap": bootstrap, "partitions": 1}, app_id=app_id)
    app = _faust_app(s, None)
    app.conf.stream_buffer_maxsize = BUFFER
    topic = app.topic(topic_name, value_serializer="raw", partitions=1)
    values: list[str] = []
    ahead = [0]  # how many messages past the one taken the fetch loop had handed off, at most
    tp = TP(topic_name, 0)

    @app.agent(topic)
    async def take(stream: Any) -> None:
        async for value in stream:
            values.append(value.decode())
            ahead[0] = max(ahead[0], (app.consumer._read_offset.get(tp) or 0) - int(values[-1]))
            if len(values) <= SLOW:
                await asyncio.sleep(0.01)
            if len(values) == n:
                Path(out).write_bytes(orjson.dumps({"values": values, "resumed": resumed[0], "ahead": ahead[0]}))
                os.kill(os.getpid(), signal.SIGTERM)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
