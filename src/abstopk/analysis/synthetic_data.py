"""The synthetic benchmark's data: a known dictionary with bidirectional and one-sided features.

Data model (all sizes from :class:`SyntheticConfig`)::

    F ∈ R^{G×d}, rows f_g unit norm (random Gaussian directions, G = n_features)
    a_g ~ Bernoulli(p_g)                                  which features are active
    m_g = magnitude_min + Exp(magnitude_scale)             how strongly
    s_g = ±1 with prob. ½ each if g is bidirectional, +1 otherwise
    c_g = a_g · s_g · m_g                                  c ∈ R^G, sparse, signed
    x   = c F + b + σ ε,   ε ~ N(0, I_d),  ‖b‖ = bias_norm

A *bidirectional* feature is one direction used with both signs (male/female on one axis);
a *unidirectional* one only appears with a positive coefficient. The benchmark itself (training
and judging SAEs on this data) is :mod:`abstopk.analysis.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..fields import doc_field

__all__ = [
    "SyntheticConfig",
    "SyntheticData",
    "generate",
    "require",
    "require_finite",
    "require_positive_int",
    "sample",
]


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def require_positive_int(obj: Any, name: str) -> None:
    v = getattr(obj, name)
    require(not isinstance(v, bool) and isinstance(v, int) and v >= 1,
           f"{name} must be a positive integer, got {v!r}")


def require_finite(obj: Any, name: str, lo: float, lo_open: bool = False) -> None:
    v = getattr(obj, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo)
    require(ok, f"{name} must be a finite number {'>' if lo_open else '≥'} {lo}, got {v!r}")


# =============================================================================== data
@dataclass
class SyntheticConfig:
    """Ground-truth data model. Validated on construction (``ValueError``)."""

    d: int = doc_field("Dimension of the data (the 'residual width').", 64)
    n_features: int = doc_field("Number of ground-truth feature directions G.", 128)
    frac_bidirectional: float = doc_field("Fraction of features that are bidirectional (used with both signs).", 0.5)
    mean_active: float = doc_field("Mean number of active features per sample.", 3.0)
    magnitude_min: float = doc_field("Smallest coefficient magnitude (offset of the exponential).", 1.0)
    magnitude_scale: float = doc_field("Mean of the exponential part of a coefficient magnitude.", 1.0)
    noise: float = doc_field("Standard deviation of the isotropic Gaussian noise per coordinate.", 0.05)
    bias_norm: float = doc_field("Norm of the constant offset b added to every sample.", 1.0)
    n_train: int = doc_field("Number of training samples.", 32768)
    n_test: int = doc_field("Number of held-out samples for evaluation.", 8192)
    seed: int = doc_field("Seed of the data generator (dictionary, probabilities, samples).", 0)

    def __post_init__(self) -> None:
        for name in ("d", "n_features", "n_train", "n_test"):
            require_positive_int(self, name)
        require(isinstance(self.seed, int) and not isinstance(self.seed, bool),
               f"seed must be an integer, got {self.seed!r}")
        require(self.d >= 2, f"d must be ≥ 2, got {self.d}")
        require_finite(self, "frac_bidirectional", 0.0)
        require(self.frac_bidirectional <= 1.0,
               f"frac_bidirectional must be in [0, 1], got {self.frac_bidirectional}")
        require_finite(self, "mean_active", 0.0, lo_open=True)
        require(self.mean_active <= self.n_features,
               f"mean_active ({self.mean_active}) exceeds n_features ({self.n_features})")
        require_finite(self, "magnitude_min", 0.0, lo_open=True)
        require_finite(self, "magnitude_scale", 0.0)
        require_finite(self, "noise", 0.0)
        require_finite(self, "bias_norm", 0.0)

    @property
    def n_bidirectional(self) -> int:
        """Number of bidirectional features: round(frac_bidirectional · G)."""
        return int(round(self.frac_bidirectional * self.n_features))


@dataclass
class SyntheticData:
    """A generated data set with its ground truth.

    Attributes:
        cfg: the generating config.
        dictionary: [G, d] unit-norm feature directions f_g.
        bidirectional: [G] bool, True where the feature is used with both signs.
        p_active: [G] activation probabilities p_g (sum = mean_active).
        bias: [d] constant offset b.
        x_train: [n_train, d] training samples.
        x_test: [n_test, d] held-out samples; c_test: [n_test, G] their coefficients.
    """

    cfg: SyntheticConfig
    dictionary: Tensor
    bidirectional: Tensor
    p_active: Tensor
    bias: Tensor
    x_train: Tensor
    x_test: Tensor
    c_test: Tensor

    def summary(self) -> dict[str, float]:
        """Facts about the draw: dictionary coherence and the realised sparsity."""
        gram = self.dictionary @ self.dictionary.T
        gram.fill_diagonal_(0.0)
        return {
            "max_coherence": float(gram.abs().max()),
            "mean_abs_coherence": float(gram.abs().sum() / max(1, gram.numel() - gram.shape[0])),
            "mean_active_test": float((self.c_test != 0).sum(1).float().mean()),
            "n_bidirectional": int(self.bidirectional.sum()),
        }


def sample(n: int, dictionary: Tensor, bidirectional: Tensor, p_active: Tensor, bias: Tensor,
           cfg: SyntheticConfig, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw ``n`` samples: returns ``(x [n, d], c [n, G])`` with ``x = c F + b + σε``."""
    G = dictionary.shape[0]
    active = torch.rand(n, G, generator=gen) < p_active
    neg = (torch.rand(n, G, generator=gen) < 0.5) & bidirectional
    sign = 1.0 - 2.0 * neg.float()
    mag = cfg.magnitude_min + cfg.magnitude_scale * torch.empty(n, G).exponential_(1.0, generator=gen)
    c = active.float() * sign * mag
    x = c @ dictionary + bias + cfg.noise * torch.randn(n, dictionary.shape[1], generator=gen)
    return x, c


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Generate the dictionary, the feature statistics and train/test samples from ``cfg.seed``.

    Exactly ``cfg.n_bidirectional`` features (a random subset) are bidirectional. Per-feature
    probabilities are ``p_g = mean_active · w_g / Σw`` with ``w_g ~ U(0.5, 1.5)`` (clipped to 1).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    G, d = cfg.n_features, cfg.d
    F = torch.randn(G, d, generator=gen)
    F = F / F.norm(dim=1, keepdim=True)
    bidirectional = torch.zeros(G, dtype=torch.bool)
    bidirectional[torch.randperm(G, generator=gen)[: cfg.n_bidirectional]] = True
    w = 0.5 + torch.rand(G, generator=gen)
    p_active = (cfg.mean_active * w / w.sum()).clamp(max=1.0)
    b = torch.randn(d, generator=gen)
    b = cfg.bias_norm * b / b.norm()
    x_train, _ = sample(cfg.n_train, F, bidirectional, p_active, b, cfg, gen)
    x_test, c_test = sample(cfg.n_test, F, bidirectional, p_active, b, cfg, gen)
    return SyntheticData(cfg, F, bidirectional, p_active, b, x_train, x_test, c_test)
