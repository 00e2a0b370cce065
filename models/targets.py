"""Target-dependent sentiment: when a text names several tracked entities, each gets its own.

"Skyline is way better than Northwind, switching for good" is good news for Skyline and bad news
for Northwind; scoring the whole text gives both the same +0.98. Two rules, in order:

1. **Comparisons and switches** between two named entities, read from the words between them
   (and just before the first): "X is better than Y", "X beats Y", "prefer X over Y" make X
   positive and Y negative; "X is worse than Y", "not as good as" the reverse; "switching from X
   to Y", "left X for Y", "ditched X for Y" make X negative and Y positive. The strength is the
   text's own polarity magnitude (at least 0.5). Phrases for es, pt, de and fr are included.
2. **Own clause**: otherwise each entity gets the sentiment of the clause(s) it appears in
   (sentences, split again at contrastive words, and, when two entities share a clause, at
   commas and "and"), so "Skyline was great but Northwind lost my bag" splits cleanly.

A text naming one entity keeps the whole-text sentiment. Pure functions of text and spans; the
scorer is passed in, so the same rules run in the worker and in the evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from models.lexicon import strip_accents
from models.nlp import clauses

__all__ = ["Target", "target_sentiments"]

_BETTER = (
    r"(?:is|are|was|were|'s|way|much|far|so|a lot|definitely|\s)*"
    r"(?:better|nicer|cheaper|faster|friendlier|comfier|more reliable|more comfortable|superior)\s+(?:than|to)"
    r"|beats?|beat|outperforms?|wins? over|>|over"
    r"|(?:es|son|era)?\s*(?:mucho\s+)?mejor(?:es)?\s+que|(?:e|é)?\s*(?:muito\s+)?melhor(?:es)?\s+(?:que|do que)"
    r"|(?:ist|war)?\s*(?:viel\s+)?besser\s+als|(?:est)?\s*(?:bien\s+)?meilleur[es]*\s+que"
)
_WORSE = (
    r"(?:is|are|was|were|'s|way|much|far|so|even|a lot|\s)*"
    r"(?:worse|slower|pricier|ruder|dirtier|less reliable|more expensive|inferior)\s+(?:than|to)"
    r"|(?:is|are|was|isn't|aren't|wasn't|\s)*not\s+(?:as|so)\s+(?:good|nice|reliable)\s+as|<"
    r"|(?:es|era)?\s*(?:mucho\s+)?peor(?:es)?\s+que|(?:e|é)?\s*(?:muito\s+)?pior(?:es)?\s+(?:que|do que)"
    r"|(?:ist|war)?\s*(?:viel\s+)?schlechter\s+als|(?:est)?\s*(?:bien\s+)?pire\s+que"
)
# X <between> Y where X loses and Y wins ("switching from X to Y": the verb comes before X)
_SWITCH_BEFORE = re.compile(
    r"(?:switch\w*|mov\w*|chang\w*|went|go\w*|jump\w*|ditch\w*|leav\w*|left|dump\w*|cambi\w*|mud\w*|wechsel\w*)"
    r"\s+(?:\w+\s+){0,2}(?:from|de|von|da|do)?\s*$"
)
_SWITCH_BETWEEN = re.compile(r"^\W*(?:\s*(?:to|for|para|por|zu|pour|a|au|in favou?r of|and go with|and fly)\W*)+$")
_PREFER_BEFORE = re.compile(r"(?:prefer\w*|prefier\w*|prefir\w*|bevorzug\w*|préf[eè]r\w*)\s*$")
_PREFER_BETWEEN = re.compile(r"^\W*(?:over|to|than|a|à|sobre|em vez de|en lugar de|statt|als|plut[oô]t que)\W*$")
_BETTER_RE = re.compile(rf"^\W*(?:{_BETTER})\W*$")
_WORSE_RE = re.compile(rf"^\W*(?:{_WORSE})\W*$")
_SUBSPLIT = re.compile(r",|\s(?:and|y|e|et|und)\s|\s&\s")


@dataclass(frozen=True, slots=True)
class Target:
    """One entity's own sentiment in a multi-entity text, and the rule that gave it."""

    score: float
    label: str
    confidence: float
    rule: str  # "comparison", "switch", "clause"


