"""Sparse kernels for the fixed-k family (TopK, AbsTopK).

Interface (stable, used by :mod:`abstopk.sae` and the trainer):

* :func:`topk_encode` — ``u = x_c @ W_enc + b_enc`` and the per-row top-k selection
  (by ``u`` or by ``|u|``), optionally also an AuxK selection among masked ("dead")
  latents. Returns the kept values and their indices; gradients reach ``x_c``, ``W_enc``
  and ``b_enc`` through the selected entries only.
* :func:`batch_topk_encode` — the same for the batch-level operators (BatchTopK,
  BatchAbsTopK): k·B entries over the whole batch, returned per row padded to the widest
  row (padding: value 0, no gradient). Exact: per-row candidates, a batch threshold over
  them, and a recompute of the rows that may hold more (:func:`_batch_from_candidates`).
* :func:`sparse_decode` — ``x̂ = Σ_j values[:, j] · W_dec[indices[:, j]] + b_dec``.

Both are single :class:`torch.autograd.Function` s written in plain PyTorch ops, so the same
code runs on CPU and CUDA. The dense versions (:func:`topk_encode_reference`,
:func:`sparse_decode_reference`) are kept as the reference the tests compare against.

Notation: B rows, D = d_in, F = d_sae, m = number of selected entries per row
(k, or k + k_aux when the AuxK selection rides along). The selection is the sparse
matrix ``S`` [B, F] with m non-zeros per row, given as ``indices`` [B, m] and a weight per
entry [B, m]; every backward product is a product with ``S`` or ``Sᵀ``:

==========================  ===========================  =========================================
quantity                    math                         computed as
==========================  ===========================  =========================================
encoder ∂x_c  [B, D]        G · W_encᵀ                   ``embedding_bag`` over rows of ``W_encᵀ``
encoder ∂W_enc [D, F]       x_cᵀ · G                     (Gᵀ · x_c)ᵀ, Gᵀ in CSC order (sort by
                                                         latent) → ``embedding_bag`` with offsets
encoder ∂b_enc [F]          Σ_b G[b, :]                  ``index_add_``
encoder ∂shift [D]          −W_enc · Σ_b G[b, :]         one mat-vec (x_c = x − shift, x constant)
decoder x̂     [B, D]        Z · W_dec                    ``embedding_bag`` (per-sample weights)
decoder ∂W_dec [F, D]       Zᵀ · ∂x̂                      as ∂W_enc, no transpose (F×D layout)
decoder ∂values [B, m]      (∂x̂ · W_decᵀ) on the support  sampled dense-dense product (SDDMM)
==========================  ===========================  =========================================

so nothing of size B×F is kept for backward, and the backward costs O(B·m·D) instead of
O(B·F·D). A batch-level selection has a different width per row; it is returned padded to
the widest row together with ``counts`` [B], and every product above then runs over the
N = Σ_b counts[b] = k·B real entries only (CSR row offsets ``cumsum(counts)``,
:func:`_compact`), not the B·m padded ones (m ≈ 8k on skewed data). The forward never materialises the whole B×F pre-activation on CPU: it runs the
encoder GEMM over row blocks (``chunk_rows``) into a reused, cache-sized buffer and selects
in the block while it is hot. ``|u|`` for AbsTopK is written into a second reused block
buffer (never a fresh B×F tensor) and the signed values are gathered from ``u``.
"""

from __future__ import annotations

import os
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from .sparsity import topk_select

__all__ = [
    "BATCH_CANDIDATES",
    "CPU_CHUNK_ROWS",
    "batch_topk_encode",
    "onednn_available",
    "sparse_decode",
    "sparse_decode_reference",
    "topk_encode",
    "topk_encode_reference",
]

#: Rows of the encoder GEMM computed per block on CPU (block = chunk_rows × d_sae floats,
#: reused across calls). ``None`` or ``0`` = whole batch in one block.
CPU_CHUNK_ROWS: int | None = int(os.environ.get("ABSTOPK_CHUNK_ROWS", "1024")) or None

#: Encoder GEMM backend on CPU: "addmm" (MKL/OpenBLAS through torch.addmm) or "onednn"
#: (``torch.ops.mkldnn._linear_pointwise``, private op; falls back to addmm when missing).
GEMM_BACKEND: str = os.environ.get("ABSTOPK_GEMM", "addmm")

_BUFFERS: dict[tuple, tuple[Tensor, Tensor]] = {}


