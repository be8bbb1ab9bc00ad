"""The JumpReLU family's training encoder: GEMM + threshold selection, sparse backward.

One :class:`torch.autograd.Function`, :class:`ThresholdEncode`, for ``jumprelu`` (key = u)
and ``absjumprelu`` (key = |u|, sign kept). B rows, D = d_in, F = d_sae, θ [F] the learned
thresholds, ε the bandwidth, K(t) = 1[−1/2 < t < 1/2] the rectangle kernel
(:func:`abstopk.sparsity._rect`, strict). The dense path (:mod:`abstopk.sparsity`) computes::

    z      = u·fires,  fires = 1[key > θ]
    ∂z/∂u  = fires;    ∂z/∂θ = −(θ/ε)·K((key − θ)/ε)  (× sign(u) for absjumprelu)
    l0     = mean_b Σ_f fires[b, f];   ∂l0/∂θ_f = Σ_b −(1/ε)·K((key_bf − θ_f)/ε) / B

so an entry matters only if it fires or lies in the band K ≠ 0, i.e. key > θ − ε/2; every
other entry has z = 0 and no gradient anywhere. Forward (no B×F tensor kept; on CPU u is
computed by row blocks, :func:`~.encoder_gemm.u_blocks`)::

    u     = x_c @ W_enc + b_enc                    [B, F], block by block
    cand  = {(b, f): key > θ_f − ε/2 − ε/64}       per block (a loose pre-filter, one compare)
    keep  = cand where fires or K((key − θ)/ε) ≠ 0  (exactly the dense expressions, per entry)
    values = u·fires on ``keep`` (0 for band-only entries), rows padded to the widest with
             counts (:func:`~.selection.padded_rows`, as the batch operators)
    l0    = #fires / B

(the ε/64 margin keeps every entry whose rounded (key − θ)/ε is > −1/2 in the candidates:
that rounding is relative to the difference, ≥ ε/2 in size there, and the pre-filter's own,
of θ − 33ε/64, is half an ulp of θ, below ε/64 for any θ < 2¹⁸·ε in float32). A band-only
entry's value is 0, so it adds nothing to the decode, but the decode's backward still gives
its ∂L/∂z, which θ needs. Backward, with g [B, m] the incoming ∂L/∂values and g_l0 that of
``l0``, over the N kept entries::

    ∂u    = g·fires  →  ∂x_c, ∂W_enc, ∂b_enc, ∂shift   (:func:`~.encoder_grads.encoder_grads`)
    ∂θ_f  = Σ_{entries at f} g·(−(θ_f/ε)·K·[sign u]) + (g_l0/B)·(−(1/ε)·K)   index_add_

O(N·D) instead of O(B·F·D). Early in training N can be a large part of B·F, where dense
GEMMs beat the sparse products: above :data:`SPARSE_MAX_FRACTION` of B·F the same kept
entries are scattered into a dense Z [B, F] (returned with no selection; the caller decodes
it with a GEMM) and ∂u becomes a dense G for one GEMM each of ∂W_enc and ∂x_c. Same
entries, same math; only the products differ (and so the float summation order). AuxK is
not done here: on this path the trainer recomputes it over the dead columns
(:func:`abstopk.train.step._aux_decode_dense`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .encoder_gemm import gemm_settings, u_blocks
from .encoder_grads import encoder_grads
from .selection import Selection, padded_rows

__all__ = ["SPARSE_MAX_FRACTION", "ThresholdEncode", "ThresholdOutput", "threshold_encode",
           "use_sparse_products"]

#: The rule between the two product forms of one step: sparse products (O(N·D)) while the
#: kept entries are at most this fraction of B·F (a mean selection width N/B ≤ 0.18·F),
#: dense GEMMs (O(B·F·D)) above. Measured on a 2-core Zen 3 EPYC, 1 thread, B 4096, D 576
#: (``bench/train_step.py``, ``docs/benchmarks.md``): the two forms cost the same at a width
#: of ≈ 1,000 for F 4608 (0.22·F) and ≈ 1,500 for F 9216 (0.16·F); at 0.18·F the wrong
#: side costs ≤ 10 %. Tests set it to 1.0 (always sparse) or −1.0 (always dense).
SPARSE_MAX_FRACTION: float = 0.18


def use_sparse_products(n_entries: int, nb: int, n: int) -> bool:
    """The step's rule: sparse products when N ≤ :data:`SPARSE_MAX_FRACTION`·B·F."""
    return n_entries <= SPARSE_MAX_FRACTION * nb * n


