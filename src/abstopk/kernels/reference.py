"""Dense references of the fused kernels: plain autograd over the whole B×F matrix.

The tests compare :func:`~.encode.topk_encode` and :func:`~.decode.sparse_decode` (values
and every gradient) against these. B rows, D = d_in, F = d_sae.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sparsity import topk_select

__all__ = ["sparse_decode_reference", "topk_encode_reference"]


def topk_encode_reference(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    signed: bool,
    aux_mask: Tensor | None = None,
    k_aux: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Dense-autograd reference of :func:`~.encode.topk_encode` (same arguments and returns).

    u = x_c @ W_enc + b_enc [B, F]; the per-row top-k by u (relu'd) or by |u| (signed);
    AuxK: the same rule over u with the live latents set to 0, width min(k_aux, #dead).
    """
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
    """Dense reference of :func:`~.decode.sparse_decode`: scatter ``values`` [B, m] at
    ``indices`` into a B×F code z, then x̂ = z @ W_dec (+ b_dec) [B, D]."""
    z = torch.zeros(values.shape[0], W_dec.shape[0], dtype=values.dtype, device=values.device)
    z = z.scatter_add(1, indices, values)
    out = z @ W_dec
    return out + b_dec if b_dec is not None else out
