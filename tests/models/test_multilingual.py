"""Every language counts; each named entity gets its own sentiment; names match like a listening tool."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from contract.records import Mention, Review
from infra.settings import ConfigError, Entity, Settings, load_settings
from models.evaluate import prequential_sentiment, target_sentiment_accuracy
from models.nlp import Enricher, normalize
from models.sentiment import SentimentModel, tokens
from streams.enrich import EnrichStage
from streams.metrics import Metrics
from streams.windows import MemoryWindows, contributions

from ..conftest import SHARED_DATA

FIXTURES = Path(__file__).parent / "fixtures"
DEMO = load_settings()


def stage(tmp_path: Path, settings: Settings = DEMO) -> EnrichStage:
    s = settings.model_copy(
        update={"sentiment": settings.sentiment.model_copy(update={"checkpoint_path": str(tmp_path / "s.json")})}
    )
    st = EnrichStage(s)
    st.load_models()
    return st


def mention(i: int, text: str, lang: str | None = None) -> Mention:
    return Mention(event_id=f"t:{i}", source="t", occurred_at=datetime.now(UTC), text=text, lang=lang)


# -- every language counts -------------------------------------------------------------------------
def test_tokens_for_cjk_and_accented_latin() -> None:
    assert "péssimo" in tokens("PÉSSIMO atendimento") and "ärgerlich" in tokens("Ärgerlich!")
    ja = tokens("配送が遅い")
    assert "遅い" in ja and "配" in ja  # character uni- and bigrams, no spaces needed
    assert tokens("") == []


def test_cold_start_prior_per_language_and_honest_confidence_elsewhere() -> None:
    m = SentimentModel()
    cases = {
        ("es", "el vuelo llegó tarde y el personal fue muy grosero"): "negative",
        ("es", "excelente servicio, muy amables, lo recomiendo"): "positive",
        ("pt", "o produto chegou antes do prazo, muito bom"): "positive",
        ("pt", "não recebi o produto, péssimo"): "negative",
        ("de", "sehr gut, schnelle Lieferung, gerne wieder"): "positive",
        ("de", "nicht gut, das Paket kam kaputt an"): "negative",
        ("fr", "livraison rapide, produit parfait, merci"): "positive",
        ("fr", "pas bon du tout, colis perdu, arnaque"): "negative",
        ("it", "prodotto ottimo, spedizione veloce, lo consiglio"): "positive",
        ("it", "pacco mai arrivato, non funziona, una truffa"): "negative",
    }
    for (lang, text), want in cases.items():
        assert m.predict(text, lang).label == want, (lang, text)
    cjk = {
        ("zh", "非常喜欢、质量很好、推荐购买"): "positive",
        ("zh", "航班延误三个小时、服务很差、不推荐"): "negative",
        ("zh", "不是很满意、有点失望"): "negative",  # a negator before the term
        ("ja", "スタッフがとても親切で快適でした"): "positive",
        ("ja", "配送が遅い、最悪です"): "negative",
        ("ja", "美味しくなかった"): "negative",  # the negation after the term
    }
    for (lang, text), want in cjk.items():
        assert m.predict(text, lang).label == want, (lang, text)
    unknown = m.predict("доставка опять задерживается", "ru")
    assert unknown.label == "neutral" and unknown.confidence == pytest.approx(0.4)  # no prior: says so


def test_a_negator_inside_a_scored_phrase_does_not_negate_the_words_after_it() -> None:
    """ "gefällt mir nicht" is scored as a phrase: its "nicht" must not also flip "Schrott" after
    it (the sum was +0.33 before), nor "no funciona" flip "malo"."""
    m = SentimentModel()
    for lang, text in [
        ("de", "Das Produkt gefällt mir nicht, leider Schrott"),
        ("es", "no funciona, malo"),
        ("pt", "não funciona, uma porcaria"),
        ("fr", "ne fonctionne pas, nul"),
    ]:
        assert m.compound(text, lang) < -0.5, (lang, text)
    assert m.compound("nicht gut", "de") < 0 < m.compound("gut", "de")  # a negator on its own still negates
    assert m.compound("produit impeccable, je recommande", "fr") > 0.5
    assert m.compound("colis jamais reçu, à éviter", "fr") < -0.5


def test_a_language_learns_from_its_own_stars_only(tmp_path: Path) -> None:
    m = SentimentModel()
    for _ in range(40):
        m.learn_one("配送が遅い、最悪です", "negative", "ja")
        m.learn_one("とても良い商品です", "positive", "ja")
    assert m.predict("配送が遅い", "ja").label == "negative"
    assert m.predict("良い商品", "ja").label == "positive"
    assert m.langs["ja"].n_learned == 80 and "en" not in m.langs  # English untouched
    m.save(tmp_path / "s.json")
    doc = orjson.loads((tmp_path / "s.json").read_bytes())
    assert doc["format"] == 3 and set(doc["languages"]) == {"ja"}  # JSON, per language
    back = SentimentModel.load(tmp_path / "s.json")
    assert back.predict("配送が遅い", "ja") == m.predict("配送が遅い", "ja") and back.version == m.version


def _long_reviews(n: int, seed: int) -> list[tuple[str, str]]:
    """Synthetic reviews in a script no prior knows: 60-160 filler characters around one to three
    cue bigrams of the review's side (and, in two reviews of five, one of the other side's)."""
    import random

    rng = random.Random(seed)
    chars = [chr(0x4E00 + i) for i in range(0, 3000, 7)]
    filler, cues = chars[:300], chars[300:380]
    pos = [cues[i] + cues[i + 1] for i in range(0, 40, 2)]
    neg = [cues[i] + cues[i + 1] for i in range(40, 80, 2)]
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        own, other = (pos, neg) if label == "positive" else (neg, pos)
        parts = [rng.choice(filler) for _ in range(rng.randint(60, 160))]
        for cue in rng.sample(own, rng.randint(1, 3)) + ([rng.choice(other)] if rng.random() < 0.4 else []):
            parts.insert(rng.randrange(len(parts)), cue)
        rows.append(("".join(parts), label))
    return rows


def test_long_reviews_in_a_language_without_a_prior_keep_up_with_naive_bayes() -> None:
    """A CJK review is a hundred and more character n-grams: with a fixed SGD step the regression
    overshot on every one of them (here 0.72 macro-F1 against naive Bayes' 0.80, as on real
    Chinese reviews); AdaGrad's per-feature steps put the blend ahead of naive Bayes alone."""
    m = SentimentModel()
    out = prequential_sentiment(
        _long_reviews(1200, seed=2), m, enrich=lambda texts: [("zh", m.predict(t, "zh")) for t in texts]
    )
    assert out["per_language"]["zh"]["lexicon"]["macro_f1"] < 0.05  # the prior knows nothing here
    assert out["online"]["macro_f1"] > out["baseline_nb"]["macro_f1"] > 0.7


