"""Synthetic ground-truth benchmark: do SAEs recover *bidirectional* features with one latent?

The data (a known dictionary F of unit directions, some used with both signs — a
*bidirectional* feature, like male/female on one axis — others only positively) comes
from :mod:`abstopk.analysis.synthetic_data`.

One SAE per architecture is trained on the same data, in the same order, from the same seed,
for the same number of steps, at equal k (TopK family) or at a matched L0 (ReLU / JumpReLU,
whose penalty coefficient is adapted during training so the L0 lands near k). On held-out
data we measure (all sparsity counts are ``z != 0``; signs are kept):

* ``nmse`` = mean over samples of ‖x − x̂‖² / ‖x‖² (the paper's normalised MSE) and
  ``fvu`` = Σ‖x − x̂‖² / Σ‖x − x̄‖² (fraction of variance unexplained = 1 − explained variance);
* ``recovery`` of feature g = max_j |cos(f_g, d_j)| over decoder rows d_j, averaged over the
  bidirectional and the unidirectional features separately;
* for each bidirectional feature, *how* it is captured. Latent j *covers sign s* of g if
  |cos(f_g, d_j)| ≥ τ and, on held-out samples where g is active with sign s, latent j is
  non-zero with the matching sign, sign(z_j)·sign(cos(f_g, d_j)) = s, on at least a fraction
  ``fire_frac`` of them. Then g is captured by

  - **one signed latent**: some latent covers both signs (sign-aware use of one latent);
  - **± pair**: no single latent does, but one latent covers + and another covers −
    (the fragmentation the AbsTopK paper describes);
  - **one side**: only one sign is covered (the other sign is lost or smeared);
  - **missed**: neither sign is covered.

A non-negative code (ReLU, JumpReLU, TopK) can only ever cover one sign per latent, so for those
architectures "one signed latent" is 0 by construction and the interesting number is how
often they pay two latents (a pair) or lose a side.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..fields import doc_field
from .synthetic_data import (
    SyntheticConfig,
    SyntheticData,
    generate,
    require,
    require_finite,
    require_positive_int,
    sample,
)

__all__ = [
    "ArchResult",
    "BenchConfig",
    "BenchResult",
    "DEFAULT_ARCHITECTURES",
    "SyntheticConfig",
    "SyntheticData",
    "capture_analysis",
    "evaluate_sae",
    "generate",
    "run_benchmark",
    "sample",
    "train_sae",
]

DEFAULT_ARCHITECTURES = (
    "topk", "abstopk", "batchtopk", "batchabstopk", "jumprelu", "absjumprelu", "relu",
)

ProgressFn = Callable[[str, int, int], None]


# ========================================================================== training
@dataclass
class BenchConfig:
    """How the SAEs are trained and judged. Validated on construction (``ValueError``)."""

    architectures: tuple[str, ...] = doc_field("Architectures to train (comma separated on the command line).", DEFAULT_ARCHITECTURES)
    k: int = doc_field("Latents kept per sample (TopK family); target L0 of ReLU/JumpReLU.", 4)
    expansion: float = doc_field("SAE width as a multiple of the number of ground-truth features.", 2.0)
    steps: int = doc_field("Optimiser steps per SAE.", 1500)
    batch_size: int = doc_field("Samples per step.", 256)
    lr: float = doc_field("Adam learning rate (linear decay to 0 over the last 30 % of steps).", 3e-3)
    seed: int = doc_field("Seed of the SAE initialisation and of the batch order.", 0)
    tau: float = doc_field("|cosine| a decoder row needs with a ground-truth direction to count.", 0.9)
    fire_frac: float = doc_field("Fraction of a feature's samples of one sign a latent must fire on (with that sign).", 0.5)
    k_aux: int = doc_field("AuxK width (dead-latent revival); 0 disables AuxK.", 16)
    aux_coeff: float = doc_field("AuxK loss coefficient.", 1.0 / 32)
    dead_steps: int = doc_field("A latent is dead after not firing for this many steps.", 50)
    l0_adapt_rate: float = doc_field("Rate of the multiplicative penalty-coefficient controller (ReLU/JumpReLU L0 target).", 0.02)

    def __post_init__(self) -> None:
        from ..sparsity import get_operator

        if isinstance(self.architectures, str):
            self.architectures = tuple(a.strip() for a in self.architectures.split(",") if a.strip())
        self.architectures = tuple(self.architectures)
        require(len(self.architectures) > 0, "architectures must not be empty")
        require(len(set(self.architectures)) == len(self.architectures),
               f"architectures has duplicates: {self.architectures}")
        for a in self.architectures:
            get_operator(a)  # ValueError naming the known ones
        for name in ("k", "steps", "batch_size", "dead_steps"):
            require_positive_int(self, name)
        require_finite(self, "expansion", 0.0, lo_open=True)
        require_finite(self, "lr", 0.0, lo_open=True)
        require_finite(self, "tau", 0.0, lo_open=True)
        require(self.tau <= 1.0, f"tau must be in (0, 1], got {self.tau}")
        require_finite(self, "fire_frac", 0.0, lo_open=True)
        require(self.fire_frac <= 1.0, f"fire_frac must be in (0, 1], got {self.fire_frac}")
        require(isinstance(self.k_aux, int) and self.k_aux >= 0, f"k_aux must be ≥ 0, got {self.k_aux!r}")
        require_finite(self, "aux_coeff", 0.0)
        require_finite(self, "l0_adapt_rate", 0.0)

    def d_sae(self, data_cfg: SyntheticConfig) -> int:
        """SAE width: round(expansion · n_features), at least k."""
        return max(self.k, int(round(self.expansion * data_cfg.n_features)))


def train_sae(architecture: str, data: SyntheticData, cfg: BenchConfig,
              progress: ProgressFn | None = None):
    """Train one SAE on ``data.x_train``, one :class:`~abstopk.train.state.TrainState` step
    per batch.

    Scalar input normalisation (E‖x‖² = d) is set from the training data, ``b_dec`` starts at
    the data mean, the batch order comes from ``cfg.seed`` (identical for every architecture).
    The LR is constant, then decays linearly to 0 over the last 30 % of the steps
    (:class:`~abstopk.train.schedule.ConstantThenLinearDecayLR`). For architectures with a
    penalty (ReLU: ℓ1, JumpReLU family: ℓ0) the coefficient is adapted multiplicatively,
    ``c ← c·exp(rate·clip((L0 − k)/k, −1, 1))``
    (:class:`~abstopk.train.schedule.MultiplicativeL0Controller`), so the SAE ends near
    L0 = k. A latent is dead after ``cfg.dead_steps`` steps without firing (every batch has
    the same min(batch_size, n_train) rows, so that is a fixed number of tokens).
    Returns ``(sae, info)`` where info has ``train_seconds`` and ``penalty_coeff``.
    """
    from ..sae import SAE, SAEConfig
    from ..sparsity import get_operator
    from ..train.schedule import ConstantThenLinearDecayLR, MultiplicativeL0Controller
    from ..train.state import TrainState
    from ..train.step import make_optimizer

    op = get_operator(architecture)
    d = data.cfg.d
    d_sae = cfg.d_sae(data.cfg)
    scfg = SAEConfig(d_in=d, d_sae=d_sae, architecture=architecture,
                     k=cfg.k if op.needs_k else None, normalize_activations="scalar")
    sae = SAE(scfg, seed=cfg.seed)
    x_train = data.x_train
    with torch.no_grad():
        scale = math.sqrt(d / float(x_train.pow(2).sum(1).mean()))
        sae.input_scale.fill_(scale)
        sae.b_dec.copy_(x_train.mean(0) * scale)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x_train.shape[0]
    coeff = {"l1": 1e-2, "l0": 1e-3}.get(op.penalty or "", 0.0)
    controller = None
    if op.penalty and cfg.l0_adapt_rate > 0:
        controller = MultiplicativeL0Controller(cfg.k, coeff, cfg.l0_adapt_rate)
    state = TrainState(sae, make_optimizer(sae, cfg.lr),
                       ConstantThenLinearDecayLR(cfg.lr, cfg.steps, constant_frac=0.7),
                       controller=controller, penalty_coeff=coeff, k_aux=cfg.k_aux,
                       aux_coeff=cfg.aux_coeff,
                       dead_tokens=cfg.dead_steps * min(cfg.batch_size, n))
    order = torch.randperm(n, generator=gen)
    pos = 0
    t0 = time.perf_counter()
    for it in range(cfg.steps):
        if pos + cfg.batch_size > n:
            order = torch.randperm(n, generator=gen)
            pos = 0
        state.step(x_train[order[pos: pos + cfg.batch_size]])
        pos += cfg.batch_size
        if progress is not None:
            progress(architecture, it + 1, cfg.steps)
    sae.eval()
    return sae, {"train_seconds": time.perf_counter() - t0,
                 "penalty_coeff": float(state.penalty_coeff)}


# ========================================================================= evaluation
@dataclass
class ArchResult:
    """Metrics of one architecture on held-out data (fractions in [0, 1])."""

    architecture: str
    d_sae: int
    nmse: float
    fvu: float
    l0: float
    dead_frac: float
    recovery: float
    recovery_bi: float
    recovery_uni: float
    bi_one_latent: float
    bi_pair: float
    bi_one_side: float
    bi_missed: float
    uni_captured: float
    latents_per_bi: float
    train_seconds: float
    penalty_coeff: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def capture_analysis(codes: Tensor, decoder: Tensor, dictionary: Tensor, coeffs: Tensor,
                     tau: float, fire_frac: float) -> dict[str, Tensor]:
    """Which latents cover which sign of each ground-truth feature.

    Args:
        codes: [N, P] SAE codes z on held-out samples (signed; firing means ``z != 0``).
        decoder: [P, d] decoder rows (any norm; cosines are computed).
        dictionary: [G, d] ground-truth directions; coeffs: [N, G] true coefficients.
        tau: minimum |cos(f_g, d_j)|; fire_frac: minimum matching-sign firing rate.

    Returns dict of tensors:
        ``cos`` [G, P]; ``recovery`` [G] = max_j |cos|;
        ``cover_pos``/``cover_neg`` [G, P] bool: latent j covers the +/− sign of g, i.e.
        |cos_gj| ≥ τ and sign(z_j)·sign(cos_gj) = s on ≥ fire_frac of the samples with
        sign(c_g) = s (False where g never appears with that sign);
        ``one_latent`` [G], ``pair`` [G], ``one_side`` [G], ``missed`` [G] bool (disjoint);
        ``n_latents`` [G] number of latents covering some sign of g.
    """
    Dn = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    Fn = dictionary / dictionary.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = Fn @ Dn.T                                       # [G, P]
    near = cos.abs() >= tau
    sz = torch.sign(codes)                                # [N, P] in {−1, 0, 1}
    sc = torch.sign(cos)                                  # [G, P]
    covers = []
    for s in (1.0, -1.0):
        on = (torch.sign(coeffs) == s).float()            # [N, G]
        cnt = on.sum(0)                                   # [G]
        # samples of g with sign s where latent j fires with the sign that reproduces s·f_g:
        # sign(z_j) = s·sign(cos_gj)  ⇔  sz_j · sc_gj = s
        hits = (on.T @ (sz == s).float()) * (sc == 1) + (on.T @ (sz == -s).float()) * (sc == -1)
        rate = hits / cnt.clamp_min(1).unsqueeze(1)
        covers.append(near & (rate >= fire_frac) & (cnt > 0).unsqueeze(1))
    cover_pos, cover_neg = covers
    one = (cover_pos & cover_neg).any(1)
    has_pos, has_neg = cover_pos.any(1), cover_neg.any(1)
    pair = ~one & has_pos & has_neg
    one_side = ~one & (has_pos ^ has_neg)
    missed = ~has_pos & ~has_neg
    return {
        "cos": cos, "recovery": cos.abs().max(1).values,
        "cover_pos": cover_pos, "cover_neg": cover_neg,
        "one_latent": one, "pair": pair, "one_side": one_side, "missed": missed,
        "n_latents": (cover_pos | cover_neg).sum(1),
    }


@torch.no_grad()
def evaluate_sae(sae, data: SyntheticData, cfg: BenchConfig, architecture: str,
                 info: dict[str, float] | None = None) -> ArchResult:
    """Held-out metrics of a trained SAE (see the module docstring for definitions)."""
    sae.eval()
    out = sae(data.x_test)
    x, x_hat, z = data.x_test, out.x_hat, out.z
    from ..eval.metrics import MetricAccumulator

    acc = MetricAccumulator(x.shape[1], z.shape[1])   # one definition of nmse and fvu
    acc.update(x, x_hat, z)
    rec = acc.result().summary
    nmse, fvu = float(rec["nmse"]), float(rec["fvu"])
    fired = z != 0
    cap = capture_analysis(z, sae.W_dec.detach(), data.dictionary, data.c_test,
                           cfg.tau, cfg.fire_frac)
    bi = data.bidirectional
    uni = ~bi

    def mean(t: Tensor, m: Tensor) -> float:
        return float(t[m].float().mean()) if m.any() else float("nan")

    n_lat = cap["n_latents"].float()
    captured_bi = bi & ~cap["missed"]
    info = info or {}
    return ArchResult(
        architecture=architecture,
        d_sae=sae.cfg.d_sae,
        nmse=nmse,
        fvu=fvu,
        l0=float(fired.sum(1).float().mean()),
        dead_frac=float((~fired.any(0)).float().mean()),
        recovery=float(cap["recovery"].mean()),
        recovery_bi=mean(cap["recovery"], bi),
        recovery_uni=mean(cap["recovery"], uni),
        bi_one_latent=mean(cap["one_latent"], bi),
        bi_pair=mean(cap["pair"], bi),
        bi_one_side=mean(cap["one_side"], bi),
        bi_missed=mean(cap["missed"], bi),
        uni_captured=mean(cap["cover_pos"].any(1), uni),
        latents_per_bi=mean(n_lat, captured_bi),
        train_seconds=float(info.get("train_seconds", 0.0)),
        penalty_coeff=float(info.get("penalty_coeff", 0.0)),
    )


# ========================================================================== benchmark
@dataclass
class BenchResult:
    """All architectures' results plus the configs and the data summary."""

    data_cfg: SyntheticConfig
    bench_cfg: BenchConfig
    data_summary: dict[str, float]
    results: list[ArchResult]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data_cfg),
            "bench": dataclasses.asdict(self.bench_cfg),
            "data_summary": self.data_summary,
            "results": [r.to_dict() for r in self.results],
            "seconds": self.seconds,
        }

    def by_arch(self) -> dict[str, ArchResult]:
        return {r.architecture: r for r in self.results}



def run_benchmark(data_cfg: SyntheticConfig | None = None, bench_cfg: BenchConfig | None = None,
                  progress: ProgressFn | None = None,
                  on_result: Callable[[ArchResult], None] | None = None) -> BenchResult:
    """Generate the data once, then train and evaluate each architecture in turn."""
    data_cfg = data_cfg or SyntheticConfig()
    bench_cfg = bench_cfg or BenchConfig()
    t0 = time.perf_counter()
    data = generate(data_cfg)
    results = []
    for arch in bench_cfg.architectures:
        sae, info = train_sae(arch, data, bench_cfg, progress)
        r = evaluate_sae(sae, data, bench_cfg, arch, info)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return BenchResult(data_cfg, bench_cfg, data.summary(), results, time.perf_counter() - t0)

