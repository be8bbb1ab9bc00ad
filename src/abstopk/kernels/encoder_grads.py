"""The encoder's input gradients from the gradient of its pre-activations on a support.

The encoders of this package compute ``u = (x − shift) @ W_enc + b_enc`` [B, F] and keep only
some entries of it. Given ∂L/∂u as a sparse B×F matrix S (one or several
:class:`~.selection.Selection` s with their weights [B, m]) plus, optionally, a dense part G
[B, c] over the columns ``cols`` (all F columns when ``cols`` is None)::

    ∂x_c   = S · W_encᵀ (+ G · W_enc[:, cols]ᵀ)      [B, D]   spmm  (+ GEMM)
    ∂W_enc = (Sᵀ · x_c)ᵀ (+ x_cᵀ · G at cols)         [D, F]   spmm_t (+ GEMM)
    ∂b_enc = Σ_b S[b] (+ Σ_b G[b] at cols)            [F]      column_sums (+ sum)
    ∂shift = −W_enc · ∂b_enc                          [D]      one mat-vec

(x_c = x − shift with x constant, so ∂shift = −Σ_b ∂x_c[b]; the mat-vec avoids the B×D rows.)
Shared by :class:`~.encode.TopKEncode` (sparse selections, AuxK over a few dead columns as
the dense part) and :class:`~.jumprelu.ThresholdEncode` (its selection, or the whole
G when the selection is wide).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .selection import Selection
from .sparse_ops import column_sums, spmm, spmm_t

__all__ = ["encoder_grads", "total"]


def total(parts: Iterable[Tensor]) -> Tensor:
    """Sum of the fresh tensors ``parts`` (in place into the first)."""
    it = iter(parts)
    out = next(it)
    for p in it:
        out += p
    return out


def encoder_grads(x_c: Tensor, W_enc: Tensor, needs: tuple[bool, bool, bool, bool],
                  sels: Sequence[tuple[Selection, Tensor]], *,
                  joint: Sequence[tuple[Selection, Tensor]] | None = None,
                  cols: Tensor | None = None, G: Tensor | None = None,
                  ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """``(∂x_c, ∂shift, ∂W_enc, ∂b_enc)`` (module docstring); each None unless needed.

    ``x_c`` [B, D], ``W_enc`` [D, F]; ``needs`` = (x_c, shift, W_enc, b_enc) flags; ``sels``:
    the sparse parts [(selection, ∂u on it [B, m])]; ``G`` [B, c]: the dense part on the
    columns ``cols`` [c] (None: every column, c = F). ``joint``: the sparse parts ∂x_c is
    computed from instead (then ``G`` adds nothing to ∂x_c): the caller has them in fewer,
    wider selections, or its dense part is also in them.
    """
    need_x, need_shift, need_W, need_b = needs
    gx = gshift = gW = gb = None
    if need_x:
        W_t = W_enc.t().contiguous()
        parts = [spmm(s, g, W_t) for s, g in (joint if joint is not None else sels)]
        if joint is None and G is not None:
            Wc = W_enc if cols is None else W_enc.index_select(1, cols)
            parts.append(torch.mm(G, Wc.t()))
        gx = total(parts)
    if need_W:
        if not sels and cols is None:   # dense only: one GEMM straight into [D, F]
            gW = torch.mm(x_c.t(), G)
        else:
            gW = (total(spmm_t(s, g, x_c) for s, g in sels) if sels else
                  x_c.new_zeros(W_enc.shape[1], W_enc.shape[0]))
            if G is not None:
                gG = torch.mm(G.t(), x_c)
                gW = gW + gG if cols is None else gW.index_add_(0, cols, gG)
            gW = gW.t().contiguous()
    if need_b or need_shift:
        # per selection: off the CPU each reuses the CSC sort its ∂W_enc already made
        gb = (total(column_sums(s, g) for s, g in sels) if sels else
              x_c.new_zeros(W_enc.shape[1]))
        if G is not None:
            gb = gb + G.sum(0) if cols is None else gb.index_add_(0, cols, G.sum(0))
    if need_shift:
        gshift = gx.sum(0).neg() if gx is not None else torch.mv(W_enc, gb).neg_()
    if not need_b:
        gb = None
    return gx, gshift, gW, gb