def test_a_checkpoint_keeps_the_step_sizes(tmp_path: Path) -> None:
    """AdaGrad's sums of squared gradients are saved with the weights: a model loaded from a
    checkpoint learns the next label exactly as the one that wrote it."""
    rows = _long_reviews(40, seed=3)
    m = SentimentModel()
    m.learn_many(rows[:30], "zh")
    m.save(tmp_path / "s.json")
    back = SentimentModel.load(tmp_path / "s.json")
    assert back.langs["zh"].steps_state() == m.langs["zh"].steps_state() != {}
    for model in (m, back):
        model.learn_many(rows[30:], "zh")
    assert back.to_dict()["languages"] == m.to_dict()["languages"]
    assert [back.proba(t, lang="zh") for t, _ in rows] == [m.proba(t, lang="zh") for t, _ in rows]


def test_format_2_checkpoint_is_read_as_the_english_model(tmp_path: Path) -> None:
    legacy = {
        "format": 2,
        "model": "vader+river-softmax",
        "n_learned": 3,
        "created": "2026-01-01T00:00:00+00:00",
        "prior_weight": 200.0,
        "lr": 0.05,
        "l2": 1e-5,
        "weights": {"negative": {"awful": 1.5}, "positive": {"awful": -1.5}},
    }
    (tmp_path / "old.json").write_bytes(orjson.dumps(legacy))
    m = SentimentModel.load(tmp_path / "old.json")
    assert m.langs["en"].n_learned == 3 and m.model.weights["negative"]["awful"] == 1.5


