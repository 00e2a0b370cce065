"""A frozen sentiment model (a fleet snapshot in a worker) scores exactly as the model it was frozen from."""

from __future__ import annotations

import csv
import random

import pytest

from models.sentiment import LABELS, SentimentModel
from tests.conftest import SHARED_DATA

WORDS = [
    "good",
    "great",
    "love",
    "awful",
    "bad",
    "terrible",
    "late",
    "delayed",
    "refund",
    "crew",
    "seat",
    "flight",
    "bag",
    "lost",
    "thanks",
    "never",
    "again",
    "meh",
    "fine",
    "okay",
    "worst",
    "best",
    "rude",
    "kind",
    "slow",
    "fast",
    "app",
    "crash",
    "update",
    "__init__",
    "__lex_pos",
    "10",
    "ok",
]
PT = [
    "ótimo",
    "péssimo",
    "entrega",
    "atrasou",
    "produto",
    "chegou",
    "não",
    "recomendo",
    "adorei",
    "defeito",
]


def _texts(rng: random.Random, words: list[str], n: int) -> list[str]:
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def _trained(seed: int = 3) -> tuple[SentimentModel, list[tuple[str, str]]]:
    rng = random.Random(seed)
    m = SentimentModel()
    held = []
    for lang, words in (("en", WORDS), ("pt", PT), ("xx", WORDS[:12])):
        for t in _texts(rng, words, 300):
            m.learn_one(t, rng.choice(LABELS), lang)
        held += [(lang, t) for t in _texts(rng, [*words, "unseenword", "outro"], 200)]
    return m, held


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)  # the same floats, not close ones


def test_a_frozen_snapshot_scores_the_same_floats_as_the_model() -> None:
    m, held = _trained()
    doc = m.to_dict()
    live, frozen = SentimentModel.from_dict(doc), SentimentModel.from_dict(doc).freeze()
    assert all(frozen.langs[lang].frozen is not None for lang in ("en", "pt", "xx"))
    for lang, text in [*held, ("en", ""), ("en", "__init__ __lex_neg good"), ("zz", "good")]:
        assert _same(live.proba(text, lang=lang), frozen.proba(text, lang=lang)), (lang, text)
        assert live.predict(text, lang) == frozen.predict(text, lang)
    # the fused entries were used (not the usual path for every text)
    assert len(frozen.langs["en"].frozen.entries) > 10  # type: ignore[union-attr]


def test_learning_thaws_a_frozen_model_and_it_learns_as_the_live_one() -> None:
    m, held = _trained()
    doc = m.to_dict()
    live, frozen = SentimentModel.from_dict(doc), SentimentModel.from_dict(doc).freeze()
    for lang, text in held[:50]:
        frozen.predict(text, lang)
        live.predict(text, lang)
    for lang, text in held[:50]:
        live.learn_one(text, "negative", lang)
        frozen.learn_one(text, "negative", lang)
    assert not frozen.frozen
    assert frozen.langs["en"].frozen is None and frozen.langs["pt"].frozen is None
    for lang, text in held[50:150]:
        assert _same(live.proba(text, lang=lang), frozen.proba(text, lang=lang))
    assert live.to_dict()["languages"] == frozen.to_dict()["languages"]  # the same tallies too


@pytest.mark.shared_data
def test_a_frozen_snapshot_scores_real_tweets_as_the_model() -> None:
    path = SHARED_DATA / "twitter_us_airline_sentiment" / "Tweets.csv"
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    random.Random(7).shuffle(rows)
    m = SentimentModel()
    for r in rows[: len(rows) // 2]:
        m.learn_one(r["text"], r["airline_sentiment"], "en")
    doc = m.to_dict()
    live, frozen = SentimentModel.from_dict(doc), SentimentModel.from_dict(doc).freeze()
    differ = [r["text"] for r in rows if not _same(live.proba(r["text"]), frozen.proba(r["text"]))]
    assert differ == []
