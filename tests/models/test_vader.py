"""models.vader.Vader gives the library's own VADER scores, text for text."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from models.vader import Vader
from tests.conftest import SHARED_DATA

PROBES = [
    "",
    "   ",
    "GREAT flight, but the food was NOT good!!!",
    "never so happy, without doubt the best",
    "I am not at all kind of happy :) 😀😀",
    "the shit",
    "yeah right, kiss of death... bus stop?",
    "no no no bad",
    "it wasn't bad at least, it isn't great at least",
    "AWFUL AWFUL awful",
    "café très bon 👍 à bientôt",
    "kinda sorta good but but really bad",
    "😡",
    "hello😀world 😀 x",
]


def test_probes_score_as_the_library() -> None:
    v, ref = Vader(), SentimentIntensityAnalyzer()
    for t in PROBES:
        assert v.polarity_scores(t) == ref.polarity_scores(t), t


def _texts() -> Iterator[tuple[str, str]]:
    d = SHARED_DATA
    with (d / "twitter_us_airline_sentiment" / "Tweets.csv").open(encoding="utf-8") as f:
        yield from (("airline", r["text"] or "") for r in csv.DictReader(f))
    with (d / "sentiment140_manual_test" / "testdata.manual.2009.06.14.csv").open(encoding="latin-1") as f:
        yield from (("sentiment140", r[5]) for r in csv.reader(f) if len(r) > 5)
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        with (d / "uci_sentiment_labelled_sentences" / name).open(encoding="utf-8") as f:
            yield from (("uci", line.rsplit("\t", 1)[0]) for line in f)
    with (d / "amazon_alexa_reviews" / "amazon_alexa.tsv").open(encoding="utf-8") as f:
        yield from (("alexa", r["verified_reviews"] or "") for r in csv.DictReader(f, delimiter="\t"))
    with (d / "twcs_customer_support_head5000" / "twcs_head5000.csv").open(encoding="utf-8") as f:
        yield from (("twcs", r["text"] or "") for r in csv.DictReader(f))
    with (d / "olist_classified_reviews" / "olist_classified_public_dataset.csv").open(encoding="utf-8") as f:
        yield from (("olist", r["review_comment_message"] or "") for r in csv.DictReader(f))
    path = d / "amazon_reviews_2018_5core_fashion_beauty" / "All_Beauty_5.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 3000:
                break
            yield "amazon", str(json.loads(line).get("reviewText") or "")


@pytest.mark.shared_data
def test_every_shared_text_scores_as_the_library() -> None:
    v, ref = Vader(), SentimentIntensityAnalyzer()
    seen: dict[str, int] = {}
    for source, text in _texts():
        seen[source] = seen.get(source, 0) + 1
        assert v.polarity_scores(text) == ref.polarity_scores(text), (source, text)
    # every file was read: a renamed column would otherwise pass on nothing
    assert set(seen) == {"airline", "sentiment140", "uci", "alexa", "twcs", "olist", "amazon"}
    assert min(seen.values()) > 400, seen


def test_a_list_it_did_not_lower_is_lowered_again() -> None:
    """The checks recognise the word list being scored by identity; any other list is lower-cased
    as the library does (a caller may call them directly)."""
    v = Vader()
    v.polarity_scores("this is fine")
    ref = SentimentIntensityAnalyzer
    for words in (["NOT", "Very", "so", "GOOD"], ["Never", "SO", "the", "Shit"], ["without", "Doubt", "x", "Bad"]):
        for start_i in (0, 1, 2):
            assert v._negation_check(1.0, words, start_i, 3) == ref._negation_check(1.0, words, start_i, 3), words
        assert v._special_idioms_check(1.0, words, 3) == ref._special_idioms_check(1.0, words, 3), words