def test_non_english_mentions_are_scored_counted_and_reviews_teach_their_language(tmp_path: Path) -> None:
    st = stage(tmp_path)
    out = st.enrich_batch(
        [
            mention(1, "Northwind perdió mi equipaje, pésimo servicio, nunca más"),
            mention(2, "A Northwind atrasou meu voo de novo, que vergonha"),
            mention(3, "Northwind 配送が遅い", lang="ja"),
            mention(4, "Northwind опять задерживает рейс", lang="ru"),
            Review(
                event_id="r:1",
                source="r",
                occurred_at=datetime.now(UTC),
                text="Northwind: ótimo voo, tripulação muito simpática",
                rating=5,
            ),
        ]
    )
    assert [e.lang for e in out] == ["es", "pt", "ja", "ru", "pt"]
    assert all(e.sentiment is not None and e.entity == "northwind" for e in out)
    assert out[0].sentiment.label == "negative" and out[1].sentiment.label == "negative"  # type: ignore[union-attr]
    assert out[2].sentiment.label == "negative"  # type: ignore[union-attr]  # the Japanese seed lexicon
    assert out[3].sentiment.confidence == pytest.approx(0.4) and out[3].lang_confidence == 1.0  # type: ignore[union-attr]
    assert 0.9 <= (out[0].lang_confidence or 0) <= 1.0
    assert {a.aspect for a in out[0].aspects} >= {"baggage"}
    assert all(contributions(e)["n"] == 1.0 and "unscored" not in contributions(e) for e in out)
    assert st.sentiment is not None and st.sentiment.langs["pt"].n_learned == 1


async def test_per_language_metric(tmp_path: Path) -> None:
    m = Metrics()
    for lang in ("es", "es", "pt"):
        m.languages.labels(lang).inc()
    text = m.exposition().decode()
    assert 'repmon_enriched_languages_total{lang="es"} 2.0' in text


# -- target-dependent sentiment -----------------------------------------------------------------------
def test_each_entity_gets_its_own_side_and_the_windows_count_it(tmp_path: Path) -> None:
    st = stage(tmp_path)
    ev = st.enrich_batch([mention(1, "Skyline is way better than Northwind, switching for good")])[0]
    own = {m.key: m.sentiment for m in ev.entities}
    assert own["skyline"].label == "positive" and own["northwind"].label == "negative"  # type: ignore[union-attr]
    assert contributions(ev, "northwind").get("neg") == 1.0 and contributions(ev, "skyline").get("pos") == 1.0
    c = MemoryWindows(DEMO).counted(ev)
    assert c is not None and c.fields_for("northwind")["sent_sum"] < 0 < c.fields_for("skyline")["sent_sum"]
    single = st.enrich_batch([mention(2, "Northwind lost my bag")])[0]
    assert all(m.sentiment is None for m in single.entities)  # one entity: the event's sentiment is its own


def test_target_sentiment_beats_whole_text_on_the_hand_labelled_dev_set() -> None:
    rows = [(d["text"], d["labels"]) for d in map(json.loads, (FIXTURES / "multi_entity_dev.jsonl").open())]
    out = target_sentiment_accuracy(rows, Enricher(DEMO.entities))
    assert out["judgements"] == 80
    assert out["target_accuracy"] >= 0.8 and out["whole_text_accuracy"] <= 0.5


