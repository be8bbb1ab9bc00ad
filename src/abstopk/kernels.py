"""Sparse kernels for the fixed-k family (TopK, AbsTopK).

Interface (stable, used by :mod:`abstopk.sae` and the trainer):

* :func:`topk_encode` — ``u = x_c @ W_enc + b_enc`` and the per-row top-k selection
  (by ``u`` or by ``|u|``), optionally also an AuxK selection among masked ("dead")
  latents. Returns the kept values and their indices; gradients reach ``x_c``, ``W_enc``
  and ``b_enc`` through the selected entries only.
* :func:`sparse_decode` — ``x̂ = Σ_j values[:, j] · W_dec[indices[:, j]] + b_dec``.

This first version is the plain-PyTorch reference (dense autograd); the optimised
versions must keep the same values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .sparsity import topk_select


def topk_encode(
    x_c: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    signed: bool,
    aux_mask: Tensor | None = None,
    k_aux: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Encode and select.

    Args:
        x_c: [B, d_in] centred input ``x − b_dec``.
        W_enc: [d_in, d_sae]; b_enc: [d_sae].
        k: latents kept per row. ``signed``: rank by |u| and keep signs (AbsTopK).
        aux_mask: optional [d_sae] bool, the latents eligible for AuxK (dead ones).
        k_aux: AuxK width; the aux selection keeps ``min(k_aux, aux_mask.sum())`` per row.

    Returns:
        values [B, k], indices [B, k] (int64), aux_values [B, ka] | None, aux_indices | None.
    """
    u = torch.addmm(b_enc, x_c, W_enc)
    values, indices = topk_select(u, k, signed)
    aux_v = aux_i = None
    if aux_mask is not None and k_aux > 0:
        n_dead = int(aux_mask.sum())
        ka = min(k_aux, n_dead)
        if ka > 0:
            masked = u.masked_fill(~aux_mask, 0.0)
            if signed:
                aux_i = masked.abs().topk(ka, dim=-1, sorted=False).indices
                aux_v = masked.gather(-1, aux_i)
            else:
                aux_v, aux_i = masked.topk(ka, dim=-1, sorted=False)
                aux_v = torch.relu(aux_v)
    return values, indices, aux_v, aux_i


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor | None) -> Tensor:
    """x̂ [B, d_in] = Σ_j values[b, j]·W_dec[indices[b, j]] (+ b_dec), via ``embedding_bag``."""
    out = F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")
    return out + b_dec if b_dec is not None else out
