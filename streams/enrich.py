"""The enrichment stage: raw records in, enriched events out (spaCy, language, PII, sentiment).

Every text is scored in its own language (the source's language hint if it has one, else the
detected one): a language the model has not learned yet gets a low confidence, never a drop, so
every mention counts in volume and sentiment. A text naming several entities also gets each
entity's own sentiment (:mod:`models.targets`).

Synchronous and single-threaded by contract: the worker runs :meth:`EnrichStage.enrich_docs`
in a one-thread executor, so the spaCy pipeline and the online model are only ever touched by
that thread, and the event loop never waits on NLP. The benchmark calls the same code.

The worker's enriched records are plain dicts in the wire shape of
:class:`~contract.records.EnrichedEvent` (what ``model_dump(mode="json")`` gives), serialised with
orjson: a pydantic model per event and per nested match, sentiment and aspect cost more than the
rest of the publishing path. The raw input is still validated at the edge (:func:`parse_raw`), and
``tests/contract`` checks that these dicts validate against the record and its JSON Schema.
:meth:`EnrichStage.enrich_batch` validates them into models for the offline tools.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from contract.records import SCHEMA_VERSION, EnrichedEvent, Feedback, Mention, Purchase, Review, utcnow
from infra.settings import Settings
from models.nlp import Enricher, TextAnalysis, normalize
from models.privacy import pseudonymize, redact_url
from models.sentiment import SentimentModel, SentimentResult, rating_to_label
from models.targets import target_sentiments

__all__ = ["EnrichStage", "Example", "RawRecord", "iso"]

logger = logging.getLogger(__name__)

AUTHOR_KEYS = 50_000  # authors whose pseudonymous key is remembered (~10 MB)

RawRecord = Mention | Review | Purchase | Feedback


@dataclass(frozen=True, slots=True)
class Example:
    """One training example for the sentiment model: a review's text and its rating's label, or a
    human correction. ``lang`` is the language it was scored in (None: detect it when learning)."""

    text: str
    label: str
    lang: str | None = None
    event_id: str | None = None

    def to_json(self) -> bytes:
        """The labels topic's record (human corrections are the same object without lang/event_id)."""
        doc = {"text": self.text, "label": self.label, "lang": self.lang, "event_id": self.event_id}
        return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def _impact(reach: int) -> float:
    """Reach weight: 1 + log10(1 + reach).

    >>> _impact(0), _impact(999)
    (1.0, 4.0)
    """
    return 1.0 + math.log10(1.0 + max(reach, 0))


def _clip(x: float, lo: float, hi: float) -> float:
    return float(max(lo, min(hi, x)))


def iso(dt: datetime) -> str:
    """A UTC datetime as pydantic writes it in JSON mode, so a dict-built record reads the same.

    >>> from datetime import UTC
    >>> iso(datetime(2026, 11, 2, 9, 0, tzinfo=UTC)), iso(datetime(2026, 11, 2, 9, 0, 0, 5, tzinfo=UTC))
    ('2026-11-02T09:00:00Z', '2026-11-02T09:00:00.000005Z')
    """
    s = dt.isoformat()
    return s[:-6] + "Z" if s.endswith("+00:00") else s


def _sentiment(score: float, label: str, confidence: float, version: str) -> dict[str, Any]:
    return {
        "score": _clip(score, -1.0, 1.0),
        "label": label,
        "confidence": _clip(confidence, 0.0, 1.0),
        "model_version": version,
    }


