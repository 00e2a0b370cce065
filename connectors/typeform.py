"""typeform.v1: Typeform responses (NPS / opinion-scale answers) -> feedback records.

Typeform signs the raw body: ``Typeform-Signature: sha256=<base64(HMAC-SHA256(secret, body))>``
(https://www.typeform.com/developers/webhooks/secure-your-webhooks/). The response token is the
native id (a redelivery is accepted once). The default mapping takes the first ``nps`` or
``opinion_scale`` answer as an NPS score and the first text answer as the comment; a form whose
score question is another field needs a mapping (``mapping = "file.toml"``) with e.g.
``score = "form_response.answers[?field.ref=='score'].number | [0]"``.

Credentials: ``secret`` (the secret set on the webhook).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.push import PushSource, hmac_b64, same
from connectors.registry import register
from connectors.webhook import SignatureError

__all__ = ["TypeformPush"]

HEADER = "Typeform-Signature"


@register
class TypeformPush(PushSource):
    kind = "typeform"
    signature_header = HEADER
    name = "typeform.v1"
    summary = "Typeform webhooks (Typeform-Signature: sha256=): NPS answers -> feedback"
    default_mapping: ClassVar[dict[str, Any]] = {
        "kind": "feedback",
        "source": "typeform",
        "when": "event_type == 'form_response'",
        "columns": {
            "native_id": "form_response.token",
            "occurred_at": "form_response.submitted_at",
            "score": "form_response.answers[?field.type=='nps' || field.type=='opinion_scale'].number | [0]",
            "comment": "form_response.answers[?type=='text'].text | [0]",
            "customer_key": "form_response.hidden.customer_id",
        },
        "constants": {"metric": "nps"},
    }

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        got = headers.get(HEADER)
        if not got or not got.startswith("sha256="):
            raise SignatureError(f"missing or malformed {HEADER} header (sha256=<base64>)")
        if not any(same(hmac_b64(s, body), got.removeprefix("sha256=")) for s in self.secrets):
            raise SignatureError("signature does not match")
