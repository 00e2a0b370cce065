"""A real local HTTP receiver for notifications.

The demo's stand-in for a chat webhook, and the endpoint tests send real Apprise notifications to
(``json://`` or ``form://``). Not a mock: an HTTP server on loopback (stdlib
:class:`~http.server.ThreadingHTTPServer` in a daemon thread) that records what arrives, usable
from sync code and from async tests alike (Apprise posts from its own worker threads, so the event
loop of a test is never involved in answering).

Rules:

- every request (any method) is recorded as a :class:`Received`: path, headers, raw body, the body
  parsed as JSON or as a form (urlencoded or multipart), the monotonic and wall-clock time it
  arrived and the status it was answered with;
- the first requests are answered with ``status_sequence`` (e.g. ``[500, 429]``), or with HTTP 500
  for the first ``fail_first`` requests; every later one with 200. A 429 carries ``Retry-After: 1``;
- :meth:`HttpReceiver.fail` makes it answer every request with an error status (a channel that is
  down) until :meth:`HttpReceiver.recover`;
- ``delay`` holds answers back (a slow or hanging channel): every answer, or with ``delay_first``
  only the first ``delay_first`` ones. The request is recorded (and, if 2xx, taken) on arrival:
  a client that gives up waiting does not know it was taken;
- with ``dedupe=True`` it behaves like a receiver honouring idempotency keys: a request whose
  ``Idempotency-Key`` header was already taken is answered 200 but recorded as a ``duplicate``;
- :attr:`HttpReceiver.attempts` holds every request, :attr:`HttpReceiver.requests` the accepted
  (2xx, not duplicate) ones: the notifications a channel would have shown;
- :meth:`HttpReceiver.wait_for` blocks on a :class:`threading.Condition` (no polling) until a count
  or predicate holds, or the timeout passes, and returns what arrived either way.

>>> with HttpReceiver() as rx:
...     rx.apprise_url("/hook").startswith("json://127.0.0.1:")
True
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpReceiver", "Received"]


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    """Path without the query string."""
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    """The body parsed as JSON (``None`` when it is not JSON)."""
    form: dict[str, str]
    """The body parsed as a form (urlencoded or multipart; for GET: the query)."""
    at: float
    """``time.monotonic()`` on arrival (for spacing)."""
    received_at: float
    """``time.time()`` on arrival."""
    status: int
    """The HTTP status the receiver answered with."""
    duplicate: bool = False
    """Taken before under the same ``Idempotency-Key`` (only with ``dedupe=True``)."""

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, if the sender gave one."""
        for k, v in self.headers.items():
            if k.lower() == "idempotency-key":
                return v
        return None

    @property
    def message(self) -> str:
        """The notification body (Apprise's ``message`` field)."""
        if isinstance(self.json, dict):
            return str(self.json.get("message", ""))
        return self.form.get("message", "")

    @property
    def title(self) -> str:
        """The notification title (Apprise's ``title`` field)."""
        if isinstance(self.json, dict):
            return str(self.json.get("title", ""))
        return self.form.get("title", "")

    @property
    def notify_type(self) -> str:
        """Apprise's ``type`` field: info, success, warning or failure."""
        if isinstance(self.json, dict):
            return str(self.json.get("type", ""))
        return self.form.get("type", "")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _parse_body(content_type: str, body: bytes) -> tuple[Any, dict[str, str]]:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return None, {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    if ctype == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        form: dict[str, str] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and part.get_filename() is None:
                payload = part.get_payload(decode=True)
                form[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        return None, form
    try:
        return json.loads(body), {}
    except ValueError:
        return None, {}


class HttpReceiver:
    """Records every request on ``127.0.0.1:<free port>``; see the module docstring for the rules.

    ``delay`` (seconds) holds every answer back (or the first ``delay_first`` ones), to play a slow
    or hanging channel; ``dedupe`` honours ``Idempotency-Key`` headers.
    """

    def __init__(
        self,
        *,
        fail_first: int = 0,
        status_sequence: Sequence[int] = (),
        fail_status: int = 500,
        delay: float = 0.0,
        delay_first: int | None = None,
        dedupe: bool = False,
    ) -> None:
        if fail_first and status_sequence:
            raise ValueError("give fail_first or status_sequence, not both")
        if fail_first < 0:
            raise ValueError("fail_first must be >= 0")
        self._statuses = list(status_sequence) or [fail_status] * fail_first
        self._delay = delay
        self._delay_left = delay_first
        self._dedupe = dedupe
        self._taken: set[str] = set()
        self._failing: int | None = None
        self._attempts: list[Received] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> HttpReceiver:
        """Bind a free loopback port and serve in a daemon thread (idempotent)."""
        if self._server is not None:
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
                parsed, form = _parse_body(self.headers.get("Content-Type", ""), body)
                if self.command == "GET" and not form:
                    form = query
                with receiver._cond:
                    if receiver._failing is not None:
                        status = receiver._failing
                    else:
                        status = receiver._statuses.pop(0) if receiver._statuses else 200
                    key = next((v for k, v in self.headers.items() if k.lower() == "idempotency-key"), None)
                    duplicate = False
                    if receiver._dedupe and key is not None and status < 300:
                        duplicate = key in receiver._taken
                        receiver._taken.add(key)
                    delay = receiver._delay
                    if receiver._delay_left is not None:
                        if receiver._delay_left > 0:
                            receiver._delay_left -= 1
                        else:
                            delay = 0.0
                    receiver._attempts.append(
                        Received(
                            method=self.command,
                            path=split.path,
                            query=query,
                            headers=dict(self.headers.items()),
                            body=body,
                            json=parsed,
                            form=form,
                            at=time.monotonic(),
                            received_at=time.time(),
                            status=status,
                            duplicate=duplicate,
                        )
                    )
                    receiver._cond.notify_all()
                if delay:
                    time.sleep(delay)  # a thread of the server, never an event loop
                reply = b'{"ok": true}' if status < 300 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # a client that gave up on a held answer (a timeout) is not an error here

        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="repmon-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------
    def fail(self, status: int = 500) -> None:
        """Answer every request with ``status`` (a channel that is down) until :meth:`recover`."""
        with self._cond:
            self._failing = status

    def recover(self) -> None:
        """Stop :meth:`fail`: answer as configured again (200 once ``status_sequence`` is used up)."""
        with self._cond:
            self._failing = None

    # -- addresses ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HttpReceiver is not started: call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def apprise_url(self, path: str = "/hook", scheme: str = "json") -> str:
        """Apprise URL that posts here: ``json://`` (JSON body) or ``form://`` (form body)."""
        if scheme not in ("json", "form", "xml"):
            raise ValueError(f"scheme must be json, form or xml, got {scheme!r}")
        return f"{scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    # -- what arrived ---------------------------------------------------------------------
    @property
    def attempts(self) -> list[Received]:
        """Every request so far, whatever it was answered (a copy)."""
        with self._cond:
            return list(self._attempts)

    @property
    def requests(self) -> list[Received]:
        """The accepted (2xx, not duplicate) requests so far: what a channel would show (a copy)."""
        with self._cond:
            return [r for r in self._attempts if r.ok and not r.duplicate]

    def wait_for(
        self,
        what: int | Callable[[list[Received]], bool],
        timeout: float = 30.0,
        *,
        attempts: bool = False,
    ) -> list[Received]:
        """Block until ``what`` requests arrived (or the predicate holds on them), at most ``timeout`` s.

        Counts accepted (not duplicate) requests, or every request with ``attempts=True``. Returns the requests
        either way; the caller asserts on them. From async code, call it through
        ``asyncio.to_thread`` when the event loop must keep running meanwhile.
        """
        pred: Callable[[list[Received]], bool] = (lambda rs: len(rs) >= what) if isinstance(what, int) else what
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                items = list(self._attempts) if attempts else [r for r in self._attempts if r.ok and not r.duplicate]
                left = deadline - time.monotonic()
                if pred(items) or left <= 0:
                    return items
                self._cond.wait(left)
