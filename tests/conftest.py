"""Shared fixtures.

Integration tests use the real Apache Kafka and redis-server that `make test` starts
(infra/kafka/kafka.sh, infra/redis.sh) and find them through:

- ``REPMON_TEST_KAFKA``: bootstrap servers, e.g. ``127.0.0.1:19092``;
- ``REPMON_TEST_REDIS``: a redis URL, e.g. ``redis://127.0.0.1:16379/0``.

If either is unset or unreachable, tests marked ``integration`` FAIL with the reason: they are
never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tools.stack import free_port

__all__ = ["SHARED_DATA", "free_port", "redis_server"]

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


# -- tests on ../shared/data -----------------------------------------------------------------
# They are marked `shared_data`. Where the data is not there (a fresh clone elsewhere), they are
# deselected and named in the summary as not run: never skipped silently, never passed vacuously.
_NOT_RUN: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_DATA.is_dir():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("shared_data") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        _NOT_RUN.extend(item.nodeid for item in drop)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _NOT_RUN:
        terminalreporter.section("not run: shared data missing", sep="=", yellow=True)
        terminalreporter.write_line(f"{len(_NOT_RUN)} tests need {SHARED_DATA} (see its README); not run:")
        for nodeid in _NOT_RUN:
            terminalreporter.write_line(f"  {nodeid}")


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[None]:
    """A real redis-server of the test's own, on ``port`` (so the test can stop and restart it)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # ready once it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        yield
    finally:
        proc.terminate()
        proc.wait(10)
