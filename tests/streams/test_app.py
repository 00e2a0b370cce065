"""The Faust app the worker builds: settings Faust has no option for reach its consumer."""

from __future__ import annotations

from infra.settings import load_settings
from streams.app import _faust_app


async def test_the_worker_consumer_fetch_wait_is_the_setting() -> None:
    """Faust builds aiokafka's consumer with a fixed ``fetch_max_wait_ms`` of 1,500; the worker's
    comes from ``kafka.fetch_max_wait_ms`` and is what aiokafka's fetcher is given on start."""
    s = load_settings(None, kafka={"fetch_max_wait_ms": 37, "bootstrap": "127.0.0.1:9"})
    app = _faust_app(s, None)
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 37
        # the attribute aiokafka's start() hands to its Fetcher (a rename would silently undo this)
        import inspect

        from aiokafka.consumer.consumer import AIOKafkaConsumer

        assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)
    finally:
        await consumer.stop()
