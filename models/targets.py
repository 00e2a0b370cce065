"""Target-dependent sentiment: when a text names several tracked entities, each gets its own.

"Skyline is way better than Northwind, switching for good" is good news for Skyline and bad news
for Northwind; scoring the whole text gives both the same +0.98. The rules, in order:

1. **Comparisons and switches** between two named entities, read from the words between them
   (and just before the first): "X is better than Y", "X beats Y", "prefer X over Y" make X
   positive and Y negative; "X is worse than Y", "not as good as" the reverse; "switching from X
   to Y", "left X for Y", "ditched X for Y" make X negative and Y positive. The strength is the
   text's own polarity magnitude (at least 0.5). Phrases for es, pt, de and fr are included.
2. **Intent**: an entity named as where the author is going ("@Delta here I come", "should've
   flown @Delta", "learn from @SouthwestAir") is positive.
3. **Addressee**: a tweet's leading @handles are what its body is about, except the clauses that
   name another entity ("@USAirways some flexibility would be nice. I love @SouthwestAir").
4. **Own clause**: otherwise each entity gets the sentiment of the clause(s) it appears in
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
# intent to go elsewhere: the entity it names is the one preferred ("@Delta here I come",
# "I should've flown @Delta", "you should learn from @SouthwestAir", "@Delta next time")
_WANT_BEFORE = re.compile(
    r"(?:should(?:'ve| have)? (?:flown|flew|gone with|booked)|learn from|next time (?:i'?ll |we'?ll )?(?:fly|try|book)"
    r"|switch(?:ed|ing)? to|sticking with|back to)\s*$"
)
_WANT_AFTER = re.compile(r"^\W*(?:here (?:i|we) come|next time|from now on)")
_LEADING_HANDLES = re.compile(r"^(?:\s*[@.]\w+)+")
_FILLER = frozenset({"both", "the", "a", "an", "and", "also", "y", "e", "et", "und", "ambos", "ambas", "les", "die"})
_SUBSPLIT = re.compile(r",|\s(?:and|y|e|et|und)\s|\s&\s")


@dataclass(frozen=True, slots=True)
class Target:
    """One entity's own sentiment in a multi-entity text, and the rule that gave it."""

    score: float
    label: str
    confidence: float
    rule: str  # "comparison", "switch", "intent", "addressee" or "clause"


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
        end = re.search(r"[.!?\n]|$", low[sy:])
        if end is not None and end.group() == "?":
            continue  # "is X cheaper than Y?" asks, it does not judge
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
    magnitude = abs(whole if whole is not None else score(text)[0])
    if rel is not None:
        switch = any(_SWITCH_BEFORE.search(strip_accents(text)[max(0, a - 40) : a]) for _, a, _ in spans)
        out = {k: _pole(rel[k], magnitude, "switch" if switch else "comparison") for k in rel}
    else:
        low = text.lower()
        out = {
            k: _pole(+1, magnitude, "intent")
            for k, a, b in spans
            if _WANT_BEFORE.search(low[max(0, a - 40) : a]) or _WANT_AFTER.match(low[b:])
        }
    # the tweet's addressees ("@A @B ..."): the body is about them, except the clauses naming
    # another entity, which are that entity's
    m = _LEADING_HANDLES.match(text)
    lead = m.end() if m else 0
    for k in keys:
        if k in out:
            continue
        mine = [s for s in spans if s[0] == k]
        if lead and all(b <= lead for _, _, b in mine) and any(a >= lead for kk, a, _ in spans if kk != k):
            out[k] = _addressee_target(text, lead, [s for s in spans if s[0] != k and s[1] >= lead], score)
        else:
            out[k] = _clause_target(text, mine, spans, score)
    return out


def _addressee_target(text: str, lead: int, others: Sequence[tuple[str, int, int]], score: Scorer) -> Target:
    body = [(a, b) for a, b in clauses(text) if b > lead]
    mine = [text[max(a, lead) : b] for a, b in body if not any(a <= s < b for _, s, _ in others)]
    s, label, conf = score(" ".join(mine) if mine else text)
    return Target(s, label, conf, "addressee")


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
        clean = [(x, y) for x, y in pieces if not any(x <= s[1] < y for s in others)]
        # "Both X and Y were late": a piece holding nothing but the name has no predicate of its
        # own; the rest of the clause is about both
        if all(_bare(text, x, y, mine) for x, y in clean):
            clean = []
        parts.extend([text[x:y] for x, y in clean] or [text[a:b]])
    s, label, conf = score(" ".join(parts) if parts else text)
    return Target(s, label, conf, "clause")


def _bare(text: str, x: int, y: int, mine: Sequence[tuple[str, int, int]]) -> bool:
    """True when ``text[x:y]`` has no word but the entity's own names and fillers."""
    piece = list(text[x:y])
    for _, a, b in mine:
        for i in range(max(a, x), min(b, y)):
            piece[i - x] = " "
    return all(w.lower() in _FILLER for w in re.findall(r"\w+", "".join(piece)))
