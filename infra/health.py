"""``/metrics`` and ``/healthz`` for the processes that run for long (``repmon worker``,
``repmon connect``): Prometheus exposition of a registry, and a health document built from a
``dependency`` -> 1/0 gauge, 200 while everything answers and 503 naming what does not (a load
balancer's or an orchestrator's readiness probe reads the status, an operator the document)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

__all__ = ["dependency_health", "serve_metrics"]


def dependency_health(gauge: Gauge) -> tuple[bool, dict[str, Any]]:
    """``(all up, document)`` from a ``dependency`` -> 1/0 gauge."""
    deps: dict[str, str] = {}
    for metric in gauge.collect():
        for sample in metric.samples:
            deps[sample.labels["dependency"]] = "up" if sample.value >= 1 else "down"
    ok = all(v == "up" for v in deps.values())
    return ok, {"status": "ok" if ok else "outage", "dependencies": dict(sorted(deps.items()))}


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
