"""A judge-free bidirectionality proxy: are a latent's two sides each coherent and distinct?

Inputs per latent: the focus tokens (the token at the row itself) of its top-N positive rows
T₊ = (t₁ … t_n₊) and of its top-N negative rows T₋ (see :mod:`.latent_stats`), and whether
its negative side is real firing (z < 0, a signed SAE) or only negative pre-activations (a
non-negative SAE, whose code is one-sided by construction).

Definitions (n = number of examples on a side, U(T) = set of distinct tokens of T):

* coherence  C(T) = 1 − (|U(T)| − 1)/(n − 1) ∈ [0, 1]   (n ≥ ``min_examples``, else 0):
  1 when every example is the same token, 0 when all n are different;
* distinctness D = 1 − |U(T₊) ∩ U(T₋)| / |U(T₊) ∪ U(T₋)|  (one minus the Jaccard overlap);
* balance B = min(M₊, M₋) / max(M₊, M₋) ∈ [0, 1], M = mean |value| of a side's top-N
  examples: an opposite pole is as strong as the first one, interference from another
  feature in superposition (a small overlap of the encoder direction) is much weaker;
* score S = min(C(T₊), C(T₋)) · D ∈ [0, 1]: high only when both poles are coherent
  and they are about different tokens (man/he/his vs woman/she/her).

Labels (the paper's categories, ``coherent`` = C ≥ ``min_coherence``):

* ``dead``: never fired (no z ≠ 0);
* ``bidirectional``: fires with both signs (≥ ``min_examples`` rows each), both sides
  coherent, D ≥ ``min_distinct`` and B ≥ ``min_balance``;
* ``unidirectional``: otherwise, when at least one firing side is coherent;
* ``unclear`` ("no clear meaning"): no firing side is coherent.

A non-negative SAE's latent is never ``bidirectional`` (it cannot fire negatively); its score
S against the negative pre-activation side is still reported: a high S says the latent's axis
has a meaningful opposite pole that the SAE discards.

Why not the promoted tokens: the ± logit lists are the top and bottom of one vector
W_U(γ⊙d_i), distinct by construction, so they carry no evidence. Limits: token identity is a
narrow notion of meaning (a context feature whose focus tokens vary scores low), and a noise
side that happens to land on one frequent token looks coherent; the planted-feature
validation (:func:`planted_validation` in :mod:`.planted`) measures the accuracy where the
truth is known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..fields import doc_field

__all__ = ["BidirConfig", "balance", "classify", "coherence", "distinctness", "fraction_with_ci",
           "wilson_interval"]

LABELS = ("bidirectional", "unidirectional", "unclear", "dead")


@dataclass
class BidirConfig:
    """Thresholds of the bidirectionality proxy. Validated on construction (``ValueError``)."""

    min_examples: int = doc_field("Fewest examples a side needs to count as firing.", 5)
    min_coherence: float = doc_field("Coherence a side needs (1 − (distinct focus tokens − 1)/(n − 1)).", 0.6)
    min_distinct: float = doc_field("Distinctness the two sides need (1 − Jaccard of their focus-token sets).", 0.5)
    min_balance: float = doc_field("Strength ratio the weaker side needs (mean |top value| of one side over the other's).", 0.5)

    def __post_init__(self) -> None:
        if isinstance(self.min_examples, bool) or not isinstance(self.min_examples, int) \
                or self.min_examples < 2:
            raise ValueError(f"min_examples must be an integer ≥ 2, got {self.min_examples!r}")
        for name in ("min_coherence", "min_distinct", "min_balance"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")


def coherence(tokens: Sequence, min_examples: int = 2) -> float:
    """C(T) = 1 − (|U(T)| − 1)/(n − 1); 0 when n < ``min_examples``."""
    n = len(tokens)
    if n < max(2, min_examples):
        return 0.0
    return 1.0 - (len(set(tokens)) - 1) / (n - 1)


def distinctness(a: Sequence, b: Sequence) -> float:
    """1 − |A ∩ B| / |A ∪ B| over the distinct tokens; 0 when both are empty."""
    A, B = set(a), set(b)
    if not A and not B:
        return 0.0
    return 1.0 - len(A & B) / len(A | B)


def balance(pos_values: Sequence[float], neg_values: Sequence[float]) -> float:
    """B = min(M₊, M₋)/max(M₊, M₋), M = mean |value| of a side; 0 when a side is empty."""
    if not pos_values or not neg_values:
        return 0.0
    a = sum(abs(v) for v in pos_values) / len(pos_values)
    b = sum(abs(v) for v in neg_values) / len(neg_values)
    return min(a, b) / max(a, b) if max(a, b) > 0 else 0.0


def classify(pos_tokens: Sequence, neg_tokens: Sequence, count_pos: int, count_neg: int,
             signed: bool, cfg: BidirConfig | None = None, *,
             pos_values: Sequence[float] | None = None,
             neg_values: Sequence[float] | None = None) -> tuple[float, str]:
    """``(score S, label)`` of one latent (see the module docstring).

    ``count_pos``/``count_neg``: rows with z > 0 / z < 0 over the whole cache;
    ``signed``: whether the negative side is real firing (else pre-activations);
    ``pos_values``/``neg_values``: the examples' values, for the balance B (not checked when
    omitted).
    """
    cfg = cfg or BidirConfig()
    cp = coherence(pos_tokens, cfg.min_examples)
    cn = coherence(neg_tokens, cfg.min_examples)
    s = min(cp, cn) * distinctness(pos_tokens, neg_tokens)
    if count_pos + count_neg == 0:
        return 0.0, "dead"
    fires_pos = count_pos >= cfg.min_examples
    fires_neg = signed and count_neg >= cfg.min_examples
    coh_pos = fires_pos and cp >= cfg.min_coherence
    coh_neg = fires_neg and cn >= cfg.min_coherence
    bal = 1.0 if pos_values is None or neg_values is None else balance(pos_values, neg_values)
    if coh_pos and coh_neg and distinctness(pos_tokens, neg_tokens) >= cfg.min_distinct \
            and bal >= cfg.min_balance:
        return s, "bidirectional"
    if coh_pos or coh_neg:
        return s, "unidirectional"
    return s, "unclear"


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (95 % by default); (0, 1) if n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def fraction_with_ci(labels: Sequence[str | None]) -> dict:
    """Counts per label and the bidirectional fraction among live latents (not ``dead``)
    with its 95 % Wilson interval."""
    counts = {lab: sum(1 for x in labels if x == lab) for lab in LABELS}
    live = len(labels) - counts["dead"]
    k = counts["bidirectional"]
    lo, hi = wilson_interval(k, live)
    return {"counts": counts, "live": live, "bidirectional_fraction": k / live if live else 0.0,
            "ci95": [lo, hi]}
