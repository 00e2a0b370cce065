"""A Faust worker built by the worker's own ``_faust_app`` whose first fetch comes back while the
flow is suspended, as a fetch in flight across a rebalance does: Faust drops those records and
seeks back to the committed offsets. The topic has no commit yet, so only ``streams.consumer``'s
seek to the first offset brings them back. Run by ``test_consumer.py`` in its own process:

    python tests/streams/dropped_fetch_worker.py BOOTSTRAP APP_ID TOPIC N OUT

It consumes TOPIC from the start, writes ``{"values": [...], "dropped": d}`` to OUT once it has N
messages and stops itself with SIGTERM; ``dropped``: how many records the suspended fetch held."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson


def main(bootstrap: str, app_id: str, topic_name: str, n: int, out: str) -> None:
    import faust

    from infra.settings import load_settings
    from streams.app import _faust_app

    s = load_settings(None, kafka={"bootstrap": bootstrap, "partitions": 1}, app_id=app_id)
    app = _faust_app(s, None)
    topic = app.topic(topic_name, value_serializer="raw", partitions=1)
    values: list[str] = []
    dropped = [0]
    c = app.consumer
    wait_next = c._wait_next_records

    async def suspended_first(timeout: float) -> Any:
        records, active = await wait_next(timeout)
        if records and not dropped[0]:
            dropped[0] = sum(len(v) for v in records.values())
            c.stop_flow()  # what a rebalance does while a fetch is in flight
            asyncio.get_running_loop().call_later(0.5, c.resume_flow)
        return records, active

    c._wait_next_records = suspended_first  # type: ignore[method-assign]

    @app.agent(topic)
    async def take(stream: Any) -> None:
        async for value in stream:
            values.append(value.decode())
            if len(values) == n:
                Path(out).write_bytes(orjson.dumps({"values": values, "dropped": dropped[0]}))
                os.kill(os.getpid(), signal.SIGTERM)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
