"""Offline concept scorers: each maps a text to a signed score in [−1, 1] (+1 = the axis's
end A), without using the steered model.

* :class:`VaderScorer` — sentiment (A = positive): VADER's compound score (Hutto & Gilbert
  2014; the ``vaderSentiment`` package's lexicon and rules), already in [−1, 1].
* :class:`LexiconScorer` — gender (A = female): with ``a`` and ``b`` the counts of the
  text's words (lower-cased ``[a-z]+`` tokens) in the A and B lexicons,
  ``(a − b) / (a + b)``, and 0 when neither occurs.
* :class:`TextClassifierScorer` — register (A = literary): a scikit-learn logistic
  regression on word 1–2-grams and character 2–4-grams (tf-idf) fitted on labelled
  documents; score ``2·P(A | text) − 1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["LexiconScorer", "TextClassifierScorer", "VaderScorer", "words"]

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased alphabetic tokens of ``text``."""
    return _WORD.findall(text.lower())


class VaderScorer:
    """VADER compound sentiment of each text (+1 most positive, −1 most negative)."""

    name = "vader compound"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return [float(self._vader.polarity_scores(t)["compound"]) for t in texts]


class LexiconScorer:
    """``(#A words − #B words) / (#A words + #B words)`` per text; 0 without any."""

    name = "gendered-word lexicon"

    def __init__(self, lexicon_a: Iterable[str], lexicon_b: Iterable[str]) -> None:
        self.a = frozenset(w.lower() for w in lexicon_a)
        self.b = frozenset(w.lower() for w in lexicon_b)
        if self.a & self.b:
            raise ValueError(f"words in both lexicons: {sorted(self.a & self.b)}")

    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = []
        for t in texts:
            w = words(t)
            a = sum(x in self.a for x in w)
            b = sum(x in self.b for x in w)
            out.append((a - b) / (a + b) if a + b else 0.0)
        return out


class TextClassifierScorer:
    """Logistic regression on tf-idf word 1–2-grams + char 2–4-grams; score 2·P(A) − 1.

    ``fit(texts_a, texts_b)`` trains it (seeded, deterministic); ``accuracy`` holds its
    accuracy on the ``held_a`` / ``held_b`` texts given to ``fit`` (None without them).
    """

    name = "register classifier"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.model = None
        self.accuracy: float | None = None

    def fit(self, texts_a: Sequence[str], texts_b: Sequence[str],
            held_a: Sequence[str] = (), held_b: Sequence[str] = ()) -> TextClassifierScorer:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union

        if not texts_a or not texts_b:
            raise ValueError("the classifier needs texts of both classes")
        feats = make_union(
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True))
        self.model = make_pipeline(feats, LogisticRegression(C=4.0, max_iter=2000,
                                                             random_state=self.seed))
        self.model.fit(list(texts_a) + list(texts_b), [1] * len(texts_a) + [0] * len(texts_b))
        if held_a and held_b:
            s = self(list(held_a) + list(held_b))
            truth = [1] * len(held_a) + [0] * len(held_b)
            self.accuracy = sum((x > 0) == bool(y) for x, y in zip(s, truth, strict=True)) / len(s)
        return self

    def __call__(self, texts: Sequence[str]) -> list[float]:
        if self.model is None:
            raise RuntimeError("the classifier is not fitted")
        if not texts:
            return []
        p = self.model.predict_proba(list(texts))[:, 1]
        return [float(2 * x - 1) for x in p]
