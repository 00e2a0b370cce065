"""Offline evaluation of the models the stream runs (pure functions, no Kafka or Redis).

- :func:`prequential_sentiment`: test-then-train over a labelled stream through the worker's
  path (language, then that language's model), for the online model, and in the same pass for
  the lexicon prior alone (VADER or the seed lexicon, thresholds +-0.05) and a fast baseline:
  River's multinomial naive Bayes on the same tokens, also prequential, without the prior.
  Accuracy and macro-F1 for each, overall and per language, with the rows left unscored.
- :func:`label_runs`: does a label column look sorted (a file in label order flatters any
  online learner)?
- :func:`brand_attribution`: micro precision/recall/F1 of the entities the enricher finds
  against a truth column (brand, product, or no entity), with a per-entity table.
- :func:`target_sentiment_accuracy`: per-entity sentiment vs the whole-text label.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from river import naive_bayes

from models.nlp import Enricher
from models.sentiment import LABELS, SentimentModel, SentimentResult, _features, lexicon_label
from models.targets import target_sentiments

__all__ = [
    "brand_attribution",
    "label_runs",
    "macro_f1",
    "prequential_sentiment",
    "target_sentiment_accuracy",
]


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


#: ``texts -> [(language, prediction or None when the text is not scored)]``: the worker's path
EnrichFn = Callable[[list[str]], list[tuple[str, SentimentResult | None]]]


def label_runs(labels: Sequence[str]) -> dict[str, float]:
    """How sorted a label column looks: runs of equal labels vs what a random order would give.

    >>> label_runs(["a"] * 50 + ["b"] * 50)["ratio"] < 0.1
    True
    """
    n = len(labels)
    if n < 2:
        return {"runs": float(n), "expected": float(n), "ratio": 1.0}
    runs = 1 + sum(a != b for a, b in itertools.pairwise(labels))
    shares = [c / n for c in Counter(labels).values()]
    expected = 1 + (n - 1) * (1 - sum(p * p for p in shares))
    return {
        "runs": float(runs),
        "expected": round(expected, 1),
        "ratio": round(runs / expected, 4) if expected else 1.0,
    }


def prequential_sentiment(
    rows: Iterable[tuple[str, str]],
    model: SentimentModel | None = None,
    *,
    enrich: EnrichFn | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """Test-then-train on ``(text, label)`` rows; labels in negative/neutral/positive.

    ``enrich`` runs the worker's own path on a batch (language, then the model of that language);
    without it every text is English. Each batch is predicted, then learned, row by row, by the
    online model (in the text's language), the lexicon prior alone (same language; a language
    without a lexicon says neutral) and River's multinomial naive Bayes on the same tokens
    (one model for all languages, no prior). Reported overall and per language.
    """
    model = model or SentimentModel()
    data = list(rows)

    def plain(texts: list[str]) -> list[tuple[str, SentimentResult | None]]:
        return [("en", model.predict(t, "en") if t else None) for t in texts]

    run = enrich or plain
    nb = naive_bayes.MultinomialNB(alpha=1.0)
    nb_seen = 0
    pairs: dict[str, list[tuple[str, str]]] = {"online": [], "lexicon": [], "baseline_nb": []}
    per_lang: dict[str, dict[str, list[tuple[str, str]]]] = {}
    unscored: Counter[str] = Counter()
    t0 = time.perf_counter()
    for i in range(0, len(data), max(1, batch)):
        chunk = data[i : i + max(1, batch)]
        for (text, label), (lang, pred) in zip(chunk, run([t for t, _ in chunk]), strict=True):
            if pred is None:
                unscored[lang or "und"] += 1
                continue
            c = model.compound(text, lang)
            lex = lexicon_label(c) if model.has_prior(lang) else "neutral"
            feats = {k: v for k, v in _features(text, c).items() if not k.startswith("__")}
            # naive Bayes cannot score an empty feature set (River divides by its total)
            guess = nb.predict_one(feats) if nb_seen and feats else None  # type: ignore[arg-type]
            got = {"online": pred.label, "lexicon": lex, "baseline_nb": str(guess or "neutral")}
            mine = per_lang.setdefault(lang, {k: [] for k in pairs})
            for name, p in got.items():
                pairs[name].append((p, label))
                mine[name].append((p, label))
            model.learn_one(text, label, lang)
            if feats:
                nb.learn_one(feats, label)
                nb_seen += 1
    seconds = time.perf_counter() - t0
    scored = len(pairs["online"])
    out: dict[str, Any] = {"n": len(data), "scored": scored, "labels": dict(Counter(t for _, t in pairs["online"]))}
    for name, ps in pairs.items():
        acc, f1 = macro_f1(ps)
        out[name] = {"accuracy": acc, "macro_f1": f1}
    out["online"]["model_version"] = model.version
    out["per_language"] = {
        lang: {
            "scored": len(v["online"]),
            "unscored": unscored.get(lang, 0),
            **{name: dict(zip(("accuracy", "macro_f1"), macro_f1(ps), strict=True)) for name, ps in v.items()},
        }
        for lang, v in sorted(per_lang.items(), key=lambda kv: -len(kv[1]["online"]))
    }
    for lang, k in unscored.items():
        out["per_language"].setdefault(lang, {"scored": 0}).setdefault("unscored", k)
    out["unscored"] = sum(unscored.values())
    out["events_per_s"] = round(len(data) / seconds, 1) if seconds else None
    out["method"] = f"prequential (test-then-train), batches of {max(1, batch)}"
    return out


def brand_attribution(
    rows: Iterable[tuple[str, str | None] | tuple[str, str | None, frozenset[str]]],
    enricher: Enricher,
    batch: int = 512,
) -> dict[str, Any]:
    """Precision/recall of entity keys found in text vs the true key of each row.

    A truth may be a brand (``northwind``: brand-level keys found are compared) or a product
    (``northwind/go app``: product keys are compared too). ``None`` means the text names no
    tracked entity: every key found there is a false positive, reported apart as well
    (``no_entity``). A row whose true key is not found is a false negative; each other key
    found is a false positive (a tweet about two airlines counts one right and one wrong),
    unless the row's third element, the other keys the text truly names (judged by hand: a
    truth column holds one entity, a tweet to two airlines names both), holds it: then it is a
    true positive, and one not found a false negative.
    ``primary`` scores the event's primary entity (the first mentioned, its topic key).
    """
    data = [(r[0], r[1], r[2] if len(r) > 2 else frozenset()) for r in rows]
    tp = fp = fn = 0
    p_hit = p_any = 0
    none_rows = none_fp_rows = none_fp = 0
    per: dict[str, Counter[str]] = {}
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        chunk = data[i : i + batch]
        for (_, truth, also), an in zip(chunk, enricher.process([t for t, _, _ in chunk]), strict=True):
            product = (truth is not None and "/" in truth) or any("/" in k for k in also)
            hits = [h.key for h in an.entities if product or "/" not in h.key]
            found = set(hits)
            true = ({truth} if truth is not None else set()) | set(also)
            if not true:
                none_rows += 1
                none_fp += len(found)
                none_fp_rows += bool(found)
                fp += len(found)
                for k in found:
                    per.setdefault(k, Counter())["fp"] += 1
                continue
            if hits:  # the primary entity (the event's topic key) is the first one mentioned
                p_any += 1
                p_hit += hits[0] in true
            for k in true:
                c = per.setdefault(k, Counter())
                if k in found:
                    tp += 1
                    c["tp"] += 1
                else:
                    fn += 1
                    c["fn"] += 1
            brands = {k.split("/", 1)[0] for k in true}
            for k in found - true - brands:  # a product implies its brand: that is not a mistake
                fp += 1
                per.setdefault(k, Counter())["fp"] += 1
    seconds = time.perf_counter() - t0

    def prf(t: int, f_p: int, f_n: int) -> dict[str, float]:
        p = t / (t + f_p) if t + f_p else 0.0
        r = t / (t + f_n) if t + f_n else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}

    with_truth = len(data) - none_rows
    return {
        "n": len(data),
        **prf(tp, fp, fn),
        "primary": prf(p_hit, p_any - p_hit, with_truth - p_hit),
        "no_entity": {
            "rows": none_rows,
            "rows_with_a_false_positive": none_fp_rows,
            "false_positives": none_fp,
            "false_positive_rate": round(none_fp_rows / none_rows, 4) if none_rows else None,
        },
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
