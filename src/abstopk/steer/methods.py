"""Steering methods at signed strengths, all in one unit: the DiM's typical magnitude m.

A strength s means a residual-stream change of norm |s|·m at the steering site, towards the
axis's end A when s > 0 and end B when s < 0 (m: the 95th percentile of |⟨h, v̂⟩| over
held-out corpus tokens, :func:`~abstopk.steer.directions.typical_magnitude`):

* ``none`` — no intervention (s = 0).
* ``prompt`` — no intervention; the axis's instruction for the wanted end is prepended to
  the prompt (s = ±1 marks the end; it has no magnitude).
* ``dim`` — :func:`~abstopk.steer.interventions.add_direction` with α = s·m / ‖v‖.
* a signed SAE (``abstopk``) — **one** latent i; z_i ← z_i + σ·s·m / c_i (``add``) or
  z_i ← σ·s·m / c_i (``set``), σ its orientation (+1: positive values go with A), c_i =
  ‖D(z + e_i) − D(z)‖ the residual change per unit of z_i (measured on held-out rows;
  ‖W_dec[i]‖ for an SAE without normalisation). Both signs of s use the same latent.
* a non-negative SAE (``topk``, ``jumprelu``, ``relu``, …) — a **pair**: latent a for s > 0
  (towards A) and latent b for s < 0 (towards B), each increased by |s|·m / c (a
  non-negative latent can only be pushed up).

Which latent(s) — the rule (:func:`choose_latents`, ``rule``):

* ``effect`` — the largest signed standardised activation difference between the two text
  sets (:mod:`~abstopk.steer.latents`): signed SAE argmax |effect|, σ = sign(effect); pair
  argmax / argmin effect;
* ``cosine`` — the same with the decoder cosine to the DiM;
* ``output`` — AxBench's lesson (select latents by what they do to the output): the
  candidates are the top ``n`` by |effect| and by |cosine| (signed SAE), or the top ``n``
  by effect and by cosine towards each end (pair); each is **applied** at strength
  ``effect_strength`` on the dev prompts and the concept score of the continuations is
  measured (``measure``). Signed: output effect o_i = (c(+s) − c(−s)) / 2, the latent with
  the largest |o_i|, σ = sign(o_i). Pair: o_i = c(push_i) − c(none); a = argmax o,
  b = argmin o over the pooled candidates (b ≠ a).

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


def _top(x: Tensor, n: int) -> list[int]:
    return [int(i) for i in torch.argsort(x, descending=True, stable=True)[:n]]


def choose_latents(sae, acts_a: Tensor, acts_b: Tensor, v: Tensor, rows: Tensor, *,
                   rule: str = "effect", n: int = 3,
                   measure: Callable[[int, float], float] | None = None,
                   reference: float | None = None) -> SaeChoice:
    """Pick the steering latent(s) of ``sae`` by ``rule`` (module docstring).

    ``measure(latent, value)`` → mean dev concept score with z_latent += value (rule
    ``output``; ``value`` already in z units); ``reference``: the unsteered dev score.
    ``scores["candidates"]`` lists every candidate with cosine, effect and (rule output) its
    output effect, so all three rankings can be reported side by side.
    """
    from .latents import _score, latent_scores

    if rule not in ("effect", "cosine", "output"):
        raise ValueError(f"unknown latent rule {rule!r}")
    if rule == "output" and (measure is None or reference is None):
        raise ValueError("rule 'output' needs measure and reference")
    arch = sae.cfg.architecture
    sc = latent_scores(sae, acts_a, acts_b, v)
    eff, cos = sc["effect"], sc["cosine"]
    units: dict[int, float] = {}

    def unit(i: int) -> float:
        if i not in units:
            units[i] = latent_unit(sae, i, rows)
        return units[i]

    def cand(i: int, **extra) -> dict:
        return {**_score(sc, i).to_dict(), "unit": unit(i), **extra}

    if sae.cfg.operator.signed:
        if rule != "output":
            key = eff if rule == "effect" else cos
            i = _top(key.abs(), 1)[0]
            s = 1.0 if key[i] >= 0 else -1.0
            pool = list(dict.fromkeys(_top(eff.abs(), n) + _top(cos.abs(), n)))
            return SaeChoice(arch, i, i, s, -s, unit(i), unit(i),
                             {"rule": rule, "candidates": [cand(j) for j in pool]})
        pool = list(dict.fromkeys(_top(eff.abs(), n) + _top(cos.abs(), n)))
        cands = []
        for j in pool:
            val = 1.0 / max(unit(j), 1e-12)   # × strength·m inside measure
            up, down = measure(j, val), measure(j, -val)
            cands.append(cand(j, output=(up - down) / 2, concept_up=up, concept_down=down))
        best = max(cands, key=lambda c: abs(c["output"]))
        i, s = best["latent"], (1.0 if best["output"] >= 0 else -1.0)
        return SaeChoice(arch, i, i, s, -s, unit(i), unit(i),
                         {"rule": rule, "reference": reference, "candidates": cands})
    if rule != "output":
        key = eff if rule == "effect" else cos
        a, b = _top(key, 1)[0], _top(-key, 1)[0]
        pool = list(dict.fromkeys(_top(eff, n) + _top(cos, n) + _top(-eff, n) + _top(-cos, n)))
        return SaeChoice(arch, a, b, 1.0, 1.0, unit(a), unit(b),
                         {"rule": rule, "candidates": [cand(j) for j in pool]})
    pool = list(dict.fromkeys(_top(eff, n) + _top(cos, n) + _top(-eff, n) + _top(-cos, n)))
    cands = [cand(j, output=measure(j, 1.0 / max(unit(j), 1e-12)) - reference) for j in pool]
    by = sorted(cands, key=lambda c: c["output"], reverse=True)
    a = by[0]["latent"]
    b = next(c["latent"] for c in reversed(by) if c["latent"] != a)
    return SaeChoice(arch, a, b, 1.0, 1.0, unit(a), unit(b),
                     {"rule": rule, "reference": reference, "candidates": cands})


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
