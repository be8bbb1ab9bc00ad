"""One-pass, streaming per-latent statistics over batches of codes.

Every accumulator sees the code of a batch of cache rows, ``z`` [B, F] (F = d_sae latents),
together with the rows' global indices ``rows`` [B], and keeps per latent:

* ``TopN``: the N largest *keys* with their value and row. Top-N positive: key = z where
  z > 0; top-N negative: key = −v where v < 0 (v = z for a signed SAE, the pre-activation u for
  a non-negative one). A uniform reservoir sample is the same buffer with key = −priority,
  priority ~ U(0, 1) i.i.d. per row (shared by the latents): for each latent the M smallest
  priorities among its firing rows are a uniform sample without replacement of those rows
  (the samples of different latents are correlated, which no statistic here depends on).
  Update cost: one comparison pass over [B, F] against the current N-th key, then a sort of
  the few candidates (after the first batches almost no entry beats the N-th key); while
  candidates are many (the first batches) a dense per-latent ``topk`` of the batch is merged
  instead.
  Ties: an entry equal to the current N-th key is not a candidate (first come is kept).
* ``SignedHistogram``: counts over the non-zero values in 2·H equal-width bins on [−R_f, R_f],
  R_f a power of two strictly above max|z_f| seen so far. When a larger value arrives R_f
  doubles (as often as needed) and neighbouring bins merge pairwise; because R_f and H are
  powers of two, bin indices ⌊|z|/w⌋ with w = R_f/H are exact, and ⌊⌊x⌋/2⌋ = ⌊x/2⌋, so the
  counts equal a histogram computed directly with the final edges (tested against brute
  force). Bin j of the positive side is [j·w, (j+1)·w); of the negative side (−(j+1)·w, −j·w].
* firing counts per sign (``count_pos`` = #{z > 0}, ``count_neg`` = #{z < 0}; firing is z ≠ 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SignedHistogram", "TopN", "firing_counts"]

NEG_INF = float("-inf")


class TopN:
    """Per latent, the ``n`` largest keys seen (with value and row), largest first.

    ``keys``/``values`` [F, n] float32 (−inf/NaN-padded where fewer were seen), ``rows`` [F, n]
    int64 (−1 padded).
    """

    def __init__(self, n_latents: int, n: int):
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        self.n = n
        self.keys = torch.full((n_latents, n), NEG_INF)
        self.values = torch.full((n_latents, n), float("nan"))
        self.rows = torch.full((n_latents, n), -1, dtype=torch.int64)

    def update(self, keys: Tensor, values: Tensor, rows: Tensor) -> None:
        """Offer ``keys`` [B, F] (−inf = not eligible), ``values`` [B, F], ``rows`` [B]."""
        thr = self.keys[:, -1]                                   # current n-th key, [F]
        cand = keys > thr
        n_cand = int(cand.sum())
        if n_cand == 0:
            return
        if n_cand > 4 * self.n * keys.shape[1]:                  # early batches: dense merge
            self._dense_update(keys, values, rows)
            return
        b_idx, f_idx = torch.nonzero(cand, as_tuple=True)
        self._merge(f_idx, keys[b_idx, f_idx].float(), values[b_idx, f_idx].float(), rows[b_idx])

    def update_entries(self, f_idx: Tensor, keys: Tensor, values: Tensor, rows: Tensor) -> None:
        """Offer a flat list of entries: latent ``f_idx`` [E], ``keys``/``values`` [E], ``rows``
        [E] (the sparse form of :meth:`update`, for k-sparse codes)."""
        cand = keys > self.keys[f_idx, -1]
        if bool(cand.any()):
            self._merge(f_idx[cand], keys[cand].float(), values[cand].float(), rows[cand])

    def _merge(self, f_idx: Tensor, cand_k: Tensor, cand_v: Tensor, cand_r: Tensor) -> None:
        touched = torch.unique(f_idx)
        # the touched latents' old entries join the candidates
        old_k = self.keys[touched].reshape(-1)
        old_v = self.values[touched].reshape(-1)
        old_r = self.rows[touched].reshape(-1)
        old_f = touched.repeat_interleave(self.n)
        ok = old_k > NEG_INF
        f = torch.cat([old_f[ok], f_idx])
        k = torch.cat([old_k[ok], cand_k])
        v = torch.cat([old_v[ok], cand_v])
        r = torch.cat([old_r[ok], cand_r])
        # sort by latent, then key descending (old entries first among equal keys: stable)
        order = torch.argsort(k, descending=True, stable=True)
        order = order[torch.argsort(f[order], stable=True)]
        f, k, v, r = f[order], k[order], v[order], r[order]
        starts = torch.searchsorted(f, touched)
        counts = torch.searchsorted(f, touched, right=True) - starts
        group = torch.repeat_interleave(torch.arange(touched.numel()), counts)
        pos = torch.arange(f.numel()) - starts[group]
        keep = pos < self.n
        self.keys[touched] = NEG_INF
        self.values[touched] = float("nan")
        self.rows[touched] = -1
        fk, pk = f[keep], pos[keep]
        self.keys[fk, pk] = k[keep]
        self.values[fk, pk] = v[keep]
        self.rows[fk, pk] = r[keep]

    def _dense_update(self, keys: Tensor, values: Tensor, rows: Tensor) -> None:
        """Per latent top-n of the batch (``topk``), merged with the kept entries."""
        m = min(self.n, keys.shape[0])
        kk, ii = keys.T.float().topk(m, dim=1)
        vv = values.T.float().gather(1, ii)
        rr = rows[ii]
        k = torch.cat([self.keys, kk], 1)
        v = torch.cat([self.values, vv], 1)
        r = torch.cat([self.rows, rr], 1)
        # stable order: kept entries first among equal keys (as the sparse path)
        order = torch.argsort(k, dim=1, descending=True, stable=True)[:, : self.n]
        self.keys = k.gather(1, order)
        self.values = v.gather(1, order)
        self.rows = r.gather(1, order)
        pad = self.keys == NEG_INF
        self.values[pad] = float("nan")
        self.rows[pad] = -1

    def entries(self, i: int) -> list[tuple[float, int]]:
        """Latent ``i``'s kept ``(value, row)`` pairs, largest key first."""
        m = self.keys[i] > NEG_INF
        return [(float(v), int(r)) for v, r in zip(self.values[i][m], self.rows[i][m], strict=False)]


