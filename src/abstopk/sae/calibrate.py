"""The inference threshold of the batch-level operators, calibrated so that L0 = k.

BatchTopK / BatchAbsTopK keep the k·B largest keys (u, or |u| keeping signs) of a training
batch; at inference a token has no batch, so one threshold θ stands in for the rule::

    batchtopk:     z_i = u_i · 1[u_i > θ]          batchabstopk:  z_i = u_i · 1[|u_i| > θ]

During training θ follows an EMA of each batch's smallest kept key (momentum
``batch_threshold_momentum``). That estimate lags the moving weights, and on the project's
runs it fires far less than k (issue 10: L0 20.5 and 18.1 for k = 32 after 244 steps).
:func:`calibrate_batch_threshold` replaces it, after the last step, by the threshold that
gives mean L0 = k on N calibration rows with the *final* weights: the batch rule applied to
the N rows as one batch. With the keys ``a`` [N, F]::

    θ = (a₍kN₎ + a₍kN+1₎) / 2        a₍j₎ = the j-th largest key over all N·F entries

so exactly kN entries exceed θ (ties at a₍kN₎ aside). Nothing of size N×F is kept: each row's
top-m keys (m = 4k) are taken by the fused per-row encoder and θ_C computed over these
candidates (θ_C ≤ the exact θ, the candidates being a subset). A row whose smallest candidate
is above θ_C may hide more entries above it: those rows — on real activations a few per cent,
the high-norm tokens that fire hundreds of latents under a batch rule — get all F keys, and θ
is recomputed. That is exact in one round: the threshold only rises as candidates are added,
so every other row's m-th candidate stays below it (the argument of
:func:`abstopk.kernels.batch_select.batch_from_candidates`). Cost: one encoder pass over the
N rows (no backward) plus the recomputed rows, a few percent of a training run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import kernels

__all__ = ["calibrate_batch_threshold", "threshold_for_l0"]


def threshold_for_l0(keys: Tensor, n_rows: int, k: int) -> float:
    """θ such that exactly ``k·n_rows`` entries of ``keys`` (any shape) exceed it: the midpoint
    between the (k·n_rows)-th and the next largest key (0 when there are not more keys)."""
    flat = keys.reshape(-1).float()
    total = k * n_rows
    if total >= flat.numel():
        return 0.0
    top = flat.topk(total + 1).values
    return float((top[-2] + top[-1]) / 2)


@torch.no_grad()
def _row_keys(sae, x: Tensor, m: int) -> Tensor:
    """[B, m] the top-m keys of each row of x (raw activations): u (relu'd) or |u|."""
    x_s, _ = sae.normalize(x.to(sae.device))
    shift = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    enc = kernels.fused_topk_encode(x_s, sae.W_enc, sae.b_enc, m, sae.op.signed, shift=shift)
    return enc.values.abs() if sae.op.signed else enc.values


@torch.no_grad()
def _all_keys(sae, x: Tensor) -> Tensor:
    """[B, F] every key of each row of x (raw activations): u (relu'd) or |u|."""
    u = sae.pre_acts(sae.normalize(x.to(sae.device))[0])
    return u.abs() if sae.op.signed else u.clamp(min=0)


@torch.no_grad()
def calibrate_batch_threshold(sae, batches: Iterable[Tensor], *, rows: int) -> dict[str, Any]:
    """Set ``sae.threshold`` (every latent) to the θ of the module docstring over the first
    ``rows`` rows of ``batches`` (raw activations [b, d_in]); returns ``{"theta", "rows",
    "candidates", "theta_ema"}`` (``theta_ema``: the EMA value it replaces).

    ``ValueError`` when the SAE's operator is not batch-level or no row is given.
    """
    if not sae.op.batch_level:
        raise ValueError(f"{sae.cfg.architecture} has no batch-level threshold to calibrate")
    xs, n = [], 0
    for b in batches:
        if n >= rows:
            break
        b = b[: rows - n]
        xs.append(b)
        n += b.shape[0]
    if n == 0:
        raise ValueError("no calibration rows")
    k, F = int(sae.cfg.k), int(sae.cfg.d_sae)
    m = min(F, 4 * k)
    keys = torch.cat([_row_keys(sae, b, m) for b in xs])          # [N, m]
    theta = threshold_for_l0(keys, n, k)
    redo = (keys.min(1).values > theta).nonzero().view(-1) if m < F else keys.new_zeros(0)
    if redo.numel():
        x_all = torch.cat(xs)
        full = torch.cat([_all_keys(sae, x_all[redo[i:i + 4096]])
                          for i in range(0, redo.numel(), 4096)])   # [R, F]
        keep = torch.ones(n, dtype=torch.bool, device=keys.device)
        keep[redo] = False
        theta = threshold_for_l0(torch.cat([keys[keep].reshape(-1), full.reshape(-1)]), n, k)
    old = float(sae.threshold[0]) if sae.threshold.numel() else float("nan")
    sae.threshold.fill_(theta)
    return {"theta": theta, "rows": n, "candidates": m, "rows_all_keys": int(redo.numel()),
            "theta_ema": old}
