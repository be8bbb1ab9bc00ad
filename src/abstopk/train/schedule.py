"""Schedules: the learning rate over steps, and the target-L0 penalty controller.

Learning rate (``lr_at``), with S steps, W = ceil(warmup_frac·S) warm-up steps and
D = floor(decay_frac·S) decay steps at the end (step index t = 0 … S−1)::

    t < W            lr · (t + 1) / W                                  linear warm-up
    W ≤ t < S − D    lr                                                constant
    t ≥ S − D        lr · f(p),  p = (t − (S − D)) / D ∈ [0, 1)        decay
                     f = 1 − (1 − m)·p  (linear)  or  m + (1 − m)·(1 + cos πp)/2  (cosine)

with m = ``lr_min_factor``.

Target-L0 controller (:class:`L0Controller`): the penalty coefficient c of ReLU (ℓ1) or the
JumpReLU family (ℓ0) sets the equilibrium sparsity but not in a way one can predict, so it is
adapted during training by a PI controller in log space on the measured L0::

    ℓ_t   = β·ℓ_{t−1} + (1 − β)·L0_t ;   ℓ̂_t = ℓ_t / (1 − β^t)          (bias-corrected EMA)
    e_t   = clamp(ln(ℓ̂_t + 10⁻³) − ln(L0*), −2, 2)                        (relative error)
    I_t   = clamp(I_{t−1} + k_i·e_t, ln c_min, ln c_max)                   (integral, anti-windup)
    ln c  = clamp(I_t + k_p·e_t, ln c_min, ln c_max)

Too many active latents (ℓ̂ > L0*) raise c multiplicatively, too few lower it; at equilibrium
e = 0 and c = exp(I). Everything is a device tensor updated with tensor ops, so the controller
never synchronises with the GPU; its state is saved in checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import TrainConfig

__all__ = ["L0Controller", "lr_at", "lr_factor"]


def lr_factor(step: int, steps: int, warmup_frac: float, decay_frac: float,
              decay: str = "linear", min_factor: float = 0.0) -> float:
    """Multiplier of the peak LR at 0-based ``step`` of ``steps`` (see the module docstring)."""
    warm = math.ceil(warmup_frac * steps)
    n_decay = math.floor(decay_frac * steps) if decay != "none" else 0
    if warm and step < warm:
        return (step + 1) / warm
    start = steps - n_decay
    if n_decay and step >= start:
        p = min(1.0, (step - start) / n_decay)
        if decay == "cosine":
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * p))
        return 1 - (1 - min_factor) * p
    return 1.0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based ``step`` under ``cfg``."""
    return cfg.lr * lr_factor(step, cfg.steps, cfg.lr_warmup_frac, cfg.lr_decay_frac,
                              cfg.lr_decay, cfg.lr_min_factor)


class L0Controller:
    """PI controller of the penalty coefficient toward a target L0 (see the module docstring).

    Args:
        target: requested mean number of active latents per token, L0*.
        c0: initial coefficient (the integral starts at ln c0).
        ki, kp: integral and proportional gains (log space). beta: EMA factor of the L0.
        c_min, c_max: clamps of the coefficient.
    """

    def __init__(self, target: float, c0: float, *, ki: float = 0.01, kp: float = 1.0,
                 beta: float = 0.9, c_min: float = 1e-8, c_max: float = 1e3,
                 device: str | torch.device = "cpu") -> None:
        self.target, self.ki, self.kp, self.beta = float(target), ki, kp, beta
        self.lo, self.hi = math.log(c_min), math.log(c_max)
        c0 = min(max(c0, c_min), c_max)
        self.t = 0
        self.ema = torch.zeros((), dtype=torch.float32, device=device)
        self.integral = torch.full((), math.log(c0), dtype=torch.float32, device=device)
        self.coeff = torch.full((), c0, dtype=torch.float32, device=device)

    @torch.no_grad()
    def update(self, l0: Tensor) -> Tensor:
        """Feed the L0 of the step just taken (0-dim tensor); return the next coefficient."""
        self.t += 1
        self.ema.mul_(self.beta).add_((1 - self.beta) * l0.to(self.ema.dtype))
        ema_hat = self.ema / (1 - self.beta ** self.t)
        err = (torch.log(ema_hat + 1e-3) - math.log(self.target)).clamp(-2.0, 2.0)
        self.integral.add_(self.ki * err).clamp_(self.lo, self.hi)
        self.coeff.copy_(torch.exp((self.integral + self.kp * err).clamp(self.lo, self.hi)))
        return self.coeff

    def l0_estimate(self) -> Tensor:
        """Bias-corrected EMA of the measured L0 (0-dim tensor)."""
        if self.t == 0:
            return self.ema.clone()
        return self.ema / (1 - self.beta ** self.t)

    # checkpoint state: tensors + JSON scalars
    def state_tensors(self) -> dict[str, Tensor]:
        return {"ema": self.ema, "integral": self.integral, "coeff": self.coeff}

    def state_json(self) -> dict[str, float | int]:
        return {"t": self.t, "target": self.target}

    def load(self, tensors: dict[str, Tensor], meta: dict[str, float | int]) -> None:
        self.t = int(meta["t"])
        for name, t in tensors.items():
            getattr(self, name).copy_(t)
