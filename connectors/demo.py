"""demo.v1: a deterministic generator of realistic brand traffic with a crisis in it.

The project may not ship the public datasets, so the demo and the tests use this generator:
mentions (with @handles, #hashtags, aliases, emojis, links and some personal data for the
redaction to remove), reviews with ratings, purchases (with refunds) and NPS/CSAT answers for
every configured brand, product and competitor, with a daily rhythm. During the crisis window the
crisis entity's volume rises several-fold, most mentions turn negative about one broken thing
(the app, check-in, refunds), ratings fall and refunds surge. About 1% of events are malformed
(missing text, rating 9, naive timestamps, not JSON at all) so the dead-letter path has work.

>>> from infra.settings import load_settings
>>> from datetime import datetime, UTC
>>> evs = generate(load_settings().entities, start=datetime(2026, 1, 1, tzinfo=UTC), minutes=30)
>>> len(evs) > 300, evs == generate(load_settings().entities, start=datetime(2026, 1, 1, tzinfo=UTC), minutes=30)
(True, True)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from connectors.base import Connector, Malformed
from connectors.registry import register
from infra.settings import Entity

__all__ = ["DemoConnector", "generate", "write_sample"]

POSITIVE = [
    "Loving the new lounge from {b}, staff were super friendly 😍",
    "{b} got me home early, smooth check-in and great service",
    "Shoutout to {b} support, fixed my booking in two minutes. Thank you!",
    "Best flight in ages with {b}. Comfortable seats, tasty food",
    "{b} refund arrived in 3 days, impressed 👍",
    "the {b} crew was amazing tonight, really kind staff",
    "Great price on {b} this weekend, booked instantly",
    "{b} you never disappoint. Fast delivery of my bags too",
    "really happy with {b} today, excellent quality all round",
    "Thanks {b} for the upgrade, lovely experience #travel",
]
NEUTRAL = [
    "Flying {b} tomorrow morning, anyone know the baggage rules?",
    "Is the {b} lounge open on Sundays?",
    "{b} announced new routes for the summer",
    "Booked {b} for the conference next week",
    "Does {b} allow pets in the cabin?",
    "Comparing {b} and other airlines for my trip in May",
    "At the gate, {b} boarding starts at 7:40",
    "{b} changed the seat map again, interesting",
    "Heading to Denver on {b} later",
    "What time does {b} customer service open?",
]
NEGATIVE = [
    "{b} lost my bag again. Terrible service",
    "Two hour delay with {b} and no updates from staff 😡",
    "{b} charged me twice for the same ticket, billing is a mess",
    "Worst customer support ever, {b} hung up on me",
    "the food on {b} was cold and the seats were dirty",
    "{b} cancelled my flight with no explanation",
    "Still waiting on my refund from {b}, three weeks now",
    "{b} prices keep going up while the service gets worse",
]
CRISIS = [
    "{b} app keeps crashing, can't check in at all 😡",
    "Is the {b} app down? Can't access my booking and the website won't load",
    "{b} app outage means I missed my flight. Absolutely furious",
    "{b} charged my card three times because the app crashed during payment! Refund now",
    "can't check in, {b} app just shows an error. Airport queue is huge",
    "{b} website and app both broken, support line says 2 hour wait. Disgraceful",
    "My {b} refund still not processed and the app won't even open",
    "@{h} your app has been broken all morning, this is unacceptable",
    "{b} what is going on with the app?? Nothing works #fail",
    "Missed my connection because {b} app failed to load my boarding pass. Terrible",
]
REVIEW_POS = ["Great airline, friendly staff and on time.", "Comfortable seats and good value for the price."]
REVIEW_NEG = ["Delayed, rude staff and lost luggage.", "The app crashed and I could not check in. Awful."]
REVIEW_MID = ["It was okay, nothing special.", "Average flight, the seats could be better."]
FIRST = ["alex", "sam", "jordan", "taylor", "casey", "morgan", "riley", "jamie", "drew", "quinn"]


def _rate(minute: int, base: float) -> float:
    """Events per minute with a daily rhythm (quieter at night)."""
    hour = (minute / 60.0) % 24
    return base * (0.55 + 0.45 * math.sin((hour - 9) / 24 * 2 * math.pi) ** 2)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _ref(rng: random.Random, e: Entity) -> str:
    options = [e.name, e.name, *e.aliases, *e.handles, *e.hashtags]
    if e.kind == "product" and e.brand:
        options = [f"{e.brand} {e.name}", *e.aliases]
    ref = rng.choice(options)
    if rng.random() < 0.1 and not ref.startswith(("@", "#")):
        ref = ref.lower()
    return ref


def _pii(rng: random.Random, text: str) -> str:
    r = rng.random()
    if r < 0.03:
        return f"{text} email me at {rng.choice(FIRST)}.{rng.randint(10, 99)}@example.com"
    if r < 0.05:
        return f"{text} call me on +1 415 555 {rng.randint(1000, 9999)}"
    if r < 0.07:
        return (
            f"{text} https://tickets.example.net/b?id={rng.randint(10**6, 10**7)}&token=ab{rng.randint(10**5, 10**6)}"
        )
    return text


def generate(
    entities: Sequence[Entity],
    *,
    start: datetime,
    minutes: int = 240,
    seed: int = 7,
    crisis_entity: str = "northwind",
    crisis_at_minute: int = 200,
    crisis_minutes: int = 25,
    base_rate_per_minute: float = 12.0,
    malformed_share: float = 0.01,
) -> list[dict[str, Any] | Malformed]:
    """Events sorted by event time (malformed ones interleaved), with stable ids."""
    rng = random.Random(seed)
    out: list[tuple[float, dict[str, Any] | Malformed]] = []
    rates = {"brand": base_rate_per_minute, "competitor": base_rate_per_minute * 0.6, "product": 2.0}
    seq = 0

    def add(t: datetime, ev: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        ev = {"event_id": f"demo:{seq}", "occurred_at": t.isoformat(), "ingested_at": t.isoformat(), **ev}
        out.append((t.timestamp(), ev))

    for minute in range(minutes):
        for e in entities:
            crisis = e.key == crisis_entity and crisis_at_minute <= minute < crisis_at_minute + crisis_minutes
            lam = _rate(minute, rates[e.kind]) * (5.0 if crisis else 1.0)
            handle = (e.handles[0] if e.handles else "@" + e.name.replace(" ", "")).lstrip("@")
            for _ in range(_poisson(rng, lam)):
                t = start + timedelta(minutes=minute, seconds=rng.uniform(0, 59.9))
                roll = rng.random()
                if roll < 0.70:  # mention
                    if crisis and rng.random() < 0.85:
                        tpl = rng.choice(CRISIS)
                    else:
                        tpl = rng.choice(rng.choices([POSITIVE, NEUTRAL, NEGATIVE], weights=[35, 47, 18])[0])
                    text = _pii(rng, tpl.format(b=_ref(rng, e), h=handle))
                    add(
                        t,
                        {
                            "kind": "mention",
                            "source": rng.choice(["twitter", "mastodon", "reddit", "news"]),
                            "text": text,
                            "author": f"{rng.choice(FIRST)}{rng.randint(1, 999)}",
                            "channel": "social",
                            "reach": int(rng.lognormvariate(5, 1.6)),
                            "url": f"https://social.example.org/p/{seq + 1}",
                        },
                    )
                elif roll < 0.82:  # review
                    if crisis:
                        rating = rng.choice([1, 1, 2, 2, 3])
                    else:
                        rating = rng.choices([1, 2, 3, 4, 5], weights=[5, 6, 12, 35, 42])[0]
                    pool = REVIEW_NEG if rating <= 2 else (REVIEW_MID if rating == 3 else REVIEW_POS)
                    add(
                        t,
                        {
                            "kind": "review",
                            "source": "reviews",
                            "text": f"{rng.choice(pool)} ({_ref(rng, e)})",
                            "rating": rating,
                            "platform": rng.choice(["appstore", "trustpilot", "google"]),
                            "brand": e.brand if e.kind == "product" else e.name,
                            "product": e.name if e.kind == "product" else None,
                            "verified": rng.random() < 0.7,
                        },
                    )
                elif roll < 0.95:  # purchase
                    refund_p = 0.25 if crisis else 0.03
                    status = "refunded" if rng.random() < refund_p else rng.choice(["placed", "paid"])
                    add(
                        t,
                        {
                            "kind": "purchase",
                            "source": "shop",
                            "order_id": f"o-{seq}",
                            "status": status,
                            "amount": round(rng.uniform(40, 600), 2),
                            "currency": "USD",
                            "customer_key": f"c{rng.randint(1, 5000)}",
                            "brand": e.brand if e.kind == "product" else e.name,
                        },
                    )
                else:  # survey
                    metric = rng.choice(["nps", "csat"])
                    if metric == "nps":
                        score = (
                            rng.randint(0, 6) if crisis else rng.choices(range(11), weights=[1] * 7 + [3, 3, 5, 5])[0]
                        )
                    else:
                        score = rng.randint(1, 2) if crisis else rng.choices(range(1, 6), weights=[1, 1, 3, 5, 5])[0]
                    add(
                        t,
                        {
                            "kind": "feedback",
                            "source": "survey",
                            "metric": metric,
                            "score": score,
                            "brand": e.brand if e.kind == "product" else e.name,
                        },
                    )
    out.sort(key=lambda x: x[0])
    events: list[dict[str, Any] | Malformed] = [ev for _, ev in out]
    # malformed input, deterministic positions, never last (the demo reads the last event's time)
    n_bad = max(3, int(len(events) * malformed_share))
    for i in range(n_bad):
        pos = rng.randint(1, len(events) - 2)
        kind = i % 4
        if kind == 0:
            bad = Malformed(b"this is not json {", "not JSON")
        elif kind == 1:
            bad = Malformed(
                orjson.dumps(
                    {"kind": "mention", "event_id": f"bad:{i}", "source": "demo", "occurred_at": "2026-11-02T10:00:00"}
                ),
                "no text, naive time",
            )
        elif kind == 2:
            bad = Malformed(
                orjson.dumps(
                    {
                        "kind": "review",
                        "event_id": f"bad:{i}",
                        "source": "demo",
                        "occurred_at": start.isoformat(),
                        "rating": 9,
                        "text": "?",
                    }
                ),
                "rating 9",
            )
        else:
            bad = Malformed(
                orjson.dumps(
                    {
                        "kind": "purchase",
                        "event_id": f"bad:{i}",
                        "source": "demo",
                        "occurred_at": "yesterday",
                        "order_id": "x",
                        "status": "lost",
                        "amount": -3,
                    }
                ),
                "bad time, status, amount",
            )
        events.insert(pos, bad)
    return events


@register
class DemoConnector(Connector):
    kind = "demo"
    name = "demo.v1"

    def __init__(self, entities: Sequence[Entity], **kwargs: Any) -> None:
        self.entities = entities
        self.kwargs = kwargs
        self.kwargs.setdefault("start", datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4))

    def stream(self) -> Iterator[dict[str, Any] | Malformed]:
        yield from generate(self.entities, **self.kwargs)


def write_sample(path: Path, entities: Sequence[Entity], **kwargs: Any) -> int:
    """Write a generated sample as JSONL (malformed events as they would arrive)."""
    n = 0
    with path.open("wb") as f:
        for ev in generate(entities, **kwargs):
            f.write((ev.payload if isinstance(ev, Malformed) else orjson.dumps(ev)) + b"\n")
            n += 1
    return n
