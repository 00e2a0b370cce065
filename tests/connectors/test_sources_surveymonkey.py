"""SurveyMonkey: a webhook event that names a response is completed from the API v3 (a local
server speaking its documented format, tests/connectors/fixtures/surveymonkey_api.json), through
the push server and the runtime into real Kafka, dedupe in real Redis."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from connectors.base import KafkaSink, ListSink, Sink
from connectors.push import PushSource
from connectors.registry import get
from infra.kafka import ensure_topics
from tests.connectors.srckit import Platform, Waits, fixture, read_topic, spec
from tests.connectors.test_sources_push import API_KEY, SECRET, SIGNERS, serving

pytestmark = pytest.mark.integration

TOKEN = "sm-oauth-token-7f3a"
ENV = {"PUSH_SECRET": SECRET, "SM_KEY": API_KEY, "SM_TOKEN": TOKEN}
API = fixture("surveymonkey_api.json")
SURVEY = API["event"]["resources"]["survey_id"]
RESPONSE = API["event"]["object_id"]
DETAILS = f"/v3/surveys/{SURVEY}/details"
ANSWERS = f"/v3/surveys/{SURVEY}/responses/{RESPONSE}/details"


class Api(Platform):
    """SurveyMonkey's API v3: survey and response details, only for the right bearer token."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: dict[str, Any] = {RESPONSE: API["response_details"]}
        self.route("GET", "/v3/surveys/{survey}/details", self.survey)
        self.route("GET", "/v3/surveys/{survey}/responses/{response}/details", self.response)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def survey(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(
                {"error": {"id": "1011", "message": "The authorization token provided was invalid."}}, status=401
            )
        if self.arg(request, "survey") != SURVEY:
            return web.json_response({"error": {"id": "1020", "message": "Resource not found"}}, status=404)
        return web.json_response(API["survey_details"])

    async def response(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(
                {"error": {"id": "1011", "message": "The authorization token provided was invalid."}}, status=401
            )
        found = self.responses.get(self.arg(request, "response"))
        if found is None:
            return web.json_response({"error": {"id": "1020", "message": "Resource not found"}}, status=404)
        return web.json_response(found)


def event(**changes: Any) -> bytes:
    e = copy.deepcopy(API["event"])
    e.update(changes)
    return orjson.dumps(e)


def signed(body: bytes) -> dict[str, str]:
    return SIGNERS["surveymonkey"](body, SECRET, 0)


@contextlib.asynccontextmanager
async def hook(
    api: Api, sink: Sink, aredis: Any, prefix: str, token_var: str = "SM_TOKEN"
) -> AsyncIterator[tuple[str, PushSource, Waits]]:
    creds = {"secret": "PUSH_SECRET", "api_key": "SM_KEY", "access_token": token_var}
    src = get("surveymonkey")(spec("surveymonkey", name="sm", base_url=api.url, credentials=creds), env=ENV)
    assert isinstance(src, PushSource)
    waits = Waits()
    src.sleep = waits
    async with httpx.AsyncClient(timeout=10) as client:
        src.client = client
        async with serving([src], sink, aredis, prefix) as url:
            yield f"{url}/hooks/sm", src, waits


async def test_the_answers_of_a_completed_response_are_fetched_with_the_bearer_token(
    aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    topic = f"sm-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    sink = KafkaSink(kafka_bootstrap, topic)
    try:
        async with Api() as api, hook(api, sink, aredis, unique) as (url, _, _), httpx.AsyncClient(timeout=30) as c:
            body = event()
            r = await c.post(url, content=body, headers=signed(body))
            assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
            again = await c.post(url, content=body, headers=signed(body))
            assert again.status_code == 200 and again.json()["duplicate"] is True
            auth = {req.headers.get("Authorization") for req in api.requests}
    finally:
        sink.close()
    assert auth == {f"Bearer {TOKEN}"}
    assert len(api.hits(DETAILS)) == 1  # the survey's questions are read once, not per response
    (rec,) = [orjson.loads(v) for v in read_topic(kafka_bootstrap, topic)]
    assert {k: rec.get(k) for k in ("event_id", "kind", "metric", "score", "comment", "customer_key")} == {
        "event_id": "surveymonkey:10000000456",
        "kind": "feedback",
        "metric": "nps",
        "score": 2,  # choice 2091028602 of the 0-10 scale reads "2"
        "comment": "Two hour delay at the gate and nobody told us why.",
        "customer_key": "11885744099",
    }


async def test_429_and_5xx_are_retried_with_the_wait_the_api_asked_for(aredis: Any, unique: str) -> None:
    sink = ListSink()
    async with Api() as api, hook(api, sink, aredis, unique) as (url, _, waits), httpx.AsyncClient(timeout=30) as c:
        api.fail(DETAILS, 502)
        api.fail(ANSWERS, 429, {"Retry-After": "3"})
        body = event()
        r = await c.post(url, content=body, headers=signed(body))
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert 3.0 in waits.seconds and len(waits.seconds) == 2
    assert len(api.hits(DETAILS)) == 2 and len(api.hits(ANSWERS)) == 2
    assert orjson.loads(sink.items[0][1])["score"] == 2


async def test_a_long_rate_limit_answers_503_with_its_wait_and_the_redelivery_is_accepted(
    aredis: Any, unique: str
) -> None:
    sink = ListSink()
    async with Api() as api, hook(api, sink, aredis, unique) as (url, _, waits), httpx.AsyncClient(timeout=30) as c:
        api.fail(ANSWERS, 429, {"Retry-After": "120"})
        body = event()
        first = await c.post(url, content=body, headers=signed(body))
        assert first.status_code == 503 and first.headers["Retry-After"] == "120", first.text
        assert sink.items == [] and waits.seconds == []  # nothing claimed, nobody kept waiting
        retry = await c.post(url, content=body, headers=signed(body))
    assert retry.status_code == 202 and retry.json()["accepted"] == 1, retry.text
    assert len(sink.items) == 1


async def test_a_response_that_is_gone_is_dead_lettered_with_the_reason_and_the_next_is_read(
    aredis: Any, unique: str
) -> None:
    sink = ListSink()
    async with Api() as api, hook(api, sink, aredis, unique) as (url, _, _), httpx.AsyncClient(timeout=30) as c:
        gone = event(event_id="10000000457", object_id="11885700000")
        r = await c.post(url, content=gone, headers=signed(gone))
        assert r.status_code == 202 and r.json()["invalid"] == 1 and r.json()["accepted"] == 0, r.text
        no_score = copy.deepcopy(API["response_details"])
        no_score["pages"][0]["questions"] = no_score["pages"][0]["questions"][2:]  # only the comment
        api.responses["11885700001"] = no_score
        blank = event(event_id="10000000458", object_id="11885700001")
        r = await c.post(url, content=blank, headers=signed(blank))
        assert r.status_code == 202 and r.json()["invalid"] == 1, r.text
        good = event()
        r = await c.post(url, content=good, headers=signed(good))
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    bad = [orjson.loads(v) for _, v in sink.items if b"_error" in v]
    assert len(bad) == 2
    assert "HTTP 404" in bad[0]["_error"] and bad[0]["object_id"] == "11885700000"
    assert "no answer to a numeric scale question" in bad[1]["_error"]


async def test_a_refused_token_stops_the_source_with_one_line(aredis: Any, unique: str) -> None:
    sink = ListSink()
    env_var = "SM_BAD_TOKEN"
    ENV[env_var] = "expired-token"
    try:
        async with (
            Api() as api,
            hook(api, sink, aredis, unique, env_var) as (url, src, _),
            httpx.AsyncClient(timeout=30) as c,
        ):
            body = event()
            r = await c.post(url, content=body, headers=signed(body))
            assert r.status_code == 503 and "HTTP 401" in r.json()["error"], r.text
            assert "access_token" in r.json()["error"]
            later = await c.post(url, content=body, headers=signed(body))
            assert later.status_code == 503 and "is stopped: HTTP 401" in later.json()["error"]
            assert src.refused is not None and "access_token" in src.refused
    finally:
        del ENV[env_var]
    assert sink.items == []


async def test_without_a_token_the_event_is_mapped_as_it_came(aredis: Any, unique: str) -> None:
    """A relay that adds ``answers`` itself keeps working, and nothing calls the API."""
    sink = ListSink()
    src = get("surveymonkey")(
        spec("surveymonkey", name="sm", credentials={"secret": "PUSH_SECRET", "api_key": "SM_KEY"}), env=ENV
    )
    assert isinstance(src, PushSource)
    async with serving([src], sink, aredis, unique) as url, httpx.AsyncClient(timeout=30) as c:
        body = event(answers={"nps": 10, "comment": "Great crew"})
        r = await c.post(f"{url}/hooks/sm", content=body, headers=signed(body))
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert orjson.loads(sink.items[0][1])["score"] == 10
