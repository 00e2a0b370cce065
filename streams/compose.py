"""The composition root: every component of a worker, built from one :class:`Settings`.

The worker, the backtest, the tools and the tests all build their parts here, so there is one
answer to "which Redis, which store, which model": ``build(settings)`` for the worker (Redis from
``redis.url``; the sentiment model is the fleet's, :mod:`streams.learning`), ``build(settings,
memory=True)`` for the backtest and unit tests (no Redis; no alert dispatcher, since nothing is
sent; the model learns in place).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis.asyncio as aredis

from alerts.dispatch import Dispatcher
from infra.settings import Settings
from streams.detection import DetectionEngine
from streams.enrich import EnrichStage
from streams.learning import FleetLearner, ModelSnapshots
from streams.metrics import Metrics
from streams.state import MemoryState, RedisState, StateStore
from streams.windows import MemoryWindows, RedisWindows, Windows

__all__ = ["Components", "build", "redis_client"]

logger = logging.getLogger(__name__)


def redis_client(settings: Settings, url: str | None = None) -> aredis.Redis:
    """The Redis client of ``url`` or ``redis.url``; a clear error when neither is set."""
    url = url or settings.redis.url
    if not url:
        raise ValueError(
            "no Redis URL: set redis.url in the config or REPMON_REDIS__URL (e.g. redis://127.0.0.1:6379/0), "
            "or run `repmon demo`, which starts an embedded one"
        )
    return aredis.Redis.from_url(url)


@dataclass
class Components:
    settings: Settings
    windows: Windows
    state: StateStore
    stage: EnrichStage
    detection: DetectionEngine
    metrics: Metrics
    dispatcher: Dispatcher | None = None
    redis: aredis.Redis | None = None
    learner: FleetLearner | None = None  # the fleet's one sentiment model (workers); None offline
    # One thread owns the NLP pipeline and the online model: batches run off the event loop, and
    # the model is only ever touched by this thread (no locks needed).
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="repmon-nlp")
    )

    async def close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        self.executor.shutdown(wait=True)


def build(
    settings: Settings, *, redis_url: str | None = None, memory: bool = False, raw_partitions: int | None = None
) -> Components:
    """Build the components. ``memory=True``: in-process windows and state, no dispatcher.

    ``raw_partitions``: how many partitions the raw topic has on the broker (the worker reads it at
    start); every one of them must have counted past a bucket before it is judged.
    """
    stage = EnrichStage(settings)
    if memory:
        windows: Windows = MemoryWindows(settings)
        state: StateStore = MemoryState()
        r, dispatcher = None, None
    else:
        r = redis_client(settings, redis_url)
        # every raw partition must have counted past a bucket before it is judged
        windows = RedisWindows(r, settings, partitions=raw_partitions or settings.kafka.partitions)
        state = RedisState(r, settings.redis.key_prefix)
        dispatcher = Dispatcher(settings.alerts, r, key_prefix=settings.redis.key_prefix)
    detection = DetectionEngine(
        settings,
        windows,
        state,
        model_version=lambda: stage.model_version,
        feedback=dispatcher.controls if dispatcher is not None else None,
    )
    c = Components(settings, windows, state, stage, detection, Metrics(), dispatcher, r)
    if r is not None:  # a worker: score with the fleet's snapshots, learn only on the lease holder
        stage.learn_inline = False
        snaps = ModelSnapshots(r, settings.redis.key_prefix, keep=settings.sentiment.snapshots_kept)
        c.learner = FleetLearner(settings, stage, c.executor, snaps, c.metrics)
    return c
