"""Bidirectionality scores and labels for every latent of a :class:`LatentStats`.

The focus tokens of a side are the token ids of its top-N rows; the score and label are
:func:`abstopk.analysis.bidirectionality.classify` of the two sides.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..bidirectionality import BidirConfig, classify
from .collect import LatentStats

__all__ = ["label_all"]


def label_all(st: LatentStats, token_ids: Sequence[int], signed: bool,
              cfg: BidirConfig | None = None) -> tuple[list[float], list[str]]:
    """``(scores, labels)``, one per latent; ``token_ids[row]`` is the token of cache row ``row``."""
    scores, labels = [], []
    for i in range(st.count_pos.shape[0]):
        pe, ne = st.top_pos.entries(i), st.top_neg.entries(i)
        pos = [int(token_ids[r]) for _, r in pe]
        neg = [int(token_ids[r]) for _, r in ne]
        s, lab = classify(pos, neg, int(st.count_pos[i]), int(st.count_neg[i]), signed, cfg,
                          pos_values=[v for v, _ in pe], neg_values=[v for v, _ in ne])
        scores.append(s)
        labels.append(lab)
    return scores, labels
