"""Exact batch-level selection (BatchTopK, BatchAbsTopK) from per-row candidates.

The batch rule keeps the k·B entries of largest key (``u``, or ``|u|`` signed) over the
whole B×F pre-activation. The fused encoder keeps only each row's top
c = min(F, :data:`BATCH_CANDIDATES`·k) candidates while the row block is hot;
:func:`batch_from_candidates` turns them into the exact batch selection, recomputing the
few rows that may hold more than c kept entries (:func:`entries_at_least`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .encoder_gemm import u_blocks
from .selection import padded_rows

__all__ = ["BATCH_CANDIDATES", "batch_from_candidates", "entries_at_least"]

#: Candidates kept per row by the batch-level kernel, as a multiple of k (``c = min(F, ·k)``);
#: rows with more than c entries in the batch selection are recomputed (exact either way).
BATCH_CANDIDATES: int = 4

#: ``redo_rows(rows, t)`` → flat ``(row, latent, u)`` of every entry with key ≥ t in ``rows``.
RedoRows = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def entries_at_least(x_c: Tensor, W_enc: Tensor, Wt: Tensor | None, b_enc: Tensor,
                     signed: bool, rows: int, use_buf: bool, redo: Tensor, t: Tensor,
                     out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Every entry with key ≥ t of the rows ``redo`` [R] of u = x_c @ W_enc + b_enc.

    Recomputes those rows' u by blocks (:func:`~.encoder_gemm.u_blocks`, same ``Wt``,
    ``rows``, ``use_buf`` and ``out_dtype``, so the same numbers as the first pass, bf16 GEMMs
    included); key = u, or |u| when ``signed``. Returns flat ``(row, latent, u)``
    [E] each, rows as indices into the whole batch.
    """
    out_r, out_i, out_u = [], [], []
    for s, _, u, a_out in u_blocks(x_c[redo], W_enc, Wt, b_enc, rows, use_buf, out_dtype):
        a = u
        if signed:
            a = torch.abs(u, out=a_out) if a_out is not None else u.abs()
        r, j = (a >= t).nonzero(as_tuple=True)
        out_r.append(redo[s + r])
        out_i.append(j)
        out_u.append(u[r, j])
    return torch.cat(out_r), torch.cat(out_i), torch.cat(out_u)


def batch_from_candidates(cand_u: Tensor, cand_i: Tensor, k: int, signed: bool,
                          redo_rows: RedoRows | None, n: int) -> tuple[Tensor, Tensor, Tensor]:
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
    k·B / c rows (distinct keys) can need it. ``redo_rows`` None: every entry is a
    candidate (c = F), nothing to recompute.

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
    vals = flat_u[sel]
    if not signed:
        vals = vals.clamp_(min=0)
    return padded_rows(rows, flat_i[sel], vals, nb, n)
