"""VADER (vaderSentiment) with the same scores at a fraction of the cost.

``SentimentIntensityAnalyzer.polarity_scores`` lower-cases the text's whole word list again
inside its negation and idiom checks, which run up to four times for every lexicon word: a
tweet of 25 words with five sentiment words lower-cases ~500 words instead of 25, and it copies
the text one character at a time to swap emoji for their descriptions, even when the text has
none. :class:`Vader` lower-cases the words once per text and hands that list to those two
checks, skips the emoji pass for ASCII text (no emoji is ASCII), and appends the 0 of a word
outside the lexicon without calling ``sentiment_valence`` (whose first test it fails), and
builds the text's ``SentiText`` in two comprehensions.
Everything else (lexicon, boosters, "but", caps, punctuation emphasis, normalisation) is the
library's own code, so the scores are the library's: ``tests/models/test_vader.py`` compares both on every text of the
shared datasets.
"""

from __future__ import annotations

import string
from typing import Any

from vaderSentiment.vaderSentiment import (
    BOOSTER_DICT,
    N_SCALAR,
    NEGATE,
    SPECIAL_CASES,
    SentimentIntensityAnalyzer,
    SentiText,
)

__all__ = ["Vader"]

_NEGATE = frozenset(NEGATE)
_PUNCT = string.punctuation


def _negates(word: str) -> bool:
    """``vaderSentiment.negated([word])`` for one lower-cased word."""
    return word in _NEGATE or "n't" in word


class Vader(SentimentIntensityAnalyzer):
    """:class:`SentimentIntensityAnalyzer` whose ``polarity_scores`` returns the same dict, faster.

    >>> v, ref = Vader(), SentimentIntensityAnalyzer()
    >>> texts = ["The food was not so good, but the staff were VERY kind!!", "never so bad 😡", "kind of ok"]
    >>> all(v.polarity_scores(t) == ref.polarity_scores(t) for t in texts)
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ascii_emoji = any(e.isascii() for e in self.emojis)
        # (the word list being scored, its lower-cased copy): the checks below are handed the
        # list itself, so they recognise it by identity and fall back to lower-casing otherwise
        self._lowered: tuple[list[str], list[str]] = ([], [])

    def _without_emoji(self, text: str) -> str:
        if text.isascii() and not self._ascii_emoji:
            return text
        out: list[str] = []
        prev_space = True
        for ch in text:
            description = self.emojis.get(ch)
            if description is None:
                out.append(ch)
                prev_space = ch == " "
            else:
                if not prev_space:
                    out.append(" ")
                out.append(description)
                prev_space = False
        return "".join(out)

    @staticmethod
    def _sentitext(text: str) -> SentiText:
        """``SentiText(text)``, its words and caps flag computed in comprehensions instead of a
        method call per word (the same values: ``_strip_punc_if_word`` and ``allcap_differential``)."""
        st = SentiText.__new__(SentiText)
        st.text = text
        words = [w if len(s := w.strip(_PUNCT)) <= 2 else s for w in text.split()]
        st.words_and_emoticons = words
        st.is_cap_diff = 0 < len(words) - sum(map(str.isupper, words)) < len(words)
        return st

    def polarity_scores(self, text: str) -> dict[str, float]:
        text = self._without_emoji(text).strip()
        sentitext = self._sentitext(text)
        words = sentitext.words_and_emoticons
        lowered = [w.lower() for w in words]
        self._lowered = (words, lowered)
        sentiments: list[float] = []
        last = len(words) - 1
        lexicon = self.lexicon
        for i, item in enumerate(words):
            low = lowered[i]
            # a word outside the lexicon scores the 0 it is handed (the library's first test): most words
            if low not in lexicon or low in BOOSTER_DICT or (i < last and low == "kind" and lowered[i + 1] == "of"):
                sentiments.append(0)
                continue
            sentiments = self.sentiment_valence(0, sentitext, item, i, sentiments)
        sentiments = self._but_check(words, sentiments)
        return self.score_valence(sentiments, text)

    def _lower(self, words: list[str]) -> list[str]:
        cur = self._lowered
        return cur[1] if cur[0] is words else [str(w).lower() for w in words]

    def _negation_check(self, valence: float, words: list[str], start_i: int, i: int) -> float:
        low = self._lower(words)
        if start_i == 0:
            if _negates(low[i - 1]):
                valence = valence * N_SCALAR
        elif start_i == 1:
            if low[i - 2] == "never" and low[i - 1] in ("so", "this"):
                valence = valence * 1.25
            elif low[i - 2] == "without" and low[i - 1] == "doubt":
                pass
            elif _negates(low[i - 2]):
                valence = valence * N_SCALAR
        elif start_i == 2:
            if (low[i - 3] == "never" and low[i - 2] in ("so", "this")) or low[i - 1] in ("so", "this"):
                valence = valence * 1.25
            elif low[i - 3] == "without" and (low[i - 2] == "doubt" or low[i - 1] == "doubt"):
                pass
            elif _negates(low[i - 3]):
                valence = valence * N_SCALAR
        return valence

    def _special_idioms_check(self, valence: float, words: list[str], i: int) -> float:
        low = self._lower(words)
        onezero = f"{low[i - 1]} {low[i]}"
        twoonezero = f"{low[i - 2]} {low[i - 1]} {low[i]}"
        twoone = f"{low[i - 2]} {low[i - 1]}"
        threetwoone = f"{low[i - 3]} {low[i - 2]} {low[i - 1]}"
        threetwo = f"{low[i - 3]} {low[i - 2]}"
        for seq in (onezero, twoonezero, twoone, threetwoone, threetwo):
            if seq in SPECIAL_CASES:
                valence = SPECIAL_CASES[seq]
                break
        if len(low) - 1 > i:
            zeroone = f"{low[i]} {low[i + 1]}"
            if zeroone in SPECIAL_CASES:
                valence = SPECIAL_CASES[zeroone]
        if len(low) - 1 > i + 1:
            zeroonetwo = f"{low[i]} {low[i + 1]} {low[i + 2]}"
            if zeroonetwo in SPECIAL_CASES:
                valence = SPECIAL_CASES[zeroonetwo]
        for n_gram in (threetwoone, threetwo, twoone):
            if n_gram in BOOSTER_DICT:
                valence = valence + BOOSTER_DICT[n_gram]
        return valence
