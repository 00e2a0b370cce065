"""Sparse review streams with default settings: per-event tests, labels, the backtest that skips empty buckets."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.settings import DetectSettings
from models.detect import CountState, EntityDetector, SeqState, Verdict, WindowState
from tools.backtest import score_labels
from tools.label_reviews import ReviewPoint, label_points

from ..conftest import SHARED_DATA

DEFAULTS = DetectSettings()  # a config naming only entities: minute buckets, min_volume 10
T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def _bucket(ratings: list[int]) -> dict[str, float]:
    neg = sum(r <= 2 for r in ratings)
    return {
        "events": len(ratings),
        "n": len(ratings),
        "neg": neg,
        "pos": sum(r >= 4 for r in ratings),
        "rating_n": len(ratings),
        "rating_sum": sum(ratings),
        "rating_sq": sum(r * r for r in ratings),
    }


def _replay(det: EntityDetector, days: list[list[list[int]]]) -> list[tuple[int, str, str]]:
    """Feed days of reviews (a few buckets a day, minute buckets, the rest idle)."""
    out, last = [], -1
    for d, buckets in enumerate(days):
        for j, ratings in enumerate(buckets):
            b = d * 1440 + 600 + 97 * j  # minute index of the bucket
            det.idle(b - last - 1)
            last = b
            out += [(d, v.signal, v.severity) for v in det.update(_bucket(ratings), hour_of_week=(b // 60) % 168)]
    return out


def _usual(rng: random.Random) -> list[list[int]]:
    return [[rng.choice([5, 5, 5, 4, 4, 3, 1])] for _ in range(rng.choice([1, 2, 3, 4]))]


def test_a_rating_drop_on_a_few_reviews_a_day_is_caught_with_defaults() -> None:
    rng = random.Random(1)
    det = EntityDetector(DEFAULTS)
    days = [_usual(rng) for _ in range(300)]
    days += [[[rng.choice([1, 1, 2, 3, 4])] for _ in range(3)] for _ in range(7)]  # a bad week: ~2.2 stars
    hits = _replay(det, days)
    assert [h for h in hits if h[0] < 300 and h[2] != "info"] == []  # ten months of usual reviews: silent
    bad = [h for h in hits if h[0] >= 300 and h[1] == "rating" and h[2] != "info"]
    assert bad and bad[0][0] <= 304, hits[-5:]


def test_a_burst_of_five_star_reviews_never_pages_a_sparse_stream() -> None:
    rng = random.Random(2)
    det = EntityDetector(DEFAULTS)
    days = [_usual(rng) for _ in range(200)]
    days += [[[5] * 12, [5] * 9, [5, 5, 4] * 4]]  # launch day: 33 reviews, nearly all five stars
    days += [_usual(rng) for _ in range(30)]
    hits = _replay(det, days)
    assert [h for h in hits if h[0] >= 200 and h[2] != "info"] == []


def test_empty_buckets_cost_nothing_to_the_per_event_tests() -> None:
    """A run of empty buckets accounted at once (the backtest) leaves the per-event tests as
    learning each empty bucket does (the live engine): they only see the reviews and the time."""
    rng = random.Random(3)
    reviews = [([rng.choice([5, 4, 3, 1])], rng.randint(0, 40)) for _ in range(400)]
    dense, sparse = EntityDetector(DEFAULTS), EntityDetector(DEFAULTS)
    for r, gap in reviews:
        for _ in range(gap):
            dense.update({})
        dense.update(_bucket(r))
        sparse.idle(gap)
        sparse.update(_bucket(r))
    for key in ("seq:rating", "seq:negative_share"):
        a, b = dense.signals[key], sparse.signals[key]
        assert isinstance(a, SeqState) and isinstance(b, SeqState)
        assert a.to_dict() == b.to_dict()


def test_labels_weekly_drops_with_support_and_positive_bursts() -> None:
    pts = [ReviewPoint("p", T0 + timedelta(days=d, hours=h), 5.0 if h % 3 else 4.0) for d in range(70) for h in (1, 2)]
    pts += [ReviewPoint("p", T0 + timedelta(days=70 + d), 2.0) for d in range(4)]  # week 11: 4 reviews at 2
    pts += [ReviewPoint("q", T0 + timedelta(days=d), 4.0) for d in range(0, 70, 7)]  # too few for a label
    pts += [ReviewPoint("q", T0 + timedelta(days=71), 1.0) for _ in range(4)]
    pts += [ReviewPoint("p", T0 + timedelta(days=60, minutes=m), 5.0) for m in range(12)]  # a launch day
    out = label_points(pts, min_week=3, min_trailing=10)
    assert [(d["entity"], d["week"]) for d in out["drops"]] == [("p", "2024-03-11")]
    assert [(b["entity"], b["day"]) for b in out["bursts"]] == [("p", "2024-03-01")]
    assert label_points(pts, min_week=5, min_trailing=10)["drops"] == []  # 4 reviews: below that support


def test_backtest_scores_caught_missed_bursts_and_false_pages() -> None:
    def row(entity: str, day: str, signals: list[str], sev: str = "warning") -> dict[str, object]:
        return {"incident_id": f"{entity}{day}", "entity": entity, "onset": f"{day}T00:00:00+00:00",
                "signals": signals, "max_severity": sev}  # fmt: skip

    report = {
        "span": ["2024-01-01T00:00:00+00:00", "2024-12-31T00:00:00+00:00"],
        "entities": ["acme/p", "acme/q"],
        "incident_list": [
            row("acme/p", "2024-03-09", ["rating"]),  # 2 days before the labelled week: caught
            row("acme/q", "2024-05-02", ["trending"], "info"),  # info, on a burst day: not a page
            row("acme/q", "2024-07-01", ["volume"]),  # volume only: neither a catch nor ...
            row("acme/q", "2024-09-01", ["negative_share"]),  # ... a false page outside any window
        ],
    }
    labels = {
        "drops": [{"entity": "p", "week": "2024-03-11"}, {"entity": "q", "week": "2024-07-01"}],
        "bursts": [{"entity": "q", "day": "2024-05-02"}],
    }
    got = score_labels(report, labels, holdout=["/q"])
    assert (got["tune"]["caught"], got["tune"]["missed"]) == (1, 0)
    assert (got["holdout"]["caught"], got["holdout"]["missed"], got["holdout"]["burst_pages"]) == (0, 1, 0)
    assert got["holdout"]["false_pages"] == 1 and got["tune"]["false_pages"] == 0
    assert got["holdout"]["false_pages_per_entity_per_30d"] == round(1 / (365 / 30), 3)  # the span: no activity known
    report["active_days"] = {"acme/p": 300.0, "acme/q": 60.0}  # q was active two months
    assert score_labels(report, labels, holdout=["/q"])["holdout"]["false_pages_per_entity_per_30d"] == 0.5


ALEXA = SHARED_DATA / "amazon_alexa_reviews" / "amazon_alexa.tsv"


@pytest.mark.shared_data
def test_backtest_on_real_reviews_skips_empty_buckets_and_does_not_page_bursts(tmp_path: Path) -> None:
    from infra.settings import load_settings
    from tools.backtest import backtest
    from tools.label_reviews import label_reviews

    root = Path(__file__).resolve().parents[2]
    mapping = root / "infra" / "config" / "replay" / "amazon_alexa.toml"
    labels = label_reviews([ALEXA], mapping)
    ents = ['[[entities]]\nname = "amazon"\nkind = "brand"']
    ents += [f'[[entities]]\nname = {json.dumps(e)}\nkind = "product"\nbrand = "amazon"' for e in labels["entities"]]
    (tmp_path / "c.toml").write_text("\n".join(ents) + "\n")
    report = backtest(load_settings(tmp_path / "c.toml"), [ALEXA], mapping, labels=labels)
    # the work is in the buckets with events: the minutes in between are accounted for at once
    assert report["events"] == 3150 and report["buckets_with_events"] <= 3150
    assert report["buckets_skipped"] > 20 * report["buckets_with_events"], report["buckets_skipped"]
    sc = report["labels"]["all"]
    assert sc["bursts"] >= 10 and sc["burst_pages"] <= sc["bursts"] // 5, sc


def test_a_further_drop_is_a_new_episode_a_lasting_level_is_not() -> None:
    rng = random.Random(4)
    det = EntityDetector(DEFAULTS)
    days = [_usual(rng) for _ in range(200)]  # ~3.9 stars
    days += [[[rng.choice([3, 3, 2, 2, 4])] for _ in range(3)] for _ in range(60)]  # ~2.8 stars for two months
    days += [[[rng.choice([1, 1, 2])] for _ in range(3)] for _ in range(10)]  # then ~1.3
    hits = [h for h in _replay(det, days) if h[1] == "rating" and h[2] != "info"]
    first = [d for d, _, _ in hits if 200 <= d < 260]
    assert first and first[0] < 215  # the first drop, early
    assert len(first) <= 2  # and then the lower level is the reference: not a page a day
    assert [d for d, _, _ in hits if d >= 260][:1] and min(d for d, _, _ in hits if d >= 260) <= 264


@pytest.mark.shared_data
def test_backtest_without_labels(tmp_path: Path) -> None:
    from infra.settings import load_settings
    from tools.backtest import backtest

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "c.toml").write_text('[[entities]]\nname = "amazon"\nkind = "brand"\n')
    mapping = root / "infra" / "config" / "replay" / "amazon_alexa.toml"
    report = backtest(load_settings(tmp_path / "c.toml"), [ALEXA], mapping, limit=600)
    assert report["buckets_skipped"] > 0 and "labels" not in report and report["events"] == 600


def test_backtest_of_years_of_sparse_reviews_ticks_once_per_batch(tmp_path: Path) -> None:
    """Ten years of minute buckets with a review a month: one engine tick per batch of records (each
    tick loads and saves every entity's detector state), judging every closed bucket, the empty
    ones in runs; not one tick per 5,000 empty minutes, the live bound on a tick's work."""
    from infra.settings import load_settings
    from tools.backtest import backtest

    rng = random.Random(3)
    t0 = int(datetime(2010, 1, 1, tzinfo=UTC).timestamp())
    rows = [
        {
            "reviewText": "fine" if rng.random() < 0.8 else "broke after a week",
            "overall": rng.choice([5, 4, 4, 3]),
            "unixReviewTime": t0 + i * 30 * 86400 + rng.randrange(86400),
            "reviewerID": f"r{i}",
            "asin": rng.choice(["P1", "P2"]),
        }
        for i in range(120)
    ]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ents = ['[[entities]]\nname = "acme"']
    ents += [f'[[entities]]\nname = "{p}"\nkind = "product"\nbrand = "acme"' for p in ("p1", "p2")]
    (tmp_path / "c.toml").write_text("\n".join(ents) + "\n")
    root = Path(__file__).resolve().parents[2]
    mapping = root / "infra" / "config" / "replay" / "amazon_reviews_5core.toml"
    report = backtest(load_settings(tmp_path / "c.toml"), [data], mapping, batch=32)
    assert report["events"] == 120 and report["buckets_skipped"] > 5_000_000
    assert report["ticks"] == 4, report["ticks"]  # 120 records in batches of 32
    # every minute from the first review's to the last closed one is accounted for (the last ones
    # wait for the allowed lateness, the last review's own bucket is still filling)
    settings = load_settings(tmp_path / "c.toml")
    span = (max(r["unixReviewTime"] for r in rows) - min(r["unixReviewTime"] for r in rows)) // 60
    late = settings.windows.allowed_lateness_seconds // 60 + 2
    assert span - late <= report["buckets_judged"] <= span, (report["buckets_judged"], span)


def _usual_dense(rng: random.Random) -> list[int]:
    """3-5 reviews a minute of a product rated ~4.4 (5 % 1-star): busy, yet under ``min_volume``."""
    return [rng.choices([1, 2, 3, 4, 5], [5, 3, 7, 20, 65])[0] for _ in range(rng.randint(3, 5))]


def test_chance_clusters_of_low_stars_at_small_support_do_not_page() -> None:
    """Twenty thousand reviews at 3-5 a minute, drawn from one star distribution: any cluster of
    1-star reviews in them is chance. (The Gaussian test this replaced paged 20 times on these
    two streams, e.g. 2.4 vs 4.44 stars on 5 reviews.)"""
    pages = []
    for seed in (0, 1):
        rng, det = random.Random(seed), EntityDetector(DEFAULTS)
        for m in range(5000):
            pages += [(seed, m, v.signal) for v in det.update(_bucket(_usual_dense(rng))) if v.severity != "info"]
    assert len(pages) <= 1, pages


def test_a_drop_of_a_star_at_small_support_is_still_caught_within_the_hour() -> None:
    rng, det = random.Random(5), EntityDetector(DEFAULTS)
    for _ in range(3000):
        det.update(_bucket(_usual_dense(rng)))
    hits = []
    for m in range(60):  # then ~3.3 stars: 1-star reviews five times as often
        ratings = [rng.choices([1, 2, 3, 4, 5], [25, 8, 10, 20, 37])[0] for _ in range(rng.randint(3, 5))]
        hits += [(m, v.signal) for v in det.update(_bucket(ratings)) if v.severity != "info"]
    assert any(s == "rating" for _, s in hits) and min(m for m, s in hits if s == "rating") < 30, hits


def test_the_star_distribution_has_the_entitys_moments_and_the_alternative_is_a_star_lower() -> None:
    from models.detect import _maxent_stars, _tilted_mean

    for mean, var in ((4.7, 0.5), (3.2, 2.6), (2.0, 1.0)):
        p = _maxent_stars(mean, var)
        m = sum((i + 1) * x for i, x in enumerate(p))
        assert abs(m - mean) < 1e-6 and abs(sum((i + 1) ** 2 * x for i, x in enumerate(p)) - m * m - var) < 1e-6
        st = SeqState(mean=mean, var=var, w=100.0, n=100)
        theta, _ = st.drop_tilt()
        p0 = st.stars()
        m0 = sum((i + 1) * x for i, x in enumerate(p0))
        assert abs(_tilted_mean(p0, theta) - max(m0 - 1.0, 1.0 + 0.5 * (m0 - 1.0))) < 1e-6


def test_a_one_star_review_weighs_more_for_a_product_everyone_rates_five() -> None:
    from models.signals import SIGNALS

    sig = SIGNALS["rating"]
    loved = SeqState(mean=4.95, var=0.05, w=140.0, n=300)
    split = SeqState(mean=3.2, var=2.8, w=140.0, n=300)  # 1s and 5s
    assert loved.llr(sig, 1, 1.0) > 2.0 * split.llr(sig, 1, 1.0) > 0
    assert loved.llr(sig, 1, 5.0) < 0 and split.llr(sig, 1, 5.0) < 0  # a 5-star review is evidence against a drop


def test_the_threshold_follows_the_page_budget_and_the_review_rate() -> None:
    from models.detect import SEQ_H_MIN
    from models.signals import SIGNALS

    sig = SIGNALS["rating"]
    st = SeqState(mean=4.3, var=1.2, w=140.0, n=3000)
    busy = EntityDetector(DEFAULTS, buckets=30 * 1440)  # 3,000 reviews in 30 days
    quiet = EntityDetector(DEFAULTS, buckets=300 * 1440)  # 3,000 reviews in 300 days
    assert busy._seq_h(st, sig) > quiet._seq_h(st, sig) >= SEQ_H_MIN
    # Siegmund: (e^h - h - 1) / KL events between false alarms ~ events per 30 days / budget
    from models.detect import SEQ_PAGE_BUDGET

    h = busy._seq_h(st, sig)
    assert abs(math.expm1(h) / st.kl(sig) - 3000 / SEQ_PAGE_BUDGET) < 1.0


def test_a_burst_of_five_star_reviews_with_negative_texts_does_not_page_but_the_same_texts_without_stars_do() -> None:
    """The reviewers' stars outrank the sentiment model: 40 reviews in a bucket, 12 of them scored
    negative by the model, all five stars, are good news; the same 12 negative mentions (no
    stars) are a rise in negative volume that pages."""
    rng = random.Random(6)
    det = EntityDetector(DEFAULTS)
    for _ in range(600):
        det.update(_bucket(_usual_dense(rng)))
    burst = {**_bucket([5] * 40), "neg": 12, "pos": 28}
    assert [v for v in det.judge(burst) if v.severity != "info"] == []
    assert any(v.severity == "info" and v.signal == "negative_volume" for v in det.judge(burst))
    mentions = {k: v for k, v in burst.items() if not k.startswith("rating")}
    assert any(v.signal == "negative_volume" and v.severity != "info" for v in det.judge(mentions))


def test_chance_drops_count_what_the_rule_finds_without_any_real_drop() -> None:
    """A product with a real bad week keeps it in the data and loses it when shuffled; a
    polarised product (1s and 5s, a few reviews a week) has 'drops' by chance too."""
    from tools.label_reviews import chance_drops

    rng = random.Random(8)
    steady = [ReviewPoint("p", T0 + timedelta(days=d, hours=h), 4.0 + (h % 2)) for d in range(140) for h in (1, 2)]
    steady += [ReviewPoint("p", T0 + timedelta(days=140 + d), 1.0) for d in range(6)]
    assert len(label_points(steady)["drops"]) == 1
    assert chance_drops(steady, 5) == [0] * 5  # six 1-stars spread over 20 weeks: no week drops
    split = [ReviewPoint("q", T0 + timedelta(days=d * 0.9), rng.choice([1.0, 5.0, 5.0])) for d in range(400)]
    assert sum(chance_drops(split, 5)) > 0


def _replay_verdicts(det: EntityDetector, days: list[list[list[int]]]) -> list[tuple[int, Verdict]]:
    out, last = [], -1
    for d, buckets in enumerate(days):
        for j, ratings in enumerate(buckets):
            b = d * 1440 + 600 + 97 * j
            det.idle(b - last - 1)
            last = b
            out += [(d, v) for v in det.update(_bucket(ratings), hour_of_week=(b // 60) % 168)]
    return out


def test_the_window_test_catches_a_bad_week_on_a_review_every_other_day() -> None:
    """Too few reviews for the per-review test to be sure: the week against its two months is."""
    rng = random.Random(11)
    det = EntityDetector(DEFAULTS)
    days = [[[rng.choice([5, 5, 5, 4, 4, 4, 3])]] if d % 2 == 0 else [] for d in range(240)]  # ~4.3 stars
    days += [[[rng.choice([3, 3, 2, 4])], [rng.choice([3, 2, 4])]] if d % 2 == 0 else [] for d in range(8)]  # ~3
    hits = [(d, v) for d, v in _replay_verdicts(det, days) if v.signal == "rating" and v.severity != "info"]
    assert [d for d, _ in hits if d < 240] == []
    late = [(d, v) for d, v in hits if d >= 240]
    assert late and late[0][0] <= 247, hits[-3:]
    assert any(v.detector == "window-drop-v1" for _, v in late)
    assert late[0][1].baseline > late[0][1].value + 1.0  # explains itself: the week's stars vs the reference


def test_the_window_test_follows_its_settings() -> None:
    """The same bad week: missed by a team that asks for eight standard errors, caught earlier by a
    team that reads its rating over three days."""
    rng = random.Random(11)
    days = [[[rng.choice([5, 5, 5, 4, 4, 4, 3])]] if d % 2 == 0 else [] for d in range(240)]
    days += [[[rng.choice([3, 3, 2, 4])], [rng.choice([3, 2, 4])]] if d % 2 == 0 else [] for d in range(8)]

    def first_window_page(cfg: DetectSettings) -> int | None:
        hits = [d for d, v in _replay_verdicts(EntityDetector(cfg), days) if v.detector == "window-drop-v1"]
        return hits[0] if hits and hits[0] >= 240 else None

    assert first_window_page(DetectSettings(rating_window_z=8.0)) is None
    week = first_window_page(DEFAULTS)
    short = first_window_page(DetectSettings(rating_window_days=3, rating_window_min_reviews=3))
    assert week is not None and short is not None and short <= week


def test_a_window_that_hovers_at_the_threshold_pages_once() -> None:
    rng = random.Random(12)
    det = EntityDetector(DEFAULTS)
    days = [[[rng.choice([5, 5, 4, 4, 4])]] for _ in range(120)]  # ~4.4 stars, a review a day
    days += [[[rng.choice([3, 3, 4, 2])]] for _ in range(40)]  # then ~3 for weeks: in and out of a drop
    hits = [d for d, v in _replay_verdicts(det, days) if v.detector == "window-drop-v1" and v.severity != "info"]
    assert len(hits) == 1, hits


def test_window_state_survives_a_round_trip_and_forgets_old_days() -> None:
    st = WindowState()
    for day in range(100):
        st.add(DEFAULTS, day, 1.0, 4.0, 16.0)
    st.add(DEFAULTS, 99, 1.0, 2.0, 4.0)  # a second review on the same day adds to it
    assert st.days[0][0] > 99 - 63 and st.days[-1] == [99.0, 2.0, 6.0, 20.0]
    back = WindowState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st


def _texts(stars: list[int], negative: int) -> dict[str, float]:
    b = _bucket(stars)
    b["neg"], b["pos"] = negative, len(stars) - negative
    return b


def test_a_new_products_second_day_is_no_count_crisis_against_a_day_of_empty_minutes() -> None:
    """Reviews dated by the day: a launch day, then a busier second day with a few low stars and
    a dozen texts the model reads as negative. A baseline of one busy minute and 1,439 empty ones
    says nothing of how many negatives a day brings: the count tests wait for ten buckets with
    events of their own, the per-review tests judge the stars."""
    det = EntityDetector(DEFAULTS)
    assert det.update(_texts([5] * 58 + [4] * 12 + [3] * 5 + [2] * 2, 3)) == []
    det.idle(1439)
    day2 = det.update(_texts([2] * 4 + [1] * 5 + [4] * 13 + [5] * 42 + [3] * 3, 12))
    assert [v for v in day2 if v.severity != "info"] == [], day2
    assert [v for v in day2 if v.signal in ("negative_volume", "volume", "trending")] == []


def test_count_tests_fire_once_they_have_seen_ten_buckets_with_events() -> None:
    det = EntityDetector(DEFAULTS)
    for _ in range(40):  # forty minutes of a steady stream: one negative in twenty mentions
        assert [v for v in det.update({"events": 20, "n": 20, "neg": 1, "pos": 10}) if v.severity != "info"] == []
    spike = det.update({"events": 60, "n": 60, "neg": 45, "pos": 5})
    assert "negative_volume" in {v.signal for v in spike if v.severity != "info"}, spike
    saved = det.signals["negative_volume"].to_dict()
    del saved["active"]  # a state saved before active buckets were kept: already warm
    assert CountState.from_dict(saved).active == -1


def test_a_count_spike_in_the_first_buckets_with_events_waits() -> None:
    det = EntityDetector(DEFAULTS)
    det.update({"events": 20, "n": 20, "neg": 1, "pos": 10})
    det.idle(40)  # forty empty minutes: past the warm-up in buckets, not in buckets with events
    spike = det.update({"events": 60, "n": 60, "neg": 45, "pos": 5})
    assert {v.signal for v in spike} & {"negative_volume", "volume", "trending"} == set(), spike
