"""Offline evaluation of the models the stream runs (pure functions, no Kafka or Redis).

- :func:`prequential_sentiment`: test-then-train over a labelled stream, for the online model,
  and in the same pass for the lexicon prior alone (VADER, thresholds +-0.05) and a fast
  baseline: River's multinomial naive Bayes on the same word features, also prequential, without
  the prior. Accuracy and macro-F1 for each.
- :func:`brand_attribution`: micro precision/recall/F1 of the entities the enricher finds
  against a truth column, with a per-entity table.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from river import naive_bayes

from models.nlp import Enricher
from models.sentiment import LABELS, SentimentModel, _features, lexicon_label
from models.targets import target_sentiments

__all__ = ["brand_attribution", "macro_f1", "prequential_sentiment", "target_sentiment_accuracy"]


def macro_f1(pairs: Sequence[tuple[str, str]], labels: Sequence[str] = LABELS) -> tuple[float, float]:
    """(accuracy, macro-F1) of ``(predicted, true)`` pairs over the labels present in the truth.

    >>> macro_f1([("positive", "positive"), ("negative", "positive"), ("negative", "negative")])
    (0.6667, 0.6667)
    """
    present = [lab for lab in labels if any(t == lab for _, t in pairs)]
    f1s = []
    for lab in present:
        tp = sum(1 for p, t in pairs if p == lab and t == lab)
        fp = sum(1 for p, t in pairs if p == lab and t != lab)
        fn = sum(1 for p, t in pairs if p != lab and t == lab)
        pr = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    acc = sum(p == t for p, t in pairs) / len(pairs) if pairs else 0.0
    return round(acc, 4), round(sum(f1s) / len(f1s), 4) if f1s else 0.0


def prequential_sentiment(rows: Iterable[tuple[str, str]], model: SentimentModel | None = None) -> dict[str, Any]:
    """Test-then-train on ``(text, label)`` rows; labels in negative/neutral/positive."""
    model = model or SentimentModel()
    nb = naive_bayes.MultinomialNB(alpha=1.0)
    online: list[tuple[str, str]] = []
    lexicon: list[tuple[str, str]] = []
    baseline: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for n_nb, (text, label) in enumerate(rows):
        c = model.compound(text)
        lexicon.append((lexicon_label(c), label))
        online.append((model.predict(text).label, label))
        feats = {k: v for k, v in _features(text, c).items() if not k.startswith("__")}
        guess = nb.predict_one(feats) if n_nb else None  # type: ignore[arg-type]
        baseline.append((str(guess or "neutral"), label))
        model.learn_one(text, label)
        nb.learn_one(feats, label)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"n": len(online), "labels": dict(Counter(t for _, t in online))}
    for name, pairs in (("online", online), ("lexicon", lexicon), ("baseline_nb", baseline)):
        acc, f1 = macro_f1(pairs)
        out[name] = {"accuracy": acc, "macro_f1": f1}
    out["online"]["model_version"] = model.version
    out["events_per_s"] = round(len(online) / seconds, 1) if seconds else None
    out["method"] = "prequential (test-then-train), one pass in file order"
    return out


def brand_attribution(rows: Iterable[tuple[str, str]], enricher: Enricher, batch: int = 512) -> dict[str, Any]:
    """Precision/recall of entity keys found in text vs the true key of each row.

    A row whose true key is not found is a false negative; each other key found is a false
    positive (a tweet about two airlines counts one right and one wrong). ``primary`` scores
    the event's primary entity (the first mentioned, its topic key) against the truth alone.
    """
    data = list(rows)
    tp = fp = fn = 0
    p_hit = p_any = 0
    per: dict[str, Counter[str]] = {}
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        chunk = data[i : i + batch]
        for (_, truth), an in zip(chunk, enricher.process([t for t, _ in chunk]), strict=True):
            hits = [h.key for h in an.entities if "/" not in h.key]
            found = set(hits)
            if hits:  # the primary entity (the event's topic key) is the first one mentioned
                p_any += 1
                p_hit += hits[0] == truth
            c = per.setdefault(truth, Counter())
            if truth in found:
                tp += 1
                c["tp"] += 1
            else:
                fn += 1
                c["fn"] += 1
            for k in found - {truth}:
                fp += 1
                per.setdefault(k, Counter())["fp"] += 1
    seconds = time.perf_counter() - t0

    def prf(t: int, f_p: int, f_n: int) -> dict[str, float]:
        p = t / (t + f_p) if t + f_p else 0.0
        r = t / (t + f_n) if t + f_n else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}

    return {
        "n": len(data),
        **prf(tp, fp, fn),
        "primary": prf(p_hit, p_any - p_hit, len(data) - p_hit),
        "per_entity": {k: {**prf(c["tp"], c["fp"], c["fn"]), "n": c["tp"] + c["fn"]} for k, c in sorted(per.items())},
        "events_per_s": round(len(data) / seconds, 1) if seconds else None,
        "profile": enricher.profile,
    }


def target_sentiment_accuracy(
    rows: Iterable[tuple[str, dict[str, str]]], enricher: Enricher, model: SentimentModel | None = None
) -> dict[str, Any]:
    """Per-entity label accuracy of target-dependent sentiment vs the whole-text label.

    ``rows`` are ``(text, {entity key: true label})``; each labelled entity the enricher finds is
    one judgement (an entity it misses counts as wrong for both). Rows naming one entity are
    scored too: there both methods give the whole-text label.
    """
    model = model or SentimentModel()
    data = list(rows)
    own = whole = total = 0
    by_rule: Counter[str] = Counter()
    mistakes: list[dict[str, str]] = []
    for (text, truth), an in zip(data, enricher.process([t for t, _ in data]), strict=True):
        lang = an.lang
        pred = model.predict(text, lang)
        spans = [(h.key.split("/", 1)[0], h.start, h.end) for h in an.entities]

        def score(t: str, lang: str = lang) -> tuple[float, str, float]:
            r = model.predict(t, lang)
            return r.score, r.label, r.confidence

        per = target_sentiments(text, spans, score, whole=pred.score)
        for key, label in truth.items():
            total += 1
            found = key in {k for k, _, _ in spans}
            got = per[key].label if key in per else pred.label
            by_rule[per[key].rule if key in per else "whole"] += 1
            own += found and got == label
            whole += found and pred.label == label
            if found and got != label:
                mistakes.append({"text": text, "entity": key, "truth": label, "got": got})
    return {
        "judgements": total,
        "texts": len(data),
        "target_accuracy": round(own / total, 4) if total else 0.0,
        "whole_text_accuracy": round(whole / total, 4) if total else 0.0,
        "rules": dict(by_rule),
        "mistakes": mistakes,
    }
