"""The fused encoder's forward selections, one row block at a time (:mod:`.encode`).

Each function fills rows [s, e) of preallocated outputs from the block of pre-activations
``u`` [e − s, F]: the main top-``width`` by u or by |u| (signed), the AuxK top-``ka`` among
the dead latents, or both at once when every latent is dead. Rankings go through
:func:`.row_topk.row_topk` (the same kept values as ``torch.topk``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .row_topk import row_topk

__all__ = ["select_all_dead_block", "select_aux_block", "select_block"]


def select_block(u: Tensor, a_out: Tensor | None, s: int, e: int, width: int, signed: bool,
                  batch: bool, values: Tensor, indices: Tensor) -> Tensor | None:
    """Rows [s, e) of the main selection from the block ``u`` [e − s, F]; returns |u| (or None).

    Writes the top-``width`` by u (relu'd unless ``batch``: the candidates keep u, the
    ranking key) or by |u| (signed values) into ``values``/``indices`` [B, width].
    """
    a = None
    if signed:
        a = torch.abs(u, out=a_out) if a_out is not None else u.abs()
        indices[s:e] = row_topk(a, width)[1]
        torch.gather(u, 1, indices[s:e], out=values[s:e])
    else:
        values[s:e], indices[s:e] = row_topk(u, width)
        if not batch:  # batch candidates keep u (the ranking key); relu'd at the end
            values[s:e].clamp_(min=0)
    return a


def select_all_dead_block(u: Tensor, a_out: Tensor | None, s: int, e: int, width: int,
                           ka: int, signed: bool, batch: bool, values: Tensor,
                           indices: Tensor, aux_v: Tensor, aux_i: Tensor) -> None:
    """Rows [s, e) of both selections when every latent is dead and ka ≥ width: the AuxK
    selection is the top-ka of the main one's key over the whole row, so the main top-width
    is taken from its ka entries (one ranking of the row, no masking pass)."""
    key = (torch.abs(u, out=a_out) if a_out is not None else u.abs()) if signed else u
    loc = row_topk(key, ka)[1]
    aux_i[s:e] = loc
    raw = u.gather(1, loc)                                          # [rows, ka], u kept
    pick = (raw.abs() if signed else raw).topk(width, dim=1, sorted=False).indices
    torch.gather(loc, 1, pick, out=indices[s:e])
    torch.gather(raw, 1, pick, out=values[s:e])
    if not signed:
        if not batch:
            values[s:e].clamp_(min=0)
        raw.clamp_(min=0)
    aux_v[s:e] = raw


def select_aux_block(u: Tensor, a: Tensor | None, s: int, e: int, ka: int, signed: bool,
                      dead_idx: Tensor | None, not_dead: Tensor | None, aux_v: Tensor,
                      aux_i: Tensor) -> None:
    """Rows [s, e) of the AuxK selection (width ka among the dead latents) from ``u``.

    ``dead_idx`` given (few dead latents): select among those columns only. Else mask the
    live ones (``not_dead`` [F]) in the scratch blocks ``a`` = |u| (signed) or ``u`` itself
    (u is scratch once the main selection is taken).
    """
    if dead_idx is not None:
        ud = u.index_select(1, dead_idx)
        if ka == dead_idx.numel():  # every dead latent is kept: nothing to rank
            aux_i[s:e] = dead_idx
            aux_v[s:e] = ud if signed else ud.clamp_(min=0)
            return
        if signed:
            loc = row_topk(ud.abs(), ka)[1]
            torch.gather(ud, 1, loc, out=aux_v[s:e])
        else:
            vals, loc = row_topk(ud, ka)
            aux_v[s:e] = vals.clamp_(min=0)
        aux_i[s:e] = dead_idx[loc]
    elif signed:
        a.masked_fill_(not_dead, -1.0)  # |u| ≥ 0 > −1: live latents never win
        aux_i[s:e] = row_topk(a, ka)[1]
        torch.gather(u, 1, aux_i[s:e], out=aux_v[s:e])
    else:
        u.masked_fill_(not_dead, float("-inf"))
        aux_v[s:e], aux_i[s:e] = row_topk(u, ka)
        aux_v[s:e].clamp_(min=0)
