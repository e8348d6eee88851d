"""Gold sentiment score and gold per-word credit for the embedded task, from VADER.

``gold_score(text)`` is VADER's compound score. ``gold_char_credit(text)`` says
which words made that score, by rerunning the loop of
``SentimentIntensityAnalyzer.polarity_scores`` with VADER's own internals:

1. VADER splits the text on whitespace (``SentiText.words_and_emoticons``; one
   entry per whitespace word, leading/trailing punctuation stripped).
2. For each word it appends a valence to a ``sentiments`` list: 0 for booster
   words (BOOSTER_DICT) and the "kind" of "kind of"; otherwise
   ``sentiment_valence`` gives the lexicon valence of the word modified by the
   up-to-3 preceding boosters/dampeners, negations (NEGATE, "n't", "no", x -0.74),
   "never so/this", special idioms and "least"; words outside the lexicon get 0.
3. ``_but_check`` multiplies entries before the first "but" by 0.5 and after it
   by 1.5 (VADER's own implementation, quirks included).
4. The compound score is ``normalize(sum(sentiments) +/- punctuation emphasis)``.

The gold credit of a word is ``|sentiments[i]|``: the magnitude of its
contribution after all rules. Modifier words ("not", "very", "but") get 0; their
effect is already inside the word they modify ("not good" puts all the credit on
"good"). Weights are not normalised; callers that want a distribution divide by
their sum.
"""

from __future__ import annotations

import re
from functools import lru_cache

from abc_gym.compat.vader import (
    BOOSTER_DICT,
    SentimentIntensityAnalyzer,
    SentiText,
    but_check,
    normalize,
    punctuation_emphasis,
)


@lru_cache(maxsize=1)
def analyzer() -> SentimentIntensityAnalyzer:
    """A shared VADER analyzer (loading the lexicon takes ~50 ms)."""
    return SentimentIntensityAnalyzer()


def gold_score(text: str) -> float:
    """VADER compound score of ``text`` in [-1, 1] (``polarity_scores(text)["compound"]``, exactly).

    Text without emoji: from the per-word sentiments that :func:`gold_char_credit` needs too
    (one VADER pass, cached per text, serves both; the env computes both for every episode).
    Text with emoji: VADER's own ``polarity_scores``, which first replaces each emoji by its
    description (:func:`word_sentiments` does not).
    """
    sia = analyzer()
    if any(ch in sia.emojis for ch in text):  # polarity_scores' own per-character emoji test
        return float(sia.polarity_scores(text)["compound"])
    return float(sentiment_sum_to_compound(sum(_sentiments(text)), text))


def vader_label(text: str) -> int:
    """1 if VADER compound >= 0.05 (positive), 0 if <= -0.05 (negative), else -1 (neutral)."""
    c = gold_score(text)
    if c >= 0.05:
        return 1
    if c <= -0.05:
        return 0
    return -1


def word_sentiments(text: str) -> list[float]:
    """VADER's per-word ``sentiments`` list for ``text``, one signed entry per whitespace word.

    Mirrors the loop of ``SentimentIntensityAnalyzer.polarity_scores`` (vaderSentiment
    3.3.2) and calls its internals (:mod:`abc_gym.compat.vader`) for every rule. Emoji
    are not translated here (the embedded corpus has none), so the list lines up with
    ``text.split()``.
    """
    return list(_sentiments(text))


@lru_cache(maxsize=4096)
def _sentiments(text: str) -> tuple[float, ...]:
    """:func:`word_sentiments`, cached: an episode's gold score and gold credit read the same text."""
    sia = analyzer()
    sentitext = SentiText(text.strip())
    words = sentitext.words_and_emoticons
    sentiments: list[float] = []
    for i, item in enumerate(words):
        if item.lower() in BOOSTER_DICT:
            sentiments.append(0.0)
            continue
        if i < len(words) - 1 and item.lower() == "kind" and words[i + 1].lower() == "of":
            sentiments.append(0.0)
            continue
        sentiments = sia.sentiment_valence(0, sentitext, item, i, sentiments)
    sentiments = but_check(sia, words, sentiments)
    return tuple(float(s) for s in sentiments)


def sentiment_sum_to_compound(total: float, text: str) -> float:
    """VADER's map from the summed sentiments to the compound score (with punctuation emphasis)."""
    emph = punctuation_emphasis(analyzer(), text)
    if total > 0:
        total += emph
    elif total < 0:
        total -= emph
    return round(normalize(total), 4)


def gold_char_credit(text: str) -> list[tuple[int, int, float]]:
    """For each whitespace word of ``text``: ``(start_char, end_char, |VADER contribution|)``.

    ``text[start:end]`` is the word without the leading/trailing punctuation VADER strips
    (``"delightful."`` -> ``"delightful"``), so a sentence's full stop gets no gold credit;
    a word made only of punctuation keeps its whole span.
    """
    spans = []
    for m in re.finditer(r"\S+", text):
        core = re.search(r"\w(?:.*\w)?", m.group())  # first to last word character
        spans.append((m.start() + core.start(), m.start() + core.end()) if core else (m.start(), m.end()))
    sentiments = word_sentiments(text)
    if len(spans) != len(sentiments):  # cannot happen without emoji; guard the alignment
        raise ValueError("VADER word split does not match the whitespace split")
    return [(s, e, abs(v)) for (s, e), v in zip(spans, sentiments)]
