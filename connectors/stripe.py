"""stripe.v1: Stripe webhook events (charges, refunds, disputes) -> purchase records.

Stripe signs each delivery with ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>." + raw body)>`` (https://docs.stripe.com/webhooks#verify-manually); a delivery more than
300 s old is refused, as Stripe's libraries do. The event id (``evt_...``) is the record's native
id, so a retried delivery is accepted once. Types mapped: ``charge.succeeded`` (paid),
``charge.refunded``/``refund.created`` (refunded), ``charge.dispute.created`` (chargeback),
``charge.failed``/``payment_intent.canceled`` (cancelled); other types are skipped. Amounts are in
minor units (cents); zero-decimal currencies (JPY, KRW, ...) need a mapping with ``scale`` 1.

Credentials: ``secret`` (the endpoint's signing secret, ``whsec_...``; comma-separated to rotate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.push import PushSource
from connectors.registry import register
from connectors.webhook import check_time, parse_header, verify

__all__ = ["StripePush"]

STATUS = {
    "charge.succeeded": "paid",
    "payment_intent.succeeded": "paid",
    "charge.refunded": "refunded",
    "refund.created": "refunded",
    "charge.dispute.created": "chargeback",
    "charge.failed": "cancelled",
    "payment_intent.canceled": "cancelled",
}


@register
class StripePush(PushSource):
    kind = "stripe"
    name = "stripe.v1"
    summary = "Stripe webhooks (Stripe-Signature t=,v1=, 300 s): charges, refunds, disputes -> purchases"
    default_mapping: ClassVar[dict[str, Any]] = {
        "kind": "purchase",
        "source": "stripe",
        "when": "contains([" + ", ".join(f"'{t}'" for t in STATUS) + "], type)",
        "columns": {
            "native_id": "id",
            "occurred_at": "created",
            "order_id": "data.object.payment_intent || data.object.charge || data.object.id",
            "status": "type",
            # JMESPath's || treats 0 as a value: pick amount_refunded by the type, not by truthiness
            "amount": "type == 'charge.refunded' && data.object.amount_refunded || data.object.amount",
            "currency": "data.object.currency",
            "customer_key": "data.object.customer",
        },
        "time": {"format": "epoch"},
        "values": {"status": STATUS},
        "scale": {"amount": 0.01},
        "case": {"currency": "upper"},
    }

    def precheck(self, headers: Mapping[str, str], now: float) -> None:
        t, _ = parse_header(headers.get("Stripe-Signature"), "Stripe-Signature")
        check_time(t, now=now, tolerance=self.tolerance)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        verify(
            body,
            headers.get("Stripe-Signature"),
            self.secrets,
            now=now,
            tolerance=self.tolerance,
            name="Stripe-Signature",
        )
