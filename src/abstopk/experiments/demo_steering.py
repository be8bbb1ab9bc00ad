"""The demo's steering stage: one concept axis, DiM vs the demo's AbsTopK latent vs its TopK pair.

Reads the pipeline's SAEs (``OUT/pipeline/pipeline.json``: the first seed's AbsTopK and TopK
at the matched L0, at the pipeline's layer) and runs :func:`abstopk.steer.run_steer` at a
small size (:data:`DEMO_STEER`): the **register** axis (literary ↔ technical, the axis whose
difference-in-means separates held-out paragraphs best, AUC ≈ 1 at layer 6, so the
supervised reference works and the SAE latents have something to match), methods none, DiM,
AbsTopK (one signed latent) and TopK (a pair), strengths ±1 m, 3 dev + 3 test prompts × 2
generation seeds, 12 new tokens, latents chosen by standardised activation difference (the
cheap rule; ``abstopk steer`` defaults to output effect). Writes

* ``OUT/steering.json`` — the report section (``{"title", "reading", "rows", "columns",
  "latents", "site"}``, :mod:`abstopk.experiments.demo_report`): per method and strength the
  mean test concept score with its bootstrap CI over prompts × seeds, perplexity and Δ loss;
* ``OUT/steering.md`` — the full steering tables (:func:`abstopk.report.steer_report.steer_markdown`);
* ``OUT/steering_run.json`` — every continuation with its scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEMO_STEER", "demo_steer_config", "run_demo_steering"]

#: the stage's SteerConfig settings (besides the layer), chosen to keep it ≤ ~2 min on 2 cores
DEMO_STEER: dict[str, Any] = dict(
    axes=["register"], methods=["none", "dim", "abstopk", "topk"], strengths=[-1.0, 1.0],
    n_prompts=3, seeds=2, max_new_tokens=12, n_train=32, capability_contexts=2,
    capability_context_size=32, magnitude_tokens=1024, latent_rule="effect", n_boot=500)


def demo_steer_config(layer: int, quick: bool = False):
    from ..steer.config import SteerConfig

    kw = dict(DEMO_STEER)
    if quick:
        kw.update(n_prompts=2, max_new_tokens=8, n_train=16)
    return SteerConfig(layer=layer, **kw)


def _demo_saes(pipe: dict[str, Any]) -> dict[str, str]:
    """arch → SAE folder: the first seed's AbsTopK and TopK at the k closest to 32."""
    s = pipe.get("settings") or {}
    seed = (s.get("seeds") or [0])[0]
    k_ref = min(s.get("k_values") or [32], key=lambda k: (abs(k - 32), k))
    out = {}
    for r in (pipe.get("sweep") or {}).get("rows") or []:
        if (r.get("mode") == "trained" and r.get("seed") == seed and r.get("sae_dir")
                and float(r.get("sparsity", -1)) == float(k_ref)
                and r.get("architecture") in ("abstopk", "topk")):
            out[r["architecture"]] = r["sae_dir"]
    return out


def _reading(summary: dict[str, Any], info: dict[str, Any]) -> str:
    sym = {s["method"]: s for s in summary["symmetry"]}
    parts = []
    for m, name in (("dim", "DiM"), ("abstopk", "AbsTopK (1 latent)"), ("topk", "TopK (pair)")):
        if m in sym:
            s = sym[m]
            rho = "–" if s["spearman"] is None else f"{s['spearman']:+.2f}"
            parts.append(f"{name}: ρ {rho}, both ways {'yes' if s['both_ways'] else 'no'}")
    return (f"Register axis (literary ↔ technical; DiM held-out AUC {info['dim_auc']:.2f}), "
            "strengths ±1 m, 3 test prompts × 2 seeds: " + "; ".join(parts)
            + ". 'Both ways' = the test CI of the concept score clears the unsteered mean in "
            "each direction; with so few prompts the intervals are wide.")


def run_demo_steering(out: str | Path, *, quick: bool = False, console: Any = None,
                      loaded: tuple | None = None) -> dict[str, Any]:
    """Run the stage into ``out`` (module docstring); returns the report section."""
    import time

    from ..errors import UserError
    from ..files import atomic_write_bytes, atomic_write_json
    from ..lm import load_model
    from ..report.steer_report import steer_markdown
    from ..sae import load_sae
    from ..steer.run import run_steer
    from ..steer.summary import summarize
    from .demo import read_pipeline_results

    out = Path(out)
    say = console.print if console is not None else (lambda *a, **k: None)
    pipe = read_pipeline_results(out, "the steering stage steers with the pipeline's SAEs")
    paths = _demo_saes(pipe)
    if set(paths) != {"abstopk", "topk"}:
        raise UserError(f"{out / 'pipeline' / 'pipeline.json'} names no AbsTopK and TopK SAEs of the first seed at the "
                        "matched L0")
    layer = int(pipe["settings"]["layer"])
    cfg = demo_steer_config(layer, quick)
    t0 = time.perf_counter()
    model, tok, _ = loaded if loaded is not None else load_model(pipe["settings"]["model"])
    saes = {a: load_sae(p) for a, p in paths.items()}
    res = run_steer(model, tok, cfg, saes, progress=False,
                    log=lambda m: say(f"[dim]{m}[/dim]"))
    summary = summarize(res)
    info = res["axes"][0]
    rows = []
    for p in summary["points"]:
        if p["split"] != "test":
            continue
        rows.append({"method": p["method"], "strength": p["strength"],
                     "latent": "–" if p["latent"] is None else p["latent"],
                     "concept (test)": round(p["concept"], 3),
                     "95% CI": f"[{p['concept_lo']:+.2f}, {p['concept_hi']:+.2f}]",
                     "ppl (median)": round(p["ppl_median"], 2),
                     "Δ loss (nats)": round(p["capability_loss_delta"], 4)})
    order = {"none": 0, "dim": 1, "abstopk": 2, "topk": 3}
    rows.sort(key=lambda r: (order.get(r["method"], 9), r["strength"]))
    lat = info["latents"]
    latents = []
    for arch, site in (("abstopk", "dashboard"), ("topk", "dashboard-topk")):
        for i in dict.fromkeys((lat[arch]["pos"], lat[arch]["neg"])):
            page = out / site / "latents" / f"{i:06d}.html"
            latents.append({"index": i, "label": f"{arch} latent {i}",
                            "site": site if page.is_file() else None})
    section = {"title": "Steering: one signed AbsTopK latent vs a TopK pair vs DiM",
               "reading": _reading(summary, info), "columns": list(rows[0]) if rows else [],
               "rows": rows, "latents": latents, "site": None,
               "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "steering_run.json", {**res, "summary": summary})
    atomic_write_bytes(out / "steering.md", steer_markdown(res, summary).encode())
    atomic_write_json(out / "steering.json", section)
    say(section["reading"])
    say(f"steering stage: {section['seconds']:.0f} s; tables in {out / 'steering.md'}")
    return section
