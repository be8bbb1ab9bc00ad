"""The claim-1 ablation's table (``ablation.md``): the plain 1M-token k 32 recipe against AuxK
active (``aux``) and training without each context's first position (``nosink``), TopK and
AbsTopK, on the test split.

Rows are the ``eval_ablation.json`` dicts of :meth:`abstopk.experiments.claim1` 's ablation
step (``variant, architecture, seed, nmse, fvu, l0, dead_fraction`` over all test rows and the
same with ``_pos1`` over the rows at context positions ≥ 1). Groups (variant, architecture)
give the mean over seeds; the gap pairs AbsTopK and TopK by seed within a variant:
``Δ = AbsTopK − TopK`` of nmse at positions ≥ 1, absolute and in % of TopK's, mean ±
standard error over the paired seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from .claim1_report import _f, _mean_se, _ms
from .tables import markdown_table

__all__ = ["ablation_gaps", "ablation_groups", "write_ablation_report"]

VARIANTS = ("plain", "aux", "nosink")
_METRICS = ("nmse", "nmse_pos1", "fvu_pos1", "l0", "dead_fraction")


def ablation_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds of :data:`_METRICS` per (variant, architecture), variants in the order
    plain, aux, nosink."""
    out = []
    for v in VARIANTS:
        for arch in ("topk", "abstopk"):
            rs = [r for r in rows if r["variant"] == v and r["architecture"] == arch]
            if not rs:
                continue
            g: dict[str, Any] = {"variant": v, "architecture": arch,
                                 "seeds": sorted(r["seed"] for r in rs)}
            for m in _METRICS:
                g[m] = _ms([r.get(m) for r in rs])[0]
            out.append(g)
    return out


def ablation_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """AbsTopK − TopK in nmse at positions ≥ 1 per variant, paired by seed: ``gap``, ``se``,
    ``rel_gap``, ``rel_se`` (in % of TopK's), ``seeds``."""
    by = {(r["variant"], r["architecture"], r["seed"]): r for r in rows}
    out = []
    for v in VARIANTS:
        seeds = sorted(s for (var, a, s) in by if var == v and a == "abstopk"
                       and (v, "topk", s) in by)
        if not seeds:
            continue
        d = [by[(v, "abstopk", s)]["nmse_pos1"] - by[(v, "topk", s)]["nmse_pos1"] for s in seeds]
        rel = [100.0 * x / by[(v, "topk", s)]["nmse_pos1"] for x, s in zip(d, seeds, strict=True)]
        (m, se, _), (rm, rse, _) = _mean_se(d), _mean_se(rel)
        out.append({"variant": v, "seeds": seeds, "gap": m, "se": se, "rel_gap": rm,
                    "rel_se": rse})
    return out


def write_ablation_report(out: Path, rows: list[dict[str, Any]], *, layer: int) -> None:
    """``out/ablation.md``: the group table and the gap table (atomically)."""
    md = [f"# Claim 1, layer {layer}: the 1M-token k 32 runs under two ablations (test split)\n\n",
          "plain: the plan's recipe (AuxK never starts: dead window = the run's length); "
          "aux: AuxK active (dead after 10 % of the run's tokens without firing); nosink: "
          "trained without each context's first position. `pos ≥ 1`: the test rows at "
          "context positions ≥ 1 (each context's first row, the attention sink, left out). "
          "Mean over seeds.\n\n"]
    md.append(markdown_table(
        ["variant", "architecture", "seeds", "nmse (all rows)", "nmse (pos ≥ 1)",
         "fvu (pos ≥ 1)", "L0", "dead fraction"],
        [[g["variant"], g["architecture"], ",".join(map(str, g["seeds"])), _f(g["nmse"]),
          _f(g["nmse_pos1"]), _f(g["fvu_pos1"]), _f(g["l0"], 1), _f(g["dead_fraction"], 3)]
         for g in ablation_groups(rows)]))
    gaps = ablation_gaps(rows)
    if gaps:
        md.append("\nAbsTopK − TopK in nmse (pos ≥ 1), paired by seed (± standard error):\n\n")
        md.append(markdown_table(["variant", "seeds", "Δ nmse", "Δ nmse (% of TopK)"], [
            [g["variant"], ",".join(map(str, g["seeds"])), f"{_f(g['gap'])} ± {_f(g['se'])}",
             f"{_f(g['rel_gap'], 1)} ± {_f(g['rel_se'], 1)}"] for g in gaps]))
    atomic_write_bytes(out / "ablation.md", "".join(md).encode())
