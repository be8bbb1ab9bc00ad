"""An AbsTopK (or TopK) SAE whose latents are split across ranks (SAEs too wide for one device).

Rank r of W holds the latents [lo_r, hi_r) (a contiguous split of d_sae = F, sizes differing by
at most one): its encoder columns ``W_enc[:, lo:hi]`` [D, F_r], ``b_enc[lo:hi]`` and decoder
rows ``W_dec[lo:hi]`` [F_r, D]; ``b_dec`` [D] is replicated. Forward on a batch x [B, D] that
every rank holds (the same x on every rank)::

    x_c  = x − b_dec                          (apply_b_dec_to_input; else x)
    u_r  = x_c @ W_enc_r + b_enc_r            [B, F_r]      by row blocks, not kept
    cand = local top k by key (|u| AbsTopK, u TopK; ties to the lower index)   [B, k]
    all_gather(cand)                          [B, W·k]      keys and global indices
    sel  = global top k of the candidates     [B, k]        same on every rank
    z_r  = u_r at the selected latents of this rank (relu'd for TopK)
    x̂    = all_reduce_sum(z_r @ W_dec_r) + b_dec            [B, D]

:mod:`abstopk.kernels.sharded_select` has the selection, the tie rule and why k candidates
per rank suffice. The partial decode is :func:`abstopk.kernels.sparse_decode` over this rank's
kept entries (a padded :class:`~abstopk.kernels.Selection`: a rank keeps 0..k of a row's k).

Backward (the Megatron-style pair of collectives, each one line of ``torch.distributed``):
the all-reduce of the partial reconstructions passes the gradient through unchanged (every
rank computes the same loss from the same x̂), and the copy of x_c into the ranks' encoders
all-reduces ∂x_c in the backward (each rank's encoder sees only its columns). So every rank
gets the exact gradients of its slice (∂W_enc_r, ∂b_enc_r, ∂W_dec_r) and the full, identical
∂b_dec and ∂x — the unsharded SAE's, up to float summation order. The selection itself has
no gradient (as in the unsharded top-k). As in the fused encoder
(:mod:`abstopk.kernels.encode`), the [B, F_r] pre-activations are computed by row blocks
(``encoder_gemm.u_blocks``) and never kept: each block yields its rows' candidates, and the
kept values' backward is sparse (``spmm``, ``spmm_t``, ``column_sums`` over this rank's
padded selection), O(N_r·D) for the N_r entries the rank keeps.

Not covered: AuxK, the batch-level operators, input normalisation other than ``none``,
``n_steps`` > 1 (construction raises ``ValueError``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import kernels
from ..kernels.sharded_select import (
    PAD_INDEX,
    gather_candidates,
    merge_candidates,
    topk_lowest_index,
)
from .model import SAE

__all__ = ["LatentShardedSAE", "ShardedOutput", "latent_bounds"]


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


class _CopyToShards(torch.autograd.Function):
    """Forward: identity. Backward: all-reduce (sum) of the gradient over the ranks."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        d = _dist()
        if d is not None:
            g = g.contiguous().clone()
            d.all_reduce(g, group=ctx.group)
        return g, None


class _ReduceFromShards(torch.autograd.Function):
    """Forward: all-reduce (sum) over the ranks. Backward: identity."""

    @staticmethod
    def forward(ctx, x, group):
        d = _dist()
        x = x.contiguous().clone()
        if d is not None:
            d.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, g):
        return g, None


