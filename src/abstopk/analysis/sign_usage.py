"""How an SAE uses signs: does a latent fire with both signs, and does a non-negative SAE
learn antipodal decoder pairs (two latents for the two ends of one axis)?

For the per-latent counts of a code ``z`` [N, F] over N rows, fire_i = #{n : z[n, i] ≠ 0} and
neg_i = #{n : z[n, i] < 0} (:class:`abstopk.eval.metrics.ReconstructionMetrics`'s
``fire_count`` / ``neg_count``, accumulated by :func:`~abstopk.eval.metrics.evaluate_reconstruction`),
and a decoder ``W_dec`` [F, D] (row i = latent i's direction d_i), over the **alive** latents
A = {i : fire_i > 0}:

* negative share of latent i: ν_i = neg_i / fire_i;
* ``two_sided``: the share of A with ``low`` ≤ ν_i ≤ ``high`` (both signs used; TopK and
  ReLU codes are 0 by construction);
* ``antipodal[t]``: the share of A whose direction has an alive partner j ≠ i with
  cos(d_i, d_j) < t. A TopK SAE that wanted a signed axis would have to spend two latents
  on it, d_j ≈ −d_i; this counts how often it does;
* ``negative_firings``: the share of all firings (z ≠ 0) that are negative.

Counts in, shares out; reading caches and SAEs is the caller's (``bench/sign_usage.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["sign_usage"]


def sign_usage(fire_count: Tensor, neg_count: Tensor, W_dec: Tensor, *,
               thresholds: Sequence[float] = (-0.9, -0.5), low: float = 0.05,
               high: float = 0.95) -> dict:
    """The sign statistics of the module docstring for the counts ``fire_count``,
    ``neg_count`` [F] and the decoder ``W_dec`` [F, D]: ``{"alive", "two_sided",
    "negative_firings", "antipodal": {t: share}}`` (shares of the alive latents;
    ``negative_firings`` of all firings)."""
    if fire_count.shape != neg_count.shape or fire_count.dim() != 1 or W_dec.dim() != 2 \
            or fire_count.shape[0] != W_dec.shape[0]:
        raise ValueError(f"fire_count and neg_count must be [F] and W_dec [F, D]; got "
                         f"{tuple(fire_count.shape)}, {tuple(neg_count.shape)} and "
                         f"{tuple(W_dec.shape)}")
    fired, neg = fire_count, neg_count
    alive = fired > 0
    n_alive = int(alive.sum())
    out: dict = {"alive": n_alive,
                 "negative_firings": float(neg.sum() / fired.sum().clamp_min(1))}
    if n_alive == 0:
        return {**out, "two_sided": 0.0, "antipodal": {t: 0.0 for t in thresholds}}
    nu = neg[alive].double() / fired[alive].double()
    out["two_sided"] = float(((nu >= low) & (nu <= high)).double().mean())
    d = torch.nn.functional.normalize(W_dec[alive].double(), dim=1)
    cos = d @ d.T
    cos.fill_diagonal_(float("inf"))          # no latent is its own partner
    nearest = cos.min(1).values               # each latent's most opposite alive partner
    out["antipodal"] = {t: float((nearest < t).double().mean()) for t in thresholds}
    return out
