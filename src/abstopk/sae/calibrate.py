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
top-m keys are taken by the fused per-row encoder (m = 4k at first); a row whose smallest
candidate is still above θ may hide more entries above θ, so m is doubled and the pass
repeated until no row does (m = F is exact by definition). Cost: one encoder pass over the
N rows per try (no backward), a few percent of a training run.
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
    while True:
        keys = torch.cat([_row_keys(sae, b, m) for b in xs])
        theta = threshold_for_l0(keys, n, k)
        if m == F or not bool((keys.min(1).values > theta).any()):
            break
        m = min(F, 2 * m)
    old = float(sae.threshold[0]) if sae.threshold.numel() else float("nan")
    sae.threshold.fill_(theta)
    return {"theta": theta, "rows": n, "candidates": m, "theta_ema": old}
