"""Crisis means negativity; one signal table; counts on bursty, seasonal, sparse streams."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from alerts.incidents import IncidentState, step
from connectors.demo import _poisson as poisson
from infra.settings import DetectSettings
from models.detect import CountState, EntityDetector, Verdict
from models.signals import COMPLAINTS, IMPACT, IMPACT_NEG, NEG, SIGNALS, N

CFG = DetectSettings(warmup_buckets=20, min_volume=10, min_negative=5, z_threshold=5.0, critical_z=9.0)
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _mentions(rng: random.Random, lam: float, p_neg: float) -> dict[str, float]:
    n = poisson(rng, lam)
    return {N: n, NEG: sum(rng.random() < p_neg for _ in range(n))}


def _reviews(rng: random.Random, n: int, stars: list[int]) -> dict[str, float]:
    rs = [rng.choice(stars) for _ in range(n)]
    neg = sum(r <= 2 for r in rs)
    return {N: n, NEG: neg, "rating_n": n, "rating_sum": sum(rs), "rating_sq": sum(r * r for r in rs)}


def _warm(det: EntityDetector, make: object, buckets: int) -> None:
    for i in range(buckets):
        det.update(make(i), hour_of_week=i % 168)  # type: ignore[operator]


def test_a_volume_spike_with_the_usual_mix_is_trending_info_and_does_not_page() -> None:
    rng = random.Random(1)
    det = EntityDetector(CFG)
    _warm(det, lambda i: _mentions(rng, 20, 0.15), 300)
    spike = {N: 200, NEG: 30}  # ten times the talk, the usual 15% negative
    got = det.judge(spike, hour_of_week=300 % 168)
    assert [v.signal for v in got if v.key == "volume"] == ["trending"]
    assert {v.severity for v in got} == {"info"}
    # the same spike turning sour is a page
    sour = det.judge({N: 200, NEG: 120}, hour_of_week=300 % 168)
    pages = {v.signal for v in sour if v.severity != "info"}
    assert {"volume", "negative_share", "negative_volume"} <= pages


def test_a_burst_of_five_star_reviews_never_pages() -> None:
    rng = random.Random(2)
    det = EntityDetector(CFG)
    _warm(det, lambda i: _reviews(rng, poisson(rng, 12), [1, 3, 4, 5, 5]), 300)
    burst = _reviews(rng, 80, [5])
    verdicts = det.judge(burst, hour_of_week=12)
    assert verdicts, "the burst is news (trending)"
    assert all(v.severity == "info" for v in verdicts), verdicts
    # ...while a burst of one-star reviews pages
    bad = det.judge(_reviews(rng, 80, [1]), hour_of_week=12)
    assert any(v.severity != "info" and v.signal in ("rating", "negative_share") for v in bad)


def test_negative_mention_volume_is_a_paging_signal() -> None:
    """Negative mentions x7 while the volume is up by half (not a volume signal by itself)."""
    rng = random.Random(3)
    det = EntityDetector(CFG)
    _warm(det, lambda i: _mentions(rng, 60, 0.1), 400)
    got = {v.signal: v for v in det.judge({N: 90, NEG: 40}, hour_of_week=400 % 168)}
    assert got["negative_volume"].severity in ("warning", "critical")
    assert "volume" not in got and "trending" not in got
    # and a share alone: the same bucket with its negatives at the usual rate fires nothing
    assert det.judge({N: 90, NEG: 9}, hour_of_week=400 % 168) == []


def test_complaint_surge_is_a_paging_signal() -> None:
    rng = random.Random(4)
    det = EntityDetector(CFG)

    def normal(i: int) -> dict[str, float]:
        st = _mentions(rng, 40, 0.15)
        st[COMPLAINTS] = sum(rng.random() < 0.05 for _ in range(int(st[N])))
        return st

    _warm(det, normal, 400)
    bucket = {N: 40, NEG: 6, COMPLAINTS: 25}  # usual volume and tone, complaints x12
    got = {v.signal: v for v in det.judge(bucket, hour_of_week=5)}
    assert got["complaint_share"].severity != "info" and "trending" not in got and "negative_share" not in got
    bucket[COMPLAINTS] = 40  # and the count itself at 20x
    assert det.judge(bucket, hour_of_week=5)[0].signal == "complaints"


def test_incident_step_ignores_info_only_verdicts() -> None:
    st = IncidentState()
    t = [T0 + timedelta(minutes=i) for i in range(10)]
    assert step(st, "acme", t[0], [("trending", "info")], quiet_buckets=2) is None
    assert not st.is_open  # info alone never opens a thread
    opened = step(st, "acme", t[1], [("negative_share", "warning"), ("trending", "info")], quiet_buckets=2)
    assert opened and opened.status == "open" and opened.signals == ["negative_share"]
    # info-only buckets neither escalate nor keep the thread alive: they count as quiet
    assert step(st, "acme", t[2], [("trending", "info"), ("drift", "info")], quiet_buckets=2) is None
    assert st.severity == "warning" and st.seq == 1
    resolved = step(st, "acme", t[3], [("trending", "info")], quiet_buckets=2)
    assert resolved and resolved.status == "resolved"


def test_impact_negativity_has_one_definition_for_judging_and_learning() -> None:
    """Reach-weighted negativity is ``impact_neg / impact`` with binomial noise on ``n`` events,
    in judging and in learning alike. When every author has the same reach it *is* the negative
    share, and must read exactly like it. (Learned with ``impact`` as its support, the old drift,
    the baseline took its history for noise-free, counted the sampling noise twice and read every
    bucket at about 0.7 of the negative share's z.)"""
    rng = random.Random(5)
    det = EntityDetector(CFG)
    pairs = []
    for i in range(3000):
        st = _mentions(rng, 40, 0.2)
        st[IMPACT], st[IMPACT_NEG] = 100.0 * st[N], 100.0 * st[NEG]
        zs = det.standardize(st, hour_of_week=None)
        if i > 500 and "impact_negativity" in zs:
            pairs.append((zs["impact_negativity"], zs["negative_share"]))
        det.update(st, hour_of_week=None)
    assert len(pairs) > 2000
    assert all(abs(a - b) < 0.05 * max(1.0, abs(b)) for a, b in pairs)
    sig = SIGNALS["impact_negativity"]
    assert sig.support_of({N: 7, IMPACT: 900.0}) == 7 and sig.den == (IMPACT,)
    assert sig.value({N: 7, IMPACT: 900.0, IMPACT_NEG: 300.0}) == 300.0 / 900.0


def test_warmup_counts_from_the_entitys_own_first_event() -> None:
    """An entity configured long before it is first mentioned is not judged on the first
    buckets after its first event (the empty buckets before are not history)."""
    det = EntityDetector(CFG)
    for _ in range(500):
        det.update({}, hour_of_week=None)
    assert det.buckets == 0
    rng = random.Random(6)
    for _ in range(CFG.warmup_buckets - 1):
        det.update(_mentions(rng, 20, 0.1), hour_of_week=None)
    assert det.judge({N: 500, NEG: 400}, hour_of_week=None) == []  # still warming up
    det.update(_mentions(rng, 20, 0.1), hour_of_week=None)
    assert det.judge({N: 500, NEG: 400}, hour_of_week=None) != []


def test_one_onset_per_episode() -> None:
    rng = random.Random(7)
    det = EntityDetector(CFG, bucket_seconds=300)  # episodes: one day of 5-minute buckets
    _warm(det, lambda i: _mentions(rng, 20, 0.1), 2000)
    onsets, verdicts = [], 0
    for i in range(40):  # a crisis of 40 buckets, a lull in the middle
        st = {N: 150, NEG: 100} if i % 10 < 7 else _mentions(rng, 20, 0.1)
        vs = [v for v in det.update(st, hour_of_week=(2000 + i) // 12 % 168) if v.key == "negative_share"]
        verdicts += len(vs)
        onsets += [i for v in vs if v.onset]
    assert onsets == [0] and verdicts > 10


def test_bursty_overdispersed_counts_raise_the_bar() -> None:
    """Two series with the same mean: Poisson, and bursty (a gamma-distributed rate). A jump that
    is a crisis on the Poisson one is within the habits of the bursty one."""
    rng = random.Random(8)
    calm, bursty = EntityDetector(CFG), EntityDetector(CFG)
    calm_fired = bursty_fired = 0
    for _ in range(3000):
        calm_fired += bool(calm.update({N: poisson(rng, 30)}))
        bursty_fired += bool(bursty.update({N: poisson(rng, rng.gammavariate(4.0, 7.5))}))
    assert calm_fired == 0 and bursty_fired <= 3
    spike = {N: 120}
    assert [v.signal for v in calm.judge(spike)] == ["trending"]
    assert bursty.judge(spike) == []
    assert bursty.judge({N: 1000}) != []  # a real outlier still fires


def test_a_sustained_rise_no_bucket_shows_is_caught_by_the_cusum() -> None:
    rng = random.Random(9)
    det = EntityDetector(CFG)
    _warm(det, lambda i: {N: poisson(rng, 40)}, 500)
    first = None
    for i in range(60):
        vs = det.update({N: poisson(rng, 56)}, hour_of_week=(500 + i) % 168)  # +40%: z ~ 2 per bucket
        if vs and first is None:
            first = (i, vs[0].detector)
    assert first is not None and first[1] == "log-cusum-v2" and first[0] < 40, first


def test_a_sparse_stream_is_judged_over_the_last_hour() -> None:
    """Minute buckets at 0.2 mentions each: no single bucket reaches min_volume; an hour at ten
    times the usual rate is caught (by the hourly sum or the CUSUM), and the usual rate is not."""
    rng = random.Random(10)
    det = EntityDetector(CFG, bucket_seconds=60)
    quiet = [bool(det.update({N: poisson(rng, 0.2)}, hour_of_week=None)) for _ in range(6000)]
    assert not any(quiet[100:])
    st = det.signals["volume"]
    assert isinstance(st, CountState)
    # the expected count is the mean count (a log-scale mean alone would say ~0.13)
    assert 0.16 < st.expect(None, det.per_hour) < 0.25, st.expect(None, det.per_hour)
    hits = []
    for i in range(60):
        x = poisson(rng, 2.0)
        assert x < CFG.min_volume
        hits += [(i, v.detector) for v in det.update({N: x}, hour_of_week=None)]
    assert hits and hits[0][1] in ("log-hourly-v2", "log-cusum-v2") and hits[0][0] < 30, hits[:3]


def test_early_firing_on_a_filling_bucket() -> None:
    det = EntityDetector(CFG, bucket_seconds=300)
    rng = random.Random(11)
    _warm(det, lambda i: {N: poisson(rng, 40), NEG: 4}, 1000)
    quarter = det.judge({N: 250, NEG: 25}, hour_of_week=1000 % 168, frac=0.25)  # 25x the pace
    vol = [v for v in quarter if v.key == "volume"]
    assert vol and vol[0].z >= CFG.critical_z
    assert det.judge({N: 12, NEG: 1}, hour_of_week=1000 % 168, frac=0.25) == []  # on pace


def test_state_round_trips() -> None:
    rng = random.Random(12)
    det = EntityDetector(CFG)
    _warm(det, lambda i: {**_mentions(rng, 20, 0.1), "asp:delivery:n": 3, "asp:delivery:neg": 1}, 50)
    again = EntityDetector.from_dict(CFG, det.to_dict())
    assert again.to_dict() == det.to_dict()
    assert isinstance(again.signals["volume"], CountState)
    st = {N: 90, NEG: 60}
    assert again.judge(st, 3) == det.judge(st, 3)


def test_verdict_key_maps_trending_back_to_volume() -> None:
    v = Verdict("trending", 1.0, 1.0, 1.0, 6.0, 1, "info", "d")
    assert v.key == "volume" and math.isfinite(v.z)


def test_contributions_write_only_the_tables_counters() -> None:
    from contract.records import AspectHit, EnrichedEvent, Sentiment
    from models.signals import ASPECT_PREFIX, COUNTERS, PURCHASE_PREFIX
    from streams.windows import contributions

    now = datetime(2026, 1, 5, tzinfo=UTC)
    neg = Sentiment(score=-0.7, label="negative", confidence=0.9, model_version="m")
    events = [
        EnrichedEvent(
            event_id="r:1",
            kind="review",
            source="s",
            occurred_at=now,
            ingested_at=now,
            entity="acme",
            sentiment=neg,
            rating=1,
            aspects=[AspectHit(aspect="delivery", term="late", start=0, end=4, sentiment=-0.8)],
        ),
        EnrichedEvent(
            event_id="p:1",
            kind="purchase",
            source="s",
            occurred_at=now,
            ingested_at=now,
            entity="acme",
            purchase_status="refunded",
        ),
        EnrichedEvent(
            event_id="f:1",
            kind="feedback",
            source="s",
            occurred_at=now,
            ingested_at=now,
            entity="acme",
            metric="nps",
            score=3,
        ),
    ]
    keys = {k for ev in events for k in contributions(ev)}
    assert keys >= {"n", "neg", "complaints", "asp:delivery:n", "asp:delivery:neg", "rating_n", "purchase:refunded"}
    stray = {k for k in keys if k not in COUNTERS and not k.startswith((ASPECT_PREFIX, PURCHASE_PREFIX))}
    assert stray == set()


def test_trust_and_detection_read_the_same_definitions() -> None:
    from models.trust import trust_score

    bucket = {
        N: 50,
        NEG: 20,
        COMPLAINTS: 5,
        "rating_n": 4,
        "rating_sum": 10,
        "purchase:placed": 8,
        "purchase:refunded": 2,
    }
    comps = {c.name: c.value for c in trust_score(bucket).components}
    for name in ("negative_share", "complaint_share", "rating", "refund_rate"):
        assert comps[name] == round(SIGNALS[name].value(bucket) or 0.0, 4), name


def _sparse_day(rng: random.Random, i: int, mean: float, burst: float = 1.0) -> dict[str, float]:
    """A 5-minute bucket of a sparse count with a daily profile (busy afternoons, dead nights) and
    over-dispersion: each hour's rate is gamma-distributed around its profile (shape 4)."""
    hour = i // 12 % 24
    profile = 1.6 if 9 <= hour <= 18 else 0.5
    return {N: poisson(rng, mean * profile * burst)}


def test_a_sparse_burst_with_empty_buckets_between_is_caught_by_the_rate_cusum() -> None:
    """0.3 mentions a 5-minute bucket, then a burst of 4, 3, 6, 7, 9, 0, 9, 4 (as on NAB's PFE
    series): no bucket has min_volume events, the log-space CUSUM is reset by the empty bucket
    and the hour's log z stays under the threshold; the count-space rate CUSUM, which an empty
    bucket costs only (RATE_SHIFT - 1) mu, pages."""
    rng = random.Random(21)
    det = EntityDetector(CFG, bucket_seconds=300)
    days = 4 * 24 * 12
    for i in range(days):
        assert det.update({N: poisson(rng, 0.3)}, hour_of_week=i // 12 % 168) == []
    burst = [4, 3, 6, 7, 9, 0, 9, 4]  # 42 in 40 minutes against ~2.4 expected
    hits = []
    for j, x in enumerate(burst):
        hits += [(j, v.detector) for v in det.update({N: x}, hour_of_week=(days + j) // 12 % 168)]
    assert hits and hits[0][1] == "nb-rate-cusum-v1", hits


def test_a_stationary_overdispersed_sparse_stream_does_not_page_for_weeks() -> None:
    """Four weeks of 5-minute buckets at 0.5 mentions on average, three times as many by day as
    by night, each hour's rate drawn from a gamma (bursty hours): nothing fires after the
    warm-up, not the rate CUSUM (its hourly dispersion holds the bursty hours) nor the others."""
    rng = random.Random(22)
    det = EntityDetector(CFG, bucket_seconds=300)
    fired = []
    rate = 1.0
    for i in range(4 * 7 * 24 * 12):
        if i % 12 == 0:
            rate = rng.gammavariate(4.0, 0.25)  # mean 1, an hour's rate +-50%
        vs = det.update(_sparse_day(rng, i, 0.5, rate), hour_of_week=i // 12 % 168)
        fired += [(i, v.detector) for v in vs]
    assert [f for f in fired if f[0] >= 2 * 24 * 12] == [], fired[:5]


def test_a_state_saved_before_the_rate_cusum_learns_it_before_judging() -> None:
    """A busy count's state saved without the rate CUSUM's model: restored, its volume reads 0 (a
    sparse count) and its calibration and dispersion are empty; it must learn them (two days of
    buckets) before the rate CUSUM judges, or it would page on its first ordinary hour."""
    rng = random.Random(23)
    det = EntityDetector(CFG, bucket_seconds=300)
    for i in range(3000):
        det.update({N: poisson(rng, 40)}, hour_of_week=i // 12 % 168)
    saved = det.to_dict()
    for key in ("rcus", "rexcess", "ralarm", "rstep", "disp", "rcal", "rate", "rn"):
        del saved["signals"]["volume"][key]
    again = EntityDetector.from_dict(CFG, saved, bucket_seconds=300)
    state = again.signals["volume"]
    assert isinstance(state, CountState) and state.rn == 0
    fired = [again.update({N: poisson(rng, 40)}, hour_of_week=(3000 + i) // 12 % 168) for i in range(600)]
    assert not any(fired)