class ThresholdOutput(NamedTuple):
    """What :func:`threshold_encode` returns.

    values: [B, m] kept values (u where it fires, 0 for band-only entries and padding;
        differentiable), or, on the dense form, the dense code z [B, F].
    l0: 0-dim, the mean number of firing latents per row, with the rectangle-kernel
        pseudo-gradient to θ.
    selection: the :class:`~.selection.Selection` of ``values`` (with ``counts``), or None on
        the dense form.
    """

    values: Tensor
    l0: Tensor
    selection: Selection | None


class ThresholdEncode(torch.autograd.Function):
    """Fused encoder + JumpReLU / two-sided JumpReLU selection, sparse (or dense) backward.

    ``apply(x, shift, W_enc, b_enc, theta, eps, signed, chunk_rows, backend, compute_dtype)``
    → ``(values, l0, selection | None)``; the math is in the module docstring. Arguments are
    checked by :func:`threshold_encode`.
    """

    @staticmethod
    def forward(ctx, x, shift, W_enc, b_enc, theta, eps, signed, chunk_rows, backend,
                compute_dtype=None):
        x_c = x - shift if shift is not None else x
        nb, n = x_c.shape[0], W_enc.shape[1]
        dev, dt = x_c.device, x_c.dtype
        low = compute_dtype is not None and compute_dtype != dt   # as TopKEncode
        xg, Wg = (x_c.to(compute_dtype), W_enc.to(compute_dtype)) if low else (x_c, W_enc)
        rows = nb if not chunk_rows or dev.type != "cpu" else max(1, min(nb, chunk_rows))
        use_buf = dev.type == "cpu" and rows < nb
        Wt = W_enc.t().contiguous() if backend == "onednn" and not low else None
        th = theta.detach().to(dt)
        lo = th - (eps / 2 + eps / 64)
        r_all, f_all, u_all = [], [], []
        for s, _, u, a_out in u_blocks(xg, Wg, Wt, b_enc, rows, use_buf, dt):
            key = (torch.abs(u, out=a_out) if a_out is not None else u.abs()) if signed else u
            r, f = (key > lo).nonzero(as_tuple=True)
            r_all.append(r + s)
            f_all.append(f)
            u_all.append(u[r, f])
        r, f, uu = torch.cat(r_all), torch.cat(f_all), torch.cat(u_all)
        # the exact rule on the candidates, with the dense path's expressions entry by entry
        key, th_e = (uu.abs() if signed else uu), th[f]
        fires = key > th_e
        t = (key - th_e) / eps
        band = (t > -0.5) & (t < 0.5)
        keep = fires | band
        if not bool(keep.all()):
            r, f, uu, fires, band = r[keep], f[keep], uu[keep], fires[keep], band[keep]
        vals = uu * fires.to(dt)
        l0 = fires.sum().to(dt) / nb
        sparse = use_sparse_products(r.numel(), nb, n)
        if sparse:
            values, indices, counts = padded_rows(r, f, vals, nb, n)
            selection = Selection(indices, n, counts)
        else:
            values = torch.zeros(nb, n, device=dev, dtype=dt).index_put_((r, f), vals)
            selection = None
        ctx.eps, ctx.signed, ctx.nb = eps, signed, nb
        ctx.has_shift = shift is not None
        ctx.selection = selection
        ctx.save_for_backward(x_c, W_enc, theta, r, f, uu, fires, band)
        return values, l0, selection

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_v, g_l0, _g_sel):
        x_c, W_enc, theta, r, f, uu, fires, band = ctx.saved_tensors
        sel, eps = ctx.selection, ctx.eps
        if g_v is None:
            g = uu.new_zeros(uu.shape)
        elif sel is not None:
            g = sel.real(g_v)            # CSR order = the order of the kept entries
        else:
            g = g_v[r, f]
        g_u = g * fires.to(g.dtype)
        gtheta = None
        if ctx.needs_input_grad[4]:
            th = theta.detach()[f]
            kern = band.to(g.dtype)
            if ctx.signed:
                kern = kern * torch.sign(uu)
            w = -(th / eps) * kern * g
            if g_l0 is not None:
                w = w + (-(1.0 / eps) * band.to(g.dtype)) * (g_l0 / ctx.nb)
            gtheta = torch.zeros_like(theta).index_add_(0, f, w.to(theta.dtype))
        need_shift = ctx.has_shift and ctx.needs_input_grad[1]
        needs = (ctx.needs_input_grad[0], need_shift, ctx.needs_input_grad[2],
                 ctx.needs_input_grad[3])
        if sel is not None:
            parts = [(sel, sel.padded(g_u, sel.csr()[0]))]
            gx, gshift, gW, gb = encoder_grads(x_c, W_enc, needs, parts, joint=parts)
        else:
            G = torch.zeros(x_c.shape[0], W_enc.shape[1], device=g.device, dtype=g.dtype)
            G.index_put_((r, f), g_u)
            gx, gshift, gW, gb = encoder_grads(x_c, W_enc, needs, [], G=G)
        return gx, gshift, gW, gb, gtheta, None, None, None, None, None


