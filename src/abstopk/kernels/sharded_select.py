"""Global per-row top-k over latents split across ranks, with an exact tie rule.

The rule (a total order, so every split gives the same answer): rank the latents of a row by
their key — ``|u|`` for AbsTopK, ``u`` for TopK — from the largest down, and among equal keys
the lower (global) latent index first; keep the first k. ``torch.topk`` alone leaves the order
of equal keys unspecified (on CPU it does not follow any index order), so the selection below
takes its k-th key from ``torch.topk`` and settles the entries equal to it by index.

Why k candidates per rank suffice: rank r holds latents [lo_r, hi_r). The global top k under
a total order, restricted to [lo_r, hi_r), is a prefix of that slice's own order of length
≤ k, i.e. a subset of the slice's top k. So each rank sends its local top k (key and global
index, [B, k] each); the global top k of the W·k candidates (:func:`merge_candidates`) is the
global top k of all F latents.

Shapes: B rows, n latents on this rank, k kept, W ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PAD_INDEX", "gather_candidates", "merge_candidates", "topk_lowest_index"]

#: index of a padding candidate (a rank with fewer than k latents); never wins
PAD_INDEX = torch.iinfo(torch.int64).max


def topk_lowest_index(key: Tensor, k: int) -> Tensor:
    """Indices [B, k] (ascending) of the k largest ``key`` [B, n] per row, ties at the k-th
    key going to the lowest indices (``k ≤ n``).

    t = the k-th largest key (``torch.topk``); keep every entry > t and, of the entries = t,
    the first k − #(> t) by index (a running count). One [B, n] comparison pass besides topk.
    """
    n = key.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} must be in [1, {n}]")
    t = key.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)   # [B, 1]
    above = key > t
    equal = key == t
    room = k - above.sum(dim=1, keepdim=True)                                # ≥ 1
    keep = above | (equal & (equal.cumsum(dim=1) <= room))
    return keep.nonzero()[:, 1].view(key.shape[0], k)


def merge_candidates(keys: Tensor, index: Tensor, k: int) -> Tensor:
    """Positions [B, k] into the candidates ``keys``/``index`` [B, c] of the k first under the
    rule (key descending, then global ``index`` ascending). Sorting the c = W·k candidates:
    by index first, then a stable sort by key."""
    by_index = index.argsort(dim=1, stable=True)
    k_sorted = keys.gather(1, by_index)
    by_key = k_sorted.argsort(dim=1, descending=True, stable=True)
    return by_index.gather(1, by_key[:, :k])


def gather_candidates(keys: Tensor, index: Tensor, group=None) -> tuple[Tensor, Tensor]:
    """All ranks' candidates side by side: ``keys``, ``index`` [B, k] on each rank →
    [B, W·k] each (rank 0's first), by ``torch.distributed.all_gather``; unchanged when
    ``torch.distributed`` is not initialised (one process)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return keys, index
    w = dist.get_world_size(group)
    ks = [torch.empty_like(keys) for _ in range(w)]
    ix = [torch.empty_like(index) for _ in range(w)]
    dist.all_gather(ks, keys.contiguous(), group=group)
    dist.all_gather(ix, index.contiguous(), group=group)
    return torch.cat(ks, dim=1), torch.cat(ix, dim=1)
