"""AuxK over a moderate number of dead latents as GEMMs over their columns.

AuxK keeps ka = min(k_aux, n_d) entries per row among the n_d dead latents (indices
``dead`` [n_d], ascending). As sparse products its decode, SDDMM and two transposed
products each gather B·ka rows of width D (on W1, ka = 288: ≈ 0.15–0.2 of the encoder GEMM
each on the project's CPU). While n_d is a few times ka the same products are cheaper as
dense GEMMs over the dead columns only, each costing n_d/F of the encoder GEMM. With the
AuxK entries scattered into the dense code Z_d [B, n_d] (Z_d[b, p] = value of latent
dead[p], 0 where not selected) and P = the positions of the selected latents in ``dead``::

    ê          = Z_d · W_dec[dead]                  [B, D]     GEMM (forward)
    ∂values    = (∂ê · W_dec[dead]ᵀ) at P          [B, ka]    GEMM, then gather
    ∂W_dec[dead] = Z_dᵀ · ∂ê                        [n_d, D]   GEMM
    ∂W_enc[:, dead]ᵀ = G_dᵀ · x_c                   [n_d, D]   GEMM (in the encoder's backward)

with G_d the incoming gradient of the AuxK values scattered like Z_d. The selection itself
is the one the fused encoder takes from the main pass's pre-activations (the dead columns
of each row block, :mod:`.encode`), so nothing is recomputed: the math is that of the
sparse products, summed in another order (equal to float rounding).

:func:`dense_aux_columns` is the rule (CPU only; on other devices the training step keeps
its own choice), :func:`dead_column_decode` the decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .selection import Selection

__all__ = ["CPU_DEAD_PER_KA", "DeadColumnDecode", "dead_column_decode", "dead_positions",
           "dense_aux_columns"]

#: On CPU the AuxK products run as GEMMs over the dead columns while
#: n_dead ≤ CPU_DEAD_PER_KA · ka (and fewer than a quarter of the latents are dead, the
#: fused encoder's rule for selecting among the dead columns). Four GEMMs of width n_dead
#: cost 4·n_dead/F encoder GEMMs; the four gathers of width ka ≈ 0.6–0.8 (W1, ka 288).
CPU_DEAD_PER_KA: float = 5.0


def dense_aux_columns(n_dead: int, ka: int, n: int, device: torch.device) -> bool:
    """Whether AuxK over ``n_dead`` of ``n`` latents (width ``ka``) runs as dead-column GEMMs."""
    return (device.type == "cpu" and 0 < ka <= n_dead and 4 * n_dead < n
            and n_dead <= CPU_DEAD_PER_KA * ka)


def dead_positions(indices: Tensor, dead: Tensor, n: int) -> Tensor:
    """Positions in ``dead`` [n_d] of the latents ``indices`` [B, m] (all of them dead)."""
    where = torch.full((n,), -1, dtype=torch.int64, device=dead.device)
    where[dead] = torch.arange(dead.numel(), device=dead.device)
    return where[indices]


class DeadColumnDecode(torch.autograd.Function):
    """ê = Z_d · W_dec[dead] for the AuxK code (values [B, ka] at ``pos``); module docstring.

    ``apply(values, W_dec, dead, pos)`` with ``pos`` [B, ka] = :func:`dead_positions`.
    """

    @staticmethod
    def forward(ctx, values, W_dec, dead, pos):
        z_d = values.new_zeros(values.shape[0], dead.numel()).scatter_(1, pos, values)
        W_d = W_dec.index_select(0, dead)
        ctx.save_for_backward(z_d, W_d, dead, pos)
        ctx.n = W_dec.shape[0]
        return z_d @ W_d

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        z_d, W_d, dead, pos = ctx.saved_tensors
        gv = gW = None
        if ctx.needs_input_grad[0]:
            gv = torch.mm(g, W_d.t()).gather(1, pos)
        if ctx.needs_input_grad[1]:
            gW = g.new_zeros(ctx.n, g.shape[1]).index_copy_(0, dead, torch.mm(z_d.t(), g))
        return gv, gW, None, None


def dead_column_decode(values: Tensor, selection: Selection | Tensor, dead: Tensor,
                       W_dec: Tensor) -> Tensor:
    """ê [B, d_in] = Σ_j values[b, j]·W_dec[indices[b, j]] through GEMMs over ``dead``.

    ``values`` [B, ka]: AuxK values; ``selection``: their selection (or bare indices
    [B, ka]), every index in ``dead`` [n_d] (ascending, distinct); ``W_dec`` [d_sae, d_in].
    Equal to :func:`~.decode.sparse_decode` (no bias) up to float rounding; the backward
    gives ∂values and the rows ``dead`` of ∂W_dec (zeros elsewhere).
    """
    idx = selection.indices if isinstance(selection, Selection) else selection
    if idx.shape != values.shape:
        raise ValueError(f"values {tuple(values.shape)} and indices {tuple(idx.shape)} differ")
    pos = dead_positions(idx, dead, W_dec.shape[0])
    return DeadColumnDecode.apply(values.contiguous(), W_dec, dead, pos)
