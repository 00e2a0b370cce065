"""The ``repmon`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.connect import connect
from cli.deadletter import deadletter_app
from cli.eval import eval_app
from cli.web import register as register_web
from infra.settings import ConfigError, Settings, load_settings

app = typer.Typer(
    name="repmon",
    help="Real-time reputation monitoring: Kafka + Faust + spaCy + River + Redis + Apprise.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # one line per error, however narrow the terminal


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"repmon {version('repmon')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Real-time reputation monitoring: Kafka + Faust + spaCy + River + Redis + Apprise."""


def _redis_or_exit(settings: Settings) -> None:
    """Exit 1 with one line naming Redis and the fix unless ``redis.url`` answers."""
    import redis

    url = settings.redis.url
    if not url:
        err.print(
            "[red]redis.url is not set[/red]: set it in the config or REPMON_REDIS__URL "
            "(e.g. redis://127.0.0.1:6379/0); `repmon demo` starts an embedded one"
        )
        raise typer.Exit(2)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as exc:
        err.print(
            f"[red]Redis at {escape(url)} is not reachable ({type(exc).__name__}: {escape(str(exc))})[/red]: start it "
            "or point redis.url (REPMON_REDIS__URL) at a running one"
        )
        raise typer.Exit(1) from None


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config TOML (default: $REPMON_CONFIG or the bundled demo config)."),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _logging(level: str, fmt: str = "text") -> None:
    from infra.logs import configure

    configure(level, "json" if fmt == "json" else "text")


