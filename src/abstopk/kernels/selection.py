"""The support of a sparse code: which latents each row keeps, and its derived layouts.

A :class:`Selection` is the sparsity pattern of a sparse matrix ``S`` [B, n] (B rows,
n = d_sae latents) with m stored entries per row: ``indices`` [B, m] gives the latent of
each entry. The entry weights (kept values, or gradients) are not part of it: the same
pattern serves the decoder's forward (weights = values) and every backward product
(weights = incoming gradients), so its layouts are computed once per step.

A batch-level selection (BatchTopK) keeps a different number of entries per row; it is
stored padded to the widest row, with ``counts`` [B]: row b's first counts[b] entries are
real, the rest is padding (value 0, spread over the latents) that every product skips.
N = Σ_b counts[b] real entries (N = B·m without ``counts``).

Derived layouts, computed on first use and cached on the object:

* :meth:`Selection.csr` — the real entries in row-major (CSR) order: flat positions
  ``pos`` [N] (``b·m + j``; None without padding), their latents ``col`` [N] and the row
  offsets ``crow`` [B + 1] = (0, cumsum(counts)).
* :meth:`Selection.csc` — the real entries in column-major (CSC) order, sorted by latent
  (stable): flat positions ``order`` [N], their rows ``rows`` [N] = ``order // m`` and the
  start of each latent's run ``offsets`` [n] = cumsum(nnz) − nnz.

A selection is immutable: its tensors must not be modified in place after it is made (the
autograd functions that hold one also save ``indices`` for backward, so autograd reports
such a modification).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Selection", "padded_rows"]


class Selection:
    """Sparsity pattern of S [B, n]: ``indices`` [B, m] int64, optional ``counts`` [B] int64.

    Args:
        indices: [B, m] latent of each stored entry (values in [0, n)).
        n: number of columns of S (d_sae).
        counts: [B] real entries per row (row b keeps its first counts[b]); None when every
            stored entry is real.
    """

    __slots__ = ("indices", "n", "counts", "_csr", "_csc")

    def __init__(self, indices: Tensor, n: int, counts: Tensor | None = None) -> None:
        if indices.dim() != 2:
            raise ValueError(f"indices must be [B, m], got shape {tuple(indices.shape)}")
        if counts is not None and counts.shape != indices.shape[:1]:
            raise ValueError(
                f"counts must have shape [{indices.shape[0]}], got {tuple(counts.shape)}")
        self.indices = indices.contiguous()
        self.n = int(n)
        self.counts = counts
        self._csr: tuple[Tensor | None, Tensor, Tensor] | None = None
        self._csc: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def shape(self) -> torch.Size:
        """[B, m], the shape of ``indices`` and of every weight tensor on this pattern."""
        return self.indices.shape

    def __repr__(self) -> str:
        pad = "" if self.counts is None else ", padded"
        return f"Selection(B={self.shape[0]}, m={self.shape[1]}, n={self.n}{pad})"

    # ------------------------------------------------------------------ layouts
    def csr(self) -> tuple[Tensor | None, Tensor, Tensor]:
        """Row-major form of the real entries: ``(pos, col, crow)``.

        ``pos`` [N]: flat positions ``b·m + j`` of the real entries (None without
        ``counts``: all B·m are real, in order); ``col`` [N]: their latents,
        ``indices.view(-1)[pos]``; ``crow`` [B + 1]: row offsets (0, cumsum(counts)), or
        0, m, 2m, … without ``counts``. Cached.
        """
        if self._csr is None:
            nb, m = self.indices.shape
            dev = self.indices.device
            if self.counts is None:
                self._csr = (None, self.indices.reshape(-1),
                             torch.arange(0, nb * m + 1, m, device=dev, dtype=torch.int64))
            else:
                valid = torch.arange(m, device=dev) < self.counts[:, None]
                pos = valid.view(-1).nonzero().view(-1)
                crow = torch.zeros(nb + 1, device=dev, dtype=torch.int64)
                torch.cumsum(self.counts, 0, out=crow[1:])
                self._csr = (pos, self.indices.reshape(-1)[pos], crow)
        return self._csr

    def csc(self) -> tuple[Tensor, Tensor, Tensor]:
        """Column-major (CSC) order of the real entries: ``(order, rows, offsets)``.

        ``order`` [N]: flat positions ``b·m + j`` sorted by latent (stable, so within a
        latent by row); ``rows`` [N]: the row ``order // m`` of each; ``offsets`` [n]: start
        of each latent's run in ``order`` (latent f owns ``order[offsets[f]:offsets[f+1]]``).
        Padding is in none of the three. Cached: the decoder's and the encoder's backward
        share one sort.
        """
        if self._csc is None:
            m = self.indices.shape[1]
            pos, flat, _ = self.csr()
            # int32 keys sort about 2x faster than int64; latent ids always fit
            key32 = flat.to(torch.int32) if self.n < 2**31 else flat
            order = torch.sort(key32, stable=True).indices
            if pos is not None:
                order = pos[order]
            rows = torch.div(order, m, rounding_mode="floor")
            nnz = torch.bincount(flat, minlength=self.n)
            self._csc = (order, rows, torch.cumsum(nnz, 0) - nnz)
        return self._csc

    # ------------------------------------------------------------------ weights
    def real(self, weights: Tensor) -> Tensor:
        """The real entries [N] of ``weights`` [B, m] on this pattern, in CSR order."""
        pos = self.csr()[0]
        return weights.reshape(-1) if pos is None else weights.reshape(-1)[pos]

    def padded(self, flat: Tensor, at: Tensor | None) -> Tensor:
        """[B, m] with ``flat`` [N] written at the flat positions ``at``, 0 elsewhere.

        ``at`` None: ``flat`` already holds all B·m entries in row-major order.
        """
        if at is None:
            return flat.view(self.shape)
        out = flat.new_zeros(self.shape.numel())
        out[at] = flat
        return out.view(self.shape)


def padded_rows(rows: Tensor, latents: Tensor, values: Tensor, nb: int, n: int,
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Flat entries sorted by row → a padded selection: ``(values, indices, counts)``.

    ``rows``, ``latents``, ``values`` [N]: the entries, ``rows`` ascending (their order
    within a row is kept). Returns ``values`` [B, m], ``indices`` [B, m] and ``counts`` [B]
    (entries per row), m = max(1, max count). Positions ≥ counts[b] are padding: value 0,
    index ``(b·m + j) mod n`` (spread over the n latents, so no latent's CSC bag in the
    backward grows by the whole padding: one latent holding it all made a CUDA step 35×
    slower). The real entries, read in CSR order (:meth:`Selection.csr`), are the input's
    N entries in the input's order.
    """
    dev = rows.device
    counts = torch.bincount(rows, minlength=nb)
    m = max(1, int(counts.max())) if nb > 0 else 1
    pos = torch.arange(rows.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[rows]
    at = rows * m + pos
    out_v = torch.zeros(nb * m, device=dev, dtype=values.dtype)
    out_v[at] = values
    indices = torch.arange(nb * m, device=dev) % n
    indices[at] = latents
    return out_v.view(nb, m), indices.view(nb, m), counts
