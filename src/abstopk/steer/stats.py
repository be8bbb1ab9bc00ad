"""Statistics of a steering comparison: bootstrap CIs, Spearman ρ, [0, 1] score mappings.

* :func:`bootstrap_ci` — a two-level percentile bootstrap of the mean of a [n_prompts,
  n_seeds] table: each replicate draws ``n_prompts`` prompts with replacement and, for each
  drawn prompt, ``n_seeds`` of its seeds with replacement; the interval is the
  ((1 − level)/2, (1 + level)/2) quantiles of the replicate means (numpy's linear rule).
* :func:`spearman` — Pearson correlation of average ranks (ties share their mean rank);
  ``None`` when either side is constant.
* The AxBench-style operating-point score: the harmonic mean of three [0, 1] scores
  (0 when any is 0),

  - concept ``c = (σ·s + 1) / 2`` for the scorer's s ∈ [−1, 1] and the wanted sign σ = ±1;
  - fluency ``f = min(1, ppl₀ / ppl)``: ppl the continuation's perplexity under the
    unsteered model, ppl₀ the median of the unsteered continuations' (same prompts, seeds);
  - capability ``a = min(1, exp(L₀ − L))``: L the held-out LM loss (nats/token) under the
    intervention, L₀ without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci", "capability01", "concept01", "fluency01", "harmonic_mean",
           "ranks", "spearman"]


def bootstrap_ci(table: Sequence[Sequence[float]], *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a [n_prompts, n_seeds] table (see the module docstring).

    Non-finite cells are an error; an empty table gives NaNs.
    """
    a = np.asarray(table, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a [prompts, seeds] table, got shape {a.shape}")
    if a.size == 0:
        return math.nan, math.nan, math.nan
    if not np.isfinite(a).all():
        raise ValueError("the table has non-finite values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    P, S = a.shape
    p_idx = rng.integers(0, P, size=(n_boot, P))
    s_idx = rng.integers(0, S, size=(n_boot, P, S))
    reps = a[p_idx[:, :, None], s_idx].mean(axis=(1, 2))
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean()), float(lo), float(hi)


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        r[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ of paired values; None if fewer than 2 pairs or a side is constant."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return None if den == 0 else float((rx * ry).sum() / den)


def concept01(score: float, sign: int) -> float:
    """(sign·score + 1) / 2, clipped to [0, 1]."""
    return min(1.0, max(0.0, (sign * score + 1) / 2))


def fluency01(ppl: float, ppl_ref: float) -> float:
    """min(1, ppl_ref / ppl); 0 for an infinite or NaN perplexity."""
    if not math.isfinite(ppl) or ppl <= 0:
        return 0.0
    return min(1.0, ppl_ref / ppl)


def capability01(loss: float, loss_ref: float) -> float:
    """min(1, exp(loss_ref − loss))."""
    if not math.isfinite(loss):
        return 0.0
    return min(1.0, math.exp(loss_ref - loss))


def harmonic_mean(values: Sequence[float]) -> float:
    """n / Σ 1/v over values in [0, 1]; 0 when any value is 0 (or below)."""
    if not values:
        raise ValueError("no values")
    if min(values) <= 0:
        return 0.0
    return len(values) / sum(1 / v for v in values)