@pytest.mark.shared_data
def test_target_sentiment_on_hand_labelled_multi_airline_tweets() -> None:
    """Our own per-airline labels (by tweet id) for 88 tweets naming two airlines or more; the rules
    were tuned on 30 of them, the other 58 were held out."""
    labels = json.loads((FIXTURES / "airline_multi_entity_labels.json").read_text())
    rows, seen, model = [], set(), SentimentModel()
    with (SHARED_DATA / "twitter_us_airline_sentiment" / "Tweets.csv").open() as f:
        for r in csv.DictReader(f):
            if r["tweet_id"] in labels:
                if r["tweet_id"] not in seen:
                    seen.add(r["tweet_id"])
                    rows.append((r["text"], labels[r["tweet_id"]]))
            else:  # the model a worker has learned from the rest of the stream
                model.learn_one(r["text"], r["airline_sentiment"])
    out = target_sentiment_accuracy(rows, Enricher(load_settings(Path("infra/config/airlines.toml")).entities), model)
    assert out["texts"] == 88 and out["target_accuracy"] > out["whole_text_accuracy"]


@pytest.mark.shared_data
def test_eval_targets_reports_the_held_out_half_beside_the_whole_text_baseline() -> None:
    from typer.testing import CliRunner

    from cli.main import app

    out = CliRunner().invoke(
        app,
        [
            "eval", "targets", "--labels", str(FIXTURES / "airline_multi_entity_labels.json"),
            "--data", str(SHARED_DATA / "twitter_us_airline_sentiment" / "Tweets.csv"),
            "--label-col", "airline_sentiment", "--config", "infra/config/airlines.toml", "--part", "holdout", "--json",
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    r = json.loads(out.output.strip().splitlines()[-1])
    assert r["part"] == "holdout" and 0 < r["texts"] < 88 and r["model_learned"] > 14000
    assert r["target_accuracy"] > r["whole_text_accuracy"]


# -- matching like a listening tool ---------------------------------------------------------------------
def test_normalisation_keeps_original_offsets() -> None:
    wide = "".join(chr(ord(c) + 0xFEE0) for c in "North") + "\u200b" + "".join(chr(ord(c) + 0xFEE0) for c in "wind")
    text = wide + "\u2019s crew &amp; Skyline"  # full-width letters, a zero-width space, a curly quote
    norm, starts, ends = normalize(text)
    assert norm == "Northwind's crew & Skyline" and starts is not None and ends is not None
    an = Enricher(DEMO.entities).process([text])[0]
    assert [(h.key, text[h.start : h.end]) for h in an.entities] == [
        ("northwind", wide),
        ("skyline", "Skyline"),
    ]
    assert normalize("plain ascii") == ("plain ascii", None, None)


def test_runs_that_stall_a_tokenizer_are_tamed_and_offsets_still_point_into_the_original() -> None:
    from models.nlp import RUN_MAX, WORD_MAX

    text = '"' * 5000 + " Northwind is down again " + "x" * 3000 + " sooooooooooo bad, ask Skyline"
    norm, starts, ends = normalize(text)
    assert starts is not None and ends is not None
    assert max(len(m.group()) for m in re.finditer(r"(.)\1*", norm)) <= RUN_MAX
    assert max(len(w) for w in norm.split()) <= WORD_MAX
    assert "Northwind is down again" in norm and "soooooooo bad" in norm
    an = Enricher(DEMO.entities).process([text])[0]
    assert [(h.key, text[h.start : h.end]) for h in an.entities] == [
        ("northwind", "Northwind"),
        ("skyline", "Skyline"),
    ]
    assert an.entities[0].start == 5001


def test_a_long_text_is_scored_piece_by_piece_with_the_sign_of_its_pieces() -> None:
    from models.sentiment import VADER_PIECE, SentimentModel

    m = SentimentModel()
    bad, good = "The flight was awful and the staff were rude. ", "Lovely crew, great seats! "
    long_bad, long_good = bad * (3 * VADER_PIECE // len(bad)), good * (3 * VADER_PIECE // len(good))
    assert len(long_bad) > 2 * VADER_PIECE and len(long_good) > 2 * VADER_PIECE
    assert m.compound(long_bad) < -0.5 < 0.5 < m.compound(long_good)
    # half bad, half good: the mean of its pieces, between the two
    assert m.compound(long_bad) < m.compound(long_bad + long_good) < m.compound(long_good)
    assert m.compound(long_bad + long_good) == pytest.approx(0.0, abs=0.2)


def test_alias_rules_case_context_and_exclusions() -> None:
    apple = Entity.model_validate(
        {
            "name": "Apple",
            "aliases": ["Mac", "APL"],
            "rules": {
                "Apple": {"exclude": ["apple pie", "big apple"]},
                "Mac": {"context": ["laptop", "macbook", "os"]},
                "APL": {"case_sensitive": True},
            },
        }
    )
    e = Enricher([apple])
    found = [[h.key for h in a.entities] for a in e.process(
        [
            "my apple watch died",
            "grandma's apple pie is the best",
            "welcome to the Big Apple",
            "mac and cheese tonight",
            "my mac laptop will not boot",
            "APL stock is up",
            "apl stock is up",
            "I flew northwind today",
        ]
    )]  # fmt: skip
    assert found == [["apple"], [], [], [], ["apple"], ["apple"], [], []]
    with pytest.raises(ValueError, match="aliases first"):
        Entity.model_validate({"name": "Apple", "rules": {"Pear": {"case_sensitive": True}}})
    assert ConfigError  # the loader turns the same error into a ConfigError naming the key


def test_case_insensitive_names_and_html_entities_by_default() -> None:
    att = Entity(name="AT&T")
    an = Enricher([*DEMO.entities, att]).process(
        ["I flew northwind today", "SKYLINE &amp; NORTHWIND", "#NorthWind", "at&amp;t dropped my call"]
    )
    assert [[h.key for h in a.entities] for a in an] == [
        ["northwind"],
        ["skyline", "northwind"],
        ["northwind"],
        ["at&t"],
    ]


def test_handles_glued_to_punctuation_are_found_at_their_own_offsets() -> None:
    texts = [
        ".@northwind thanks",
        "@Northwind- hi",
        "no help from -&gt;@northwind &lt;-",
        "shortly?\u201c@Northwind: we are so sorry",
        "@northwind#4569 cancelled",
        "mail me at ops.northwind@example.com",
    ]
    an = Enricher(DEMO.entities).process(texts)
    got = [[(h.key, t[h.start : h.end]) for h in a.entities] for t, a in zip(texts, an, strict=True)]
    assert got == [
        [("northwind", "@northwind")],
        [("northwind", "@Northwind")],
        [("northwind", "@northwind")],
        [("northwind", "@Northwind")],
        [("northwind", "@northwind")],
        [],  # an e-mail address is not a handle
    ]


def test_names_run_together_or_joined_by_punctuation_as_people_type_them() -> None:
    ents = [
        Entity(name="Time Warner"),
        Entity(name="McDonald's"),
        Entity(name="Amazon"),
        Entity(name="Kindle 2", kind="product", brand="Amazon"),
        Entity(name="AT&T"),
        Entity(name="Canon"),
        Entity(name="50D", kind="product", brand="Canon"),
        Entity.model_validate({"name": "American", "rules": {"American": {"exclude": ["American Express"]}}}),
    ]
    texts = [
        "TimeWarner is down again",
        "could time-warner cable suck more",
        "Just had McDonalds for dinner",
        "@mcdonalds where is my order",
        "LOVING my new Kindle2",
        "Today is a good day to dislike AT&T. Vote them out",
        "Just got my new toy. Canon 50D. Love it",
        "@usairways and @american please get my plane together",
        "paid with my American Express card",
        "a warner bros film, a time to remember",
    ]
    got = [[h.key for h in a.entities] for a in Enricher(ents).process(texts)]
    assert got == [
        ["time warner"],
        ["time warner"],
        ["mcdonald's"],
        ["mcdonald's"],
        ["amazon/kindle 2", "amazon"],
        ["at&t"],
        ["canon/50d", "canon"],  # "Canon 50D" is one span: the product, then its brand
        ["american"],  # a name with a rule is still found as a handle, under its rule
        [],
        [],
    ]


def test_attribution_counts_hand_judged_second_entities_as_right() -> None:
    from models.evaluate import brand_attribution

    e = Enricher(DEMO.entities)
    rows = [("@northwind lost my bag, @skyline did not", "northwind"), ("nothing to see", None)]
    plain = brand_attribution(rows, e)
    judged = brand_attribution([(rows[0][0], "northwind", frozenset({"skyline"})), rows[1]], e)
    assert plain["precision"] == 0.5 and plain["recall"] == 1.0
    assert judged["precision"] == 1.0 and judged["recall"] == 1.0 and judged["no_entity"]["rows"] == 1
    missed = brand_attribution([("@northwind only", "northwind", frozenset({"skyline"}))], e)
    assert missed["recall"] == 0.5  # a judged entity not found is a false negative


@pytest.mark.shared_data
def test_airline_attribution_on_the_held_out_half() -> None:
    """Names, handles and hashtags only (and the tuning half's exclusions for "American"); the other
    airlines a tweet names are hand-judged in ``airline_also_named.json`` (every plain-name hit
    beyond the airline column was read; handles are the airline's by construction)."""
    from typer.testing import CliRunner

    from cli.main import app

    out = CliRunner().invoke(
        app,
        [
            "eval", "enrich", "--data", str(SHARED_DATA / "twitter_us_airline_sentiment" / "Tweets.csv"),
            "--config", "infra/config/airlines.toml", "--truth-map", "Delta=JetBlue", "--part", "holdout",
            "--also-named", str(FIXTURES / "airline_also_named.json"), "--json",
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    r = json.loads(out.output.strip().splitlines()[-1])
    assert r["part"] == "holdout" and r["n"] > 7000
    assert r["recall"] >= 0.95 and r["precision"] >= 0.97


def test_default_language_for_texts_too_short_to_identify() -> None:
    en, pt = Enricher(DEMO.entities), Enricher(DEMO.entities, default_language="pt")
    assert en.language_p("recomendo") == ("en", 0.5) and pt.language_p("recomendo") == ("pt", 0.5)
    assert pt.language("the app keeps crashing and I cannot check in") == "en"  # a clear text is still identified
    with pytest.raises(ValueError, match="default_language"):
        load_settings(None, nlp={"default_language": "portuguese"})


async def test_a_spanish_crisis_reaches_the_windows(tmp_path: Path) -> None:
    """Thirty Spanish complaints in one minute: counted in n and as negatives (they were unscored)."""
    st = stage(tmp_path)
    complaints = [
        "Northwind canceló mi vuelo y nadie responde, pésimo servicio",
        "otra vez retrasado con Northwind, una vergüenza, nunca más",
        "Northwind perdió mi maleta y el personal fue muy grosero",
    ]
    t = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    recs = [Mention(event_id=f"es:{i}", source="t", occurred_at=t, text=f"{complaints[i % 3]} #{i}") for i in range(30)]
    windows = MemoryWindows(DEMO)
    res = await windows.add_batch([(ev, 0) for ev in st.enrich_batch(recs)])
    assert res.counted == 30
    got = (await windows.bucket_stats(["northwind"], int(t.timestamp()) // 60 * 60))["northwind"]
    assert got["n"] == 30 and got["neg"] >= 27 and "unscored" not in got