def _kafka_or_exit(bootstrap: str, settings: Settings, topics: list[str], option: str, timeout: float = 10.0) -> None:
    """Create the topics, or exit 1 with one line naming the broker and the fix (no traceback)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from infra.kafka import ensure_topics

    try:
        KafkaAdminClient(
            bootstrap_servers=bootstrap, bootstrap_timeout_ms=int(timeout * 1000), request_timeout_ms=5000
        ).close()
        ensure_topics(bootstrap, topics, settings.kafka.partitions, settings.kafka.replication)
    except (KafkaError, OSError, ValueError) as exc:
        err.print(
            f"[red]Kafka at {escape(bootstrap)} is not reachable ({type(exc).__name__}: {escape(str(exc))})[/red]: "
            f"start the broker or point {option + ' / ' if option else ''}kafka.bootstrap (REPMON_KAFKA__BOOTSTRAP) "
            "at a running one"
        )
        raise typer.Exit(1) from None


@app.command()
def worker(
    config: ConfigOpt = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "info",
    web_port: Annotated[int | None, typer.Option(help="Serve Faust's web view on this port.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on ADDR:PORT/metrics (worker.metrics_port).")
    ] = None,
    metrics_addr: Annotated[
        str | None, typer.Option(help="Address for the metrics (worker.metrics_addr; 0.0.0.0 in a container).")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="text or json: one JSON object per line (worker.log_format).")
    ] = None,
) -> None:
    """Run a stream worker (all agents). Scale out by running more, up to the partition count."""
    import faust

    from infra.kafka import ensure_topics, partition_count, wait_for_broker
    from streams.app import TOPICS, build_worker
    from streams.supervise import EXIT_AGENT_CRASHED, crashed

    settings = _settings(config)
    fmt = log_format or settings.worker.log_format
    if fmt not in ("text", "json"):
        err.print(f"[red]--log-format {escape(fmt)!r} is not text or json[/red]: pass --log-format json or text")
        raise typer.Exit(2)
    if settings.author_key_secret is None:
        # a per-app default key would let anyone who knows the app id link pseudonyms back to authors
        err.print(
            "[red]REPMON_AUTHOR_KEY_SECRET is not set[/red]: the worker pseudonymises authors with it; set it, "
            "e.g. export REPMON_AUTHOR_KEY_SECRET=$(openssl rand -hex 32) (`repmon demo` sets a throwaway one)"
        )
        raise typer.Exit(2)
    _logging(loglevel, fmt)
    _redis_or_exit(settings)
    try:
        wait_for_broker(settings.kafka.bootstrap, timeout=120)
    except TimeoutError as exc:
        err.print(
            f"[red]{escape(str(exc))}[/red]: start the broker or point kafka.bootstrap (REPMON_KAFKA__BOOTSTRAP) "
            "at a running one"
        )
        raise typer.Exit(1) from None
    ensure_topics(
        settings.kafka.bootstrap,
        [settings.topic(t) for t in TOPICS],
        settings.kafka.partitions,
        settings.kafka.replication,
    )
    try:
        raw_partitions = partition_count(settings.kafka.bootstrap, settings.topic("raw"))
    except RuntimeError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]: check the broker's logs; repmon creates its topics at start")
        raise typer.Exit(1) from None
    w = settings.worker
    worker = build_worker(
        settings,
        raw_partitions=raw_partitions,
        web_port=web_port,
        metrics_port=metrics_port if metrics_port is not None else w.metrics_port,
        metrics_addr=metrics_addr or w.metrics_addr,
    )
    worker.load_models()
    try:
        # JSON logs: keep the handler configured above (Faust would install its coloured one), and
        # no terminal spinner, whose cursor escapes would break the first line after it
        fw = faust.Worker(
            worker.app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=fmt != "json"
        )
        if fmt == "json":
            fw.spinner = None
        fw.execute_from_commandline()
    finally:
        if crashed():  # an agent raised: say so to the supervisor that restarts the worker
            raise SystemExit(EXIT_AGENT_CRASHED)


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(help="CSV/TSV/JSONL files (.gz ok).", exists=True)],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", help="Column mapping TOML (infra/config/replay/).")],
    config: ConfigOpt = None,
    speed: Annotated[float, typer.Option(help="0 = as fast as possible, N = N times real time.")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="Stop after N rows.")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Override kafka.bootstrap.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    sort: Annotated[bool, typer.Option(help="Replay in event-time order (files are often newest first).")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the stats as JSON.")] = False,
) -> None:
    """Replay recorded events into the raw topic through a column mapping."""
    from connectors.base import DeliveryError, KafkaSink
    from connectors.replay import Replayer, load_mapping
    from contract.records import TOPICS

    settings = _settings(config)
    try:
        the_mapping = load_mapping(mapping)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    boot = bootstrap or settings.kafka.bootstrap
    _kafka_or_exit(boot, settings, [settings.topic(t) for t in TOPICS], "--bootstrap")
    sink = KafkaSink(boot, settings.topic("raw"))
    try:
        replayer = Replayer(the_mapping, files, speed=speed, limit=limit, progress=progress, sort_by_time=sort)
        stats = replayer.run(sink)
    except DeliveryError as exc:
        out = exc.stats.as_dict() if exc.stats else {}
        if json_out:
            typer.echo(json.dumps({**out, "error": str(exc)}, default=str))
        err.print(
            f"[red]replay failed: {escape(str(exc))}[/red]; stopped after row {out.get('read', '?')}. Check the broker "
            "(or --bootstrap) and run the same replay again: event ids are stable, so rows already "
            "delivered are deduplicated downstream."
        )
        raise typer.Exit(1) from None
    finally:
        sink.close(timeout=10)
    out = stats.as_dict()
    if json_out:
        typer.echo(json.dumps(out, default=str))
    else:
        err.print(out)


@app.command()
def webhook(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8088,
    mapping: Annotated[
        Path | None, typer.Option("--mapping", "-m", help="Map pushed objects through a replay mapping TOML.")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Max age of a signature timestamp, seconds.")] = 300.0,
) -> None:
    """Receive signed HTTP pushes (POST /v1/events) into the raw topic; secret in REPMON_WEBHOOK_SECRET."""
    from aiohttp import web

    from connectors.base import KafkaSink
    from connectors.mapping import load_mapping
    from connectors.seen import MemorySeen, RedisSeen, SeenCache
    from connectors.webhook import WebhookApp
    from contract.records import TOPICS

    settings = _settings(config)
    raw = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    secrets = [s.strip().encode() for s in raw.split(",") if s.strip()]
    if not secrets:
        err.print(
            "[red]REPMON_WEBHOOK_SECRET is not set[/red]: set it to the shared secret(s) the senders sign with "
            "(comma-separated to rotate), e.g. export REPMON_WEBHOOK_SECRET=$(openssl rand -hex 32)"
        )
        raise typer.Exit(2)
    try:
        the_mapping = load_mapping(mapping) if mapping else None
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    _logging("info")
    _kafka_or_exit(settings.kafka.bootstrap, settings, [settings.topic(t) for t in TOPICS], "")
    seen: SeenCache = MemorySeen()
    if settings.redis.url:  # one replay cache for every webhook process behind a load balancer
        import redis
        import redis.asyncio

        url = settings.redis.url
        try:
            redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
        except (redis.RedisError, OSError) as exc:
            err.print(
                f"[red]Redis at {escape(url)} is not reachable ({escape(str(exc))})[/red]: start it or fix "
                "redis.url (REPMON_REDIS__URL); the webhook keeps its replay cache there"
            )
            raise typer.Exit(1) from None
        seen = RedisSeen(redis.asyncio.Redis.from_url(url, socket_timeout=5), address=url)
    # bounded waits: a request is answered (503 + Retry-After) while its sender still listens
    sink = KafkaSink(
        settings.kafka.bootstrap,
        settings.topic("raw"),
        max_block_ms=10_000,
        request_timeout_ms=10_000,
        delivery_timeout_ms=25_000,
    )
    try:
        hook = WebhookApp(sink, secrets, mapping=the_mapping, tolerance=tolerance, ack_timeout=30.0, seen=seen)
        web.run_app(hook.app, host=host, port=port, print=lambda msg: err.print(msg))
    finally:
        sink.close(timeout=10)


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for one <record>.schema.json per record.")] = Path(
        "schemas-out"
    ),
) -> None:
    """Write a JSON Schema for every record of the event contract."""
    from contract.records import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, sch in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(sch, indent=2, sort_keys=True) + "\n")
        typer.echo(str(out / f"{name}.schema.json"))


@app.command()
def demo(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON summary line.")] = False,
    minutes: Annotated[int, typer.Option(help="Minutes of event time in the generated sample.")] = 240,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    web_stay: Annotated[
        float,
        typer.Option(envvar="REPMON_DEMO_WEB_STAY", help="Keep the war room up this many seconds after the replay."),
    ] = 0.0,
    browser: Annotated[
        bool,
        typer.Option(help="Keep the incidents page open in headless chromium; report when each incident appeared."),
    ] = False,
) -> None:
    """Run the whole pipeline on the embedded default with a generated sample that holds a crisis."""
    from infra.embedded import unwind_on_signals
    from tools.demo import run_demo

    unwind_on_signals()
    settings = _settings(config)
    summary = run_demo(
        settings, minutes=minutes, timeout=timeout, console=err, config=config, web_stay=web_stay, browser=browser
    )
    ok = summary.pop("ok", False)
    if json_out:
        typer.echo(json.dumps(summary))
    if not ok:
        raise typer.Exit(1)


@app.command()
def bench(
    config: ConfigOpt = None,
    events: Annotated[int, typer.Option(help="Events through the end-to-end pipeline.")] = 5000,
    alerts: Annotated[bool, typer.Option(help="Also time crisis onset -> first notification, live.")] = False,
    rate: Annotated[int, typer.Option(help="Live events/s for --alerts.")] = 1000,
    faults: Annotated[
        bool,
        typer.Option(
            help="Instead: two workers on Apache Kafka (REPMON_KAFKA__BOOTSTRAP) under kill -9 every 20 s, "
            "a receiver down 60 s and a Redis restart, against the same stream without faults."
        ),
    ] = False,
    fault_events: Annotated[int, typer.Option(help="Events for --faults.")] = 200_000,
    frozen_model: Annotated[
        bool,
        typer.Option(help="With --faults: both runs score with one frozen sentiment model (sentiment.frozen)."),
    ] = False,
    web: Annotated[bool, typer.Option(help="Only the war room: 100 live SSE clients, mentions at --rate.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    connect_only: Annotated[
        bool, typer.Option("--connect", help="Only the connector runtime: one repmon connect, 20 local sources.")
    ] = False,
    entities: Annotated[
        str | None,
        typer.Option(
            "--entities",
            help="Only detection at scale: entity counts (e.g. 10,1000,10000), each entity with a day of state.",
        ),
    ] = None,
    rates: Annotated[
        str, typer.Option(help="Sustained events/s of the rate sweep, comma-separated ('' skips the sweep).")
    ] = "1000,2000,5000",
    sweep_workers: Annotated[int, typer.Option(help="Worker processes of the rate sweep.")] = 2,
    sweep_seconds: Annotated[float, typer.Option(help="Seconds each rate of the sweep is held.")] = 10.0,
    texts: Annotated[
        Path | None,
        typer.Option(
            help="Also time enrichment on the texts of this file (CSV with a 'text' column, JSONL, or a text "
            "per line), e.g. ../shared/data/twitter_us_airline_sentiment/Tweets.csv.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Benchmarks: end-to-end throughput and latency (1 and 2 workers, a sustained rate sweep), the
    enrichment functions alone, repmon connect."""
    from infra.embedded import unwind_on_signals
    from tools.bench import bench_alert_latency, run_bench
    from tools.bench_connect import bench_connect

    unwind_on_signals()
    if connect_only:
        typer.echo(json.dumps({"connect": bench_connect()}, indent=None if json_out else 2))
        return
    if entities is not None:
        from tools.bench_detect import bench_detection_scale

        settings = _settings(config)
        try:
            sizes = tuple(int(x) for x in entities.split(",") if x.strip())
        except ValueError:
            err.print(f"--entities takes comma-separated counts such as 10,1000,10000, not {entities!r}")
            raise typer.Exit(2) from None
        report = bench_detection_scale(sizes, redis_url=settings.redis.url, console=err)
        typer.echo(json.dumps({"detection_scale": report}, indent=None if json_out else 2))
        return
    settings = _settings(config)
    if faults:
        from tools.bench_faults import bench_faults

        report = bench_faults(settings, events=fault_events, frozen_model=frozen_model, console=err)
        typer.echo(json.dumps(report, indent=None if json_out else 2))
        if "error" in report:
            raise typer.Exit(2)
        return
    if web:
        from tools.bench_web import bench_web

        typer.echo(json.dumps({"web": bench_web(settings, rate=rate, console=err)}, indent=None if json_out else 2))
        return
    try:
        sweep = [int(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        err.print(f"--rates takes comma-separated events/s such as 1000,2000,5000, not {rates!r}")
        raise typer.Exit(2) from None
    recorded = None
    if texts is not None:
        from tools.bench import read_texts

        try:
            recorded = (texts, read_texts(texts))
        except ValueError as e:
            err.print(f"--texts: {e}; give a CSV with a 'text' column, JSON lines with 'text', or a text per line")
            raise typer.Exit(2) from None
    result = run_bench(
        settings,
        events=events,
        console=err,
        config=config,
        rates=sweep,
        sweep_workers=sweep_workers,
        sweep_seconds=sweep_seconds,
        texts=recorded,
    )
    err.print("bench: repmon connect, 20 sources against local platform servers ...")
    result["connect"] = bench_connect()
    if alerts:
        result["alert_latency"] = bench_alert_latency(settings, rate=rate, console=err, config=config)
    typer.echo(json.dumps(result, indent=None if json_out else 2))


@app.command()
def backtest(
    files: Annotated[list[Path], typer.Argument(help="Recorded events: CSV/TSV/JSONL (.gz ok).", exists=True)],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", help="Column mapping TOML (infra/config/replay/).")],
    config: ConfigOpt = None,
    limit: Annotated[int | None, typer.Option(help="Stop after N rows.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", exists=True, help="Labels JSON (tools/label_reviews.py): score drops and bursts."),
    ] = None,
    holdout: Annotated[
        list[str], typer.Option("--holdout", help="Entities whose key contains this: the held-out group.")
    ] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Replay recorded events through the same pipeline logic in event time; report the alerts."""
    from rich.table import Table

    from tools.backtest import backtest as run_backtest

    settings = _settings(config)
    _logging("warning")
    label_data = json.loads(labels.read_text()) if labels else None
    report = run_backtest(settings, files, mapping, limit=limit, labels=label_data, holdout=holdout, progress=progress)
    if json_out:
        typer.echo(json.dumps(report, default=str))
        return
    con = Console()
    con.print(
        f"{report['events']} events {report['span'][0]} .. {report['span'][1]}: {report['incidents']} incidents, "
        f"{report['messages']} messages, median first-alert delay {report['median_first_alert_delay_s']} s"
    )
    con.print(f"incidents per week: {report['incidents_per_week']}")
    con.print(f"alerts per entity: {report['alerts_per_entity']}")
    for group, sc in (report.get("labels") or {}).items():
        con.print(
            f"[bold]{group}[/bold] ({sc['entities']} entities): rating drops caught {sc['caught']}/{sc['drops']}, "
            f"pages on positive bursts {sc['burst_pages']} ({sc['bursts']} bursts), false pages "
            f"{sc['false_pages']} ({sc['false_pages_per_entity_per_30d']} per entity per 30 days)"
        )
    tbl = Table(title="incidents")
    for col in ("onset", "entity", "delay s", "severity", "messages", "signals", "summary"):
        tbl.add_column(col)
    for r in report["incident_list"]:
        tbl.add_row(
            r["onset"],
            r["entity"],
            str(r["first_alert_delay_s"]),
            r["max_severity"],
            str(r["messages"]),
            ", ".join(r["signals"]),
            r["summary"][:90],
        )
    con.print(tbl)


@app.command()
def watch(
    config: ConfigOpt = None,
    topic: Annotated[str, typer.Option(help="incidents, signals, enriched or deadletter.")] = "incidents",
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    entity: Annotated[str | None, typer.Option(help="Only this entity key.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after N messages.")] = None,
) -> None:
    """Follow a live topic in the terminal: for crisis responders and for debugging."""
    import orjson
    from kafka import KafkaConsumer

    settings = _settings(config)
    if topic not in ("incidents", "signals", "enriched", "deadletter"):
        err.print("[red]--topic must be incidents, signals, enriched or deadletter[/red]")
        raise typer.Exit(2)
    con = Console()
    consumer = KafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest" if from_beginning else "latest",
        group_id=None,
    )
    shown = 0
    try:
        for msg in consumer:
            rec = orjson.loads(msg.value)
            if entity and rec.get("entity") != entity:
                continue
            if topic == "incidents" and rec.get("kind") == "action":
                con.print(f"{rec['at']} {rec['who']} {rec['action']} {rec.get('incident_id') or ''}  {rec['why']}")
            elif topic == "incidents":
                colour = {"critical": "red", "warning": "yellow"}.get(rec["severity"], "green")
                con.print(
                    f"[{colour}]{rec['updated_at']} {rec['title']}[/{colour}]  {rec['incident_id']} #{rec['seq']}"
                )
                con.print(f"    {rec['summary']}")
            elif topic == "signals":
                con.print(
                    f"{rec['bucket_start']} {rec['entity']:<20} {rec['signal']:<18} {rec['severity']:<8} "
                    f"value={rec['value']:.3g} baseline={rec['baseline']:.3g} z={rec['z']:.1f}"
                )
            else:
                con.print_json(data=rec)
            shown += 1
            if limit and shown >= limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def window_name(seconds: int) -> str:
    """``900`` -> ``15m``, ``86400`` -> ``24h``, ``604800`` -> ``7d``.

    >>> [window_name(s) for s in (900, 3600, 86400, 7 * 86400, 30 * 86400, 90)]
    ['15m', '1h', '24h', '7d', '30d', '90s']
    """
    if seconds % 86400 == 0 and seconds > 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@app.command()
def trust(
    entity: Annotated[str, typer.Argument(help="Entity key, e.g. 'northwind' or 'northwind/go app'.")],
    config: ConfigOpt = None,
    window: Annotated[str, typer.Option(help="One of windows.rollups_seconds, e.g. 15m, 1h, 24h, 7d, 30d.")] = "24h",
    at: Annotated[str | None, typer.Option(help="End of the window (ISO time); default: now.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Trust score (0-100) with its components, beside the configured competitors."""
    import asyncio
    from datetime import UTC, datetime

    from rich.table import Table

    from streams.compose import redis_client
    from streams.windows import RedisWindows

    settings = _settings(config)
    windows = {window_name(s): s for s in settings.windows.rollups_seconds}
    if window not in windows:
        err.print(f"[red]--window must be one of {', '.join(windows)} (windows.rollups_seconds)[/red]")
        raise typer.Exit(2)
    if settings.entity(entity) is None:
        known = ", ".join(e.key for e in settings.entities)
        err.print(f"[red]unknown entity {escape(entity)!r}[/red]: use one of the configured keys: {escape(known)}")
        raise typer.Exit(2)
    try:
        when = datetime.fromisoformat(at).timestamp() if at else datetime.now(UTC).timestamp()
    except ValueError:
        err.print(f"[red]--at {escape(str(at))!r} is not an ISO time[/red]: write e.g. 2026-11-24T09:00:00+00:00")
        raise typer.Exit(2) from None
    _redis_or_exit(settings)
    peers = [entity, *(e.key for e in settings.entities if e.kind == "competitor" and e.key != entity)]

    async def go() -> list[dict[str, object]]:
        r = redis_client(settings)
        try:
            store = RedisWindows(r, settings)
            return [await store.trust(p, windows[window], when) for p in peers]
        finally:
            await r.aclose()

    rows = asyncio.run(go())
    if json_out:
        typer.echo(json.dumps(rows, default=str))
        return
    for row in rows:
        tbl = Table(title=f"{row['entity']}: trust {row['score']} (baseline {row['baseline_score']}) {row['window']}")
        for col in ("component", "value", "baseline", "weight", "points", "baseline points"):
            tbl.add_column(col)
        for c in row["components"]:  # type: ignore[attr-defined]
            tbl.add_row(
                c["name"],
                str(c["value"]),
                str(c["baseline"]),
                str(c["weight"]),
                str(c["points"]),
                str(c["baseline_points"]),
            )
        Console().print(tbl)


app.add_typer(eval_app, name="eval", help="Evaluate models on labelled data.")
app.command(name="connect")(connect)
register_web(app)
app.add_typer(deadletter_app, name="deadletter", help="Re-send dead letters whose cause was fixed.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
