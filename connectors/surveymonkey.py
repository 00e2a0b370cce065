"""surveymonkey.v1: SurveyMonkey webhook events -> feedback records, answers from its API.

SurveyMonkey signs the raw body with HMAC-SHA1 keyed by ``<api key>&<api secret>``, base64, in
``Sm-Signature`` (https://api.surveymonkey.com/v3/docs#webhooks). Its ``response_completed``
event names the response (``object_id``, ``resources.survey_id``) but carries no answers, so
with an ``access_token`` credential (an OAuth bearer token of the app) every such event is
completed from the API v3 before it is mapped:

- ``GET /v3/surveys/{survey_id}/details`` once per survey (kept in memory): which question is
  the score and which the comment, and the value of every choice (its ``weight``, else its text
  when that is a number: an NPS scale's choices read ``0`` to ``10``);
- ``GET /v3/surveys/{survey_id}/responses/{response_id}/details``: the chosen choice of the
  score question and the text of the comment question.

The score question is ``options.score_question`` (a question id), else the first question whose
choices are all numbers; the comment is ``options.comment_question``, else the first open-ended
answer. ``429`` and ``5xx`` are retried by :mod:`connectors.http` (``Retry-After`` honoured);
when they persist the delivery is answered ``503`` and SurveyMonkey sends it again. A response
that no longer exists (``404``) or has no score is dead-lettered with the reason; a refused
token (``401``/``403``) stops the source with one line. Without ``access_token`` the event is
mapped as it came (a relay that adds ``answers`` itself keeps working). The event id is the
native id: a re-sent event is accepted once.

Credentials: ``api_key`` (the app's client id / API key), ``secret`` (the API secret) and,
optional, ``access_token`` (scopes View Surveys and View Response Details).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from connectors.push import PushSource, hmac_b64, same
from connectors.registry import register
from connectors.source import SourceError, SourceState
from connectors.webhook import SignatureError

__all__ = ["SurveyMonkeyPush", "answers_of"]

HEADER = "Sm-Signature"


class SurveyMonkeyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score_question: str | None = None  # question id of the score (default: the first numeric scale)
    comment_question: str | None = None  # question id of the comment (default: the first open-ended answer)


def _number(text: Any) -> float | None:
    """A choice's value: ``"9"`` -> 9 (scores are integers in the contract), ``"2.5"`` -> 2.5."""
    try:
        v = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return int(v) if v.is_integer() else v


@dataclass
class _Survey:
    """What a survey's details say about its questions, for reading a response."""

    values: dict[str, float] = field(default_factory=dict)  # choice id -> its value
    scales: list[str] = field(default_factory=list)  # question ids whose choices are all numbers
    open_ended: list[str] = field(default_factory=list)  # question ids of family open_ended

    @classmethod
    def of(cls, details: Any) -> _Survey:
        out = cls()
        pages = details.get("pages") if isinstance(details, dict) else None
        for page in pages or []:
            for q in page.get("questions") or []:
                qid = str(q.get("id"))
                if q.get("family") == "open_ended":
                    out.open_ended.append(qid)
                choices = (q.get("answers") or {}).get("choices") or []
                values = {}
                for c in choices:
                    v = c.get("weight")
                    v = _number(c.get("text")) if v is None else _number(v)
                    if v is not None:
                        values[str(c.get("id"))] = v
                if choices and len(values) == len(choices):
                    out.scales.append(qid)
                    out.values.update(values)
        return out


def answers_of(
    survey: Any, response: Any, score_question: str | None = None, comment_question: str | None = None
) -> dict[str, Any]:
    """``{"score", "comment"}`` of one response (API v3 details of the survey and the response).

    >>> scale = {"choices": [{"id": "c9", "text": "9"}, {"id": "c3", "text": "3"}]}
    >>> survey = {"pages": [{"questions": [
    ...     {"id": "q1", "family": "matrix", "answers": scale}, {"id": "q2", "family": "open_ended"}]}]}
    >>> answers_of(survey, {"pages": [{"questions": [
    ...     {"id": "q1", "answers": [{"choice_id": "c9"}]}, {"id": "q2", "answers": [{"text": "Kind crew"}]}]}]})
    {'score': 9, 'comment': 'Kind crew'}
    """
    s = survey if isinstance(survey, _Survey) else _Survey.of(survey)
    given: dict[str, list[dict[str, Any]]] = {}
    for page in (response.get("pages") if isinstance(response, dict) else None) or []:
        for q in page.get("questions") or []:
            given[str(q.get("id"))] = [a for a in q.get("answers") or [] if isinstance(a, dict)]
    out: dict[str, Any] = {}
    for qid in [score_question] if score_question else s.scales:
        picked = [s.values[str(a["choice_id"])] for a in given.get(qid, []) if str(a.get("choice_id")) in s.values]
        if picked:
            out["score"] = picked[0]
            break
    for qid in [comment_question] if comment_question else s.open_ended:
        texts = [str(a["text"]).strip() for a in given.get(qid, []) if str(a.get("text") or "").strip()]
        if texts:
            out["comment"] = " ".join(texts)
            break
    return out