class EnrichStage:
    """spaCy enrichment + online sentiment for batches of validated raw records."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enricher: Enricher | None = None
        self.sentiment: SentimentModel | None = None
        if settings.author_key_secret is None:
            logger.warning("REPMON_AUTHOR_KEY_SECRET is not set: author keys use a per-app default secret")
            secret = f"repmon:{settings.app_id}"
        else:
            secret = settings.author_key_secret.get_secret_value()
        # what authors are keyed with (dead letters key them alike: streams.runtime)
        self.author_secret = secret.encode()
        # the same authors post again and again: their keys, remembered (bounded)
        self._author_keys: dict[str, str] = {}
        # True offline (backtest, bench, eval, unit tests): a review teaches the model in place right
        # after it is scored. A worker sets it False: its reviews become examples on the labels topic,
        # learned by the fleet's one learner (streams.learning), and it scores with the newest snapshot.
        self.learn_inline = True
        self._hints: dict[str, str] = {}
        for e in settings.entities:
            for name in [e.name, *e.aliases, *(h.lstrip("@") for h in e.handles)]:
                self._hints.setdefault(name.strip().lower(), e.key)

    # -- models -----------------------------------------------------------------------------
    def load_models(self) -> None:
        """Build the spaCy pipeline and restore the sentiment model from its checkpoint."""
        s = self.settings
        if self.enricher is None:
            self.enricher = Enricher(
                s.entities,
                profile=s.nlp.profile,
                model=s.nlp.model,
                extra_aspects=s.nlp.aspects,
                default_language=s.nlp.default_language,
            )
        if self.sentiment is None:
            path = Path(s.sentiment.checkpoint_path)
            if self.learn_inline and path.exists():  # offline tools only: a worker never reads a file
                self.sentiment = SentimentModel.load(path)
                logger.info("sentiment model restored from %s (%s)", path, self.sentiment.version)
            else:
                self.sentiment = SentimentModel()
                logger.info("sentiment model starts cold (lexicon prior): %s", self.sentiment.version)

    @staticmethod
    def freeze_heap() -> None:
        """Take what is alive now (modules, the spaCy pipeline, lexicons, models) out of every
        garbage collection, once the models are loaded.

        Those ~160k objects live as long as the process, yet each full collection walked them
        all, 75-95 ms with the GIL held (the event loop stalls whichever thread collects), and
        collections were 7.7 % of enrichment's time; frozen, 1.9 %. What is allocated afterwards
        is collected as before; a pipeline built again frees the old one by reference counting
        (it holds no cycles: ``tests/models/test_nlp_sentiment.py``), frozen or not.
        """
        gc.collect()
        gc.freeze()

    @property
    def model_version(self) -> str | None:
        return self.sentiment.version if self.sentiment else None

    def learn(self, examples: Sequence[Example], model: SentimentModel | None = None) -> None:
        """Teach ``model`` (default: the one scoring here) each example, in its language's model (the
        example's own, else the detected one). On the NLP thread only."""
        assert self.sentiment is not None and self.enricher is not None, "load_models() first"
        into = model or self.sentiment
        for ex in examples:
            into.learn_one(ex.text, ex.label, ex.lang or self.enricher.language(normalize(ex.text)[0]))

    def examples(self, recs: Sequence[RawRecord], events: Sequence[Mapping[str, Any]]) -> list[Example]:
        """The training examples of an enriched batch: each review with text, labelled by its rating,
        in the language it was scored in (test-then-train: the event was scored before it teaches).

        The example carries the redacted text: the labels topic is read by the fleet's learner and
        kept for its retention, and personal data never leaves enrichment unredacted.
        """
        out = []
        for rec, ev in zip(recs, events, strict=True):
            if isinstance(rec, Review) and rec.text and ev["text_redacted"]:
                label = rating_to_label(rec.rating, self.settings.sentiment.rating_labels)
                if label:
                    out.append(Example(ev["text_redacted"], label, ev["lang"], rec.event_id))
        return out

    # -- enrichment -------------------------------------------------------------------------
    @staticmethod
    def text_of(rec: RawRecord) -> str:
        if isinstance(rec, Mention | Review):
            return rec.text
        if isinstance(rec, Feedback):
            return rec.comment or ""
        return ""

    def hint_entities(self, rec: RawRecord) -> list[str]:
        """Entity keys named by the source's own brand/product fields (product first)."""
        keys: list[str] = []
        brand = (rec.brand or "").strip().lower()
        if brand and brand in self._hints:
            keys.append(self._hints[brand])
        if rec.product:
            prod = rec.product.strip().lower()
            k = self._hints.get(prod)
            if k and "/" in k and (not brand or k.startswith(self._hints.get(brand, brand) + "/")):
                keys.insert(0, k)
        return keys

    @staticmethod
    def language_of(rec: RawRecord, an: TextAnalysis) -> tuple[str, float]:
        """The source's language hint wins over detection (short texts are hard to identify)."""
        # no getattr on the kinds without the field: a miss goes through pydantic's __getattr__
        hint = rec.lang if isinstance(rec, Mention | Review) else None
        if hint:
            return hint.strip().lower().replace("_", "-").split("-")[0], 1.0
        return an.lang, an.lang_p

    def enrich_batch(self, recs: Sequence[RawRecord]) -> list[EnrichedEvent]:
        """:meth:`enrich_docs` validated into records (offline tools and tests)."""
        return [EnrichedEvent.model_validate(d) for d in self.enrich_docs(recs)]

    def enrich_docs(self, recs: Sequence[RawRecord]) -> list[dict[str, Any]]:
        """Enrich a batch into enriched records in their JSON shape; reviews then teach their
        language's model their rating (test-then-train)."""
        assert self.enricher is not None and self.sentiment is not None, "load_models() first"
        texts = [self.text_of(r) for r in recs]
        analyses = self.enricher.process(texts)
        langs = [self.language_of(r, a) for r, a in zip(recs, analyses, strict=True)]
        version = self.sentiment.version
        # one time for the batch: its records are enriched together, within the same few ms
        enriched_at = iso(utcnow())
        out: list[dict[str, Any]] = []
        for rec, text, an, lang in zip(recs, texts, analyses, langs, strict=True):
            pred = self.sentiment.predict(text, lang[0]) if text else None
            out.append(self._to_doc(rec, text, an, pred, version, lang, enriched_at))
        if self.learn_inline:
            self.learn(self.examples(recs, out))
        return out

    def _targets(
        self, text: str, an: TextAnalysis, pred: SentimentResult | None, lang: str, version: str
    ) -> dict[str, dict[str, Any]]:
        """Each entity's own sentiment when the text names two or more brands (products go with theirs)."""
        sentiment = self.sentiment
        assert sentiment is not None
        spans = [(h.key.split("/", 1)[0], h.start, h.end) for h in an.entities if h.start < h.end]
        if len({k for k, _, _ in spans}) < 2:
            return {}

        def score(t: str) -> tuple[float, str, float]:
            r = sentiment.predict(t, lang)
            return r.score, r.label, r.confidence

        per = target_sentiments(text, spans, score, whole=pred.score if pred else None)
        out = {}
        for h in an.entities:
            t = per.get(h.key.split("/", 1)[0])
            if t is not None:
                out[h.key] = _sentiment(t.score, t.label, t.confidence, f"{version}+{t.rule}")
        return out

    def _author_key(self, author: str) -> str:
        key = self._author_keys.get(author)
        if key is None:
            if len(self._author_keys) >= AUTHOR_KEYS:
                self._author_keys.clear()
            key = self._author_keys[author] = pseudonymize(author, self.author_secret)
        return key

    def _to_doc(
        self,
        rec: RawRecord,
        text: str,
        an: TextAnalysis,
        pred: Any,
        version: str,
        lang: tuple[str, float] = ("en", 1.0),
        enriched_at: str | None = None,
    ) -> dict[str, Any]:
        """The enriched record of ``rec``, field for field as :class:`EnrichedEvent` dumps it."""
        assert self.sentiment is not None
        own = self._targets(text, an, pred, lang[0], version) if text else {}
        matches: list[dict[str, Any]] = [
            {"key": h.key, "kind": h.kind, "text": h.text, "start": h.start, "end": h.end, "sentiment": own.get(h.key)}
            for h in an.entities
        ]
        matched = {m["key"] for m in matches}
        hints = self.hint_entities(rec)
        for k in hints:
            if k not in matched:
                ent = self.settings.entity(k)
                kind = ent.kind if ent else "brand"
                matches.append({"key": k, "kind": kind, "text": "(source)", "start": 0, "end": 0, "sentiment": None})
        keys = [*hints, *(m["key"] for m in matches if m["key"] not in hints)]
        sentiment = _sentiment(pred.score, pred.label, pred.confidence, version) if pred is not None else None
        aspect = self.sentiment.aspect_sentiment
        aspects = [
            {
                "aspect": a.aspect,
                "term": a.term,
                "start": a.start,
                "end": a.end,
                "sentiment": _clip(aspect(a.clause, lang[0]), -1.0, 1.0),
            }
            for a in an.aspects
        ]
        # per kind, its own fields and None for the others' (one isinstance each, no getattr miss)
        rating = purchase_status = amount = currency = metric = score = None
        impact = 1.0
        if isinstance(rec, Mention):
            author = rec.author
            impact = _impact(rec.reach)
        elif isinstance(rec, Review):
            author = rec.author
            rating = rec.rating
        elif isinstance(rec, Purchase):
            author = rec.customer_key
            purchase_status, amount, currency = rec.status, rec.amount, rec.currency
        else:
            author = rec.customer_key
            metric, score = rec.metric, rec.score
        return {
            "version": SCHEMA_VERSION,
            "event_id": rec.event_id,
            "kind": rec.kind,
            "source": rec.source,
            "occurred_at": iso(rec.occurred_at),
            "ingested_at": iso(rec.ingested_at),
            "enriched_at": enriched_at or iso(utcnow()),
            "entity": keys[0] if keys else None,
            "entities": matches,
            "ner": [{"label": n.label, "text": n.text, "start": n.start, "end": n.end} for n in an.ner],
            "aspects": aspects,
            "sentiment": sentiment,
            "lang": lang[0] if text else None,
            "lang_confidence": _clip(lang[1], 0.0, 1.0) if text else None,
            "impact": impact,
            "text_redacted": an.text_redacted if text else None,
            "author_key": self._author_key(author) if author else None,
            "url": redact_url(rec.url),  # queries carry sessions, tokens, e-mail addresses
            "rating": rating,
            "purchase_status": purchase_status,
            "amount": amount,
            "currency": currency,
            "metric": metric,
            "score": score,
        }
