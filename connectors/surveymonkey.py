"""surveymonkey.v1: SurveyMonkey webhook events -> feedback records.

SurveyMonkey signs the raw body with HMAC-SHA1 keyed by ``<api key>&<api secret>``, base64, in
``Sm-Signature`` (https://api.surveymonkey.com/v3/docs#webhooks). SurveyMonkey's own
``response_completed`` event names the response but carries no answers: the default mapping reads
the score from ``answers.nps`` (``answers.score``) and the comment from ``answers.comment``, which
a relay that adds the answers sends; an event without a score is dead-lettered with the reason,
never dropped. Another shape needs a mapping (``mapping = "file.toml"``). The event id is the
native id: a re-sent event is accepted once.

Credentials: ``api_key`` (the app's client id / API key) and ``secret`` (the API secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.push import PushSource, hmac_b64, same
from connectors.registry import register
from connectors.source import SourceState
from connectors.webhook import SignatureError

__all__ = ["SurveyMonkeyPush"]

HEADER = "Sm-Signature"


@register
class SurveyMonkeyPush(PushSource):
    kind = "surveymonkey"
    name = "surveymonkey.v1"
    summary = "SurveyMonkey webhooks (Sm-Signature, HMAC-SHA1 of api_key&secret) -> feedback"
    credentials = ("secret", "api_key")
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

    async def open(self, state: SourceState) -> None:
        key = (self.secret("api_key") or "").encode()
        await super().open(state)
        self.secrets = [key + b"&" + s for s in self.secrets]

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        got = headers.get(HEADER)
        if not got:
            raise SignatureError(f"missing {HEADER} header")
        if not any(same(hmac_b64(s, body, "sha1"), got) for s in self.secrets):
            raise SignatureError("signature does not match")
