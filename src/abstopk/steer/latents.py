"""SAE latents as steering candidates for a concept given by two sets of activations.

For an SAE with decoder rows d_i (``W_dec[i]`` [d_in]) and codes z = encode(x), and token
activations X_A [n_a, d_in] (concept end A) and X_B [n_b, d_in] (end B), each latent i gets:

* ``cosine``: cos(d_i, v) with the difference-in-means direction v (A − B);
* ``effect``: the signed standardised activation difference
  ``(mean_A z_i − mean_B z_i) / sqrt((var_A z_i + var_B z_i) / 2)`` (0 when z_i never varies).
  Positive: the latent's positive values go with A (a non-negative latent fires more on A);
  negative: with B (for a signed latent, its negative values go with A's opposite end).

A signed (AbsTopK) latent can carry both ends alone: one latent with a large |effect|. A
non-negative SAE needs a *pair*: the latent with the largest effect towards A and the one
with the largest effect towards B. :func:`latent_pair` returns both, :func:`rank_latents`
the full ranking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = ["LatentScore", "latent_pair", "latent_scores", "rank_latents"]


@dataclass(frozen=True)
class LatentScore:
    """One latent's scores (see the module docstring)."""

    latent: int
    cosine: float
    effect: float
    mean_a: float
    mean_b: float
    fire_a: float  # fraction of A tokens with z_i != 0
    fire_b: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def _codes(sae, x: Tensor, batch: int = 4096) -> Tensor:
    sae.eval()
    return torch.cat([sae.encode(x[i: i + batch].to(sae.dtype)) for i in range(0, len(x), batch)])


@torch.no_grad()
def latent_scores(sae, acts_a: Tensor, acts_b: Tensor, v: Tensor | None = None) -> dict[str, Tensor]:
    """Per-latent tensors [d_sae]: cosine, effect, mean_a, mean_b, fire_a, fire_b.

    ``acts_a`` [n_a, d_in], ``acts_b`` [n_b, d_in] token activations (raw space); ``v`` the
    concept direction [d_in] (default: their difference in means).
    """
    if acts_a.shape[-1] != sae.cfg.d_in or acts_b.shape[-1] != sae.cfg.d_in:
        raise ValueError(f"activations of width {acts_a.shape[-1]}/{acts_b.shape[-1]} do not "
                         f"match the SAE's d_in {sae.cfg.d_in}")
    if v is None:
        v = acts_a.float().mean(0) - acts_b.float().mean(0)
    za, zb = _codes(sae, acts_a).float(), _codes(sae, acts_b).float()
    W = sae.W_dec.detach().float()
    cos = (W @ v.float()) / (W.norm(dim=1) * v.float().norm()).clamp_min(1e-12)
    ma, mb = za.mean(0), zb.mean(0)
    pooled = ((za.var(0, unbiased=False) + zb.var(0, unbiased=False)) / 2).sqrt()
    effect = torch.where(pooled > 0, (ma - mb) / pooled.clamp_min(1e-12), torch.zeros_like(ma))
    return {"cosine": cos, "effect": effect, "mean_a": ma, "mean_b": mb,
            "fire_a": (za != 0).float().mean(0), "fire_b": (zb != 0).float().mean(0)}


def _score(s: dict[str, Tensor], i: int) -> LatentScore:
    return LatentScore(i, *(float(s[k][i]) for k in
                            ("cosine", "effect", "mean_a", "mean_b", "fire_a", "fire_b")))


def rank_latents(sae, acts_a: Tensor, acts_b: Tensor, v: Tensor | None = None, *,
                 top: int = 10, by: str = "effect") -> list[LatentScore]:
    """The ``top`` latents by |effect| (``by="effect"``) or |cosine| (``by="cosine"``)."""
    if by not in ("effect", "cosine"):
        raise ValueError(f"unknown ranking {by!r}; choose 'effect' or 'cosine'")
    s = latent_scores(sae, acts_a, acts_b, v)
    order = torch.argsort(s[by].abs(), descending=True, stable=True)[:top]
    return [_score(s, int(i)) for i in order]


def latent_pair(sae, acts_a: Tensor, acts_b: Tensor, v: Tensor | None = None
                ) -> tuple[LatentScore, LatentScore]:
    """(latent most towards A, latent most towards B) by signed effect (argmax, argmin).

    For a signed SAE both may be the same latent's two signs only if one latent dominates
    both ends; callers compare with :func:`rank_latents`'s single best latent.
    """
    s = latent_scores(sae, acts_a, acts_b, v)
    return _score(s, int(s["effect"].argmax())), _score(s, int(s["effect"].argmin()))
