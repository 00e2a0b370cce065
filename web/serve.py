"""The war room in a background thread of the calling process (the demo, the benchmark, the tests):
uvicorn on its own event loop, started and stopped around a ``with`` block."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import httpx
import uvicorn

from infra.settings import Settings
from web.app import create_app
from web.auth import Tokens

__all__ = ["WebThread", "free_or"]


def free_or(port: int, host: str = "127.0.0.1") -> int:
    """``port`` if it can be bound on ``host``, else (or for 0) any free port."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            s.bind((host, 0))
        return int(s.getsockname()[1])


class WebThread:
    def __init__(
        self,
        settings: Settings,
        *,
        redis_url: str,
        bootstrap: str,
        tokens: Tokens | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.tokens = tokens or Tokens({}, {})
        app = create_app(settings, redis_url=redis_url, bootstrap=bootstrap, tokens=self.tokens)
        self.host = host
        self.port = free_or(settings.web.port if port is None else port, host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=1,  # live streams never end by themselves
            limit_concurrency=settings.web.max_sse_clients + 100,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="repmon-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        """Serving, and the read model has fixed its positions on every topic."""
        try:
            return bool(httpx.get(f"{self.url}/healthz", timeout=2).json()["ready"])
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def start(self, timeout: float = 60.0) -> WebThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self._thread.is_alive():
                raise RuntimeError(f"the web view did not start on {self.url} (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the web view on {self.url} was not ready within {timeout:.0f} s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(15)

    def __enter__(self) -> WebThread:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
