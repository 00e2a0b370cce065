"""A real local HTTP receiver for notifications: the demo's stand-in for a chat webhook, and the
endpoint tests send real Apprise notifications to (``json://`` or ``form://``). Not a mock: it is
an HTTP server on loopback that records what arrives.

>>> with HttpReceiver() as rx:
...     rx.apprise_url("/hook").startswith("json://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

__all__ = ["HttpReceiver", "Received"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    status: int = 200

    @property
    def json(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}

    @property
    def message(self) -> str:
        data = self.json
        if data is not None:
            return str(data.get("message", ""))
        return self.form.get("message", "")

    @property
    def title(self) -> str:
        data = self.json
        if data is not None:
            return str(data.get("title", ""))
        return self.form.get("title", "")


class HttpReceiver:
    """Records every POST; answers 200, or an error for the first ``fail_first`` requests.

    ``status_sequence`` gives explicit statuses for the first requests (then 200), e.g.
    ``[500, 429, 200]``. Successful deliveries are in :attr:`requests`; every attempt,
    failed or not, is in :attr:`attempts`.
    """

    def __init__(self, *, fail_first: int = 0, status_sequence: Sequence[int] = ()) -> None:
        self._statuses = list(status_sequence) or [500] * fail_first
        self.attempts: list[Received] = []
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._cond:
                    status = receiver._statuses.pop(0) if receiver._statuses else 200
                    rec = Received(self.path, dict(self.headers.items()), body, status=status)
                    receiver.attempts.append(rec)
                    if status < 300:
                        receiver.requests.append(rec)
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status < 300 else b'{"ok": false}')

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="repmon-receiver", daemon=True)
        self._thread.start()

    def apprise_url(self, path: str = "/hook", scheme: str = "json") -> str:
        """Apprise URL that posts here: ``json://`` (JSON body) or ``form://`` (form body)."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def wait_for(
        self, what: int | Callable[[list[Received]], bool], timeout: float = 30.0, *, attempts: bool = False
    ) -> list[Received]:
        """Block until ``what`` deliveries arrived (or the predicate holds); return them (may be short)."""
        pred = (lambda rs: len(rs) >= what) if isinstance(what, int) else what
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                items = self.attempts if attempts else self.requests
                if pred(items):
                    return list(items)
                left = deadline - time.monotonic()
                if left <= 0:
                    return list(items)
                self._cond.wait(left)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpReceiver:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