Scorer = Callable[[str], tuple[float, str, float]]


def _pole(sign: int, magnitude: float, rule: str) -> Target:
    m = max(0.5, min(1.0, magnitude))
    return Target(sign * m, "positive" if sign > 0 else "negative", 0.6 + 0.3 * m, rule)


def _relations(text: str, spans: Sequence[tuple[str, int, int]]) -> dict[str, int] | None:
    """Polarity (+1/-1) per key read from a comparison or a switch between two mentions, if any."""
    low = strip_accents(text)
    ordered = sorted(spans, key=lambda s: s[1])
    for (kx, _, ex), (ky, sy, _) in pairwise(ordered):
        if kx == ky:
            continue
        x_start = next(a for k, a, _ in ordered if k == kx)
        between, before = low[ex:sy], low[max(0, x_start - 40) : x_start]
        if _SWITCH_BEFORE.search(before) and _SWITCH_BETWEEN.match(between):
            return {kx: -1, ky: +1}
        if _PREFER_BEFORE.search(before) and _PREFER_BETWEEN.match(between):
            return {kx: +1, ky: -1}
        if _BETTER_RE.match(between):
            return {kx: +1, ky: -1}
        if _WORSE_RE.match(between):
            return {kx: -1, ky: +1}
    return None


def target_sentiments(
    text: str, spans: Sequence[tuple[str, int, int]], score: Scorer, whole: float | None = None
) -> dict[str, Target]:
    """Sentiment per entity key of ``(key, start, end)`` mention spans; empty if fewer than two keys.

    ``score(text) -> (score, label, confidence)`` is the sentiment model for the text's language.

    >>> def lex(t):
    ...     if "great" in t:
    ...         return 0.8, "positive", 0.9
    ...     return (-0.8, "negative", 0.9) if "awful" in t else (0.0, "neutral", 0.5)
    >>> out = target_sentiments("Skyline is way better than Northwind", [("sky", 0, 7), ("nw", 27, 36)], lex)
    >>> out["sky"].label, out["nw"].label, out["nw"].rule
    ('positive', 'negative', 'comparison')
    >>> out = target_sentiments("Skyline was great but Northwind was awful", [("sky", 0, 7), ("nw", 22, 31)], lex)
    >>> out["sky"].label, out["nw"].label
    ('positive', 'negative')
    """
    keys = list(dict.fromkeys(k for k, _, _ in spans))
    if len(keys) < 2:
        return {}
    rel = _relations(text, spans)
    if rel is not None:
        magnitude = abs(whole if whole is not None else score(text)[0])
        switch = any(_SWITCH_BEFORE.search(strip_accents(text)[max(0, a - 40) : a]) for _, a, _ in spans)
        out = {k: _pole(rel[k], magnitude, "switch" if switch else "comparison") for k in rel}
        for k in keys:  # a third entity in the text: its own clause
            if k not in out:
                out[k] = _clause_target(text, [s for s in spans if s[0] == k], spans, score)
        return out
    return {k: _clause_target(text, [s for s in spans if s[0] == k], spans, score) for k in keys}


def _clause_target(
    text: str, mine: Sequence[tuple[str, int, int]], spans: Sequence[tuple[str, int, int]], score: Scorer
) -> Target:
    parts: list[str] = []
    for a, b in clauses(text):
        own = [s for s in mine if a <= s[1] < b]
        if not own:
            continue
        others = [s for s in spans if a <= s[1] < b and s[0] != own[0][0]]
        if not others:
            parts.append(text[a:b])
            continue
        # two entities share the clause: split it at commas and "and", keep the pieces holding mine
        pos, cuts = a, []
        for m in _SUBSPLIT.finditer(text, a, b):
            cuts.append((pos, m.start()))
            pos = m.end()
        cuts.append((pos, b))
        pieces = [(x, y) for x, y in cuts if any(x <= s[1] < y for s in own)]
        clean = [text[x:y] for x, y in pieces if not any(x <= s[1] < y for s in others)]
        parts.extend(clean or [text[a:b]])
    s, label, conf = score(" ".join(parts) if parts else text)
    return Target(s, label, conf, "clause")
