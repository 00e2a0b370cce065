"""trustpilot.v1: Trustpilot service-review webhooks (``{"events": [...]}``) -> review records.

A delivery holds ``events[]``, each ``{"eventName": "service-review-created", "eventData": {...}}``
(https://support.trustpilot.com/hc/en-us/articles/360001108568 - Trustpilot webhooks). Trustpilot
signs nothing: the webhook URL is configured with HTTP Basic credentials
(``https://user:password@host/hooks/<name>``), checked here in constant time against
``credentials.secret`` (``user:password``). The native id is ``<eventName>:<review id>``, so a
re-sent delivery is accepted once while an update of the review is a new event. Events other than
``service-review-created``/``-updated`` are skipped.

Credentials: ``secret`` (``user:password`` of the webhook URL).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from connectors.push import PushSource, same
from connectors.registry import register
from connectors.webhook import SignatureError

__all__ = ["TrustpilotPush"]


@register
class TrustpilotPush(PushSource):
    kind = "trustpilot"
    name = "trustpilot.v1"
    summary = "Trustpilot review webhooks (events[], HTTP Basic on the URL) -> reviews"
    default_mapping: ClassVar[dict[str, Any]] = {
        "kind": "review",
        "source": "trustpilot",
        "when": "contains(['service-review-created', 'service-review-updated'], eventName)",
        "columns": {
            "native_id": "join(':', [eventName, eventData.id])",
            "occurred_at": "eventData.updatedAt || eventData.createdAt",
            "rating": "eventData.stars",
            "text": "join('. ', [eventData.title, eventData.text][?@])",
            "author": "eventData.consumer.name",
            "lang": "eventData.language",
            "url": "eventData.link",
        },
        "constants": {"platform": "trustpilot"},
    }

    def precheck(self, headers: Mapping[str, str], now: float) -> None:
        self.verify(headers, b"", now)  # HTTP Basic authenticates the sender; the body is not signed

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        got = headers.get("Authorization", "")
        if not got.startswith("Basic "):
            raise SignatureError("missing HTTP Basic credentials (put user:password in the webhook URL)")
        if not any(same("Basic " + base64.b64encode(s).decode(), got) for s in self.secrets):
            raise SignatureError("HTTP Basic credentials: the secret does not match")

    def rows(self, headers: Mapping[str, str], body: bytes) -> list[Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("body is not JSON") from None
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise ValueError('body has no "events" array')
        return events
