"""Products with a sparse S [B, n] given as a :class:`~.selection.Selection` plus weights.

``S[b, indices[b, j]] += weights[b, j]`` for the real entries of the selection (the
``counts[b]`` first of each row when it is padded); ``weights`` [B, m] has the selection's
shape. N = number of real entries, D = the dense operand's width.

==================  =========================  ==========  =====================================
function            math                       shapes      computed as
==================  =========================  ==========  =====================================
:func:`spmm`        S · X                      [B, D]      ``embedding_bag`` (per-sample weights)
:func:`spmm_t`      Sᵀ · X                     [n, D]      CSC order → ``embedding_bag`` bags
:func:`column_sums` Σ_b S[b, :]                [n]         ``index_add_`` / CSC segment sum
:func:`sddmm`       (A · Bmᵀ) on the support   [B, m]      ``sampled_addmm`` (CSR/CSC) or gather
==================  =========================  ==========  =====================================

Every product costs O(N·D) and keeps nothing of size B×n; the layouts they need (CSR, CSC)
come from the selection, which computes each once.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .selection import Selection

__all__ = ["column_sums", "sddmm", "spmm", "spmm_t"]


def spmm(sel: Selection, weights: Tensor, X: Tensor) -> Tensor:
    """S · X [B, D] for X [n, D].

    One ``embedding_bag`` with per-sample weights over the rows of X, O(B·m·D); with a
    padded selection the bags run over the CSR form (:meth:`Selection.csr`), so the
    padding is skipped, O(N·D).
    """
    if sel.counts is None:
        return F.embedding_bag(sel.indices, X, mode="sum", per_sample_weights=weights)
    _, col, crow = sel.csr()
    return F.embedding_bag(col, X, crow[:-1], mode="sum", per_sample_weights=sel.real(weights))


def spmm_t(sel: Selection, weights: Tensor, X: Tensor) -> Tensor:
    """Sᵀ · X [n, D] for X [B, D].

    The entries are visited in CSC order (sorted by latent, :meth:`Selection.csc`); output
    row f is one ``embedding_bag`` bag summing ``weights[b, j] · X[b]`` over latent f's
    entries, O(N·D) with no B×m×D temporary.
    """
    order, rows, offsets = sel.csc()
    return F.embedding_bag(rows, X, offsets, mode="sum",
                           per_sample_weights=weights.reshape(-1)[order])


def column_sums(sel: Selection, weights: Tensor, segment: bool | None = None) -> Tensor:
    """Σ_b S[b, :] [n].

    ``index_add_`` on CPU (sequential, so deterministic); elsewhere the CSC-ordered
    ``embedding_bag`` segment sum, because ``index_add_`` there uses float atomics whose
    order, and so whose rounding, changes from run to run (a resumed run would not be
    bit-identical). ``segment`` forces one path (default: by device). Padding skipped.
    """
    n = sel.n
    if segment is None:
        segment = sel.indices.device.type != "cpu"
    if not segment:
        _, col, _ = sel.csr()
        return torch.zeros(n, device=weights.device, dtype=weights.dtype).index_add_(
            0, col, sel.real(weights))
    order, _, offsets = sel.csc()
    table = weights.reshape(-1, 1)[order]
    pos = torch.arange(table.shape[0], device=table.device)
    return F.embedding_bag(pos, table, offsets, mode="sum").view(n)


def sddmm(sel: Selection, A: Tensor, Bm: Tensor, sampled: bool | None = None,
          csc: bool | None = None) -> Tensor:
    """out[b, j] = ⟨A[b], Bm[indices[b, j]]⟩ [B, m] for A [B, D], Bm [n, D] (SDDMM).

    ``sampled`` (default on CPU and CUDA) uses ``torch.sparse.sampled_addmm`` (MKL on CPU,
    cuSPARSE on CUDA: 2–7× faster than gathering there, ``bench/sparse_ops.py``); otherwise
    rows of ``Bm`` are gathered in row blocks and reduced by ``bmm``. ``csc`` (default: on
    CPU) samples the transposed product ``Bm · Aᵀ`` on the pattern of Sᵀ instead, i.e.
    visits the entries latent by latent (the CSC order that :func:`spmm_t` uses): each
    ``Bm`` row is then read once and the smaller ``A`` stays in cache (≈ 25 % faster on
    CPU). With a padded selection only the N real entries are computed; out is 0 at the
    padding.
    """
    indices, counts = sel.indices, sel.counts
    nb, m = indices.shape
    dev = A.device
    if sampled is None:
        sampled = dev.type in ("cpu", "cuda")
    if csc is None:
        csc = dev.type == "cpu"
    if sampled and nb * m > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse CSR is a beta API
            if csc:  # Sᵀ [n, B] in CSR = S in CSC
                at, col, crow = sel.csc()
                crow = torch.cat([crow, crow.new_full((1,), at.numel())])
                left, right, shape = Bm, A.t(), (Bm.shape[0], nb)
            else:
                at, col, crow = sel.csr()
                left, right, shape = A, Bm.t(), (nb, Bm.shape[0])
            pattern = torch.sparse_csr_tensor(
                crow, col, torch.zeros(col.numel(), dtype=A.dtype, device=dev), shape)
            res = torch.sparse.sampled_addmm(pattern, left, right, beta=0.0).values()
        return sel.padded(res, at)
    # generic path (CUDA etc.): gather in row blocks to bound the B×m×D temporary
    # (≤ 4M elements on CPU, ≤ 128M = 512 MiB fp32 on an accelerator: few large launches)
    budget = 1 << (22 if A.device.type == "cpu" else 27)
    if counts is not None:  # real entries only: gather both operands entry by entry
        at, col, _ = sel.csr()
        rows = torch.div(at, m, rounding_mode="floor")
        flat = torch.empty(col.numel(), dtype=A.dtype, device=dev)
        step = max(1, budget // max(1, Bm.shape[1]))
        for s in range(0, col.numel(), step):
            e = min(col.numel(), s + step)
            torch.bmm(Bm.index_select(0, col[s:e])[:, None, :],
                      A.index_select(0, rows[s:e])[:, :, None], out=flat[s:e, None, None])
        return sel.padded(flat, at)
    out = torch.empty(nb, m, dtype=A.dtype, device=A.device)
    step = max(1, budget // max(1, m * Bm.shape[1]))
    for s in range(0, nb, step):
        e = min(nb, s + step)
        Wg = Bm.index_select(0, indices[s:e].reshape(-1)).view(e - s, m, -1)
        torch.bmm(Wg, A[s:e, :, None], out=out[s:e, :, None])
    return out
