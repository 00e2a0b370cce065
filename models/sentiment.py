"""Online sentiment: a lexicon prior for the cold start, a River model that learns as it runs.

- **prior**: VADER's compound score (a lexicon and rules tuned on social text), turned into
  class probabilities; it is what the model says before it has seen any label.
- **model**: River multiclass logistic regression on normalised word uni- and bigrams plus the
  prior's score as features, trained one example at a time from review ratings and from human
  corrections (the labels topic).
- **blend**: ``p = w * p_model + (1 - w) * p_prior`` with ``w = n / (n + prior_weight)``, ``n``
  the labels learned so far: the lexicon carries the cold start and the model takes over as it
  learns the domain.

Score in [-1, 1] is ``p(positive) - p(negative)``; label is the most probable class; confidence
its probability. Prediction never mutates the model (River's ``predict_*`` can, river#1011; here
the feature extraction is stateless and only ``learn_one`` updates weights).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from river import linear_model, optim
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

__all__ = ["LABELS", "SentimentModel", "SentimentResult", "lexicon_label", "rating_to_label"]

LABELS = ("negative", "neutral", "positive")
FORMAT = 2  # JSON checkpoints (1 was a pickle)

_URL = re.compile(r"https?://\S+")
_HANDLE = re.compile(r"@\w+")
_NUM = re.compile(r"\d+")
_TOKEN = re.compile(r"[a-z][a-z']*|[!?]|[\U0001F300-\U0001FAFF\u2600-\u27BF]")


@dataclass(frozen=True, slots=True)
class SentimentResult:
    score: float
    label: str
    confidence: float


def rating_to_label(rating: int | float | None, mapping: Mapping[str, str]) -> str | None:
    """Training label of a review rating.

    >>> rating_to_label(2, {"1": "negative", "2": "negative", "3": "neutral"})
    'negative'
    """
    if rating is None:
        return None
    return mapping.get(str(round(rating)))


def lexicon_label(compound: float) -> str:
    """VADER's own thresholds."""
    return "positive" if compound >= 0.05 else ("negative" if compound <= -0.05 else "neutral")


def _features(text: str, compound: float) -> dict[str, float]:
    t = _NUM.sub("0", _HANDLE.sub(" @user ", _URL.sub(" url ", text.lower())))
    toks = _TOKEN.findall(t)
    feats: dict[str, float] = dict(Counter(toks))
    for a, b in pairwise(toks):
        feats[f"{a} {b}"] = feats.get(f"{a} {b}", 0.0) + 1.0
    feats["__lex_pos"] = max(compound, 0.0)
    feats["__lex_neg"] = max(-compound, 0.0)
    feats["__lex_neu"] = 1.0 - abs(compound)
    return feats


def _prior(compound: float) -> dict[str, float]:
    logits = {"positive": 4.0 * compound, "negative": -4.0 * compound, "neutral": 1.2 - 4.0 * abs(compound)}
    m = max(logits.values())
    ex = {k: math.exp(v - m) for k, v in logits.items()}
    z = sum(ex.values())
    return {k: v / z for k, v in ex.items()}


class SentimentModel:
    """Lexicon prior + River online multiclass model. Not thread-safe: one owner thread."""

    name = "vader+river-softmax"

    def __init__(self, *, prior_weight: float = 200.0, lr: float = 0.05, l2: float = 1e-5) -> None:
        self.prior_weight = prior_weight
        self.model = linear_model.SoftmaxRegression(optimizer=optim.SGD(lr), l2=l2)
        self.n_learned = 0
        self.created = datetime.now(UTC).isoformat(timespec="seconds")
        self._vader = SentimentIntensityAnalyzer()
        self._compounds: dict[str, float] = {}

    # -- state ------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Changes as the model learns (stepped, so it does not change on every label)."""
        step = 0 if self.n_learned == 0 else 2 ** int(math.log2(self.n_learned))
        return f"{self.name}@{FORMAT}:{step}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON state: parameters and the weights of each class."""
        opt = self.model.optimizer
        return {
            "format": FORMAT,
            "model": self.name,
            "n_learned": self.n_learned,
            "created": self.created,
            "prior_weight": self.prior_weight,
            "lr": float(opt.learning_rate),
            "l2": float(self.model.l2),
            "weights": {str(c): dict(w) for c, w in self.model.weights.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SentimentModel:
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("model") != cls.name:
            got = {k: d.get(k) for k in ("format", "model")} if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a repmon sentiment checkpoint of format {FORMAT} (got {got})")
        m = cls(prior_weight=float(d["prior_weight"]), lr=float(d["lr"]), l2=float(d["l2"]))
        for c, w in d["weights"].items():
            m.model.weights[c].update({str(k): float(v) for k, v in w.items()})
        m.n_learned = int(d["n_learned"])
        m.created = str(d["created"])
        return m

    def save(self, path: Path | str) -> None:
        """Atomic JSON checkpoint: write a temp file beside ``path``, then rename over it."""
        p = Path(path)
        doc = {**self.to_dict(), "saved": datetime.now(UTC).isoformat(timespec="seconds")}
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name + ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(doc))
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path | str) -> SentimentModel:
        try:
            return cls.from_dict(orjson.loads(Path(path).read_bytes()))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: {exc}; delete it to start cold, or point sentiment.checkpoint_path elsewhere"
            ) from None

    # -- inference --------------------------------------------------------------------------
    def compound(self, text: str) -> float:
        """VADER compound, cached: a text is scored, its clauses scored, then learned from."""
        c = self._compounds.get(text)
        if c is None:
            if len(self._compounds) >= 4096:
                self._compounds.clear()
            c = self._compounds[text] = float(self._vader.polarity_scores(text)["compound"])
        return c

    def proba(self, text: str, compound: float | None = None) -> dict[str, float]:
        c = self.compound(text) if compound is None else compound
        prior = _prior(c)
        if self.n_learned == 0:
            return prior
        p_model = self.model.predict_proba_one(_features(text, c))
        w = self.n_learned / (self.n_learned + self.prior_weight)
        return {k: w * p_model.get(k, 0.0) + (1 - w) * prior[k] for k in LABELS}

    def predict(self, text: str) -> SentimentResult:
        p = self.proba(text)
        label = max(LABELS, key=p.__getitem__)
        return SentimentResult(max(-1.0, min(1.0, p["positive"] - p["negative"])), label, p[label])

    def predict_many(self, texts: Sequence[str]) -> list[SentimentResult]:
        return [self.predict(t) for t in texts]

    def aspect_sentiment(self, clause: str) -> float:
        """Score of the clause that mentions an aspect, in [-1, 1]."""
        return self.predict(clause).score

    # -- learning ---------------------------------------------------------------------------
    def learn_one(self, text: str, label: str) -> None:
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        self.model.learn_one(_features(text, self.compound(text)), label)
        self.n_learned += 1

    def learn_many(self, rows: Iterable[tuple[str, str]]) -> None:
        for text, label in rows:
            self.learn_one(text, label)