# =========================================================================== reference
def topk_encode_reference(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    signed: bool,
    aux_mask: Tensor | None = None,
    k_aux: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Dense-autograd reference of :func:`topk_encode` (same arguments and returns)."""
    u = torch.addmm(b_enc, x_c, W_enc)
    values, indices = topk_select(u, k, signed)
    aux_v = aux_i = None
    if aux_mask is not None and k_aux > 0:
        ka = min(k_aux, int(aux_mask.sum()))
        if ka > 0:
            masked = u.masked_fill(~aux_mask, 0.0)
            if signed:
                aux_i = masked.abs().topk(ka, dim=-1, sorted=False).indices
                aux_v = masked.gather(-1, aux_i)
            else:
                aux_v, aux_i = masked.topk(ka, dim=-1, sorted=False)
                aux_v = torch.relu(aux_v)
    return values, indices, aux_v, aux_i


def sparse_decode_reference(values: Tensor, indices: Tensor, W_dec: Tensor,
                            b_dec: Tensor | None) -> Tensor:
    """Dense reference of :func:`sparse_decode`: scatter to a B×F code, then ``z @ W_dec``."""
    z = torch.zeros(values.shape[0], W_dec.shape[0], dtype=values.dtype, device=values.device)
    z = z.scatter_add(1, indices, values)
    out = z @ W_dec
    return out + b_dec if b_dec is not None else out


# =========================================================================== helpers
def onednn_available() -> bool:
    """True when oneDNN's fused linear op can be called on CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(
            torch.ops.mkldnn, "_linear_pointwise"
        )
    except (AttributeError, RuntimeError):
        return False


def _block_buffers(device: torch.device, dtype: torch.dtype, rows: int, cols: int,
                   ) -> tuple[Tensor, Tensor]:
    """Two reused [rows, cols] scratch blocks (u and |u|) per (device, dtype, shape)."""
    key = (device, dtype, rows, cols)
    bufs = _BUFFERS.get(key)
    if bufs is None:
        if len(_BUFFERS) > 8:  # different shapes over a session: keep memory bounded
            _BUFFERS.clear()
        bufs = (torch.empty(rows, cols, device=device, dtype=dtype),
                torch.empty(rows, cols, device=device, dtype=dtype))
        _BUFFERS[key] = bufs
    return bufs


_CSC_CACHE: dict[tuple, tuple] = {}


def _memo(tag: str, indices: Tensor, counts: Tensor | None, n: int, fn):
    """``fn()`` cached on the identity (and version) of ``indices`` and ``counts``.

    The sparse products of one selection (decoder forward/backward, encoder backward) get the
    same ``indices``/``counts`` tensors, so they share one compaction and one CSC sort.
    """
    keyed = (indices,) if counts is None else (indices, counts)
    key = (tag, n, *map(id, keyed))
    hit = _CSC_CACHE.get(key)
    versions = tuple(t._version for t in keyed)
    if hit is not None:
        refs, vers, res = hit
        if all(r() is t for r, t in zip(refs, keyed, strict=True)) and vers == versions:
            return res
    res = fn()
    for k_ in [k_ for k_, v in _CSC_CACHE.items() if any(r() is None for r in v[0])]:
        del _CSC_CACHE[k_]
    if len(_CSC_CACHE) > 16:
        _CSC_CACHE.clear()
    _CSC_CACHE[key] = (tuple(weakref.ref(t) for t in keyed), versions, res)
    return res


def _compact(indices: Tensor, counts: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor]:
    """CSR form of the selection ``indices`` [B, m] whose row b holds its first counts[b].

    Returns ``pos`` [N] (flat positions ``b·m + j`` of the N = Σ_b counts[b] real entries,
    row-major), ``col`` [N] (their latents, ``indices.view(-1)[pos]``) and ``crow`` [B + 1]
    (row offsets, ``cumsum`` of ``counts``). ``counts`` None (no padding): ``pos`` None,
    ``col`` = all B·m indices, ``crow`` = 0, m, 2m, …. Cached like :func:`_csc_order`.
    """
    nb, m = indices.shape
    if counts is None:
        return None, indices.reshape(-1), torch.arange(
            0, nb * m + 1, m, device=indices.device, dtype=torch.int64)

    def build():
        valid = torch.arange(m, device=indices.device) < counts[:, None]
        pos = valid.view(-1).nonzero().view(-1)
        crow = torch.zeros(nb + 1, device=indices.device, dtype=torch.int64)
        torch.cumsum(counts, 0, out=crow[1:])
        return pos, indices.reshape(-1)[pos], crow

    return _memo("csr", indices, counts, m, build)


