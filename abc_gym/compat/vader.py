"""vaderSentiment internals used by the embedded sentiment task's gold scorer and corpus.

Checked against vaderSentiment 3.3.2 (the only release on PyPI since 2020).

``gold.py`` reruns the loop of ``SentimentIntensityAnalyzer.polarity_scores`` to find
which word made the score, and ``corpus.py`` builds reviews from VADER's own word lists.
Both need names that vaderSentiment does not document as API: the module constants
``BOOSTER_DICT`` and ``NEGATE``, the ``SentiText`` tokenizer, the ``normalize`` map and
the analyzer's private methods ``_but_check`` and ``_punctuation_emphasis``.
"""

from __future__ import annotations

from vaderSentiment.vaderSentiment import (
    BOOSTER_DICT,
    NEGATE,
    SentimentIntensityAnalyzer,
    SentiText,
    normalize,
)

__all__ = [
    "BOOSTER_DICT",
    "NEGATE",
    "SentiText",
    "SentimentIntensityAnalyzer",
    "but_check",
    "normalize",
    "punctuation_emphasis",
]


def but_check(sia: SentimentIntensityAnalyzer, words: list[str], sentiments: list[float]) -> list[float]:
    """VADER's "but" rule: entries before the first "but" x 0.5, after it x 1.5 (private method)."""
    return sia._but_check(words, sentiments)


def punctuation_emphasis(sia: SentimentIntensityAnalyzer, text: str) -> float:
    """VADER's emphasis from "!" and "?" added to the summed sentiments (private method)."""
    return sia._punctuation_emphasis(text)
