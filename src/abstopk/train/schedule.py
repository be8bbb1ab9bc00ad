"""Schedules: the learning rate over steps, and the penalty-coefficient controllers.

Both are pluggable pieces of :class:`~abstopk.train.state.TrainState`: an LR schedule is any
callable ``step -> lr`` (0-based step), a controller anything with the
:class:`PenaltyController` methods.

Learning rate of the trainer (``lr_at``, :class:`WarmupDecayLR`), with S steps, W = ceil(warmup_frac·S) warm-up steps and
D = floor(decay_frac·S) decay steps at the end (step index t = 0 … S−1)::

    t < W            lr · (t + 1) / W                                  linear warm-up
    W ≤ t < S − D    lr                                                constant
    t ≥ S − D        lr · f(p),  p = (t − (S − D)) / D ∈ [0, 1)        decay
                     f = 1 − (1 − m)·p  (linear)  or  m + (1 − m)·(1 + cos πp)/2  (cosine)

with m = ``lr_min_factor``. The synthetic benchmark's schedule (:class:`ConstantThenLinearDecayLR`)
is constant, then decays linearly over the last steps from T₀ = int(constant_frac·S) on::

    t < T₀   lr ;      t ≥ T₀   lr · (S − t) / max(1, S − T₀)

Target-L0 controller (:class:`L0Controller`): the penalty coefficient c of ReLU (ℓ1) or the
JumpReLU family (ℓ0) sets the equilibrium sparsity but not in a way one can predict, so it is
adapted during training by a PI controller in log space on the measured L0::

    ℓ_t   = β·ℓ_{t−1} + (1 − β)·L0_t ;   ℓ̂_t = ℓ_t / (1 − β^t)          (bias-corrected EMA)
    e_t   = clamp(ln(ℓ̂_t + 10⁻³) − ln(L0*), −2, 2)                        (relative error)
    m_t   = 1[|e_t| < b  or  e_t·(ℓ̂_t − ℓ̂_{t−1}) ≥ 0]                     (integrate or wait)
    I_t   = clamp(I_{t−1} + k_i·e_t·m_t, ln c_min, ln c_max)               (integral, anti-windup)
    ln c  = clamp(I_t + k_p·e_t, ln c_min, ln c_max)

Too many active latents (ℓ̂ > L0*) raise c multiplicatively, too few lower it; at equilibrium
e = 0 and c = exp(I). Outside the band b the integral waits while ℓ̂ is already moving toward
the target (conditional integration): far from the target the L0 of a JumpReLU SAE falls at a
rate set by the encoder's drift and the threshold's learning rate, not by c, so integrating
there only winds I up and the L0 then overshoots below the target; when ℓ̂ stalls or moves
away outside the band, the integral moves as before. A fast integral (large k_i) is what
keeps the lag small while the coefficient the target needs drifts down in training (a
steady drift r per step leaves e ≈ r / k_i). Measured on the layer-6 1M-token cache in
``docs/pipeline.md`` ("The target-L0 controller"). Everything is a device tensor updated with
tensor ops, so the controller never synchronises with the GPU; its state is saved in
checkpoints (the band's rule reads only the EMA, so it adds no state).

Multiplicative controller (:class:`MultiplicativeL0Controller`, the synthetic benchmark's):
after each step, with the step's L0 and the target L0* (no smoothing, no clamp on c)::

    c ← c · exp(rate · clip((L0 − L0*) / L0*, −1, 1))

It reads the L0 on the host (one synchronisation per step) and keeps c a Python float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .config import TrainConfig

__all__ = [
    "ConstantThenLinearDecayLR",
    "L0Controller",
    "LRSchedule",
    "MultiplicativeL0Controller",
    "PenaltyController",
    "WarmupDecayLR",
    "lr_at",
    "lr_factor",
]


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


@runtime_checkable
class LRSchedule(Protocol):
    """Learning rate of a 0-based optimisation step."""

    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True)
class WarmupDecayLR:
    """The trainer's schedule: warm-up, constant, decay (see the module docstring).

    ``WarmupDecayLR.from_config(cfg)(t) == lr_at(t, cfg)`` for every step t.
    """

    lr: float
    steps: int
    warmup_frac: float = 0.0
    decay_frac: float = 0.0
    decay: str = "linear"
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        _check_lr_steps(self.lr, self.steps)
        if not (0.0 <= self.warmup_frac <= 1.0 and 0.0 <= self.decay_frac <= 1.0):
            raise ValueError(f"warmup_frac and decay_frac must be in [0, 1], got "
                             f"{self.warmup_frac!r} and {self.decay_frac!r}")
        if self.decay not in ("linear", "cosine", "none"):
            raise ValueError(f"decay must be linear, cosine or none, got {self.decay!r}")

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> WarmupDecayLR:
        return cls(cfg.lr, cfg.steps, cfg.lr_warmup_frac, cfg.lr_decay_frac, cfg.lr_decay,
                   cfg.lr_min_factor)

    def __call__(self, step: int) -> float:
        return self.lr * lr_factor(step, self.steps, self.warmup_frac, self.decay_frac,
                                   self.decay, self.min_factor)


@dataclass(frozen=True)
class ConstantThenLinearDecayLR:
    """``lr`` until step T₀ = int(constant_frac·steps), then lr·(steps − t)/max(1, steps − T₀)
    (the synthetic benchmark's schedule: linear decay over the last 30 % by default)."""

    lr: float
    steps: int
    constant_frac: float = 0.7

    def __post_init__(self) -> None:
        _check_lr_steps(self.lr, self.steps)
        if not 0.0 <= self.constant_frac <= 1.0:
            raise ValueError(f"constant_frac must be in [0, 1], got {self.constant_frac!r}")

    @property
    def decay_start(self) -> int:
        """T₀, the first step of the decay."""
        return int(self.constant_frac * self.steps)

    def __call__(self, step: int) -> float:
        start = self.decay_start
        if step >= start:
            return self.lr * (self.steps - step) / max(1, self.steps - start)
        return self.lr


def _check_lr_steps(lr: float, steps: int) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


@runtime_checkable
class PenaltyController(Protocol):
    """Adapts the penalty coefficient from the measured L0 of each step.

    ``coeff`` is the coefficient the next step uses (a float or a 0-dim device tensor that
    ``update`` changes in place); the state methods give what a checkpoint saves.
    """

    coeff: float | Tensor

    def update(self, l0: Tensor) -> float | Tensor:
        """Feed the L0 of the step just taken; return the next coefficient."""
        ...

    def metrics(self) -> dict[str, float]:
        """Extra numbers for the metrics record (reads the device)."""
        ...

    def state_tensors(self) -> dict[str, Tensor]: ...

    def state_json(self) -> dict[str, Any]: ...

    def load(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None: ...


class L0Controller:
    """PI controller of the penalty coefficient toward a target L0 (see the module docstring).

    Args:
        target: requested mean number of active latents per token, L0*.
        c0: initial coefficient (the integral starts at ln c0).
        ki, kp: integral and proportional gains (log space). beta: EMA factor of the L0.
        band: outside |e| < band the integral waits while the L0 approaches the target
            (``math.inf``: it always moves).
        c_min, c_max: clamps of the coefficient.
    """

    def __init__(self, target: float, c0: float, *, ki: float = 0.01, kp: float = 1.0,
                 beta: float = 0.9, band: float = math.inf, c_min: float = 1e-8,
                 c_max: float = 1e3, device: str | torch.device = "cpu") -> None:
        if not band > 0:
            raise ValueError(f"band must be positive, got {band!r}")
        self.target, self.ki, self.kp, self.beta = float(target), ki, kp, beta
        self.band = float(band)
        self.lo, self.hi = math.log(c_min), math.log(c_max)
        c0 = min(max(c0, c_min), c_max)
        self.t = 0
        self.ema = torch.zeros((), dtype=torch.float32, device=device)
        self.integral = torch.full((), math.log(c0), dtype=torch.float32, device=device)
        self.coeff = torch.full((), c0, dtype=torch.float32, device=device)

    @torch.no_grad()
    def update(self, l0: Tensor) -> Tensor:
        """Feed the L0 of the step just taken (0-dim tensor); return the next coefficient."""
        prev = self.l0_estimate()
        self.t += 1
        self.ema.mul_(self.beta).add_((1 - self.beta) * l0.to(self.ema.dtype))
        ema_hat = self.ema / (1 - self.beta ** self.t)
        err = (torch.log(ema_hat + 1e-3) - math.log(self.target)).clamp(-2.0, 2.0)
        # outside the band the integral waits while the L0 is already on its way to the target
        approaching = ((ema_hat - prev) * err < 0) if self.t > 1 else \
            torch.zeros_like(err, dtype=torch.bool)
        move = ((err.abs() < self.band) | ~approaching).to(err.dtype)
        self.integral.add_(self.ki * err * move).clamp_(self.lo, self.hi)
        self.coeff.copy_(torch.exp((self.integral + self.kp * err).clamp(self.lo, self.hi)))
        return self.coeff

    def l0_estimate(self) -> Tensor:
        """Bias-corrected EMA of the measured L0 (0-dim tensor)."""
        if self.t == 0:
            return self.ema.clone()
        return self.ema / (1 - self.beta ** self.t)

    def metrics(self) -> dict[str, float]:
        """``l0_ema``: the bias-corrected EMA of the L0 (see :meth:`l0_estimate`)."""
        return {"l0_ema": float(self.l0_estimate())}

    # checkpoint state: tensors + JSON scalars
    def state_tensors(self) -> dict[str, Tensor]:
        return {"ema": self.ema, "integral": self.integral, "coeff": self.coeff}

    def state_json(self) -> dict[str, float | int]:
        return {"t": self.t, "target": self.target}

    def load(self, tensors: dict[str, Tensor], meta: dict[str, float | int]) -> None:
        self.t = int(meta["t"])
        for name, t in tensors.items():
            getattr(self, name).copy_(t)


class MultiplicativeL0Controller:
    """c ← c·exp(rate·clip((L0 − L0*)/L0*, −1, 1)) after each step (see the module docstring).

    Args:
        target: L0*, the requested mean number of active latents per token (> 0).
        c0: initial coefficient. rate: step size of ln c per step at full relative error.
    """

    def __init__(self, target: float, c0: float, rate: float) -> None:
        if not target > 0:
            raise ValueError(f"target L0 must be positive, got {target!r}")
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be finite and ≥ 0, got {rate!r}")
        self.target, self.rate = float(target), float(rate)
        self.coeff: float = float(c0)

    def update(self, l0: Tensor) -> float:
        """Feed the L0 of the step just taken (read on the host); return the next coefficient."""
        rel = (float(l0) - self.target) / self.target
        self.coeff *= math.exp(self.rate * max(-1.0, min(1.0, rel)))
        return self.coeff

    def metrics(self) -> dict[str, float]:
        return {}

    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def state_json(self) -> dict[str, Any]:
        return {"coeff": self.coeff, "target": self.target, "rate": self.rate}

    def load(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self.coeff = float(meta["coeff"])
