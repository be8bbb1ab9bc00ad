"""Exact per-row top-k through group maxima (a two-level selection).

``torch.topk`` over a row of n entries costs a partial sort of all n (≈ 5–20 ns an entry on
the project's CPU), while a vectorised maximum over slabs costs a fraction of a nanosecond.
:func:`row_topk` therefore selects in two levels. Row r of ``a`` [R, n] is split into
G = n / g strided groups of g entries, group j = {j, j + G, …, j + (g − 1)·G}::

    m[r, j]  = max_t a[r, j + t·G]                  [R, G]     one pass, elementwise max
    J[r]     = top-k of m[r]                        [R, k]     groups kept
    cand[r]  = the k·g entries of the groups J[r]   [R, k·g]   gather
    result   = top-k of cand[r], mapped back        [R, k]

Why it is exact: let v be the k-th largest value of the row. Fewer than k entries exceed v,
so fewer than k groups have a maximum above v and all of them are among the k groups kept;
every entry above v is therefore a candidate. Every kept group with maximum v contributes
an entry equal to v, and if fewer than k groups have a maximum ≥ v, every entry ≥ v is a
candidate. Either way the candidates hold at least k entries ≥ v including every entry > v,
so the top-k *values* of the candidates are those of the row. As with ``torch.topk``, which
of several entries tied at v is returned is not specified (the multiset of values is).
``-inf`` entries (masked latents) and NaN (largest, as in ``torch.topk``) behave as there.

It pays when n/g + k·g is well below n: g ≈ √(n/k); W1 (n = 9216): k = 32, g = 16 reduces
the entries ranked by ``torch.topk`` from 9216 to 1088 per row; k = 288 (AuxK), g = 6, to
3264. :func:`group_size` picks g (a divisor of n, else the plain ``torch.topk``);
:data:`GROUPED` (environment ``ABSTOPK_GROUPED_TOPK=0``) turns the two-level path off.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["GROUPED", "group_size", "row_topk"]

#: Use the two-level selection where :func:`group_size` finds a group size (read at call time).
GROUPED: bool = os.environ.get("ABSTOPK_GROUPED_TOPK", "1") != "0"

#: The two-level path is taken only if it ranks at most this share of the row's entries.
_MAX_SHARE = 0.5


def group_size(n: int, k: int) -> int | None:
    """Group size g (2 ≤ g ≤ 64, g divides n, n/g ≥ k) minimising n/g + k·g, the entries
    ranked by the two ``torch.topk`` calls; None when no g ranks ≤ half of the n entries."""
    best, cost = None, _MAX_SHARE * n
    for g in range(2, 65):
        if n % g or n // g < k:
            continue
        c = n // g + k * g
        if c < cost:
            best, cost = g, c
    return best


def row_topk(a: Tensor, k: int, g: int | None = -1) -> tuple[Tensor, Tensor]:
    """Per-row top-k of ``a`` [R, n]: ``(values [R, k], indices [R, k] int64)``, unsorted.

    The same values as ``a.topk(k, dim=1, sorted=False)`` (see the module docstring for the
    argument and for ties). ``g``: group size; −1 picks it (:func:`group_size`, honouring
    :data:`GROUPED`); None or a g that does not divide n (or leaves fewer than k groups)
    runs the plain ``torch.topk``.
    """
    if a.dim() != 2:
        raise ValueError(f"row_topk needs a [R, n] tensor, got shape {tuple(a.shape)}")
    r, n = a.shape
    if g == -1:
        g = group_size(n, k) if GROUPED else None
    if g is None or g < 2 or n % g or n // g < k or r == 0:
        return a.topk(k, dim=1, sorted=False)
    G = n // g
    m = a.reshape(r, g, G).amax(1)                                   # [R, G] group maxima
    groups = m.topk(k, dim=1, sorted=False).indices                  # [R, k]
    offsets = torch.arange(0, n, G, device=a.device).view(1, g, 1)   # members j + t·G
    cols = (groups.unsqueeze(1) + offsets).view(r, g * k)            # [R, k·g] candidates
    vals, loc = a.gather(1, cols).topk(k, dim=1, sorted=False)
    return vals, cols.gather(1, loc)
