"""The claim-1 ablations' table (``ablation.md``): the plain k 32 recipe against AuxK active
(``aux``) and training without each context's first position (``nosink``), TopK and AbsTopK,
at 1M tokens (the ``ablation`` step) and 10M tokens (``nosink-10M``), on the test split.

Rows are the dicts of :func:`abstopk.experiments.claim1_ablation.ablation_rows` (``tokens,
variant, architecture, seed, nmse, fvu, l0, dead_fraction`` over all test rows, the same with
``_pos1`` over the rows at context positions ≥ 1, and — for plain and nosink runs —
``loss_recovered_pos1`` / ``loss_recovered_mean_ablation_pos1``: loss recovered with each
context's first position kept clean). Groups (tokens, variant, architecture) give the mean
over seeds; the gaps pair AbsTopK and TopK by seed within (tokens, variant): ``Δ = AbsTopK −
TopK`` of nmse at positions ≥ 1, absolute and in % of TopK's, and of loss recovered at
positions ≥ 1, mean ± standard error over the paired seeds (± 0 for one seed: no spread).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from .claim1_report import _f, _mean_se, _ms
from .tables import markdown_table

__all__ = ["ablation_gaps", "ablation_groups", "write_ablation_report"]

VARIANTS = ("plain", "aux", "nosink")
TOKENS = ("0.1M", "1M", "10M")
_METRICS = ("nmse", "nmse_pos1", "fvu_pos1", "l0", "dead_fraction", "loss_recovered_pos1",
            "loss_recovered_mean_ablation_pos1")


def _tokens(r: dict[str, Any]) -> str:
    return r.get("tokens", "1M")


def _keys(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (tokens, variant) pairs present, tokens then variants in their order."""
    have = {(_tokens(r), r["variant"]) for r in rows}
    order = [t for t in TOKENS] + sorted({t for t, _ in have} - set(TOKENS))
    return [(t, v) for t in order for v in VARIANTS if (t, v) in have]


def ablation_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds of :data:`_METRICS` per (tokens, variant, architecture): tokens
    ascending, variants in the order plain, aux, nosink (a metric no row has: nan)."""
    out = []
    for t, v in _keys(rows):
        for arch in ("topk", "abstopk"):
            rs = [r for r in rows if _tokens(r) == t and r["variant"] == v
                  and r["architecture"] == arch]
            if not rs:
                continue
            g: dict[str, Any] = {"tokens": t, "variant": v, "architecture": arch,
                                 "seeds": sorted(r["seed"] for r in rs)}
            for m in _METRICS:
                g[m] = _ms([r.get(m) for r in rs])[0]
            out.append(g)
    return out


def ablation_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """AbsTopK − TopK per (tokens, variant), paired by seed: in nmse at positions ≥ 1
    (``gap``, ``se``; ``rel_gap``, ``rel_se`` in % of TopK's) and in loss recovered at
    positions ≥ 1 (``lr_gap``, ``lr_se``: nan unless both of a pair have it), ``seeds``."""
    by = {(_tokens(r), r["variant"], r["architecture"], r["seed"]): r for r in rows}
    out = []
    for t, v in _keys(rows):
        seeds = sorted(s for (tt, var, a, s) in by if (tt, var, a) == (t, v, "abstopk")
                       and (t, v, "topk", s) in by)
        if not seeds:
            continue
        pairs = [(by[(t, v, "abstopk", s)], by[(t, v, "topk", s)]) for s in seeds]
        d = [a["nmse_pos1"] - b["nmse_pos1"] for a, b in pairs]
        rel = [100.0 * x / b["nmse_pos1"] for x, (_, b) in zip(d, pairs, strict=True)]
        lr = [a["loss_recovered_pos1"] - b["loss_recovered_pos1"] for a, b in pairs
              if "loss_recovered_pos1" in a and "loss_recovered_pos1" in b]
        (m, se, _), (rm, rse, _) = _mean_se(d), _mean_se(rel)
        lm, lse, _ = _mean_se(lr) if len(lr) == len(pairs) else (float("nan"),) * 3
        out.append({"tokens": t, "variant": v, "seeds": seeds, "gap": m, "se": se,
                    "rel_gap": rm, "rel_se": rse, "lr_gap": lm, "lr_se": lse})
    return out


def write_ablation_report(out: Path, rows: list[dict[str, Any]], *, layer: int) -> None:
    """``out/ablation.md``: the group table and the gap table (atomically)."""
    md = [f"# Claim 1, layer {layer}: the k 32 runs under two ablations (test split)\n\n",
          "plain: the plan's recipe (AuxK never starts: dead window = the run's length); "
          "aux: AuxK active (dead after 10 % of the run's tokens without firing); nosink: "
          "trained without each context's first position. `pos ≥ 1`: the test rows at "
          "context positions ≥ 1 (each context's first row, the attention sink, left out); "
          "loss recovered (pos ≥ 1): the SAE spliced at positions ≥ 1 only, each context's "
          "first position kept clean in the spliced and ablated runs (plain and nosink "
          "runs). Mean over seeds.\n\n"]
    md.append(markdown_table(
        ["tokens", "variant", "architecture", "seeds", "nmse (all rows)", "nmse (pos ≥ 1)",
         "fvu (pos ≥ 1)", "L0", "dead fraction", "loss rec. (pos ≥ 1)",
         "loss rec. mean abl. (pos ≥ 1)"],
        [[g["tokens"], g["variant"], g["architecture"], ",".join(map(str, g["seeds"])),
          _f(g["nmse"]), _f(g["nmse_pos1"]), _f(g["fvu_pos1"]), _f(g["l0"], 1),
          _f(g["dead_fraction"], 3), _f(g["loss_recovered_pos1"]),
          _f(g["loss_recovered_mean_ablation_pos1"])]
         for g in ablation_groups(rows)]))
    gaps = ablation_gaps(rows)
    if gaps:
        md.append("\nAbsTopK − TopK at positions ≥ 1, paired by seed (± standard error; "
                  "± 0 for one seed):\n\n")
        md.append(markdown_table(
            ["tokens", "variant", "seeds", "Δ nmse", "Δ nmse (% of TopK)", "Δ loss rec."], [
                [g["tokens"], g["variant"], ",".join(map(str, g["seeds"])),
                 f"{_f(g['gap'])} ± {_f(g['se'])}",
                 f"{_f(g['rel_gap'], 1)} ± {_f(g['rel_se'], 1)}",
                 "" if g["lr_gap"] != g["lr_gap"] else f"{_f(g['lr_gap'])} ± {_f(g['lr_se'])}"]
                for g in gaps]))
    atomic_write_bytes(out / "ablation.md", "".join(md).encode())
