"""Steering methods at signed strengths, all in one unit: the DiM's typical magnitude m.

A strength s means a residual-stream change of norm |s|·m at the steering site, towards the
axis's end A when s > 0 and end B when s < 0 (m: the 95th percentile of |⟨h, v̂⟩| over
held-out corpus tokens, :func:`~abstopk.steer.directions.typical_magnitude`):

* ``none`` — no intervention (s = 0).
* ``prompt`` — no intervention; the axis's instruction for the wanted end is prepended to
  the prompt (s = ±1 marks the end; it has no magnitude).
* ``dim`` — :func:`~abstopk.steer.interventions.add_direction` with α = s·m / ‖v‖.
* a signed SAE (``abstopk``) — **one** latent i, the one with the largest |effect|
  (:mod:`~abstopk.steer.latents`); z_i ← z_i + σ·s·m / c_i (``add``) or z_i ← σ·s·m / c_i
  (``set``), σ = sign(effect_i), c_i = ‖D(z + e_i) − D(z)‖ the residual change per unit of
  z_i (measured on held-out rows; ‖W_dec[i]‖ for an SAE without normalisation). Both signs
  of s use the same latent.
* a non-negative SAE (``topk``, ``jumprelu``, ``relu``, …) — a **pair**: latent a (largest
  positive effect, towards A) for s > 0 and latent b (most negative effect, towards B) for
  s < 0, each increased by |s|·m / c (a non-negative latent can only be pushed up).

The SAE's error term is kept (only the latent's change reaches the model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Method", "SaeChoice", "choose_latents", "latent_unit", "make_intervention"]


@dataclass
class SaeChoice:
    """The latent(s) an SAE steers with: ``pos`` for s > 0 and ``neg`` for s < 0 (the same
    latent for a signed SAE) with σ (the sign applied to the value) and c (units per z)."""

    architecture: str
    pos: int
    neg: int
    sign_pos: float
    sign_neg: float
    unit_pos: float
    unit_neg: float
    scores: dict = field(default_factory=dict)

    @property
    def n_latents(self) -> int:
        return len({self.pos, self.neg})


@dataclass
class Method:
    """A method name and, for SAE methods, the SAE and its choice."""

    name: str
    sae: object | None = None
    choice: SaeChoice | None = None


@torch.no_grad()
def latent_unit(sae, latent: int, rows: Tensor) -> float:
    """c_i = mean over ``rows`` [n, d_in] of ‖D(z + e_i) − D(z)‖ (z = encode(x))."""
    x = rows.to(sae.dtype)
    _, stats = sae.normalize(x)
    z = sae.encode(x)
    z2 = z.clone()
    z2[:, latent] += 1
    return float((sae.decode(z2, stats) - sae.decode(z, stats)).norm(dim=-1).mean())


def choose_latents(sae, acts_a: Tensor, acts_b: Tensor, v: Tensor, rows: Tensor) -> SaeChoice:
    """Pick the steering latent(s) of ``sae`` (see the module docstring)."""
    from .latents import latent_pair, rank_latents

    arch = sae.cfg.architecture
    if sae.cfg.operator.signed:
        best = rank_latents(sae, acts_a, acts_b, v, top=3)
        top = best[0]
        s = 1.0 if top.effect >= 0 else -1.0
        c = latent_unit(sae, top.latent, rows)
        return SaeChoice(arch, top.latent, top.latent, s, -s, c, c,
                         {"candidates": [b.to_dict() for b in best]})
    a, b = latent_pair(sae, acts_a, acts_b, v)
    return SaeChoice(arch, a.latent, b.latent, 1.0, 1.0, latent_unit(sae, a.latent, rows),
                     latent_unit(sae, b.latent, rows),
                     {"towards_a": a.to_dict(), "towards_b": b.to_dict()})


def make_intervention(model, method: Method, strength: float, *, direction, scale: float,
                      positions: str = "all", latent_mode: str = "add"
                      ) -> tuple[Callable[[], contextlib.AbstractContextManager], int | None]:
    """(a factory of the ``with`` block that steers, the latent used or None)."""
    from .interventions import LatentEdit, add_direction, edit_latents

    if method.name in ("none", "prompt") or strength == 0:
        return contextlib.nullcontext, None
    if method.name == "dim":
        alpha = strength * scale / float(direction.vector.norm())
        return (lambda: add_direction(model, direction.layer, direction.vector, alpha,
                                      site=direction.site, positions=positions)), None
    ch = method.choice
    if strength > 0:
        latent, sigma, unit = ch.pos, ch.sign_pos, ch.unit_pos
    else:
        latent, sigma, unit = ch.neg, ch.sign_neg, ch.unit_neg
    value = sigma * abs(strength) * scale / max(unit, 1e-12)
    edit = LatentEdit(latent, value, latent_mode)
    return (lambda: edit_latents(model, method.sae, [edit], layer=direction.layer,
                                 site=direction.site, positions=positions)), latent
