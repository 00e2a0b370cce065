"""shopify.v1: Shopify webhooks (orders, refunds, cancellations) -> purchase records.

Shopify signs the raw body: ``X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(secret, body))``
(https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook). The topic
(``X-Shopify-Topic``) says what happened; the delivery is wrapped as
``{"topic", "shop", "webhook_id", "event_id", "delivery_key", "payload"}`` for the mapping. The
record's native id is ``delivery_key``: the topic and ``X-Shopify-Event-Id``, which Shopify
documents as the same on every webhook of one event, duplicates included (one per subscription
when several subscribe to a topic: https://shopify.dev/docs/apps/build/webhooks/ignore-duplicates);
without that header, the webhook id (``X-Shopify-Webhook-Id``, the same on every retry of one
delivery). A delivery seen twice, or one event delivered to two subscriptions, is accepted once.
The topic is part of the key so that two topics one action triggers (``orders/create`` and
``orders/paid``) stay two records. Shopify signs no timestamp: replays are refused by that key.

Topics mapped: ``orders/create`` (placed), ``orders/paid`` (paid), ``orders/cancelled``
(cancelled), ``refunds/create`` (refunded, amount = the refund's transactions).

Credentials: ``secret`` (the app's client secret, or the store's webhook signing key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from connectors.push import PushSource, hmac_b64, same
from connectors.registry import register
from connectors.webhook import SignatureError

__all__ = ["ShopifyPush"]

STATUS = {
    "orders/create": "placed",
    "orders/paid": "paid",
    "orders/cancelled": "cancelled",
    "refunds/create": "refunded",
}
HEADER = "X-Shopify-Hmac-Sha256"


@register
class ShopifyPush(PushSource):
    kind = "shopify"
    signature_header = HEADER
    name = "shopify.v1"
    summary = "Shopify webhooks (X-Shopify-Hmac-Sha256): orders, refunds, cancellations -> purchases"
    default_mapping: ClassVar[dict[str, Any]] = {
        "kind": "purchase",
        "source": "shopify",
        "when": "contains([" + ", ".join(f"'{t}'" for t in STATUS) + "], topic)",
        "columns": {
            "native_id": "delivery_key",
            "occurred_at": "payload.cancelled_at || payload.updated_at || payload.created_at",
            "order_id": "to_string(payload.order_id || payload.id)",
            "status": "topic",
            "amount": "payload.total_price || sum(payload.transactions[].to_number(amount))",
            "currency": "payload.currency || payload.transactions[0].currency",
            "customer_key": "payload.customer.id && to_string(payload.customer.id)",
        },
        "values": {"status": STATUS},
    }

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        got = headers.get(HEADER)
        if not got:
            raise SignatureError(f"missing {HEADER} header")
        if not any(same(hmac_b64(s, body), got) for s in self.secrets):
            raise SignatureError("signature does not match")

    def rows(self, headers: Mapping[str, str], body: bytes) -> list[Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("body is not JSON") from None
        topic, event = headers.get("X-Shopify-Topic"), headers.get("X-Shopify-Event-Id")
        webhook = headers.get("X-Shopify-Webhook-Id")
        return [
            {
                "topic": topic,
                "shop": headers.get("X-Shopify-Shop-Domain"),
                "webhook_id": webhook,
                "event_id": event,
                "delivery_key": f"{topic}:{event}" if event else webhook,
                "payload": payload,
            }
        ]