def _unpad(weights: Tensor, pos: Tensor | None) -> Tensor:
    """The real entries of padded ``weights`` [B, m] ([N] at ``pos``; all of them if None)."""
    return weights.reshape(-1) if pos is None else weights.reshape(-1)[pos]


def _pad(flat: Tensor, at: Tensor | None, shape: torch.Size) -> Tensor:
    """[B, m] with ``flat`` [N] written at the flat positions ``at`` and 0 elsewhere
    (``at`` None: ``flat`` already holds all B·m entries in order)."""
    if at is None:
        return flat.view(shape)
    out = flat.new_zeros(shape.numel())
    out[at] = flat
    return out.view(shape)


def _csc_order(indices: Tensor, n: int, counts: Tensor | None = None,
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Column-major (CSC) order of the support ``indices`` [B, m] of a sparse S [B, n].

    Returns ``order`` [N] (flat positions ``b·m + j`` of the entries sorted by latent,
    stable), ``rows`` [N] (the row ``order // m`` of each sorted entry) and ``offsets`` [n]
    (start of each latent's run). With ``counts`` [B] only row b's first counts[b] entries
    are real (the rest is padding, :func:`batch_topk_encode`): N = Σ_b counts[b] and the
    padding is in none of the three; else N = B·m. The result is cached on the identity
    (and version) of ``indices`` and ``counts``: the decoder's backward and the encoder's
    backward share one sort of the same selection.
    """
    def build():
        m = indices.shape[1]
        pos, flat, _ = _compact(indices, counts)
        # int32 keys sort about 2x faster than int64; latent ids always fit
        key32 = flat.to(torch.int32) if n < 2**31 else flat
        order = torch.sort(key32, stable=True).indices
        if pos is not None:
            order = pos[order]
        rows = torch.div(order, m, rounding_mode="floor")
        nnz = torch.bincount(flat, minlength=n)
        return order, rows, torch.cumsum(nnz, 0) - nnz

    return _memo("csc", indices, counts, n, build)


def _spmm(indices: Tensor, weights: Tensor, X: Tensor, counts: Tensor | None = None) -> Tensor:
    """S · X for the sparse S [B, n] with ``S[b, indices[b, j]] += weights[b, j]``.

    ``indices``/``weights``: [B, m]; ``X``: [n, D] → [B, D]; one ``embedding_bag`` with
    per-sample weights, O(B·m·D). ``counts`` [B]: row b has counts[b] real entries, the rest
    is padding and skipped (bags over the CSR form, :func:`_compact`), O(N·D).
    """
    if counts is None:
        return F.embedding_bag(indices, X, mode="sum", per_sample_weights=weights)
    pos, col, crow = _compact(indices, counts)
    return F.embedding_bag(col, X, crow[:-1], mode="sum", per_sample_weights=_unpad(weights, pos))


def _spmm_t(indices: Tensor, weights: Tensor, X: Tensor, n: int,
            counts: Tensor | None = None) -> Tensor:
    """Sᵀ · X for the sparse S [B, n] with ``S[b, indices[b, j]] += weights[b, j]``.

    ``indices``/``weights``: [B, m]; ``X``: [B, D] → [n, D]. The entries are visited in
    CSC order of S (sorted by latent, :func:`_csc_order`); each output row is then one
    ``embedding_bag`` bag summing ``weights · X[row]``, so the cost is O(B·m·D) with no
    B×m×D temporary (O(N·D) with ``counts``: padding skipped).
    """
    order, rows, offsets = _csc_order(indices, n, counts)
    return F.embedding_bag(rows, X, offsets, mode="sum",
                           per_sample_weights=weights.reshape(-1)[order])


def _column_sums(indices: Tensor, weights: Tensor, n: int,
                 segment: bool | None = None, counts: Tensor | None = None) -> Tensor:
    """Σ_b S[b, :] [n] for the sparse S given by ``indices``/``weights`` [B, m].

    ``index_add_`` on CPU (sequential, so deterministic); elsewhere the CSC-ordered
    ``embedding_bag`` segment sum, because ``index_add_`` there uses float atomics whose
    order, and so whose rounding, changes from run to run (a resumed run would not be
    bit-identical). ``segment`` forces one path (default: by device). ``counts``: as in
    :func:`_spmm` (padding skipped).
    """
    if segment is None:
        segment = indices.device.type != "cpu"
    if not segment:
        pos, col, _ = _compact(indices, counts)
        return torch.zeros(n, device=weights.device, dtype=weights.dtype).index_add_(
            0, col, _unpad(weights, pos))
    order, _, offsets = _csc_order(indices, n, counts)
    table = weights.reshape(-1, 1)[order]
    pos = torch.arange(table.shape[0], device=table.device)
    return F.embedding_bag(pos, table, offsets, mode="sum").view(n)


def _sddmm(indices: Tensor, A: Tensor, Bm: Tensor, sampled: bool | None = None,
           csc: bool | None = None, counts: Tensor | None = None) -> Tensor:
    """out[b, j] = ⟨A[b], Bm[indices[b, j]]⟩ for A [B, D], Bm [n, D] → [B, m] (SDDMM).

    ``sampled`` (default) uses ``torch.sparse.sampled_addmm`` (MKL on CPU, cuSPARSE on CUDA:
    2–7× faster than gathering there, ``bench/sparse_ops.py``); otherwise rows of ``Bm`` are
    gathered in row blocks and reduced by ``bmm``. ``csc`` (default: on CPU) samples the
    transposed product ``Bm · Aᵀ`` on the pattern of Sᵀ instead, i.e. visits the entries
    latent by latent (the CSC order the backward already sorted for ``_spmm_t``): each
    ``Bm`` row is then read once and the smaller ``A`` stays in cache (≈ 25 % faster on CPU).
    ``counts`` [B]: only row b's first counts[b] entries are computed (N of them, on the
    CSR/CSC pattern without the padding); out is 0 at the padding.
    """
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
                at, col, crow = _csc_order(indices, Bm.shape[0], counts)
                crow = torch.cat([crow, crow.new_full((1,), at.numel())])
                left, right, shape = Bm, A.t(), (Bm.shape[0], nb)
            else:
                at, col, crow = _compact(indices, counts)
                left, right, shape = A, Bm.t(), (nb, Bm.shape[0])
            pattern = torch.sparse_csr_tensor(
                crow, col, torch.zeros(col.numel(), dtype=A.dtype, device=dev), shape)
            res = torch.sparse.sampled_addmm(pattern, left, right, beta=0.0).values()
        return _pad(res, at, indices.shape)
    # generic path (CUDA etc.): gather in row blocks to bound the B×m×D temporary
    # (≤ 4M elements on CPU, ≤ 128M = 512 MiB fp32 on an accelerator: few large launches)
    budget = 1 << (22 if A.device.type == "cpu" else 27)
    if counts is not None:  # real entries only: gather both operands entry by entry
        at, col, _ = _compact(indices, counts)
        rows = torch.div(at, m, rounding_mode="floor")
        flat = torch.empty(col.numel(), dtype=A.dtype, device=dev)
        step = max(1, budget // max(1, Bm.shape[1]))
        for s in range(0, col.numel(), step):
            e = min(col.numel(), s + step)
            torch.bmm(Bm.index_select(0, col[s:e])[:, None, :],
                      A.index_select(0, rows[s:e])[:, :, None], out=flat[s:e, None, None])
        return _pad(flat, at, indices.shape)
    out = torch.empty(nb, m, dtype=A.dtype, device=A.device)
    step = max(1, budget // max(1, m * Bm.shape[1]))
    for s in range(0, nb, step):
        e = min(nb, s + step)
        Wg = Bm.index_select(0, indices[s:e].reshape(-1)).view(e - s, m, -1)
        torch.bmm(Wg, A[s:e, :, None], out=out[s:e, :, None])
    return out


def _gemm_block(x: Tensor, W: Tensor, Wt: Tensor | None, b: Tensor, out: Tensor) -> Tensor:
    """out ← x @ W + b (addmm into ``out``), or oneDNN's linear when ``Wt`` is given."""
    if Wt is not None:
        return torch.ops.mkldnn._linear_pointwise(x, Wt, b, "none", [], "")
    return torch.addmm(b, x, W, out=out)


# =========================================================================== encoder
def _u_blocks(x_c: Tensor, W_enc: Tensor, Wt: Tensor | None, b_enc: Tensor, rows: int,
              use_buf: bool):
    """Yield ``(s, e, u, a_out)`` for the row blocks ``[s, e)`` of ``u = x_c @ W_enc + b_enc``.

    ``u`` [e − s, F] lives in the reused block buffer when ``use_buf`` (CPU, several blocks),
    else in a fresh tensor; ``a_out`` is the second reused block (scratch for |u|) or None.
    Each block is valid only until the next one is produced.
    """
    nb, n = x_c.shape[0], W_enc.shape[1]
    if use_buf:
        buf_u, buf_a = _block_buffers(x_c.device, x_c.dtype, rows, n)
    for s in range(0, nb, rows):
        e = min(nb, s + rows)
        c = e - s
        if use_buf:
            yield s, e, _gemm_block(x_c[s:e], W_enc, Wt, b_enc, buf_u[:c]), buf_a[:c]
        else:
            out = torch.empty(c, n, device=x_c.device, dtype=x_c.dtype)
            yield s, e, _gemm_block(x_c[s:e], W_enc, Wt, b_enc, out), None


def _batch_from_candidates(cand_u: Tensor, cand_i: Tensor, k: int, signed: bool,
                           redo_rows, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exact batch-level selection from per-row candidates; padded [B, m] result.

    ``cand_u``/``cand_i`` [B, c]: each row's top-c entries of u by the ranking key (``u``, or
    ``|u|`` when ``signed``). The batch rule keeps the k·B entries of largest key over the
    whole B×F matrix. Let t be the (k·B)-th largest candidate key (t ≤ the true one, T*, as
    the candidates are a subset). A row whose smallest candidate key m_r < t has all of its
    other entries < t ≤ T*: none of them can be kept. Rows with m_r ≥ t (and c < F) may hold
    more: ``redo_rows(rows, t)`` recomputes u for them and returns every entry with key ≥ t
    as flat ``(row, latent, u)``; these replace the rows' candidates. The threshold only
    rises as candidates are added (t' ≥ t), so afterwards every entry with key ≥ t' is a
    candidate in every row and the top-k·B of the candidates is the top-k·B of the batch
    (ties at t' are all candidates: the count is exact, only which tied entry wins may
    differ from ``torch.topk`` over the flat batch). One recompute pass suffices; at most
    k·B / c rows (distinct keys) can need it.

    Returns ``values`` [B, m] (relu'd unless ``signed``), ``indices`` [B, m] and ``counts``
    [B] (kept entries per row), m = max count. Positions ≥ counts[b] are padding: value 0,
    index ``(b·m + j) mod n`` (spread over the n latents, so no latent's CSC bag in the
    backward grows by the whole padding: one latent holding it all made a CUDA step 35×
    slower).
    """
    nb, c = cand_u.shape
    n_keep = k * nb
    key = cand_u.abs() if signed else cand_u
    rows = torch.arange(nb, device=cand_u.device).repeat_interleave(c)
    flat_u, flat_i, flat_k = cand_u.reshape(-1), cand_i.reshape(-1), key.reshape(-1)
    if redo_rows is not None:
        t = flat_k.topk(n_keep, sorted=False).values.min()
        redo = (key.min(1).values >= t).nonzero().view(-1)
        if redo.numel() > 0:
            r_rows, r_i, r_u = redo_rows(redo, t)
            keep = torch.ones(nb, c, dtype=torch.bool, device=cand_u.device)
            keep[redo] = False
            keep = keep.view(-1)
            rows = torch.cat([rows[keep], r_rows])
            flat_i = torch.cat([flat_i[keep], r_i])
            flat_u = torch.cat([flat_u[keep], r_u])
            flat_k = flat_u.abs() if signed else flat_u
    sel = flat_k.topk(n_keep, sorted=False).indices
    rows = rows[sel]
    rows, order = torch.sort(rows, stable=True)
    sel = sel[order]
    counts = torch.bincount(rows, minlength=nb)
    m = int(counts.max())
    pos = torch.arange(n_keep, device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    at = rows * m + pos
    vals = flat_u[sel]
    if not signed:
        vals = vals.clamp_(min=0)
    values = torch.zeros(nb * m, device=cand_u.device, dtype=cand_u.dtype)
    values[at] = vals
    indices = torch.arange(nb * m, device=cand_u.device) % n
    indices[at] = flat_i[sel]
    return values.view(nb, m), indices.view(nb, m), counts


#: Candidates kept per row by the batch-level kernel, as a multiple of k (``c = min(F, ·k)``);
#: rows with more than c entries in the batch selection are recomputed (exact either way).
BATCH_CANDIDATES: int = 4


class _TopKEncode(torch.autograd.Function):
    """Fused encoder + per-row top-k or batch top-k·B (+ AuxK) selection, sparse backward.

    Forward (no autograd graph on the B×F pre-activation)::

        u        = x_c @ W_enc + b_enc                       [B, F], block by block
        TopK:    idx = topk(u, k);    v = relu(u[idx])
        AbsTopK: idx = topk(|u|, k);  v = u[idx]             (sign kept)
        batch:   the same rules over the whole B×F batch, k·B entries in all
                 (per-row candidates while the block is hot, then
                 :func:`_batch_from_candidates`); rows padded to the widest, m
        AuxK:    per-row rule restricted to latents with aux_mask, ka = min(k_aux, #dead)

    Backward, with g [B, m(+ka)] the incoming gradient of the kept values (masked by
    ``v > 0`` for TopK, the relu) and S the sparse B×F matrix of g on the selected support
    (batch: the counts[b] real entries of each row only, padding skipped)::

        ∂x_c = S · W_encᵀ,   ∂W_enc = x_cᵀ · S,   ∂b_enc = Σ_b S[b],
        ∂shift = −W_enc · ∂b_enc   (x_c = x − shift; ∂x_c is skipped when x needs none)
    """

    @staticmethod
    def forward(ctx, x, shift, W_enc, b_enc, k, signed, aux_mask, ka, dead_idx, chunk_rows,
                backend, batch=False):
        x_c = x - shift if shift is not None else x
        nb, n = x_c.shape[0], W_enc.shape[1]
        dev, dt = x_c.device, x_c.dtype
        width = min(n, BATCH_CANDIDATES * k) if batch else k
        values = torch.empty(nb, width, device=dev, dtype=dt)
        indices = torch.empty(nb, width, device=dev, dtype=torch.int64)
        aux_v = torch.empty(nb, ka, device=dev, dtype=dt)
        aux_i = torch.empty(nb, ka, device=dev, dtype=torch.int64)
        rows = nb if not chunk_rows or dev.type != "cpu" else max(1, min(nb, chunk_rows))
        use_buf = dev.type == "cpu" and rows < nb
        Wt = W_enc.t().contiguous() if backend == "onednn" else None
        not_dead = None
        if ka > 0 and dead_idx is None:
            not_dead = ~aux_mask
        for s, e, u, a_out in _u_blocks(x_c, W_enc, Wt, b_enc, rows, use_buf):
            a = None
            if signed:
                a = torch.abs(u, out=a_out) if a_out is not None else u.abs()
                torch.topk(a, width, dim=1, sorted=False, out=(values[s:e], indices[s:e]))
                torch.gather(u, 1, indices[s:e], out=values[s:e])
            else:
                torch.topk(u, width, dim=1, sorted=False, out=(values[s:e], indices[s:e]))
                if not batch:  # batch candidates keep u (the ranking key); relu'd at the end
                    values[s:e].clamp_(min=0)
            if ka == 0:
                continue
            if dead_idx is not None:  # few dead latents: select among their columns only
                ud = u.index_select(1, dead_idx)
                if signed:
                    loc = ud.abs().topk(ka, dim=1, sorted=False).indices
                    torch.gather(ud, 1, loc, out=aux_v[s:e])
                else:
                    vals, loc = ud.topk(ka, dim=1, sorted=False)
                    aux_v[s:e] = vals.clamp_(min=0)
                aux_i[s:e] = dead_idx[loc]
            elif signed:
                a.masked_fill_(not_dead, -1.0)  # |u| ≥ 0 > −1: live latents never win
                torch.topk(a, ka, dim=1, sorted=False, out=(aux_v[s:e], aux_i[s:e]))
                torch.gather(u, 1, aux_i[s:e], out=aux_v[s:e])
            else:
                u.masked_fill_(not_dead, float("-inf"))  # u is scratch once v is taken
                torch.topk(u, ka, dim=1, sorted=False, out=(aux_v[s:e], aux_i[s:e]))
                aux_v[s:e].clamp_(min=0)
        counts = None  # per-row widths of a padded (batch) selection
        if batch:
            def redo_rows(redo: Tensor, t: Tensor):
                """Every entry with key ≥ t of the rows ``redo``: flat (row, latent, u)."""
                out_r, out_i, out_u = [], [], []
                for s, _, u, a_out in _u_blocks(x_c[redo], W_enc, Wt, b_enc, rows, use_buf):
                    a = u
                    if signed:
                        a = torch.abs(u, out=a_out) if a_out is not None else u.abs()
                    r, j = (a >= t).nonzero(as_tuple=True)
                    out_r.append(redo[s + r])
                    out_i.append(j)
                    out_u.append(u[r, j])
                return torch.cat(out_r), torch.cat(out_i), torch.cat(out_u)

            values, indices, counts = _batch_from_candidates(
                values, indices, k, signed, redo_rows if width < n else None, n)
        ctx.signed = signed
        ctx.n = n
        ctx.ka = ka
        ctx.has_shift = shift is not None
        ctx.save_for_backward(x_c, W_enc, values, indices, aux_v, aux_i, counts)
        ctx.mark_non_differentiable(indices, aux_i, *([] if counts is None else [counts]))
        return values, indices, aux_v, aux_i, counts

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_v, _gi, g_av, _gai, _gc):
        x_c, W_enc, values, indices, aux_v, aux_i, counts = ctx.saved_tensors
        n, ka = ctx.n, ctx.ka
        if g_v is None:
            g_v = torch.zeros_like(values)
        if not ctx.signed:
            g_v = g_v * (values > 0)
        has_aux = ka > 0 and g_av is not None
        if has_aux and not ctx.signed:
            g_av = g_av * (aux_v > 0)
        # the selection(s) as (indices, g, counts); batch padding (counts) is skipped
        sels = [(indices, g_v.contiguous(), counts)]
        if has_aux:
            sels.append((aux_i, g_av.contiguous(), None))
        gx = gshift = gW = gb = None
        need_x, need_shift = ctx.needs_input_grad[0], ctx.has_shift and ctx.needs_input_grad[1]
        if need_x:
            joint = sels
            if has_aux and counts is None:  # fixed width + AuxK: one pass over [B, k + ka]
                joint = [(torch.cat([indices, aux_i], 1), torch.cat([g_v, g_av], 1), None)]
            W_t = W_enc.t().contiguous()
            gx = _total(_spmm(i, g, W_t, c) for i, g, c in joint)
        if ctx.needs_input_grad[2]:
            gW = _total(_spmm_t(i, g, x_c, n, c) for i, g, c in sels).t().contiguous()
        if ctx.needs_input_grad[3] or need_shift:
            # per selection: off the CPU each reuses the CSC sort its ∂W_enc already made
            gb = _total(_column_sums(i, g, n, counts=c) for i, g, c in sels)
        if need_shift:
            # u = (x − shift)·W_enc + b_enc: ∂shift = −Σ_b ∂x_c[b] = −W_enc · Σ_b S[b] = −W_enc·∂b_enc,
            # one [D, F]·[F] product instead of the B×m×D rows of ∂x_c
            gshift = gx.sum(0).neg() if gx is not None else torch.mv(W_enc, gb).neg_()
        if not ctx.needs_input_grad[3]:
            gb = None
        return gx, gshift, gW, gb, None, None, None, None, None, None, None, None


def _total(parts) -> Tensor:
    """Sum of the fresh tensors ``parts`` (in place into the first)."""
    it = iter(parts)
    out = next(it)
    for p in it:
        out += p
    return out


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
        chunk_rows: rows per encoder-GEMM block on CPU (−1: :data:`CPU_CHUNK_ROWS`;
            ``None``/0: the whole batch at once). Ignored on other devices.
        backend: "addmm" or "onednn" for the CPU GEMM (None: :data:`GEMM_BACKEND`).
        shift: optional [d_in] subtracted from every row before the GEMM. Passing ``b_dec``
            here instead of subtracting it outside makes its gradient one [D, F]·[F] product
            (−W_enc·∂b_enc) rather than a B×m×D pass, when ``x_c`` itself needs no gradient.

    Returns:
        values [B, k], indices [B, k] (int64), aux_values [B, ka] | None, aux_indices | None.
        Gradients flow from ``values``/``aux_values`` to ``x_c``, ``W_enc`` and ``b_enc``.
    """
    return _encode(x_c, W_enc, b_enc, k, signed, aux_mask, k_aux, chunk_rows, backend, shift,
                   batch=False)[:4]


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
    (:func:`_batch_from_candidates` has the exactness argument). Arguments, AuxK and the
    backward are those of :func:`topk_encode`.

    Returns:
        values [B, m], indices [B, m] (int64), aux_values [B, ka] | None, aux_indices | None,
        where m is the largest number of entries any row keeps. Row b's kept entries come
        first; the rest is padding with value 0 (indices spread over the latents), which adds
        nothing to a decode (:func:`sparse_decode`) and gets no gradient. Scatter with
        ``scatter_add`` (padding may repeat an index). Exactly k·B entries are kept (some of
        them 0 for BatchTopK, when fewer than k·B pre-activations are positive).
        ``with_counts``: a fifth return, ``counts`` [B] int64 (row b keeps its first
        counts[b] entries, Σ_b counts[b] = k·B); give it to :func:`sparse_decode` so that the
        decode and both backwards skip the padding (O(k·B·D) instead of O(B·m·D)).
    """
    out = _encode(x_c, W_enc, b_enc, k, signed, aux_mask, k_aux, chunk_rows, backend, shift,
                  batch=True)
    return out if with_counts else out[:4]


def _encode(x_c, W_enc, b_enc, k, signed, aux_mask, k_aux, chunk_rows, backend, shift, batch):
    """Argument checks and defaults of :func:`topk_encode` / :func:`batch_topk_encode`;
    returns values, indices, aux_values, aux_indices, counts (None unless ``batch``)."""
    if x_c.dim() != 2 or W_enc.dim() != 2 or x_c.shape[1] != W_enc.shape[0]:
        raise ValueError(f"shape mismatch: x_c {tuple(x_c.shape)}, W_enc {tuple(W_enc.shape)}")
    n = W_enc.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} must be in [1, d_sae = {n}]")
    ka, dead_idx = 0, None
    if aux_mask is not None and k_aux > 0:
        n_dead = int(aux_mask.sum())
        ka = min(k_aux, n_dead)
        if 0 < ka and 4 * n_dead < n:
            dead_idx = aux_mask.nonzero().view(-1)
    if chunk_rows == -1:
        chunk_rows = CPU_CHUNK_ROWS
    backend = backend or GEMM_BACKEND
    if backend not in ("addmm", "onednn"):
        raise ValueError(f"unknown GEMM backend {backend!r} (addmm, onednn)")
    if backend == "onednn" and not (x_c.device.type == "cpu" and onednn_available()
                                    and x_c.dtype == torch.float32):
        backend = "addmm"
    if shift is not None and shift.shape != (x_c.shape[1],):
        raise ValueError(f"shift must have shape [{x_c.shape[1]}], got {tuple(shift.shape)}")
    x_c = x_c.contiguous()
    values, indices, aux_v, aux_i, counts = _TopKEncode.apply(
        x_c, shift, W_enc, b_enc, k, signed, aux_mask, ka, dead_idx, chunk_rows, backend, batch)
    if ka == 0:
        aux_v = aux_i = None
    return values, indices, aux_v, aux_i, counts


# =========================================================================== decoder
class _SparseDecode(torch.autograd.Function):
    """x̂ = Z · W_dec (+ b_dec) for the sparse code Z given as (values, indices) [B, m].

    Backward: ∂values[b, j] = ⟨∂x̂[b], W_dec[indices[b, j]]⟩ (SDDMM),
    ∂W_dec = Zᵀ · ∂x̂ (CSC-ordered ``embedding_bag``), ∂b_dec = Σ_b ∂x̂[b].
    With ``counts`` [B] (padded batch selection) all three products run on the N = Σ counts
    real entries only, and ∂values is 0 at the padding.
    """

    @staticmethod
    def forward(ctx, values, indices, W_dec, b_dec, counts=None):
        out = _spmm(indices, values, W_dec, counts)
        if b_dec is not None:
            out += b_dec
        ctx.has_b = b_dec is not None
        ctx.save_for_backward(values, indices, W_dec, counts)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        values, indices, W_dec, counts = ctx.saved_tensors
        g = g.contiguous()
        gv = gW = gb = None
        if ctx.needs_input_grad[0]:
            gv = _sddmm(indices, g, W_dec, counts=counts)
        if ctx.needs_input_grad[2]:
            gW = _spmm_t(indices, values, g, W_dec.shape[0], counts)
        if ctx.has_b and ctx.needs_input_grad[3]:
            gb = g.sum(0)
        return gv, None, gW, gb, None


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor | None,
                  counts: Tensor | None = None) -> Tensor:
    """x̂ [B, d_in] = Σ_j values[b, j]·W_dec[indices[b, j]] (+ b_dec).

    ``values``/``indices``: [B, m]; ``W_dec``: [d_sae, d_in]. Forward is an
    ``embedding_bag`` with per-sample weights; the backward is sparse (see
    :class:`_SparseDecode`), O(B·m·d_in). ``counts`` [B] (int64, from
    :func:`batch_topk_encode` with ``with_counts``): row b's entries j ≥ counts[b] are
    padding and skipped, so forward and backward cost O(N·d_in), N = Σ_b counts[b]; the
    padding's ∂values is 0. Pass the same ``indices``/``counts`` tensors as the encoder
    returned: the compaction and CSC sort are then shared with its backward.
    """
    if values.shape != indices.shape:
        raise ValueError(f"values {tuple(values.shape)} and indices {tuple(indices.shape)} differ")
    if counts is not None and counts.shape != values.shape[:1]:
        raise ValueError(f"counts must have shape [{values.shape[0]}], got {tuple(counts.shape)}")
    return _SparseDecode.apply(values.contiguous(), indices.contiguous(), W_dec, b_dec, counts)
