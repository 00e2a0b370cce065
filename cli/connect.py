"""``repmon connect``: run the configured ``[[sources]]`` in one process (see connectors.runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

__all__ = ["build_sources", "connect", "kinds_table"]


def kinds_table() -> list[dict[str, Any]]:
    """Every registered live kind: mode, credentials and what it reads."""
    from connectors import registry
    from connectors.source import Source

    rows = []
    for kind in registry.list_kinds():
        cls = registry.get(kind)
        if not issubclass(cls, Source):
            continue
        rows.append(
            {
                "kind": kind,
                "mode": cls.mode,
                "credentials": list(cls.credentials),
                "optional_credentials": list(cls.optional_credentials),
                "options": sorted(cls.Options.model_fields),
                "summary": cls.summary,
            }
        )
    return rows


def build_sources(
    specs: list[Any], names: list[str] | None, env: Mapping[str, str] | None = None, client: Any = None
) -> tuple[list[Any], list[str]]:
    """Sources for the chosen specs, and one line per config problem (``sources.<name>: ...``)."""
    from connectors import registry
    from connectors.source import Source, SourceError

    chosen = [s for s in specs if (s.name in names if names else s.enabled)]
    problems = []
    if names:
        missing = sorted(set(names) - {s.name for s in specs})
        if missing:
            known = ", ".join(s.name for s in specs) or "none"
            problems.append(f"no [[sources]] named {', '.join(missing)}; configured: {known}")
    out = []
    for spec in chosen:
        try:
            cls = registry.get(spec.kind)
        except ValueError as exc:
            problems.append(f"sources.{spec.name}.kind: {exc}")
            continue
        if not issubclass(cls, Source):
            problems.append(
                f"sources.{spec.name}.kind: {spec.kind!r} is not a live source; see `repmon connect --list`"
            )
            continue
        try:
            out.append(cls(spec, client=client, env=env))
        except SourceError as exc:
            problems.append(f"sources.{spec.name} ({spec.kind}): {exc}")
    return out, problems


def connect(
    names: Annotated[
        list[str] | None, typer.Argument(help="Run only these [\\[sources]] (default: all enabled).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML.")] = None,
    list_kinds: Annotated[bool, typer.Option("--list", help="Show every source kind and exit.")] = False,
    once: Annotated[bool, typer.Option("--once", help="One round per source, then exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="--list / the final states as JSON.")] = False,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the platforms in [\\[sources]] (pull, stream and push kinds) into the raw topic."""
    from cli.main import _kafka_or_exit, _logging, _redis_or_exit, _settings, err

    if list_kinds:
        rows = kinds_table()
        if json_out:
            typer.echo(json.dumps(rows))
            return
        from rich.console import Console
        from rich.table import Table

        tbl = Table(title="repmon connect: source kinds")
        for col in ("kind", "mode", "credentials", "reads"):
            tbl.add_column(col)
        for r in rows:
            creds = ", ".join(r["credentials"] + [f"{c} (optional)" for c in r["optional_credentials"]])
            tbl.add_row(r["kind"], r["mode"], creds or "-", r["summary"])
        Console(width=160).print(tbl)
        return
    settings = _settings(config)
    if not settings.sources:
        err.print("[red]no [\\[sources]] in the config[/red]: add one per platform (README, section Sources)")
        raise typer.Exit(2)
    sources, problems = build_sources(list(settings.sources), names or None, os.environ)
    if problems:
        for p in problems:
            err.print(f"[red]{escape(p)}[/red]")
        raise typer.Exit(2)
    if not sources:
        err.print("[red]every [\\[sources]] entry has enabled = false[/red]: enable one or name it")
        raise typer.Exit(2)
    _logging(loglevel)
    _redis_or_exit(settings)
    from contract.records import TOPICS

    _kafka_or_exit(settings.kafka.bootstrap, settings, [settings.topic(t) for t in TOPICS], "")
    summary = asyncio.run(run_connect(settings, sources, once=once))
    states: dict[str, str] = summary["sources"]
    if json_out:
        typer.echo(json.dumps(summary))
    stopped = {n: s for n, s in states.items() if s.startswith("stopped")}
    for n, s in stopped.items():
        err.print(f"[red]source {escape(n)}: {escape(s)}[/red]")
    if stopped and len(stopped) == len(states):
        raise typer.Exit(1)