def threshold_encode(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    theta: Tensor,
    eps: float,
    signed: bool,
    *,
    chunk_rows: int | None = -1,
    backend: str | None = None,
    shift: Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> ThresholdOutput:
    """Encode with the JumpReLU rule (one fused autograd op, sparse backward).

    Args:
        x_c: [B, d_in]; the encoder sees ``x_c − shift`` (``shift`` [d_in]: the pre-encoder
            bias ``b_dec``, or None).
        W_enc: [d_in, d_sae]; b_enc: [d_sae]; theta: [d_sae] thresholds θ (≥ 0 in training).
        eps: the rectangle kernel's bandwidth ε (> 0).
        signed: key |u| and signed values (``absjumprelu``); else key u (``jumprelu``).
        chunk_rows, backend, compute_dtype: as :func:`~.encode.fused_topk_encode`.

    Returns a :class:`ThresholdOutput`. Gradients reach ``x_c``, ``shift``, ``W_enc``,
    ``b_enc`` (through the firing entries) and ``theta`` (through the band entries, from
    both ``values`` and ``l0``). Decode a selection with :func:`~.decode.sparse_decode`
    (the layouts are shared), a dense ``values`` with a GEMM.
    """
    if x_c.dim() != 2 or W_enc.dim() != 2 or x_c.shape[1] != W_enc.shape[0]:
        raise ValueError(f"shape mismatch: x_c {tuple(x_c.shape)}, W_enc {tuple(W_enc.shape)}")
    if theta.shape != (W_enc.shape[1],):
        raise ValueError(f"theta must have shape [{W_enc.shape[1]}], got {tuple(theta.shape)}")
    if not eps > 0:
        raise ValueError(f"bandwidth must be > 0, got {eps!r}")
    if shift is not None and shift.shape != (x_c.shape[1],):
        raise ValueError(f"shift must have shape [{x_c.shape[1]}], got {tuple(shift.shape)}")
    chunk_rows, backend = gemm_settings(x_c, chunk_rows, backend, compute_dtype)
    values, l0, selection = ThresholdEncode.apply(
        x_c.contiguous(), shift, W_enc, b_enc, theta, float(eps), signed, chunk_rows, backend,
        compute_dtype)
    return ThresholdOutput(values, l0, selection)