@register
class SurveyMonkeyPush(PushSource):
    kind = "surveymonkey"
    signature_header = HEADER
    name = "surveymonkey.v1"
    summary = "SurveyMonkey webhooks (Sm-Signature, HMAC-SHA1 of api_key&secret), answers from API v3 -> feedback"
    credentials = ("secret", "api_key")
    optional_credentials = ("access_token",)
    Options = SurveyMonkeyOptions
    default_base_url = "https://api.surveymonkey.com"
    default_mapping: ClassVar[dict[str, Any]] = {
        "kind": "feedback",
        "source": "surveymonkey",
        "when": "event_type == 'response_completed'",
        "columns": {
            "native_id": "event_id",
            "occurred_at": "event_datetime",
            "score": "answers.nps || answers.score",
            "comment": "answers.comment",
            "customer_key": "resources.respondent_id",
        },
        "constants": {"metric": "nps"},
    }

    def __init__(self, spec: Any, **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.surveys: dict[str, _Survey] = {}
        self.token: str | None = None
        self._api: Any = None

    async def open(self, state: SourceState) -> None:
        key = (self.secret("api_key") or "").encode()
        self.token = self.secret("access_token", required=False)
        await super().open(state)
        self.secrets = [key + b"&" + s for s in self.secrets]

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        got = headers.get(HEADER)
        if not got:
            raise SignatureError(f"missing {HEADER} header")
        if not any(same(hmac_b64(s, body, "sha1"), got) for s in self.secrets):
            raise SignatureError("signature does not match")

    async def expand(self, rows: list[Any]) -> list[Any]:
        if self.token is None:
            return rows
        return [await self._with_answers(r) for r in rows]

    #: the platform waits for our answer to its delivery: back off at most this long per request
    #: (a longer Retry-After answers 503 with it, and SurveyMonkey delivers again later)
    max_wait: ClassVar[float] = 10.0

    async def _get(self, path: str) -> Any:
        from connectors.http import Http

        if self._api is None or self._api.client is not self.client:
            assert self.client is not None, "the runtime gives every source its HTTP client"
            hint = "the OAuth token in credentials.access_token (scopes: View Surveys, View Response Details)"
            self._api = Http(
                self.client,
                self.spec.name,
                retries=3,
                max_delay=self.max_wait,
                max_wait=self.max_wait,
                sleep=self.sleep,
                hint=hint,
            )
        return await self._api.get_json(f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self.token}"})

    async def _with_answers(self, row: Any) -> Any:
        if not isinstance(row, dict) or row.get("event_type") != "response_completed" or "answers" in row:
            return row
        res = row.get("resources")
        res = res if isinstance(res, dict) else {}
        survey_id, response_id = res.get("survey_id") or row.get("filter_id"), row.get("object_id")
        if not survey_id or not response_id:
            return {**row, "answers": {}, "_error": "response_completed event without survey_id or object_id"}
        try:
            survey = self.surveys.get(str(survey_id))
            if survey is None:
                survey = self.surveys[str(survey_id)] = _Survey.of(await self._get(f"/v3/surveys/{survey_id}/details"))
            response = await self._get(f"/v3/surveys/{survey_id}/responses/{response_id}/details")
        except SourceError as exc:
            if exc.status in (401, 403):
                raise
            # a deleted response or survey: this event cannot be completed, the others can
            return {**row, "answers": {}, "_error": f"answers not fetched: {exc}"}
        opts = self.options
        assert isinstance(opts, SurveyMonkeyOptions)
        answers = answers_of(survey, response, opts.score_question, opts.comment_question)
        out = {**row, "answers": answers}
        if "score" not in answers:
            out["_error"] = f"response {response_id} of survey {survey_id} has no answer to a numeric scale question"
        return out
