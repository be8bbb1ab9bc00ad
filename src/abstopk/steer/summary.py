"""From a steering run's records to its tables: dose–response points, the dev-chosen operating
point of each method and direction, its test scores with bootstrap CIs, and sign symmetry.

Per continuation (a cell: prompt × generation seed) of a condition with wanted sign σ:
concept01 = (σ·score + 1)/2, fluency01 = min(1, ppl₀ / ppl), capability01 =
min(1, exp(L₀ − L)), and H their harmonic mean (:mod:`~abstopk.steer.stats`); ppl₀ is the
median perplexity of the unsteered continuations of the same axis and split.

Operating point (the rule): for each method and direction (σ = +1: towards end A, strengths
> 0; σ = −1: towards end B, strengths < 0), the strength with the highest mean H on the
**dev** prompts (ties: the smaller |strength|). Its **test** scores are reported. A method
"steers" a direction when the test CI of its mean concept score lies entirely beyond the
unsteered mean in the wanted direction. Multiple-choice accuracy (when measured) is a cost
column beside the held-out loss, with a bootstrap CI over questions; it does not enter H (so
the rule is the same with and without the benchmark). Sign symmetry: Spearman ρ of strength against the mean
test concept score over the method's strengths and the unsteered row at 0.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from .stats import bootstrap_ci, capability01, concept01, fluency01, harmonic_mean, spearman

__all__ = ["merge_results", "summarize"]


_SAME = ("layer", "strengths", "n_prompts", "seeds", "max_new_tokens", "temperature",
         "top_p", "positions", "latent_mode", "latent_rule", "candidates", "effect_strength",
         "n_train", "capability_contexts", "capability_context_size", "magnitude_tokens",
         "mc_tasks", "mc_questions", "seed")


def merge_results(first: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    """One result from runs of the same settings that differ only in their axes and methods
    (one run per axis, or an SAE trained later run with ``none`` and itself). Every run draws
    the same random numbers for the same (prompt, generation seed) and derives the same
    directions, so their rows are comparable; the rows of an (axis, method) are taken from
    the first run that has them. Raises ``ValueError`` when another setting differs."""
    out: dict[str, Any] = {"config": dict(first["config"], axes=[], methods=[]), "axes": [],
                           "records": [], "conditions": []}
    if "provenance" in first:
        out["provenance"] = first["provenance"]
    have: set[tuple[str, str]] = set()
    for r in (first, *more):
        diff = [k for k in _SAME if r["config"].get(k) != first["config"].get(k)]
        if diff:
            raise ValueError(f"runs differ in {', '.join(diff)}: cannot merge")
        new = {(c["axis"], c["method"]) for c in r["conditions"]} - have
        out["records"] += [x for x in r["records"] if (x["axis"], x["method"]) in new]
        out["conditions"] += [c for c in r["conditions"] if (c["axis"], c["method"]) in new]
        by = {a["axis"]: a for a in out["axes"]}
        for a in r["axes"]:
            if a["axis"] not in by:
                out["axes"].append(dict(a, latents={}))
                by[a["axis"]] = out["axes"][-1]
            by[a["axis"]]["latents"].update(
                {m: v for m, v in a["latents"].items() if (a["axis"], m) in new})
        for key, vals in (("axes", r["config"]["axes"]), ("methods", r["config"]["methods"])):
            out["config"][key] += [v for v in vals if v not in out["config"][key]]
        have |= new
    return out


def _table(recs: list[dict], key: str) -> list[list[float]]:
    """[prompts, seeds] of ``key`` (prompts in id order; generation seeds in order)."""
    by: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in recs:
        by[r["prompt_id"]].append((r["seed"], r[key]))
    return [[v for _, v in sorted(by[p])] for p in sorted(by)]


def _ppl(r: dict) -> float:
    return math.exp(r["nll"]) if math.isfinite(r["nll"]) else math.inf


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Adds nothing to ``result``; returns {"points", "operating_points", "symmetry"}."""
    n_boot, seed = result["config"]["n_boot"], result["config"]["seed"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in result["records"]:
        groups[(r["axis"], r["split"], r["method"], r["strength"])].append(r)
    loss = {(c["axis"], c["method"], c["strength"]): (c["capability_loss"],
                                                     c["capability_loss_ref"])
            for c in result["conditions"]}
    mc: dict[tuple, dict] = {}
    for c in result["conditions"]:
        if c.get("mc_correct"):
            m, lo, hi = bootstrap_ci([[x] for x in c["mc_correct"]], n_boot=n_boot, seed=seed)
            mc[(c["axis"], c["method"], c["strength"])] = {
                "mc_accuracy": m, "mc_lo": lo, "mc_hi": hi,
                "mc_delta": m - c["mc_accuracy_ref"], "mc_n": len(c["mc_correct"])}
    ppl_ref = {}
    for (axis, split, method, _s), recs in groups.items():
        if method == "none":
            finite = [_ppl(r) for r in recs if math.isfinite(_ppl(r))]
            ppl_ref[(axis, split)] = statistics.median(finite) if finite else math.nan

    def cell_h(r: dict, sign: int) -> float:
        L, L0 = loss[(r["axis"], r["method"], r["strength"])]
        return harmonic_mean([concept01(r["concept"], sign),
                              fluency01(_ppl(r), ppl_ref[(r["axis"], r["split"])]),
                              capability01(L, L0)])

    points = []
    for (axis, split, method, s), recs in sorted(groups.items(), key=lambda kv: kv[0]):
        mean, lo, hi = bootstrap_ci(_table(recs, "concept"), n_boot=n_boot, seed=seed)
        L, L0 = loss[(axis, method, s)]
        ppls = [_ppl(r) for r in recs]
        points.append({"axis": axis, "split": split, "method": method, "strength": s,
                       "latent": recs[0]["latent"], "concept": mean, "concept_lo": lo,
                       "concept_hi": hi, "ppl_median": statistics.median(ppls),
                       "distinct2": statistics.fmean(r["distinct2"] for r in recs),
                       "repetition3": statistics.fmean(r["repetition3"] for r in recs),
                       "capability_loss": L, "capability_loss_delta": L - L0, "n": len(recs),
                       **mc.get((axis, method, s), {})})
    base = {(p["axis"], p["split"]): p for p in points if p["method"] == "none"}
    ops = []
    for axis in dict.fromkeys(p["axis"] for p in points):
        methods = dict.fromkeys(p["method"] for p in points if p["axis"] == axis)
        for method in methods:
            if method == "none":
                continue
            for sign in (1, -1):
                cands = [s for (a, sp, m, s) in groups if a == axis and sp == "dev"
                         and m == method and s * sign > 0]
                if not cands:
                    continue
                dev_h = {s: statistics.fmean(cell_h(r, sign) for r in
                                             groups[(axis, "dev", method, s)]) for s in cands}
                best = max(sorted(cands, key=abs), key=lambda s: dev_h[s])
                test = groups[(axis, "test", method, best)]
                h = [[cell_h(r, sign) for r in row] for row in _grouped(test)]
                pt = next(p for p in points if (p["axis"], p["split"], p["method"],
                                                p["strength"]) == (axis, "test", method, best))
                hm, hlo, hhi = bootstrap_ci(h, n_boot=n_boot, seed=seed)
                b = base[(axis, "test")]["concept"]
                steers = pt["concept_lo"] > b if sign > 0 else pt["concept_hi"] < b
                ops.append({**pt, "sign": sign, "dev_h": dev_h[best], "h": hm, "h_lo": hlo,
                            "h_hi": hhi, "concept_none": b, "steers": bool(steers)})
    sym = []
    for axis in dict.fromkeys(p["axis"] for p in points):
        b = base[(axis, "test")]["concept"]
        for method in dict.fromkeys(p["method"] for p in points if p["axis"] == axis):
            if method in ("none", "prompt"):
                continue
            pts = [p for p in points if p["axis"] == axis and p["split"] == "test"
                   and p["method"] == method]
            xs = [0.0] + [p["strength"] for p in pts]
            ys = [b] + [p["concept"] for p in pts]
            latents = {p["latent"] for p in pts if p["latent"] is not None}
            mops = [o for o in ops if o["axis"] == axis and o["method"] == method]
            sym.append({"axis": axis, "method": method, "spearman": spearman(xs, ys),
                        "n_latents": len(latents),
                        "both_ways": len(mops) == 2 and all(o["steers"] for o in mops)})
    return {"points": points, "operating_points": ops, "symmetry": sym}


def _grouped(recs: list[dict]) -> list[list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by[r["prompt_id"]].append(r)
    return [sorted(by[p], key=lambda r: r["seed"]) for p in sorted(by)]