def latent_bounds(d_sae: int, world: int, rank: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s latents: the first d_sae mod world ranks get one more."""
    base, extra = divmod(int(d_sae), int(world))
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class ShardedOutput(NamedTuple):
    """x_hat [B, D] (full, identical on every rank); indices [B, k] the global selection
    (same on every rank, in rule order); values [B, k] this rank's kept values in the order
    of its padded selection (entries j ≥ counts[b] are padding, value 0); local_indices
    [B, k] their latents in this rank's slice; counts [B]."""

    x_hat: Tensor
    indices: Tensor
    values: Tensor
    local_indices: Tensor
    counts: Tensor


class LatentShardedSAE(nn.Module):
    """Rank ``rank``'s slice of a (Abs)TopK SAE; see the module docstring.

    Build it from a full SAE (:meth:`from_sae`, each rank slicing the same weights) or from
    its slice of the weights directly. ``group``: the ``torch.distributed`` process group
    (None: the default one; without an initialised process group it is the whole SAE on one
    process).
    """

    def __init__(self, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, *, k: int,
                 signed: bool, lo: int, d_sae: int, apply_b_dec_to_input: bool = True,
                 group=None) -> None:
        super().__init__()
        if W_enc.shape[1] != W_dec.shape[0] or W_enc.shape[0] != W_dec.shape[1]:
            raise ValueError(f"slice shapes disagree: W_enc {tuple(W_enc.shape)}, "
                             f"W_dec {tuple(W_dec.shape)}")
        if not 1 <= k <= d_sae:
            raise ValueError(f"k = {k} must be in [1, d_sae = {d_sae}]")
        self.W_enc = nn.Parameter(W_enc.detach().clone())
        self.b_enc = nn.Parameter(b_enc.detach().clone())
        self.W_dec = nn.Parameter(W_dec.detach().clone())
        self.b_dec = nn.Parameter(b_dec.detach().clone())
        self.k, self.signed = int(k), bool(signed)
        self.lo, self.d_sae = int(lo), int(d_sae)
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.group = group

    @property
    def hi(self) -> int:
        return self.lo + self.W_enc.shape[1]

    @classmethod
    def from_sae(cls, sae: SAE, rank: int, world: int, group=None) -> LatentShardedSAE:
        """Rank ``rank`` of ``world``'s slice of ``sae`` (AbsTopK or TopK, one step, no input
        normalisation)."""
        cfg = sae.cfg
        if cfg.architecture not in ("abstopk", "topk"):
            raise ValueError(f"latent sharding covers abstopk and topk, not {cfg.architecture}")
        if cfg.n_steps != 1 or cfg.normalize_activations != "none":
            raise ValueError("latent sharding covers one-step SAEs without input normalisation")
        lo, hi = latent_bounds(cfg.d_sae, world, rank)
        return cls(sae.W_enc[:, lo:hi], sae.b_enc[lo:hi], sae.W_dec[lo:hi], sae.b_dec,
                   k=cfg.k, signed=cfg.architecture == "abstopk", lo=lo, d_sae=cfg.d_sae,
                   apply_b_dec_to_input=cfg.apply_b_dec_to_input, group=group)

    def forward(self, x: Tensor) -> ShardedOutput:
        """x [B, D] (the same on every rank) → :class:`ShardedOutput`."""
        k, n, nb = self.k, self.W_enc.shape[1], x.shape[0]
        x_c = x - self.b_dec if self.apply_b_dec_to_input else x
        x_c = _CopyToShards.apply(x_c, self.group)
        with torch.no_grad():
            cand_u, cand_idx = _local_candidates(x_c.detach(), self.W_enc.detach(),
                                                 self.b_enc.detach(), k, self.signed)
            cand_key = cand_u.abs() if self.signed else cand_u
            m = cand_idx.shape[1]
            cand_idx = cand_idx + self.lo
            if m < k:   # fewer latents than k on this rank: padding that never wins
                cand_key = torch.cat([cand_key, cand_key.new_full((nb, k - m), float("-inf"))], 1)
                cand_idx = torch.cat([cand_idx, cand_idx.new_full((nb, k - m), PAD_INDEX)], 1)
                cand_u = torch.cat([cand_u, cand_u.new_zeros(nb, k - m)], 1)
            all_key, all_idx = gather_candidates(cand_key, cand_idx, self.group)
            chosen = all_idx.gather(1, merge_candidates(all_key, all_idx, k))  # [B, k] global
            # this rank's kept entries are among its candidates: position j of its own list
            hit = cand_idx.unsqueeze(2) == chosen.unsqueeze(1)                # [B, k, k]
            kept = hit.any(2)                                                 # [B, k]
            order = (~kept).to(torch.int8).argsort(dim=1, stable=True)        # kept first
            counts = kept.sum(1)
            valid = torch.arange(k, device=x.device) < counts[:, None]
            local = (cand_idx.gather(1, order) - self.lo).where(valid, 0)
            u_kept = cand_u.gather(1, order) * valid
        sel = kernels.Selection(local, n, counts)
        values = _KeptPreacts.apply(x_c, self.W_enc, self.b_enc, u_kept, sel)
        if not self.signed:
            values = torch.relu(values)
        partial = kernels.sparse_decode(values, sel, self.W_dec, None)
        x_hat = _ReduceFromShards.apply(partial, self.group) + self.b_dec
        return ShardedOutput(x_hat, chosen, values, local, counts)


def _local_candidates(x_c: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, signed: bool
                      ) -> tuple[Tensor, Tensor]:
    """This rank's top min(k, F_r) latents per row by the rule: (u [B, m], local index
    [B, m]). u is computed by row blocks (:func:`abstopk.kernels.encoder_gemm.u_blocks`, the
    fused encoder's blocked GEMM), so no [B, F_r] matrix is kept."""
    from ..kernels import encoder_gemm

    nb, n = x_c.shape[0], W_enc.shape[1]
    m = min(k, n)
    cand_u = x_c.new_empty(nb, m)
    cand_idx = torch.empty(nb, m, dtype=torch.int64, device=x_c.device)
    rows = encoder_gemm.CPU_CHUNK_ROWS if x_c.device.type == "cpu" else None
    rows = max(1, min(nb, rows or nb))
    for s, e, u, _ in encoder_gemm.u_blocks(x_c, W_enc, None, b_enc, rows, False):
        idx = topk_lowest_index(u.abs() if signed else u, m)
        cand_idx[s:e] = idx
        cand_u[s:e] = u.gather(1, idx)
    return cand_u, cand_idx


class _KeptPreacts(torch.autograd.Function):
    """The kept pre-activations ``u[b, sel[b, j]]`` as a differentiable function of x_c,
    W_enc and b_enc, with the fused encoder's sparse backward (S = the padded selection with
    the incoming gradient as weights): ∂x_c = S·W_encᵀ, ∂W_enc = (Sᵀ·x_c)ᵀ, ∂b_enc = Σ_b S[b].
    ``values`` [B, k]: the forward values (computed without autograd; 0 at the padding)."""

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, values, sel):
        ctx.sel = sel
        ctx.save_for_backward(x_c, W_enc)
        return values.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        from ..kernels import column_sums, spmm, spmm_t

        x_c, W_enc = ctx.saved_tensors
        sel, g = ctx.sel, g.contiguous()
        gx = spmm(sel, g, W_enc.t().contiguous()) if ctx.needs_input_grad[0] else None
        gW = spmm_t(sel, g, x_c).t().contiguous() if ctx.needs_input_grad[1] else None
        gb = column_sums(sel, g) if ctx.needs_input_grad[2] else None
        return gx, gW, gb, None, None
