"""The fused encoder: GEMM + top-k (or batch top-k·B) selection (+ AuxK), sparse backward.

One :class:`torch.autograd.Function`, :class:`TopKEncode`, in plain PyTorch ops (the same
code on CPU and CUDA). B rows, D = d_in, F = d_sae, m = entries kept per row (k; the
widest row for the batch operators), ka = AuxK width. Forward (no autograd graph on the
B×F pre-activation; on CPU it is computed by row blocks, :mod:`.encoder_gemm`)::

    u        = x_c @ W_enc + b_enc                       [B, F], block by block
    TopK:    idx = topk(u, k);    v = relu(u[idx])
    AbsTopK: idx = topk(|u|, k);  v = u[idx]             (sign kept)
    batch:   the same rules over the whole B×F batch, k·B entries in all (per-row
             candidates while the block is hot, then :func:`.batch_select.batch_from_candidates`);
             rows padded to the widest, m, with counts [B]
    AuxK:    per-row rule restricted to latents with aux_mask, ka = min(k_aux, #dead);
             with every latent dead (and ka ≥ m) the main selection is the top-m of the
             AuxK one (same key), so the row is ranked once
    every per-row top-k is :func:`.row_topk.row_topk` (exact, through group maxima)

The forward makes the :class:`~.selection.Selection` of the kept entries (and one of the
AuxK entries) and returns it; the backward uses the same objects, and so does the decoder
when it is given them (:func:`~.decode.sparse_decode`): each layout (CSR compaction, CSC
sort) is computed once per step. Backward, with g [B, m] (and g_aux [B, ka]) the incoming
gradient of the kept values (masked by ``v > 0`` for TopK, the relu) and S the sparse B×F
matrix of g on the selection (padding skipped)::

    ∂x_c  = S · W_encᵀ           [B, D]   spmm over the rows of W_encᵀ
    ∂W_enc = x_cᵀ · S = (Sᵀ·x_c)ᵀ [D, F]   spmm_t (CSC order)
    ∂b_enc = Σ_b S[b]            [F]      column_sums
    ∂shift = −W_enc · ∂b_enc     [D]      one mat-vec (x_c = x − shift, x constant)

so nothing of size B×F is kept for backward and it costs O(N·D) instead of O(B·F·D). These
products are :func:`.encoder_grads.encoder_grads`, shared with the JumpReLU family's encoder
(:mod:`.jumprelu`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import batch_select
from .aux_dense import dead_positions, dense_aux_columns
from .batch_select import batch_from_candidates, entries_at_least
from .block_select import select_all_dead_block, select_aux_block, select_block
from .encoder_gemm import gemm_settings, u_blocks
from .encoder_grads import encoder_grads
from .selection import Selection

__all__ = ["EncoderOutput", "TopKEncode", "batch_topk_encode", "fused_topk_encode",
           "topk_encode"]


class EncoderOutput(NamedTuple):
    """What :func:`fused_topk_encode` returns.

    values: [B, m] kept values (differentiable); m = k, or the widest row for ``batch``
        (padding: value 0, no gradient).
    selection: their :class:`~.selection.Selection` (``indices`` [B, m], ``counts`` [B] for
        ``batch``, else None).
    aux_values: [B, ka] AuxK values (differentiable), None without AuxK.
    aux_selection: their selection (``indices`` [B, ka]), None without AuxK.
    """

    values: Tensor
    selection: Selection
    aux_values: Tensor | None
    aux_selection: Selection | None


class TopKEncode(torch.autograd.Function):
    """Fused encoder + per-row top-k or batch top-k·B (+ AuxK) selection, sparse backward.

    ``apply(x, shift, W_enc, b_enc, k, signed, aux_mask, ka, dead_idx, chunk_rows, backend,
    batch)`` → ``(values [B, m], aux_values [B, ka], selection, aux_selection | None)``;
    the math is in the module docstring. Arguments are checked by
    :func:`fused_topk_encode`.
    """

    @staticmethod
    def forward(ctx, x, shift, W_enc, b_enc, k, signed, aux_mask, ka, dead_idx, chunk_rows,
                backend, batch=False, compute_dtype=None, aux_dense=False):
        x_c = x - shift if shift is not None else x
        nb, n = x_c.shape[0], W_enc.shape[1]
        dev, dt = x_c.device, x_c.dtype
        # bf16 autocast: the GEMM operands are cast once; u, the selection, the kept values
        # and the whole backward stay in x's dtype (fp32), see encoder_gemm.u_blocks
        low = compute_dtype is not None and compute_dtype != dt
        xg, Wg = (x_c.to(compute_dtype), W_enc.to(compute_dtype)) if low else (x_c, W_enc)
        width = min(n, batch_select.BATCH_CANDIDATES * k) if batch else k
        values = torch.empty(nb, width, device=dev, dtype=dt)
        indices = torch.empty(nb, width, device=dev, dtype=torch.int64)
        aux_v = torch.empty(nb, ka, device=dev, dtype=dt)
        aux_i = torch.empty(nb, ka, device=dev, dtype=torch.int64)
        rows = nb if not chunk_rows or dev.type != "cpu" else max(1, min(nb, chunk_rows))
        use_buf = dev.type == "cpu" and rows < nb
        Wt = W_enc.t().contiguous() if backend == "onednn" and not low else None
        not_dead = None
        if ka > 0 and dead_idx is None:
            not_dead = ~aux_mask
        # every latent dead (one host read, as fused_topk_encode's count of the dead):
        # the main selection is taken from the AuxK one
        all_dead = not_dead is not None and ka >= width and not bool(not_dead.any())
        for s, e, u, a_out in u_blocks(xg, Wg, Wt, b_enc, rows, use_buf, dt):
            if all_dead:
                select_all_dead_block(u, a_out, s, e, width, ka, signed, batch, values,
                                       indices, aux_v, aux_i)
                continue
            a = select_block(u, a_out, s, e, width, signed, batch, values, indices)
            if ka > 0:
                select_aux_block(u, a, s, e, ka, signed, dead_idx, not_dead, aux_v, aux_i)
        counts = None  # per-row widths of a padded (batch) selection
        if batch:
            def redo_rows(redo: Tensor, t: Tensor):
                return entries_at_least(xg, Wg, Wt, b_enc, signed, rows, use_buf, redo, t, dt)

            values, indices, counts = batch_from_candidates(
                values, indices, k, signed, redo_rows if width < n else None, n)
        selection = Selection(indices, n, counts)
        aux_selection = Selection(aux_i, n) if ka > 0 else None
        ctx.signed = signed
        ctx.ka = ka
        ctx.dead_idx = dead_idx if aux_dense and ka > 0 else None
        ctx.has_shift = shift is not None
        ctx.selection, ctx.aux_selection = selection, aux_selection
        # the selection's tensors are saved too: autograd then reports an in-place change
        ctx.save_for_backward(x_c, W_enc, values, aux_v, selection.indices, aux_i, counts)
        return values, aux_v, selection, aux_selection

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_v, g_av, _g_sel, _g_aux_sel):
        x_c, W_enc, values, aux_v, *_ = ctx.saved_tensors
        sel, aux_sel, ka = ctx.selection, ctx.aux_selection, ctx.ka
        if g_v is None:
            g_v = torch.zeros_like(values)
        if not ctx.signed:
            g_v = g_v * (values > 0)
        has_aux = ka > 0 and g_av is not None
        if has_aux and not ctx.signed:
            g_av = g_av * (aux_v > 0)
        # the selection(s) with their gradients; batch padding is skipped by the products
        sels = [(sel, g_v.contiguous())]
        if has_aux:
            sels.append((aux_sel, g_av.contiguous()))
        # AuxK over a few dead columns: its ∂W_enc, ∂b_enc as GEMMs over them (.aux_dense)
        dead = ctx.dead_idx if has_aux else None
        sparse_sels = sels if dead is None else sels[:1]
        g_d = None
        if dead is not None and (ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
                                 or ctx.has_shift and ctx.needs_input_grad[1]):
            pos = dead_positions(aux_sel.indices, dead, sel.n)
            g_d = g_av.new_zeros(g_av.shape[0], dead.numel()).scatter_(1, pos, g_av)
        need_x, need_shift = ctx.needs_input_grad[0], ctx.has_shift and ctx.needs_input_grad[1]
        joint = sels
        if need_x and has_aux and sel.counts is None:
            # fixed width + AuxK: ∂x_c in one pass over [B, k + ka]
            both = Selection(torch.cat([sel.indices, aux_sel.indices], 1), sel.n)
            joint = [(both, torch.cat([g_v, g_av], 1))]
        needs = (need_x, need_shift, ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        gx, gshift, gW, gb = encoder_grads(x_c, W_enc, needs, sparse_sels, joint=joint,
                                           cols=dead if g_d is not None else None, G=g_d)
        return gx, gshift, gW, gb, None, None, None, None, None, None, None, None, None, None


def fused_topk_encode(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    signed: bool,
    aux_mask: Tensor | None = None,
    k_aux: int = 0,
    *,
    batch: bool = False,
    chunk_rows: int | None = -1,
    backend: str | None = None,
    shift: Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
    aux_dense: bool | None = None,
) -> EncoderOutput:
    """Encode and select (one fused autograd op, sparse backward); returns the selections.

    Arguments as :func:`topk_encode`; ``batch`` selects k·B entries over the whole batch
    (as :func:`batch_topk_encode`). Give ``selection`` / ``aux_selection`` to
    :func:`~.decode.sparse_decode` so that the decoder and this encoder's backward share
    their layouts. ``compute_dtype`` (e.g. ``torch.bfloat16``; None: x's dtype): the dtype of
    the dense encoder GEMM only — its operands are cast once per call and its result widened
    to x's dtype before the selection; the values, the backward (sparse products with the
    fp32 ``x_c`` and ``W_enc``) and so every gradient stay in x's dtype.
    ``aux_dense``: the AuxK part of ∂W_enc / ∂b_enc as GEMMs over the dead
    columns (:mod:`.aux_dense`; decode the AuxK code with
    :func:`~.aux_dense.dead_column_decode` then); None decides by
    :func:`~.aux_dense.dense_aux_columns`.
    """
    if x_c.dim() != 2 or W_enc.dim() != 2 or x_c.shape[1] != W_enc.shape[0]:
        raise ValueError(f"shape mismatch: x_c {tuple(x_c.shape)}, W_enc {tuple(W_enc.shape)}")
    n = W_enc.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} must be in [1, d_sae = {n}]")
    ka, dead_idx = 0, None
    if aux_mask is not None and k_aux > 0:
        n_dead = int(aux_mask.sum())
        ka = min(k_aux, n_dead)
        if aux_dense is None:
            aux_dense = dense_aux_columns(n_dead, ka, n, x_c.device)
        if 0 < ka and (4 * n_dead < n or aux_dense):
            dead_idx = aux_mask.nonzero().view(-1)
    chunk_rows, backend = gemm_settings(x_c, chunk_rows, backend, compute_dtype)
    if shift is not None and shift.shape != (x_c.shape[1],):
        raise ValueError(f"shift must have shape [{x_c.shape[1]}], got {tuple(shift.shape)}")
    x_c = x_c.contiguous()
    values, aux_v, selection, aux_selection = TopKEncode.apply(
        x_c, shift, W_enc, b_enc, k, signed, aux_mask, ka, dead_idx, chunk_rows, backend, batch,
        compute_dtype, bool(aux_dense) and ka > 0)
    if ka == 0:
        aux_v = None
    return EncoderOutput(values, selection, aux_v, aux_selection)


def topk_encode(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    signed: bool,
    aux_mask: Tensor | None = None,
    k_aux: int = 0,
    *,
    chunk_rows: int | None = -1,
    backend: str | None = None,
    shift: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Encode and select (one fused autograd op, sparse backward).

    Args:
        x_c: [B, d_in] input; the encoder sees ``x_c − shift`` (``shift`` [d_in], the
            pre-encoder bias ``b_dec``, or None for none).
        W_enc: [d_in, d_sae]; b_enc: [d_sae].
        k: latents kept per row. ``signed``: rank by |u| and keep signs (AbsTopK);
            otherwise rank by u and clip the kept values at 0 (TopK).
        aux_mask: optional [d_sae] bool, the latents eligible for AuxK (dead ones).
        k_aux: AuxK width; the aux selection keeps ``ka = min(k_aux, aux_mask.sum())`` per
            row, ranked like the main selection (by u and relu'd, or by |u| with sign).
            Reading ``aux_mask.sum()`` is one host sync on CUDA.
        chunk_rows: rows per encoder-GEMM block on CPU (−1:
            :data:`~.encoder_gemm.CPU_CHUNK_ROWS`; ``None``/0: the whole batch at once).
            Ignored on other devices.
        backend: "addmm" or "onednn" for the CPU GEMM (None:
            :data:`~.encoder_gemm.GEMM_BACKEND`).
        shift: optional [d_in] subtracted from every row before the GEMM. Passing ``b_dec``
            here instead of subtracting it outside makes its gradient one [D, F]·[F] product
            (−W_enc·∂b_enc) rather than a B×m×D pass, when ``x_c`` itself needs no gradient.

    Returns:
        values [B, k], indices [B, k] (int64), aux_values [B, ka] | None, aux_indices | None.
        Gradients flow from ``values``/``aux_values`` to ``x_c``, ``W_enc`` and ``b_enc``.
        (:func:`fused_topk_encode` returns the selections instead of the bare indices.)
    """
    out = fused_topk_encode(x_c, W_enc, b_enc, k, signed, aux_mask, k_aux, batch=False,
                            chunk_rows=chunk_rows, backend=backend, shift=shift)
    aux_i = out.aux_selection.indices if out.aux_selection is not None else None
    return out.values, out.selection.indices, out.aux_values, aux_i