def firing_counts(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(#{z > 0}, #{z < 0})`` per latent, int64 [F] each, for ``z`` [B, F]."""
    return (z > 0).sum(0, dtype=torch.int64), (z < 0).sum(0, dtype=torch.int64)


def _pow2_above(x: Tensor) -> Tensor:
    """Smallest power of two strictly greater than x (> 0), elementwise; 0 where x == 0."""
    e = torch.floor(torch.log2(x.clamp_min(1e-30))) + 1
    r = torch.exp2(e)
    r = torch.where(r <= x, r * 2, r)           # guard log2 rounding
    r = torch.where(r / 2 > x, r / 2, r)
    r = torch.where(r / 2 > x, r / 2, r)
    return torch.where(x > 0, r, torch.zeros_like(x))


class SignedHistogram:
    """Per latent, counts of the non-zero values in ``2·half_bins`` bins on [−R_f, R_f].

    ``half_bins`` must be a power of two. ``counts`` [F, 2·half_bins] int64: the first
    ``half_bins`` columns are the negative side from −R_f up to 0, the rest from 0 up to R_f;
    ``radius`` [F] (0 while a latent has not fired). See the module docstring.
    """

    def __init__(self, n_latents: int, half_bins: int = 32):
        if half_bins < 1 or half_bins & (half_bins - 1):
            raise ValueError(f"half_bins must be a power of two, got {half_bins}")
        self.h = half_bins
        self.radius = torch.zeros(n_latents, dtype=torch.float64)
        self.neg = torch.zeros(n_latents, half_bins, dtype=torch.int64)
        self.pos = torch.zeros(n_latents, half_bins, dtype=torch.int64)

    def _grow(self, need: Tensor) -> None:
        """Double R_f (merging bins) until R_f > need_f for every latent."""
        target = _pow2_above(need.double())
        grow = target > self.radius
        if not bool(grow.any()):
            return
        fresh = grow & (self.radius == 0)
        self.radius[fresh] = target[fresh]
        old = grow & ~fresh
        while bool(old.any()):
            idx = torch.nonzero(old, as_tuple=True)[0]
            for side in (self.neg, self.pos):
                merged = side[idx].reshape(-1, self.h // 2, 2).sum(-1) if self.h > 1 \
                    else side[idx]
                side[idx] = 0
                side[idx, : merged.shape[1]] = merged
            self.radius[idx] *= 2
            old = old & (target > self.radius)

    def update(self, z: Tensor) -> None:
        """Count the non-zero entries of ``z`` [B, F]."""
        b_idx, f_idx = torch.nonzero(z, as_tuple=True)
        self.update_entries(f_idx, z[b_idx, f_idx])

    def update_entries(self, f_idx: Tensor, values: Tensor) -> None:
        """Count non-zero ``values`` [E] of latents ``f_idx`` [E]."""
        if f_idx.numel() == 0:
            return
        v = values.double()
        a = v.abs()
        need = torch.zeros_like(self.radius).scatter_reduce(0, f_idx, a, "amax")
        self._grow(need)
        w = self.radius[f_idx] / self.h
        j = torch.floor(a / w).long().clamp_(0, self.h - 1)
        flat = f_idx * self.h + j
        for side, mask in ((self.pos, v > 0), (self.neg, v < 0)):
            add = torch.bincount(flat[mask], minlength=side.numel())
            side.view(-1).add_(add)

    def edges_counts(self, i: int) -> tuple[list[float], list[int]]:
        """Latent ``i``'s bin edges (2·half_bins + 1, from −R to R) and counts (2·half_bins)."""
        r = float(self.radius[i])
        if r == 0:
            return [], []
        edges = [(-r + 2 * r * j / (2 * self.h)) for j in range(2 * self.h + 1)]
        counts = self.neg[i].flip(0).tolist() + self.pos[i].tolist()
        return edges, counts


def histogram_reference(values: Tensor, radius: float, half_bins: int) -> list[int]:
    """Brute-force histogram of non-zero ``values`` with the bins of :class:`SignedHistogram`
    (for tests): positive bin ⌊v/w⌋, negative bin ⌊|v|/w⌋ mirrored, w = radius/half_bins."""
    v = values[values != 0].double()
    w = radius / half_bins
    out = [0] * (2 * half_bins)
    for x in v.tolist():
        j = min(int(math.floor(abs(x) / w)), half_bins - 1)
        out[half_bins + j if x > 0 else half_bins - 1 - j] += 1
    return out
