"""Planted features of known type: where the bidirectionality proxy's truth is known.

A tiny hand-built "LM": a vocabulary of V token ids; feature g has a unit direction f_g ∈ R^d
(random Gaussian) and token poles. A *bidirectional* feature g owns two disjoint sets of
``tokens_per_pole`` tokens, P_g (its + pole, "man, he, his") and N_g (its − pole, "woman,
she, her"); a *unidirectional* one owns only P_g; all remaining tokens are fillers. Every
pole token belongs to one feature. Each row (one token position)::

    t     ~ a pole token (uniform over all pole tokens) with prob. p_pole, else a filler
    c_g   = +m if t ∈ P_g, −m if t ∈ N_g, else 0,  m = 1 + Exp(1)
    b     = one background feature h (uniform), coefficient ~ N(0, background²)
            (a context signal of random sign that does not depend on the token)
    x     = Σ_g c_g f_g + b f_h + σ ε,  ε ~ N(0, I_d)

The planted SAE has one latent per feature, decoder row f_g and encoder column f_g plus
Gaussian noise of relative size ``encoder_noise`` (renormalised), and ``n_random`` extra
latents on random directions that no feature uses. Truth: bidirectional features should be
labelled ``bidirectional``; unidirectional ones ``unidirectional`` (their negative side, if
any, is background of random tokens); random latents have no planted meaning. The accuracy
is measured on the planted features; the random latents' labels are reported separately.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..fields import doc_field
from ..sae import SAE, SAEConfig
from .bidirectionality import BidirConfig, fraction_with_ci
from .latent_stats.collect import collect_batches
from .latent_stats.labels import label_all
from .synthetic_data import require, require_finite, require_positive_int

__all__ = ["PlantedConfig", "planted_data", "planted_sae", "planted_validation"]


@dataclass
class PlantedConfig:
    """The planted-feature setting. Validated on construction (``ValueError``)."""

    n_bidirectional: int = doc_field("Planted features with a + and a − token pole.", 40)
    n_unidirectional: int = doc_field("Planted features with a + pole only.", 40)
    n_random: int = doc_field("Extra SAE latents on random directions (no planted meaning).", 20)
    tokens_per_pole: int = doc_field("Distinct tokens in each pole.", 3)
    vocab_size: int = doc_field("Vocabulary size (pole tokens + fillers).", 1000)
    d_in: int = doc_field("Activation width d.", 64)
    n_rows: int = doc_field("Rows (token positions) in the synthetic cache.", 40000)
    p_pole: float = doc_field("Probability that a row's token is a pole token.", 0.5)
    background: float = doc_field("Std of the token-independent background coefficient.", 0.7)
    noise: float = doc_field("Std σ of the isotropic Gaussian noise per dimension.", 0.05)
    encoder_noise: float = doc_field("Relative Gaussian noise on the planted encoder columns.", 0.2)
    architecture: str = doc_field("Operator of the planted SAE (abstopk, topk, ...).", "abstopk")
    k: int = doc_field("Latents kept per row.", 4)
    seed: int = doc_field("Seed of the dictionary, tokens and noise.", 0)

    def __post_init__(self) -> None:
        for name in ("n_bidirectional", "n_unidirectional", "tokens_per_pole", "vocab_size",
                     "d_in", "n_rows", "k"):
            require_positive_int(self, name)
        require(isinstance(self.n_random, int) and self.n_random >= 0,
                f"n_random must be an integer ≥ 0, got {self.n_random!r}")
        require_finite(self, "p_pole", 0.0)
        require(self.p_pole <= 1, f"p_pole must be ≤ 1, got {self.p_pole}")
        for name in ("background", "noise", "encoder_noise"):
            require_finite(self, name, 0.0)
        need = self.tokens_per_pole * (2 * self.n_bidirectional + self.n_unidirectional) + 1
        require(self.vocab_size >= need,
                f"vocab_size must be ≥ {need} (pole tokens + one filler), got {self.vocab_size}")

    @property
    def n_features(self) -> int:
        return self.n_bidirectional + self.n_unidirectional


def planted_data(cfg: PlantedConfig) -> dict[str, torch.Tensor]:
    """``{"x": [n_rows, d], "tokens": [n_rows], "dictionary": [G, d], "bidirectional": [G]}``."""
    g = torch.Generator().manual_seed(cfg.seed)
    G, T = cfg.n_features, cfg.tokens_per_pole
    D = torch.randn(G, cfg.d_in, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    bidir = torch.zeros(G, dtype=torch.bool)
    bidir[: cfg.n_bidirectional] = True
    # token → (feature, sign); pole tokens first, then fillers
    feat, sign = [], []
    for f in range(G):
        feat += [f] * T
        sign += [1.0] * T
        if bidir[f]:
            feat += [f] * T
            sign += [-1.0] * T
    n_pole = len(feat)
    tok_feat = torch.tensor(feat + [-1] * (cfg.vocab_size - n_pole))
    tok_sign = torch.tensor(sign + [0.0] * (cfg.vocab_size - n_pole))
    n = cfg.n_rows
    is_pole = torch.rand(n, generator=g) < cfg.p_pole
    pole_tok = torch.randint(0, n_pole, (n,), generator=g)
    fill_tok = torch.randint(n_pole, cfg.vocab_size, (n,), generator=g)
    tokens = torch.where(is_pole, pole_tok, fill_tok)
    m = 1 + torch.empty(n).exponential_(1.0, generator=g)
    c = torch.zeros(n, G)
    rows = torch.nonzero(is_pole).flatten()
    c[rows, tok_feat[tokens[rows]]] = tok_sign[tokens[rows]] * m[rows]
    h = torch.randint(0, G, (n,), generator=g)
    c[torch.arange(n), h] += torch.randn(n, generator=g) * cfg.background
    x = c @ D + cfg.noise * torch.randn(n, cfg.d_in, generator=g)
    return {"x": x, "tokens": tokens, "dictionary": D, "bidirectional": bidir}


def planted_sae(cfg: PlantedConfig, dictionary: torch.Tensor) -> SAE:
    """The planted SAE: decoder rows = the dictionary (+ random rows), noisy encoder."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    R = torch.randn(cfg.n_random, cfg.d_in, generator=g)
    W_dec = torch.cat([dictionary, R / R.norm(dim=1, keepdim=True).clamp_min(1e-12)])
    E = W_dec + cfg.encoder_noise * torch.randn(W_dec.shape, generator=g) / cfg.d_in ** 0.5
    E /= E.norm(dim=1, keepdim=True)
    sae = SAE(SAEConfig(d_in=cfg.d_in, d_sae=W_dec.shape[0], architecture=cfg.architecture,
                        k=cfg.k, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
        sae.W_enc.copy_(E.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def planted_validation(cfg: PlantedConfig | None = None, bidir: BidirConfig | None = None,
                       *, top_n: int = 20, batch_rows: int = 4096) -> dict[str, Any]:
    """Run the streaming statistics and the proxy on the planted setting; compare to truth.

    Returns ``{"accuracy", "accuracy_bidirectional", "accuracy_unidirectional",
    "confusion": {truth: {label: n}}, "random_labels": {label: n}, "bidirectional_fraction"
    (with ci95, over all latents), "score_auc"}``. ``score_auc``: the probability that a random
    planted bidirectional latent has a higher score than a random unidirectional one (ties ½),
    also meaningful for a non-negative SAE, whose labels are never bidirectional.
    """
    cfg = cfg or PlantedConfig()
    data = planted_data(cfg)
    sae = planted_sae(cfg, data["dictionary"])
    x = data["x"]
    batches = ((a, x[a:a + batch_rows]) for a in range(0, x.shape[0], batch_rows))
    st = collect_batches(sae, batches, x.shape[0], top_n=top_n, seed=cfg.seed)
    scores, labels = label_all(st, data["tokens"].tolist(), sae.op.signed, bidir)
    G = cfg.n_features
    truth = ["bidirectional" if b else "unidirectional" for b in data["bidirectional"].tolist()]
    confusion: dict[str, Counter] = {"bidirectional": Counter(), "unidirectional": Counter()}
    for t, lab in zip(truth, labels[:G], strict=True):
        confusion[t][lab] += 1
    ok = [t == lab for t, lab in zip(truth, labels[:G], strict=True)]
    nb = cfg.n_bidirectional
    sb, su = scores[:nb], scores[nb:G]
    auc = sum((a > b) + 0.5 * (a == b) for a in sb for b in su) / max(len(sb) * len(su), 1)
    return {
        "config": asdict(cfg),
        "accuracy": sum(ok) / G,
        "accuracy_bidirectional": sum(ok[:nb]) / nb,
        "accuracy_unidirectional": sum(ok[nb:]) / (G - nb),
        "confusion": {t: dict(c) for t, c in confusion.items()},
        "random_labels": dict(Counter(labels[G:])),
        "score_auc": auc,
        **fraction_with_ci(labels),
    }