async def run_connect(settings: Any, sources: list[Any], *, once: bool = False) -> dict[str, Any]:
    """The runtime with its sink, Redis cursor store, push server and metrics, until a signal (or
    one round each with ``once``); returns each source's state and what was sent, how fast."""
    import time

    import httpx
    import redis.asyncio

    from connectors.base import KafkaSink
    from connectors.push import PushServer, PushSource
    from connectors.runtime import CursorStore, Runtime
    from connectors.source import USER_AGENT

    c = settings.connect
    # httpx imports its transport stack (anyio, h11) on the first request: import it here, before
    # the sources start, so that first request does not stall the event loop for ~150 ms
    import importlib

    for mod in ("anyio._backends._asyncio", "anyio.streams.tls", "h11", "httpcore._async.http11"):
        importlib.import_module(mod)
    # producing (kafka-python) and feed parsing run in threads; a short GIL switch interval lets
    # the event loop thread back in quickly, so a busy producer does not stall every source
    sys.setswitchinterval(0.001)
    # A full collection scans every tracked object and holds the GIL throughout, stalling the
    # loop whichever thread runs it: ~170k objects of imported modules made each one 100-350 ms
    # here. They live as long as the process, so they are frozen out of every collection; what the
    # sources allocate afterwards is still collected as usual.
    import gc

    gc.collect()
    gc.freeze()
    client = httpx.AsyncClient(timeout=30, headers={"User-Agent": USER_AGENT}, follow_redirects=True)
    for s in sources:
        s.client = client
    sink = KafkaSink(
        settings.kafka.bootstrap,
        settings.topic("raw"),
        max_block_ms=10_000,
        request_timeout_ms=10_000,
        delivery_timeout_ms=25_000,
    )
    r = redis.asyncio.Redis.from_url(settings.redis.url, socket_timeout=10)
    store = CursorStore(r, settings.redis.key_prefix, keep_seconds=c.dedupe_seconds, keep_max=c.dedupe_max)
    runtime = Runtime(sources, sink, store, max_retry_seconds=c.max_retry_seconds)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.stop)
    pushes = [s for s in sources if isinstance(s, PushSource)]
    server = PushServer(pushes, health=runtime.health) if pushes else None
    if c.metrics_port:
        from infra.health import serve_metrics

        serve_metrics(runtime.metrics.registry, runtime.health, c.metrics_port, c.metrics_addr)
    # /healthz reads these: the sources retry an outage on their own, this makes it visible
    probes = runtime.probe_every({"redis": r.ping, "kafka": lambda: asyncio.to_thread(sink.probe, 4.0)})
    prober = asyncio.create_task(probes, name="connect-probes")
    try:
        if server is not None:
            host, port = c.listen.rsplit(":", 1)
            await server.start(host, int(port))
        t0 = time.perf_counter()
        states = await runtime.run(rounds=1 if once else None)
        seconds = time.perf_counter() - t0
        m = runtime.metrics
        per = {
            s.spec.name: {
                "kind": s.kind,
                "state": states[s.spec.name],
                **{
                    k: int(m.value(f"repmon_source_{k}_total", s.spec.name, s.kind))
                    for k in ("fetched", "sent", "duplicates", "malformed")
                },
            }
            for s in sources
        }
        sent = sum(p["sent"] for p in per.values())
        return {
            "sources": states,
            "per_source": per,
            "sent": sent,
            "seconds": round(seconds, 3),
            "items_per_s": round(sent / seconds, 1) if seconds > 0 else None,
            "max_loop_block_ms": round(runtime.monitor.max_block * 1000, 1),
        }
    finally:
        prober.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prober
        if server is not None:
            await server.stop()
        await client.aclose()
        await r.aclose()
        await asyncio.to_thread(sink.close, 10)
