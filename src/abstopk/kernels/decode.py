"""The sparse decoder x̂ = Z · W_dec (+ b_dec) for a sparse code Z given by values + selection.

Z [B, F] has ``values[b, j]`` at latent ``indices[b, j]`` (real entries only); D = d_in,
N = number of real entries. Forward and backward are products with Z
(:mod:`.sparse_ops`), O(N·D) each::

    x̂       = Z · W_dec + b_dec               [B, D]  spmm
    ∂values  = (∂x̂ · W_decᵀ) on the support   [B, m]  sddmm (0 at the padding)
    ∂W_dec   = Zᵀ · ∂x̂                        [F, D]  spmm_t (CSC order)
    ∂b_dec   = Σ_b ∂x̂[b]                      [D]
"""

from __future__ import annotations

import torch
from torch import Tensor

from .selection import Selection
from .sparse_ops import sddmm, spmm, spmm_t

__all__ = ["SparseDecode", "sparse_decode"]


class SparseDecode(torch.autograd.Function):
    """x̂ = Z · W_dec (+ b_dec) for the sparse code Z = (values [B, m], selection).

    ``apply(values, W_dec, b_dec, selection)``; the backward (module docstring) reuses the
    selection's cached CSR/CSC layouts.
    """

    @staticmethod
    def forward(ctx, values, W_dec, b_dec, selection):
        out = spmm(selection, values, W_dec)
        if b_dec is not None:
            out += b_dec
        ctx.has_b = b_dec is not None
        ctx.selection = selection
        # the selection's tensors are saved too: autograd then reports an in-place change
        ctx.save_for_backward(values, W_dec, selection.indices, selection.counts)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        values, W_dec, *_ = ctx.saved_tensors
        sel = ctx.selection
        g = g.contiguous()
        gv = gW = gb = None
        if ctx.needs_input_grad[0]:
            gv = sddmm(sel, g, W_dec)
        if ctx.needs_input_grad[1]:
            gW = spmm_t(sel, values, g)
        if ctx.has_b and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gv, gW, gb, None


def sparse_decode(values: Tensor, indices: Tensor | Selection, W_dec: Tensor,
                  b_dec: Tensor | None, counts: Tensor | None = None) -> Tensor:
    """x̂ [B, d_in] = Σ_j values[b, j]·W_dec[indices[b, j]] (+ b_dec).

    ``values``: [B, m]; ``indices``: [B, m] int64, or the :class:`~.selection.Selection`
    the encoder returned (:func:`~.encode.fused_topk_encode`: its CSR compaction and CSC
    sort are then shared with the encoder's backward); ``W_dec``: [d_sae, d_in]. Forward is
    an ``embedding_bag`` with per-sample weights; the backward is sparse (see
    :class:`SparseDecode`), O(B·m·d_in). ``counts`` [B] (int64, from
    :func:`~.encode.batch_topk_encode` with ``with_counts``; only with bare ``indices``, a
    selection carries its own): row b's entries j ≥ counts[b] are padding and skipped, so
    forward and backward cost O(N·d_in), N = Σ_b counts[b]; the padding's ∂values is 0.
    """
    if isinstance(indices, Selection):
        sel = indices
        if counts is not None:
            raise ValueError("counts are part of the selection: pass them only with bare indices")
        if sel.n != W_dec.shape[0]:
            raise ValueError(f"selection over {sel.n} latents, W_dec has {W_dec.shape[0]} rows")
    else:
        sel = None
    shape = sel.shape if sel is not None else indices.shape
    if values.shape != shape:
        raise ValueError(f"values {tuple(values.shape)} and indices {tuple(shape)} differ")
    if sel is None:
        if counts is not None and counts.shape != values.shape[:1]:
            raise ValueError(
                f"counts must have shape [{values.shape[0]}], got {tuple(counts.shape)}")
        sel = Selection(indices, W_dec.shape[0], counts)
    return SparseDecode.apply(values.contiguous(), W_dec, b_dec, sel)