def batch_topk_encode(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    signed: bool,
    aux_mask: Tensor | None = None,
    k_aux: int = 0,
    *,
    chunk_rows: int | None = -1,
    backend: str | None = None,
    shift: Tensor | None = None,
    with_counts: bool = False,
) -> tuple[Tensor, ...]:
    """Encode and select k·B entries over the whole batch (BatchTopK / BatchAbsTopK).

    The selection is that of :func:`abstopk.sparsity.batchtopk` (the k·B largest ``u`` of the
    B×F batch, relu'd) or :func:`~abstopk.sparsity.batchabstopk` (the k·B largest ``|u|``,
    signed), computed without keeping the B×F ``u``: each row block keeps its rows' top
    ``c = min(F, BATCH_CANDIDATES·k)`` candidates while hot, the batch threshold is taken over
    the candidates, and rows that may hold more than c kept entries are recomputed
    (:func:`~.batch_select.batch_from_candidates` has the exactness argument). Arguments,
    AuxK and the backward are those of :func:`topk_encode`.

    Returns:
        values [B, m], indices [B, m] (int64), aux_values [B, ka] | None, aux_indices | None,
        where m is the largest number of entries any row keeps. Row b's kept entries come
        first; the rest is padding with value 0 (indices spread over the latents), which adds
        nothing to a decode (:func:`~.decode.sparse_decode`) and gets no gradient. Scatter
        with ``scatter_add`` (padding may repeat an index). Exactly k·B entries are kept
        (some of them 0 for BatchTopK, when fewer than k·B pre-activations are positive).
        ``with_counts``: a fifth return, ``counts`` [B] int64 (row b keeps its first
        counts[b] entries, Σ_b counts[b] = k·B); give it to :func:`~.decode.sparse_decode`
        so that the decode and both backwards skip the padding (O(k·B·D) instead of
        O(B·m·D)).
    """
    out = fused_topk_encode(x_c, W_enc, b_enc, k, signed, aux_mask, k_aux, batch=True,
                            chunk_rows=chunk_rows, backend=backend, shift=shift)
    aux_i = out.aux_selection.indices if out.aux_selection is not None else None
    res = (out.values, out.selection.indices, out.aux_values, aux_i)
    return (*res, out.selection.counts) if with_counts else res
