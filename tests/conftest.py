"""Shared fixtures.

Integration tests use the real Apache Kafka and redis-server that `make test` starts
(infra/kafka/kafka.sh, infra/redis.sh) and find them through:

- ``REPMON_TEST_KAFKA``: bootstrap servers, e.g. ``127.0.0.1:19092``;
- ``REPMON_TEST_REDIS``: a redis URL, e.g. ``redis://127.0.0.1:16379/0``.

If either is unset or unreachable, tests marked ``integration`` FAIL with the reason: they are
never skipped silently.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("REPMON_TEST_KAFKA")
    if not bootstrap:
        pytest.fail("REPMON_TEST_KAFKA is not set: run the suite with `make test`, which starts Kafka")
    if not _reachable(bootstrap):
        pytest.fail(f"Kafka at {bootstrap} is not reachable: `make test` starts it (infra/kafka/kafka.sh)")
    return bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REPMON_TEST_REDIS")
    if not url:
        pytest.fail("REPMON_TEST_REDIS is not set: run the suite with `make test`, which starts redis-server")
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    if not _reachable(hostport):
        pytest.fail(f"Redis at {url} is not reachable: `make test` starts it (infra/redis.sh)")
    return url


@pytest.fixture
def unique() -> str:
    """A unique name fragment per test: topics, key prefixes and app ids never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:  # type: ignore[name-defined]  # noqa: F821
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:  # type: ignore[name-defined]  # noqa: F821
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
def _shared_data_present(request: pytest.FixtureRequest) -> None:
    """Tests marked ``shared_data`` read the development data: they fail, loudly, without it."""
    if request.node.get_closest_marker("shared_data") and not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not present at {SHARED_DATA} (tests marked shared_data need it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
