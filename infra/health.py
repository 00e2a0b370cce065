"""``/metrics`` and ``/healthz`` for the processes that run for long (``repmon worker``,
``repmon connect``): Prometheus exposition of a registry, and a health document built from a
``dependency`` -> 1/0 gauge, 200 while everything answers and 503 naming what does not (a load
balancer's or an orchestrator's readiness probe reads the status, an operator the document)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

__all__ = ["dependency_health", "probe", "serve_metrics"]

logger = logging.getLogger(__name__)


def dependency_health(gauge: Gauge) -> tuple[bool, dict[str, Any]]:
    """``(all up, document)`` from a ``dependency`` -> 1/0 gauge."""
    deps: dict[str, str] = {}
    for metric in gauge.collect():
        for sample in metric.samples:
            deps[sample.labels["dependency"]] = "up" if sample.value >= 1 else "down"
    ok = all(v == "up" for v in deps.values())
    return ok, {"status": "ok" if ok else "outage", "dependencies": dict(sorted(deps.items()))}


async def probe(
    gauge: Gauge, unreachable: set[str], dependency: str, call: Callable[[], Awaitable[object]], timeout: float = 5.0
) -> bool:
    """Whether ``dependency`` answers ``call`` within ``timeout``, into ``gauge`` (label
    ``dependency``: 1 up, 0 down); ``unreachable`` holds the ones down, so an outage and its end
    are logged once each. Never raises: what waits on the dependency waits on its own."""
    try:
        async with asyncio.timeout(timeout):
            await call()
    except Exception as exc:  # any failure to answer is the outage this reports
        if dependency not in unreachable:
            logger.warning("%s unreachable: %s: %s", dependency, type(exc).__name__, exc)
        unreachable.add(dependency)
        gauge.labels(dependency).set(0)
        return False
    if dependency in unreachable:
        logger.warning("%s answers again", dependency)
        unreachable.discard(dependency)
    gauge.labels(dependency).set(1)
    return True


def serve_metrics(
    registry: CollectorRegistry, health: Callable[[], tuple[bool, dict[str, Any]]], port: int, addr: str = "127.0.0.1"
) -> int:
    """``/metrics`` of ``registry`` and ``/healthz`` (``health()``: 200 when it says ok, else 503,
    with its JSON document) on ``addr:port`` from a daemon thread; returns the port (0: a free one)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, doc = health()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(doc).encode()]
        return metrics_app(environ, start_response)

    server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="repmon-metrics", daemon=True).start()
    return int(server.server_port)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the worker's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: not logged
        pass
