"""``repmon web``: the war room pages and the HTTP API (registered on the main app by :func:`register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

__all__ = ["register", "serve"]


def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
) -> None:
    """Check the config, Redis, Kafka and the tokens (one line and a non-zero exit for each problem),
    then run uvicorn until interrupted."""
    import uvicorn

    from cli.main import _kafka_or_exit, _logging, _redis_or_exit, _settings, err
    from contract.records import TOPICS
    from web.app import create_app
    from web.auth import TokenError, Tokens, check_bind

    settings = _settings(config)
    try:
        tokens = Tokens.from_env()
    except TokenError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    bind_host = host or settings.web.host
    why = check_bind(bind_host, tokens)
    if why:
        err.print(f"[red]{escape(why)}[/red]")
        raise typer.Exit(2)
    _logging("info")
    _redis_or_exit(settings)
    _kafka_or_exit(settings.kafka.bootstrap, settings, [settings.topic(t) for t in TOPICS], "")
    assert settings.redis.url is not None  # _redis_or_exit exits otherwise
    app = create_app(settings, redis_url=settings.redis.url, bootstrap=settings.kafka.bootstrap, tokens=tokens)
    bind_port = settings.web.port if port is None else port
    if tokens.open:
        err.print("[yellow]no REPMON_WEB_*_TOKENS set: the web view is open to anyone on this machine[/yellow]")
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_level="warning",
        timeout_graceful_shutdown=3,  # live streams never end by themselves
        limit_concurrency=settings.web.max_sse_clients + 100,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def web(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Config TOML (default: $REPMON_CONFIG or the bundled demo config)."),
        ] = None,
        host: Annotated[str | None, typer.Option(help="Address to bind (web.host, default 127.0.0.1).")] = None,
        port: Annotated[int | None, typer.Option(help="Port to bind (web.port, default 8090).")] = None,
    ) -> None:
        """The war room: live incident pages and the HTTP JSON API (tokens in REPMON_WEB_READ_TOKENS /
        REPMON_WEB_WRITE_TOKENS; OpenAPI at /api/openapi.json)."""
        serve(config, host, port)
