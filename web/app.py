"""``repmon web``: the war room pages and the HTTP JSON API, one ASGI app (FastAPI on uvicorn).

Pages are rendered on the server (Jinja2, SVG charts) and kept live by ``/static/app.js`` (plain
JavaScript, no build step, nothing fetched from outside): it listens to ``/api/v1/events``
(Server-Sent Events) and reloads the part of the page an event touches. The API is described by
``/api/openapi.json``; errors are ``{"error": ..., "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import statistics
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import redis.asyncio as aredis
from aiokafka import AIOKafkaProducer
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.controls import Controls
from alerts.render import render
from contract.records import Incident, IncidentAction, Signal, dumps
from infra.settings import Settings
from models.signals import SIGNALS
from streams.windows import RedisWindows, bucket_of
from web.auth import COOKIE, Principal, Tokens
from web.charts import line_chart
from web.hub import Hub, HubFull
from web.readmodel import Mention, ReadModel, Thread

__all__ = ["ApiError", "create_app"]

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
ACTION_HEADER = "X-Repmon-Request"
MAX_LIMIT = 500
SERIES_SIGNALS = ("volume", "negative_share", "rating", "negative_volume", "complaints", "impact_negativity")


class ApiError(Exception):
    def __init__(self, status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.headers = status, error, reason, headers


# -- API models (the OpenAPI document is made of these) ---------------------------------------
class ErrorOut(BaseModel):
    error: str = Field(description="Short machine-readable error name.")
    reason: str = Field(description="What is wrong and how to fix it.")


class IncidentSummary(BaseModel):
    incident_id: str
    entity: str
    title: str
    severity: str
    state: Literal["open", "acknowledged", "resolved", "false_positive"]
    owner: str | None
    opened_at: datetime
    updated_at: datetime
    age_seconds: float = Field(description="From the onset to the resolution, or to the newest event seen.")
    messages: int
    last_status: str


class ThreadOut(BaseModel):
    summary: IncidentSummary
    messages: list[Incident] = Field(description="Every message of the thread, in seq order, as published.")
    actions: list[dict[str, Any]] = Field(description="Responders' actions (who, when, why), oldest first.")


class ActionIn(BaseModel):
    action: Literal["acknowledge", "assign", "comment", "resolve", "false_positive"]
    why: str = Field(default="", max_length=2000)
    owner: str | None = Field(default=None, max_length=200, description="For assign: who owns it now.")


class SilenceIn(BaseModel):
    entity: str | None = Field(default=None, max_length=200)
    signal: str | None = Field(default=None, max_length=100)
    route: str | None = Field(default=None, max_length=200)
    duration_seconds: float = Field(gt=0, le=30 * 86400, description="How long from now (at most 30 days).")
    comment: str = Field(default="", max_length=2000)


class RelabelIn(BaseModel):
    label: Literal["negative", "neutral", "positive"]
    why: str = Field(default="", max_length=2000)


class MentionOut(BaseModel):
    event_id: str
    kind: str
    source: str
    entity: str | None
    entities: list[str]
    occurred_at: str
    sentiment: str | None
    score: float | None
    aspects: list[str]
    lang: str | None
    text: str = Field(description="The text with personal data redacted (at most 600 characters).")
    url: str | None
    rating: int | None


class ComponentOut(BaseModel):
    name: str
    value: float
    baseline: float | None
    weight: float
    points: float
    baseline_points: float | None


class TrustOut(BaseModel):
    window_name: str
    window_seconds: int
    entity: str
    window: list[str] = Field(description="[start, end) of the window (ISO times).")
    baseline_window: list[str]
    volume: float
    score: float | None = Field(description="0-100; None without any measurable component.")
    baseline_score: float | None
    components: list[ComponentOut]


class SilenceOut(BaseModel):
    id: str
    entity: str | None
    signal: str | None
    route: str | None
    starts_at: float
    ends_at: float = Field(description="Epoch seconds; the silence holds until then.")
    created_by: str
    comment: str


class SeriesOut(BaseModel):
    entity: str
    signal: str
    aspect: str | None
    step_seconds: int
    points: list[tuple[datetime, float | None]]
    baseline: float | None = Field(description="The signal over the baseline window (the 7 windows before).")


# -- request limits: pure ASGI (a BaseHTTPMiddleware would buffer the live streams) ------------
class _TooLarge(Exception):
    pass


class Limits:
    """Bodies over ``max_body`` get 413; more than ``rate`` requests/s per client (burst 2x) get 429."""

    def __init__(self, app: ASGIApp, *, max_body: int, rate: float) -> None:
        self.app, self.max_body, self.rate = app, max_body, rate
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _allow(self, key: str) -> bool:
        now = time.monotonic()
        cap = 2 * self.rate
        tokens, at = self._buckets.pop(key, (cap, now))
        tokens = min(cap, tokens + (now - at) * self.rate)
        ok = tokens >= 1
        self._buckets[key] = (tokens - 1 if ok else tokens, now)
        while len(self._buckets) > 10_000:  # bounded: the oldest clients are forgotten
            self._buckets.popitem(last=False)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        who = headers.get("authorization") or headers.get("cookie") or str((scope.get("client") or ("?",))[0])
        if not scope["path"].startswith("/static/") and not self._allow(hashlib.sha256(who.encode()).hexdigest()):
            await _send_error(send, 429, "rate_limited", f"more than {self.rate:g} requests/s; slow down", retry=1)
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_error(send, 413, "too_large", f"request body over {self.max_body} bytes (web.max_body_bytes)")
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, "too_large", f"request body over {self.max_body} bytes")


async def _send_error(send: Send, status: int, error: str, reason: str, retry: int | None = None) -> None:
    body = orjson.dumps({"error": error, "reason": reason})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry is not None:
        headers.append((b"retry-after", str(retry).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- the app ---------------------------------------------------------------------------------
class War:
    """What the routes share: settings, Redis, the read model, the hub, the producer."""

    def __init__(self, settings: Settings, redis_url: str, bootstrap: str, tokens: Tokens) -> None:
        w = settings.web
        self.settings, self.tokens = settings, tokens
        self.r = aredis.Redis.from_url(redis_url, socket_timeout=10)
        self.windows = RedisWindows(self.r, settings)
        self.controls = Controls(self.r, settings.redis.key_prefix)
        self.hub = Hub(keep=w.replay_events, queue_size=w.sse_queue, max_clients=w.max_sse_clients)
        self.model = ReadModel(settings, bootstrap, self.hub)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000)
        self.bucket = settings.windows.bucket_seconds
        self.stream_clients = 0

    async def start(self) -> None:
        await self.producer.start()
        await self.model.start()

    async def stop(self) -> None:
        await self.model.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        await self.r.aclose()

    # -- incidents ------------------------------------------------------------------------
    def summary(self, th: Thread, ctl: dict[str, str]) -> IncidentSummary:
        first, last = th.first, th.last
        state = ctl.get("state") or "open"
        if last.status == "resolved" and state in ("open", "acknowledged"):
            state = "resolved"
        end = last.resolved_at.timestamp() if last.resolved_at else max(self.model.now(), last.updated_at.timestamp())
        sev = max((m.severity for m in th.messages), key=("info", "warning", "critical").index)
        return IncidentSummary(
            incident_id=th.incident_id,
            entity=first.entity,
            title=last.title if last.status != "resolved" else first.title,
            severity=sev,
            state=state,
            owner=ctl.get("owner") or None,
            opened_at=first.opened_at,
            updated_at=last.updated_at,
            age_seconds=max(0.0, end - first.opened_at.timestamp()),
            messages=len(th.messages),
            last_status=last.status,
        )

    async def summaries(
        self, state: str | None = None, entity: str | None = None, limit: int = 100
    ) -> list[IncidentSummary]:
        threads = self.model.newest_threads()
        if entity:
            threads = [t for t in threads if t.first.entity == entity or t.first.entity.startswith(entity + "/")]
        ctl = await self.controls.incidents([t.incident_id for t in threads[: limit * 4 if state else limit]])
        out = [self.summary(t, ctl.get(t.incident_id, {})) for t in threads if t.incident_id in ctl]
        if state:
            out = [s for s in out if s.state == state]
        return out[:limit]

    def thread(self, incident_id: str) -> Thread:
        th = self.model.threads.get(incident_id)
        if th is None:
            raise ApiError(404, "not_found", f"no incident {incident_id!r} (GET /api/v1/incidents lists them)")
        return th

    async def publish_action(self, entry: dict[str, Any], entity: str | None) -> IncidentAction:
        act = IncidentAction(
            action_id=entry["action_id"],
            action=entry["action"],
            incident_id=entry.get("incident_id"),
            entity=entity,
            who=entry["who"],
            why=entry.get("why", ""),
            at=datetime.fromtimestamp(entry["at"], UTC),
            details={
                k: v for k, v in entry.items() if k not in {"action_id", "action", "incident_id", "who", "why", "at"}
            },
        )
        try:
            await self.producer.send_and_wait(
                self.settings.topic("incidents"), dumps(act), key=(entity or act.action_id).encode()
            )
        except Exception as exc:
            raise ApiError(
                503, "not_published", f"recorded in Redis but not published on the incidents topic: {exc}; retry"
            ) from exc
        return act

    # -- series ---------------------------------------------------------------------------
    async def series(
        self, entity: str, signal: str, aspect: str | None, start: int, end: int, step: int
    ) -> list[tuple[int, float | None]]:
        sig = SIGNALS[signal]
        ts = list(range(start, end, step))
        # Windows._rows reads a run of buckets (or hourly rollups) in one pipeline
        rows = await self.windows._rows(entity, ts, step == 3600 and step != self.bucket)
        return [
            (t, sig.value(row, aspect) if row else (0.0 if sig.kind == "count" else None))
            for t, row in zip(ts, rows, strict=True)
        ]


def _principal(request: Request) -> Principal | None:
    war: War = request.app.state.war
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    if token is None:
        token = request.cookies.get(COOKIE)
        request.state.by_cookie = token is not None
    return war.tokens.principal(token)


def need(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    async def dep(request: Request) -> Principal:
        who = _principal(request)
        if who is None:
            raise ApiError(
                401,
                "unauthorized",
                "send Authorization: Bearer <token> (REPMON_WEB_READ_TOKENS / REPMON_WEB_WRITE_TOKENS) "
                "or sign in at /login",
                {"WWW-Authenticate": "Bearer"},
            )
        if not who.can(scope):
            raise ApiError(403, "forbidden", f"token {who.name!r} has no {scope} scope; use a write token")
        if (
            scope == "write"
            and getattr(request.state, "by_cookie", False)
            and request.headers.get(ACTION_HEADER) != "1"
        ):
            raise ApiError(403, "forbidden", f"a write with the sign-in cookie needs the {ACTION_HEADER}: 1 header")
        return who

    return dep


Reader = Annotated[Principal, Depends(need("read"))]
Writer = Annotated[Principal, Depends(need("write"))]


def _war(request: Request) -> War:
    return request.app.state.war


def _limit(n: int) -> int:
    return max(1, min(n, MAX_LIMIT))


def window_name(seconds: int) -> str:
    from cli.main import window_name as name

    return name(seconds)


def create_app(settings: Settings, *, redis_url: str, bootstrap: str, tokens: Tokens) -> ASGIApp:
    """The ASGI app (wrapped in the request limits)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        war = War(settings, redis_url, bootstrap, tokens)
        await war.start()
        app.state.war = war
        try:
            yield
        finally:
            await war.stop()

    app = FastAPI(
        title="repmon war room API",
        version="1",
        description="Incidents and their threads, signals, trust scores, time series and mentions; responders' "
        "actions. Bearer tokens: read scope for GET, write scope for actions. Errors: {error, reason}.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the docs UIs load scripts from a CDN: nothing is fetched from outside here
        redoc_url=None,
        lifespan=lifespan,
        responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 429: {"model": ErrorOut}},
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["ago"] = _duration
    templates.env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
    templates.env.filters["num"] = lambda v: "" if v is None else f"{v:.3g}"
    templates.env.filters["safe_url"] = safe_url
    templates.env.filters["ts"] = lambda t: datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    templates.env.filters["hm"] = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else ""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if (exc.status == 401 and request.url.path.startswith(("/incidents", "/entities", "/mentions"))) or (
            exc.status == 401 and request.url.path == "/"
        ):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return JSONResponse({"error": exc.error, "reason": exc.reason}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        return JSONResponse({"error": "invalid_request", "reason": "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": "http_error", "reason": str(exc.detail)}, status_code=exc.status_code)

    def known_entity(entity: str) -> str:
        if settings.entity(entity) is None:
            known = ", ".join(e.key for e in settings.entities)
            raise ApiError(404, "unknown_entity", f"unknown entity {entity!r}; configured: {known}")
        return entity

    # -- API: reads -------------------------------------------------------------------------
    @app.get("/healthz", tags=["meta"])
    async def healthz(request: Request) -> dict[str, Any]:
        war = _war(request)
        lags = sorted(war.model.lags)
        return {
            "ok": True,
            "ready": war.model.ready.is_set(),
            "live_clients": war.hub.clients,
            "incident_messages_live": len(lags),
            # incident published on Kafka -> in the read model and sent to the open pages (median, s)
            "incident_lag_p50_s": round(lags[len(lags) // 2], 4) if lags else None,
        }

    @app.get("/api/v1/incidents", tags=["incidents"])
    async def list_incidents(
        request: Request,
        _: Reader,
        state: Literal["open", "acknowledged", "resolved", "false_positive"] | None = None,
        entity: str | None = None,
        limit: int = 100,
    ) -> list[IncidentSummary]:
        """Incident threads, newest onset first, with their state and owner."""
        return await _war(request).summaries(state, entity, _limit(limit))

    @app.get("/api/v1/incidents/{incident_id}", tags=["incidents"], responses={404: {"model": ErrorOut}})
    async def get_incident(request: Request, incident_id: str, _: Reader) -> ThreadOut:
        """One thread: every message as published, and every action on it."""
        war = _war(request)
        th = war.thread(incident_id)
        ctl = await war.controls.incident(incident_id)
        return ThreadOut(
            summary=war.summary(th, ctl), messages=th.messages, actions=await war.controls.log(incident_id)
        )

    @app.get("/api/v1/signals", tags=["signals"])
    async def list_signals(
        request: Request, _: Reader, entity: str | None = None, signal: str | None = None, limit: int = 100
    ) -> list[Signal]:
        """The latest signals (newest first), per entity or all."""
        model = _war(request).model
        pools = [model.signals.get(entity, ())] if entity else list(model.signals.values())
        sigs = [s for pool in pools for s in pool if signal is None or s.signal == signal]
        sigs.sort(key=lambda s: (s.bucket_start, s.emitted_at), reverse=True)
        return sigs[: _limit(limit)]

    @app.get(
        "/api/v1/trust/{entity:path}",
        tags=["trust"],
        response_model=list[TrustOut],
        responses={404: {"model": ErrorOut}},
    )
    async def get_trust(request: Request, entity: str, _: Reader, window: str | None = None) -> list[dict[str, Any]]:
        """Trust score with its components, for the entity and then each competitor; every window, or one."""
        war = _war(request)
        known_entity(entity)
        windows = {window_name(s): s for s in settings.windows.rollups_seconds}
        if window is not None and window not in windows:
            raise ApiError(422, "invalid_request", f"window must be one of {', '.join(windows)}")
        chosen = [windows[window]] if window else list(windows.values())
        peers = [entity, *(e.key for e in settings.entities if e.kind == "competitor" and e.key != entity)]
        at = war.model.now()
        out = []
        for p in peers:
            for w in chosen:
                row = await war.windows.trust(p, w, at)
                out.append({"window_name": window_name(w), "window_seconds": w, **row})
        return out

    @app.get("/api/v1/series/{entity:path}", tags=["series"], responses={404: {"model": ErrorOut}})
    async def get_series(
        request: Request,
        entity: str,
        _: Reader,
        signal: str = "negative_share",
        aspect: str | None = None,
        hours: Annotated[float, Query(gt=0, le=24 * 30)] = 24,
        step: Literal["bucket", "hour"] = "hour",
    ) -> SeriesOut:
        """One signal of an entity per bucket or per hour, ending at the newest event time seen."""
        war = _war(request)
        known_entity(entity)
        if signal not in SIGNALS:
            raise ApiError(422, "invalid_request", f"signal must be one of {', '.join(SIGNALS)}")
        if SIGNALS[signal].per_aspect and not aspect:
            raise ApiError(422, "invalid_request", f"{signal} needs an aspect=...")
        size = 3600 if step == "hour" else war.bucket
        if hours * 3600 / size > 2000:
            raise ApiError(422, "invalid_request", "at most 2000 points: use step=hour or fewer hours")
        end = bucket_of(war.model.now(), size) + size
        start = end - math.ceil(hours * 3600 / size) * size
        pts = await war.series(entity, signal, aspect, start, end, size)
        base_stats = await war.windows.window_stats(entity, start - 7 * (end - start), start)
        base = SIGNALS[signal].value(base_stats, aspect)
        if base is not None and SIGNALS[signal].kind == "count":
            base = base / (7 * len(pts))  # per point, like the series
        return SeriesOut(
            entity=entity,
            signal=signal,
            aspect=aspect,
            step_seconds=size,
            points=[(datetime.fromtimestamp(t, UTC), v) for t, v in pts],
            baseline=base,
        )

    @app.get("/api/v1/mentions", tags=["mentions"], response_model=list[MentionOut])
    async def search_mentions(
        request: Request,
        _: Reader,
        entity: str | None = None,
        sentiment: Literal["negative", "neutral", "positive"] | None = None,
        aspect: str | None = None,
        lang: str | None = None,
        source: str | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Recent mentions and reviews (the last web.mentions_kept), newest first, filtered."""
        f = {"entity": entity, "sentiment": sentiment, "aspect": aspect, "lang": lang, "source": source, "q": q}
        out: list[dict[str, Any]] = []
        for m in reversed(_war(request).model.mentions):
            if m.matches(**f):
                out.append(m.as_dict())
                if len(out) >= _limit(limit):
                    break
        return out

    @app.get("/api/v1/silences", tags=["actions"], response_model=list[SilenceOut])
    async def list_silences(request: Request, _: Reader, expired: bool = False) -> list[dict[str, Any]]:
        """Active silences (and expired ones with expired=true)."""
        return [dict(s) for s in await _war(request).controls.silences(include_expired=expired)]

    # -- API: actions -----------------------------------------------------------------------
    @app.post("/api/v1/incidents/{incident_id}/actions", tags=["actions"], responses={404: {"model": ErrorOut}})
    async def act(request: Request, incident_id: str, body: ActionIn, who: Writer) -> IncidentAction:
        """Acknowledge, assign, comment, resolve or mark a false positive: recorded in Redis (who, when, why),
        published on the incidents topic, and honoured by every worker's dispatcher."""
        war = _war(request)
        th = war.thread(incident_id)
        now = str(time.time())
        fields: dict[str, str] = {}
        if body.action == "acknowledge":
            fields = {"state": "acknowledged", "acked_by": who.name, "acked_at": now}
        elif body.action == "resolve":
            fields = {"state": "resolved", "resolved_by": who.name, "resolved_at": now}
        elif body.action == "false_positive":
            fields = {"state": "false_positive", "resolved_by": who.name, "resolved_at": now}
        elif body.action == "assign":
            if not body.owner:
                raise ApiError(422, "invalid_request", "assign needs an owner")
            fields = {"owner": body.owner}
        elif not body.why:
            raise ApiError(422, "invalid_request", "a comment needs a text (why)")
        details: dict[str, Any] = {"owner": body.owner} if body.owner else {}
        if body.action == "false_positive":
            # the buckets that fired: the detection leader learns them as normal (Controls.record)
            details["entity"] = th.first.entity
            details["buckets"] = sorted({int(s.bucket_start.timestamp()) for m in th.messages for s in m.signals})
        entry = await war.controls.record(
            incident_id, body.action, who=who.name, why=body.why, fields=fields, details=details
        )
        return await war.publish_action(entry, th.first.entity)

    @app.post("/api/v1/silences", tags=["actions"], status_code=201, response_model=SilenceOut)
    async def add_silence(request: Request, body: SilenceIn, who: Writer) -> dict[str, Any]:
        """Silence an entity, a signal or a route (matchers combine) until now + duration_seconds."""
        war = _war(request)
        if body.entity:
            known_entity(body.entity)
        if body.signal and body.signal not in SIGNALS:
            raise ApiError(422, "invalid_request", f"signal must be one of {', '.join(SIGNALS)}")
        routes = [r.name for r in settings.alerts.routes]
        if body.route and body.route not in routes:
            # a silence on a misspelt route would be accepted, listed as active and hold nothing
            known = ", ".join(routes) or "none (alerts.routes is empty)"
            raise ApiError(404, "unknown_route", f"unknown route {body.route!r}; configured: {known}")
        try:
            s, entry = await war.controls.add_silence(
                who=who.name,
                ends_at=time.time() + body.duration_seconds,
                entity=body.entity,
                signal=body.signal,
                route=body.route,
                comment=body.comment,
            )
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        await war.publish_action(entry, body.entity)
        return dict(s)

    @app.delete(
        "/api/v1/silences/{silence_id}",
        tags=["actions"],
        response_model=SilenceOut,
        responses={404: {"model": ErrorOut}},
    )
    async def end_silence(request: Request, silence_id: str, who: Writer) -> dict[str, Any]:
        """End a silence now."""
        war = _war(request)
        ended = await war.controls.expire_silence(silence_id, who=who.name)
        if ended is None:
            raise ApiError(404, "not_found", f"no silence {silence_id!r}")
        s, entry = ended
        await war.publish_action(entry, s.get("entity"))
        return dict(s)

    @app.post("/api/v1/mentions/{event_id:path}/sentiment", tags=["actions"], responses={404: {"model": ErrorOut}})
    async def relabel(request: Request, event_id: str, body: RelabelIn, who: Writer) -> IncidentAction:
        """Correct a mention's sentiment: sent to the labels topic, where the sentiment model learns it."""
        war = _war(request)
        m = war.model.find_mention(event_id)
        if m is None or not m.text:
            raise ApiError(404, "not_found", f"no recent mention {event_id!r} with text (GET /api/v1/mentions)")
        label = {"text": m.text, "label": body.label, "event_id": event_id, "was": m.sentiment, "by": who.name}
        try:
            await war.producer.send_and_wait(settings.topic("labels"), orjson.dumps(label), key=event_id.encode())
        except Exception as exc:
            raise ApiError(503, "not_published", f"the labels topic did not take it: {exc}; retry") from exc
        entry = await war.controls.record(
            None,
            "relabel",
            who=who.name,
            why=body.why,
            details={"event_id": event_id, "label": body.label, "was": m.sentiment},
        )
        return await war.publish_action(entry, m.entity)

    # -- API: live --------------------------------------------------------------------------
    @app.get("/api/v1/events", tags=["live"])
    async def events(request: Request, _: Reader) -> EventSourceResponse:
        """Server-Sent Events: ``incident``, ``action``, ``signal`` (and ``reset``: reload); send
        ``Last-Event-ID`` on reconnect to get what was missed."""
        war = _war(request)
        try:
            stream = await war.hub.subscribe(request.headers.get("last-event-id"))
        except HubFull as exc:
            raise ApiError(503, "busy", str(exc), {"Retry-After": "5"}) from None

        async def gen() -> AsyncIterator[ServerSentEvent]:
            yield ServerSentEvent(comment="connected", retry=1000)
            async for ev in stream:
                yield ServerSentEvent(data=ev.data, event=ev.event, id=ev.id)

        return EventSourceResponse(gen(), ping=15, send_timeout=30)

    @app.get("/api/v1/stream/mentions", tags=["live"])
    async def mention_stream(
        request: Request,
        _: Reader,
        entity: str | None = None,
        sentiment: str | None = None,
        aspect: str | None = None,
        lang: str | None = None,
        source: str | None = None,
    ) -> EventSourceResponse:
        """Server-Sent Events, one ``mentions`` frame a second: how many matched, and at most
        web.stream_per_second of them (evenly sampled), whatever the rate of the stream."""
        war = _war(request)
        if war.stream_clients >= settings.web.max_sse_clients:
            raise ApiError(503, "busy", "too many live streams (web.max_sse_clients)", {"Retry-After": "5"})
        f = {"entity": entity, "sentiment": sentiment, "aspect": aspect, "lang": lang, "source": source}
        k = settings.web.stream_per_second

        async def gen() -> AsyncIterator[ServerSentEvent]:
            war.stream_clients += 1
            try:
                cursor = war.model.mention_n
                yield ServerSentEvent(comment="connected", retry=1000)
                while True:
                    await asyncio.sleep(1.0)  # one frame per second: the server aggregates, the page draws
                    new: list[Mention] = war.model.mentions_since(cursor)
                    cursor = war.model.mention_n
                    matched = [m for m in new if m.matches(**f)]
                    step = max(1, math.ceil(len(matched) / k))
                    sample = matched[::step][-k:]
                    counts: dict[str, int] = {}
                    for m in matched:
                        counts[m.sentiment or "none"] = counts.get(m.sentiment or "none", 0) + 1
                    frame = {"matched": len(matched), "shown": len(sample), "by_sentiment": counts}
                    frame["items"] = [m.as_dict() for m in sample]
                    yield ServerSentEvent(data=orjson.dumps(frame).decode(), event="mentions")
            finally:
                war.stream_clients -= 1

        return EventSourceResponse(gen(), ping=15, send_timeout=30)

    # -- pages ------------------------------------------------------------------------------
    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        base = {"settings": settings, "entities": settings.entities, "open": tokens.open}
        return templates.TemplateResponse(request, name, {**base, **ctx})

    @app.get("/login", include_in_schema=False)
    async def login_form(request: Request, next: str = "/", error: str = "") -> HTMLResponse:
        return page(request, "login.html", next=next if _local_path(next) else "/", error=error)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        # a urlencoded form parsed here: python-multipart is not needed for two fields
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        token, nxt = form.get("token", [""])[0], form.get("next", ["/"])[0]
        if not _local_path(nxt):
            nxt = "/"
        if tokens.principal(token) is None:
            return RedirectResponse(f"/login?next={nxt}&error=unknown+token", status_code=303)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=12 * 3600)
        return resp

    async def incidents_ctx(request: Request) -> dict[str, Any]:
        war = _war(request)
        rows = await war.summaries(limit=200)
        return {"rows": rows, "silences": await war.controls.silences()}

    # Each page with ?part=1 is only its live part (the "_" template): what app.js fetches on an event.
    @app.get("/", include_in_schema=False)
    async def incidents_page(request: Request, _: Reader, part: bool = False) -> HTMLResponse:
        return page(request, "_incidents.html" if part else "incidents.html", **await incidents_ctx(request))

    async def incident_ctx(request: Request, incident_id: str) -> dict[str, Any]:
        war = _war(request)
        th = war.thread(incident_id)
        ctl = await war.controls.incident(incident_id)
        s = war.summary(th, ctl)
        sigs = [sig for m in th.messages for sig in m.signals]
        charts = [await incident_chart(war, th, name, aspect) for name, aspect in _chart_signals(sigs)]
        evidence = (
            th.last.evidence
            if th.last.status != "resolved"
            else th.messages[-2 if len(th.messages) > 1 else -1].evidence
        )
        loud = next((m for m in reversed(th.messages) if m.status != "resolved"), th.first)
        return {
            "s": s,
            "th": th,
            "rendered": [(m, render(m)) for m in th.messages],
            "actions": await war.controls.log(incident_id),
            "signals": sigs,
            "charts": charts,
            "loud": loud,
            "evidence": evidence,
            "silences": [x for x in await war.controls.silences() if x.get("entity") in (None, s.entity)],
            "signal_names": sorted({sig.signal for sig in sigs if sig.severity != "info"}),
            "route_names": [r.name for r in settings.alerts.routes],
        }

    @app.get("/incidents/{incident_id}", include_in_schema=False)
    async def incident_page(request: Request, incident_id: str, _: Reader, part: bool = False) -> HTMLResponse:
        ctx = await incident_ctx(request, incident_id)
        return page(request, "_incident.html" if part else "incident.html", **ctx)

    async def entity_ctx(request: Request, entity: str) -> dict[str, Any]:
        war = _war(request)
        known_entity(entity)
        end = bucket_of(war.model.now(), 3600) + 3600
        start = end - 86400
        charts = []
        for name, title in (
            ("volume", "volume per hour"),
            ("negative_share", "negative share"),
            ("rating", "mean rating"),
        ):
            pts = await war.series(entity, name, None, start, end, 3600)
            history = await war.series(entity, name, None, start - 7 * 86400, start, 3600)
            band = hour_of_day_band([t for t, _ in pts], history)
            charts.append(
                line_chart(
                    [t for t, _ in pts],
                    [v for _, v in pts],
                    band=band if any(b is not None for b in band) else None,
                    title=f"{title} (band: 10th-90th percentile of the same hour, 7 days before)",
                    width=420,
                )
            )
        peers = [entity, *(e.key for e in settings.entities if e.kind == "competitor" and e.key != entity)]
        trust = {
            p: [
                await war.windows.trust(p, w, war.model.now()) | {"name": window_name(w)}
                for w in settings.windows.rollups_seconds
            ]
            for p in peers
        }
        recent = [t for t in war.model.newest_threads() if t.first.entity == entity][:10]
        ctl = await war.controls.incidents([t.incident_id for t in recent])
        return {
            "entity": entity,
            "charts": charts,
            "trust": trust,
            "incidents": [war.summary(t, ctl.get(t.incident_id, {})) for t in recent],
        }

    @app.get("/entities/{entity:path}", include_in_schema=False)
    async def entity_page(request: Request, entity: str, _: Reader, part: bool = False) -> HTMLResponse:
        return page(request, "_entity.html" if part else "entity.html", **await entity_ctx(request, entity))

    @app.get("/mentions", include_in_schema=False)
    async def mentions_page(request: Request, _: Reader) -> HTMLResponse:
        aspects = sorted({a for m in _war(request).model.mentions for a in m.aspects})
        sources = sorted({m.source for m in _war(request).model.mentions})
        langs = sorted({m.lang for m in _war(request).model.mentions if m.lang})
        return page(
            request, "mentions.html", aspects=aspects, sources=sources, langs=langs, q=dict(request.query_params)
        )

    async def incident_chart(war: War, th: Thread, name: str, aspect: str | None) -> str:
        """The signal per bucket from an hour before the onset to after the last message, with the
        baseline band (baseline +/- 2 scale, as each of the thread's signals measured it)."""
        B = war.bucket
        onset = int(th.first.opened_at.timestamp())
        last = int(th.last.updated_at.timestamp())
        start = onset - 60 * B
        end = min(max(last + 15 * B, onset + 30 * B), start + 360 * B)
        pts = await war.series(th.first.entity, name, aspect, start, end, B)
        mine = sorted(
            (s for m in th.messages for s in m.signals if s.signal == name and s.aspect == aspect),
            key=lambda s: s.bucket_start,
        )
        band: list[tuple[float, float] | None] = []
        for t, _ in pts:
            ref = next((s for s in reversed(mine) if s.bucket_start.timestamp() <= t), mine[0] if mine else None)
            band.append((max(0.0, ref.baseline - 2 * ref.scale), ref.baseline + 2 * ref.scale) if ref else None)
        label = name.replace("_", " ") + (f" ({aspect})" if aspect else "")
        return line_chart(
            [t for t, _ in pts],
            [v for _, v in pts],
            band=band,
            markers=[(onset, "onset")],
            title=f"{th.first.entity}: {label} per {B} s bucket, baseline band",
        )

    return Limits(app, max_body=settings.web.max_body_bytes, rate=settings.web.requests_per_second)


def safe_url(url: str | None) -> str | None:
    """A source's link, only if it is http(s): a ``javascript:`` URL in a mention must not run here.

    >>> safe_url("https://x.example/1"), safe_url("javascript:alert(1)"), safe_url(None)
    ('https://x.example/1', None, None)
    """
    return url if url and url.lower().startswith(("https://", "http://")) else None


def _local_path(path: str) -> bool:
    """Where a sign-in may send the browser next: a path on this site, never another host.

    >>> _local_path("/incidents/x"), _local_path("//evil.example"), _local_path("/\\evil.example"), _local_path("https://e")
    (True, False, False, False)
    """
    return path.startswith("/") and not path.startswith(("//", "/\\"))


def hour_of_day_band(
    ts: Sequence[int], history: Sequence[tuple[int, float | None]], lo: float = 0.1, hi: float = 0.9
) -> list[tuple[float, float] | None]:
    """For each hour in ``ts``, the ``lo``..``hi`` quantiles of the same hour of the day in
    ``history``: what that hour usually looks like (a morning is busier than the night), not one
    flat mean. An hour seen fewer than two times has no band.

    >>> hist = [(d * 86400 + 9 * 3600, float(v)) for d, v in enumerate([10, 20, 30, 40, 50])]
    >>> hour_of_day_band([5 * 86400 + 9 * 3600, 5 * 86400 + 10 * 3600], hist)
    [(14.0, 46.0), None]
    """
    by_hour: dict[int, list[float]] = {}
    for t, v in history:
        if v is not None:
            by_hour.setdefault(t // 3600 % 24, []).append(v)

    out: list[tuple[float, float] | None] = []
    for t in ts:
        vals = by_hour.get(t // 3600 % 24, [])
        if len(vals) < 2:
            out.append(None)
            continue
        # percentiles interpolated between the values seen (numpy's default, "inclusive" here)
        cuts = statistics.quantiles(vals, n=100, method="inclusive")
        out.append((round(cuts[round(lo * 100) - 1], 6), round(cuts[round(hi * 100) - 1], 6)))
    return out


def _chart_signals(sigs: list[Signal]) -> list[tuple[str, str | None]]:
    """The paging signals of a thread (at most three), first seen first."""
    out: list[tuple[str, str | None]] = []
    for s in sigs:
        key = (s.signal, s.aspect)
        if s.severity != "info" and key not in out and s.signal in SIGNALS:
            out.append(key)
    return out[:3]


def _duration(seconds: float) -> str:
    """``5400`` -> ``1h 30m``.

    >>> _duration(5400), _duration(59), _duration(2 * 86400 + 3600)
    ('1h 30m', '59s', '2d 1h')
    """
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
