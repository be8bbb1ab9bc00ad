"""One optimisation step of an SAE: forward, loss, AuxK, backward, decoder constraint, Adam.

This is the hot path; the loop around it (data, schedules, logging, checkpoints) lives in
:mod:`abstopk.train.trainer`. Nothing here synchronises with the device (no ``.item()``):
the returned :class:`StepResult` holds tensors the caller may read when it logs.

Loss (in the SAE's normalised input space)::

    L = mse(x̂, x) + c_pen · P(z) + c_aux · AuxK
    mse   = mean over tokens and features of (x̂ − x)²
    P     = Σ_i |z_i|·‖d_i‖ (relu: ℓ1)  |  Σ_i 1[|u_i| > θ_i] (jumprelu family: ℓ0, pseudo-grad)
    AuxK  = ‖ê − e‖² / ‖e − ē‖²   (OpenAI), e = (x − x̂) detached, ê decoded from the top
            k_aux *dead* latents ranked by u (TopK family) or |u| keeping signs (signed ops)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import kernels
from ..sae import SAE
from ..sparsity import topk_select

__all__ = ["StepResult", "make_optimizer", "set_lr", "train_step"]


@dataclass
class StepResult:
    """Per-step tensors (0-dim unless noted); read them only when logging."""

    loss: Tensor
    mse: Tensor
    aux_loss: Tensor
    penalty: Tensor
    l0: Tensor            # mean number of non-zero latents per token
    fired: Tensor         # [d_sae] bool: latent was != 0 for some token of the batch


def make_optimizer(sae: SAE, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8, threshold_lr_factor: float = 1.0) -> torch.optim.Adam:
    """Adam over the SAE's parameters; the fused implementation where torch offers it.

    A learned JumpReLU threshold θ gets its own group with learning rate
    ``threshold_lr_factor · lr`` (the group's ``lr_factor``; :func:`set_lr` keeps it).
    """
    theta = [p for n, p in sae.named_parameters() if n == "threshold" and p.requires_grad]
    rest = [p for n, p in sae.named_parameters() if n != "threshold" and p.requires_grad]
    groups: list[dict] = [{"params": rest, "lr_factor": 1.0}]
    if theta:
        groups.append({"params": theta, "lr_factor": float(threshold_lr_factor),
                       "lr": lr * threshold_lr_factor})
    try:
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every group to ``lr`` × the group's ``lr_factor`` (default 1)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_factor", 1.0)


def _penalty(sae: SAE, out) -> Tensor:
    kind = sae.op.penalty
    if kind == "l1":
        return (out.z.abs() * sae.W_dec.norm(dim=1)).sum(-1).mean()
    if kind == "l0":
        return out.l0 if out.l0 is not None else out.z.ne(0).sum(-1).float().mean()
    return torch.zeros((), device=out.x_s.device)


#: AuxK over few dead latents (CPU, or every device for the non-kernel operators) runs
#: densely over their columns, recomputing their pre-activations (see
#: :func:`_aux_decode_dense`), when n_dead ≤ AUX_DENSE_FACTOR · k_aux; on CPU the kernel
#: operators take the cheaper ``columns`` path first (:func:`_aux_path`). On a GPU the GEMMs
#: are so cheap that the recomputing path wins while at most half the latents are dead
#: (H100, W1 abstopk: 6.2 ms per step at 3 % and at 10 % dead, against 12.1 ms fused at
#: 10 %); with every latent dead it recomputes a full-width GEMM and top-k and loses (11.3
#: vs 10.6 ms; batchabstopk 15.7 vs 11.8 ms).
AUX_DENSE_FACTOR: float = 3.0

#: Force one AuxK path (tests, benchmarks): "columns", "recompute" or "fused"; None decides
#: by :func:`_aux_path`.
AUX_PATH: str | None = None


def _aux_path(sae: SAE, n_dead: int, ka: int, device: torch.device) -> str:
    """How AuxK is computed for ``n_dead`` dead latents (width ka); same math every way.

    * ``columns``: the fused encoder selects among the dead columns of the main pass's
      pre-activations and the four AuxK products are GEMMs over those columns
      (:mod:`abstopk.kernels.aux_dense`; CPU, kernel operators, n_dead ≤ 5·ka and < d_sae/4).
    * ``recompute``: :func:`_aux_decode_dense` (the dead columns' pre-activations again, with
      autograd; CPU: n_dead ≤ AUX_DENSE_FACTOR·ka, other devices: n_dead ≤ d_sae/2; always
      on the JumpReLU family's sparse path, whose encoder does no AuxK selection).
    * ``fused``: the fused encoder's AuxK selection and sparse products of width ka (the
      dense path's selection for operators without kernels).
    """
    path = AUX_PATH
    kern = sae._use_kernels()
    if path is None:
        if kern and kernels.dense_aux_columns(n_dead, ka, sae.cfg.d_sae, device):
            path = "columns"
        elif (n_dead <= AUX_DENSE_FACTOR * ka if device.type == "cpu"
              else 2 * n_dead <= sae.cfg.d_sae):
            path = "recompute"
        else:
            path = "fused"
    if path not in ("columns", "recompute", "fused"):
        raise ValueError(f"unknown AuxK path {path!r}")
    if path != "recompute" and sae._use_threshold_kernels():
        return "recompute"   # the JumpReLU family's sparse path keeps no dense u to rank
    return "fused" if path == "columns" and not kern else path


def _aux_decode_dense(sae: SAE, x_s: Tensor, dead_idx: Tensor, ka: int) -> Tensor:
    """ê [B, d_in]: the AuxK reconstruction, computed densely over the dead columns only.

    With W_d = W_enc[:, dead] [d_in, n_dead] and the pre-encoder bias folded into the bias
    (so no gradient pass over x)::

        u_d = x_s·W_d + (b_enc[dead] − b_dec·W_d)             [B, n_dead]
        z_d = per-row top-ka of u_d (TopK rule, or |u| keeping signs), dense [B, n_dead]
        ê   = z_d · W_dec[dead]                                 [B, d_in]

    the same selection and values as the fused encoder's AuxK restricted to ``dead_idx``
    (ka ≤ n_dead, so only dead latents are picked). While n_dead is within a few times ka,
    these five [B, n_dead]-wide GEMMs cost less than the four k_aux-wide gathers of the
    sparse path (``bench/train_step.py`` ``…_aux3`` rows).
    """
    W_d = sae.W_enc.index_select(1, dead_idx)
    b_d = sae.b_enc.index_select(0, dead_idx)
    if sae.cfg.apply_b_dec_to_input:
        b_d = b_d - sae.b_dec @ W_d
    u_d = torch.addmm(b_d, x_s, W_d)
    vals, loc = topk_select(u_d, ka, signed=sae.op.signed)
    z_d = torch.zeros_like(u_d).scatter(1, loc, vals)
    return z_d @ sae.W_dec.index_select(0, dead_idx)


def train_step(
    sae: SAE,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    *,
    penalty_coeff: float = 0.0,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    aux_coeff: float = 1.0 / 32,
    dp: Any = None,
) -> StepResult:
    """Run one optimisation step on the batch ``x`` [B, d_in] (raw activations).

    ``dead_mask`` [d_sae] bool marks latents eligible for AuxK; AuxK runs when it has any
    True entry and ``k_aux > 0``. Decoder rows are kept unit norm: the gradient component
    parallel to each row is removed before the step and rows are renormalised after it.

    ``dp``: the :class:`~abstopk.train.distributed.DataParallel` hooks when ``x`` is this
    rank's part of a global batch: the forward runs through DDP, the loss terms are weighted
    so that the averaged gradient is the global batch's, and the result is the global one.
    """
    sae.train()
    use_aux = dead_mask is not None and k_aux > 0 and aux_coeff > 0
    dead_idx, ka, path = None, 0, "fused"
    if use_aux:
        n_dead = int(dead_mask.sum())  # one host sync (the fused encoder reads it anyway)
        ka = min(k_aux, n_dead)
        use_aux = ka > 0
        if use_aux:
            path = _aux_path(sae, n_dead, ka, x.device)
            if path != "fused":
                dead_idx = dead_mask.nonzero().view(-1)
    in_encoder = use_aux and path != "recompute"  # the encoder takes the AuxK selection
    forward = sae if dp is None else dp.module
    sparse = sae._use_kernels() or sae._use_threshold_kernels()
    out = forward(x, dense_code=not sparse,
                  aux_mask=dead_mask if in_encoder else None, k_aux=k_aux if in_encoder else 0)
    mse = (out.x_hat_s - out.x_s).pow(2).mean()
    penalty = _penalty(sae, out)
    loss = mse + penalty_coeff * penalty if sae.op.penalty else mse
    if dp is not None:
        loss = loss * dp.loss_weight(x.shape[0])
    aux_loss = torch.zeros((), device=x.device)
    aux_num = aux_den = None
    if use_aux and (path == "recompute" or out.aux_values is not None):
        e = (out.x_s - out.x_hat_s).detach()
        if path == "recompute":
            e_hat = _aux_decode_dense(sae, out.x_s, dead_idx, ka)
        elif path == "columns":
            e_hat = kernels.dead_column_decode(out.aux_values, out.aux_selection, dead_idx,
                                               sae.W_dec)
        else:
            # the encoder's AuxK selection (sparse path): its CSC sort is shared with the
            # encoder's backward; bare indices from the dense path
            aux_sel = out.aux_selection if out.aux_selection is not None else out.aux_indices
            e_hat = kernels.sparse_decode(out.aux_values, aux_sel, sae.W_dec, None)
        aux_num = (e_hat - e).pow(2).sum()
        aux_den = (e - e.mean(0)).pow(2).sum() if dp is None else dp.aux_denominator(e)
        aux_loss = torch.nan_to_num(aux_num / aux_den.clamp_min(1e-12), nan=0.0)
        loss = loss + aux_coeff * aux_loss * (1 if dp is None else dp.world_size)
    loss.backward()
    sae.remove_gradient_parallel_to_decoder_directions()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sae.set_decoder_norm_to_unit_norm()
    if sae.op.needs_threshold:
        with torch.no_grad():
            sae.threshold.clamp_(min=0.0)
    with torch.no_grad():
        if out.indices is not None:
            nz = (out.values != 0).to(out.values.dtype)
            hits = torch.zeros(sae.cfg.d_sae, dtype=nz.dtype, device=x.device)
            hits.index_add_(0, out.indices.reshape(-1), nz.reshape(-1))  # no host sync
            fired = hits > 0
            l0 = nz.sum(-1).mean()
        else:
            nzm = out.z != 0
            fired = nzm.any(0)
            l0 = nzm.sum(-1).float().mean()
            if dp is not None:
                hits = nzm.sum(0)
    if dp is not None:
        return dp.step_result(
            hits, mse.detach(), penalty.detach(), l0,
            aux_num.detach() if aux_num is not None else torch.zeros((), device=x.device),
            aux_den, local_rows=x.shape[0], penalty_coeff=penalty_coeff,
            has_penalty=bool(sae.op.penalty), aux_coeff=aux_coeff)
    return StepResult(loss.detach(), mse.detach(), aux_loss.detach(), penalty.detach(), l0, fired)
