"""Renders a steering comparison (:mod:`abstopk.steer.summary` rows): the Markdown report,
the terminal summary and the dose–response plot. Receives plain dicts only."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .plots import COLORS
from .tables import markdown_table

__all__ = ["dose_response_plot", "refusal_markdown", "steer_markdown", "steer_summary_rows"]

METHOD_COLORS = {**COLORS, "dim": "#000000", "prompt": "#8c564b", "none": "#bbbbbb"}


def _f(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{nd}f}" if isinstance(x, float) and nd >= 0 else str(x)


def _ci(p: Mapping, key: str) -> str:
    return f"{p[key]:+.2f} [{p[key + '_lo']:+.2f}, {p[key + '_hi']:+.2f}]"


def steer_summary_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the operating-point table: one row per axis × method × direction."""
    has_mc = any("mc_accuracy" in o for o in summary["operating_points"])
    header = ["axis", "method", "dir", "strength", "latent", "concept (test) [95% CI]",
              "unsteered", "steers", "ppl", "rep3", "Δ loss", "H [95% CI]"]
    if has_mc:
        header.append("MC acc [95% CI]")
    rows = []
    for o in summary["operating_points"]:
        rows.append([o["axis"], o["method"], "+" if o["sign"] > 0 else "−",
                     f"{o['strength']:+g}", "–" if o["latent"] is None else str(o["latent"]),
                     _ci(o, "concept"), f"{o['concept_none']:+.2f}",
                     "yes" if o["steers"] else "no", f"{o['ppl_median']:.1f}",
                     f"{o['repetition3']:.2f}", f"{o['capability_loss_delta']:+.3f}",
                     f"{o['h']:.2f} [{o['h_lo']:.2f}, {o['h_hi']:.2f}]"])
        if has_mc:
            rows[-1].append(f"{o['mc_accuracy']:.3f} [{o['mc_lo']:.3f}, {o['mc_hi']:.3f}]"
                            if "mc_accuracy" in o else "–")
    return header, rows


def _candidate_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every SAE's latent candidates with the three rankings' scores; * = the chosen one."""
    header = ["axis", "SAE", "rule", "latent", "cosine", "effect", "output effect", "unit c"]
    rows = []
    for a in result["axes"]:
        for m, v in a["latents"].items():
            chosen = {v["pos"], v["neg"]}
            for c in v.get("candidates", []):
                rows.append([a["axis"], m, str(v.get("rule", "effect")),
                             f"{c['latent']}{' *' if c['latent'] in chosen else ''}",
                             f"{c['cosine']:+.3f}", f"{c['effect']:+.3f}",
                             _f(c.get("output")), f"{c['unit']:.2f}" if "unit" in c else "–"])
    return header, rows


def _symmetry_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["axis", "method", "Spearman ρ (strength, concept)", "latents used",
              "steers both ways"]
    rows = [[s["axis"], s["method"], _f(s["spearman"]), str(s["n_latents"]) if
             s["method"] != "dim" else "– (1 direction)", "yes" if s["both_ways"] else "no"]
            for s in summary["symmetry"]]
    return header, rows


def steer_markdown(result: Mapping[str, Any], summary: Mapping[str, Any], *,
                   command: str = "", provenance: Mapping[str, Any] | None = None) -> str:
    """The Markdown report: set-up, axes, operating points, symmetry, dose–response table."""
    cfg = result["config"]
    out = ["# Steering comparison", ""]
    if command:
        out += ["```", command, "```", ""]
    for k, v in (provenance or {}).items():
        out.append(f"- {k}: {v}")
    out += [f"- layer {cfg['layer']} (resid_post), strengths {cfg['strengths']} × m (the DiM's "
            f"95th-percentile |projection| on held-out corpus tokens), positions "
            f"{cfg['positions']}, latent edits '{cfg['latent_mode']}' with the SAE error kept",
            f"- {cfg['n_prompts']} dev + {cfg['n_prompts']} test prompts per axis × "
            f"{cfg['seeds']} generation seeds (one generator per prompt and seed), "
            f"{cfg['max_new_tokens']} new tokens, temperature {cfg['temperature']}, top-p "
            f"{cfg['top_p']}, run seed {cfg['seed']}; {cfg['n_boot']} bootstrap replicates "
            f"(prompts × seeds)",
            f"- SAE latents chosen by rule '{cfg.get('latent_rule', 'effect')}'"
            + (f" (output effect at {cfg['effect_strength']:g} m on the dev prompts, generation "
               f"seed 0, among the top {cfg['candidates']} by effect and by cosine)"
               if cfg.get("latent_rule") == "output" else ""),
            f"- capability: held-out LM loss on {cfg['capability_contexts']} × "
            f"{cfg['capability_context_size']} tokens"
            + (f"; multiple choice (sum log-likelihood of each choice) on "
               f"{', '.join(cfg['mc_tasks'])}, first {cfg['mc_questions']} questions each"
               if cfg.get("mc_tasks") else ""), ""]
    out += ["## Axes", ""]
    ax_rows = []
    for a in result["axes"]:
        lat = "; ".join(f"{m}: {v['pos']}" + ("" if v["pos"] == v["neg"] else f"/{v['neg']}")
                        for m, v in a["latents"].items())
        ax_rows.append([a["axis"], f"{a['end_a']} ↔ {a['end_b']}", a["scorer"],
                        f"{a['dim_auc']:.3f}", f"{a['dim_norm']:.2f}", f"{a['scale']:.2f}",
                        lat or "–"])
    out += [markdown_table(["axis", "A ↔ B", "scorer", "DiM AUC (held-out)", "‖DiM‖", "m",
                            "latents (+/−)"], ax_rows), ""]
    mc_ref = next((c for c in result["conditions"] if c["method"] == "none"
                   and "mc_accuracy" in c), None)
    if mc_ref:
        out += [f"Unsteered multiple-choice accuracy {mc_ref['mc_accuracy']:.3f} over "
                f"{len(mc_ref['mc_correct'])} questions ("
                + ", ".join(f"{t} {a:.3f}" for t, a in mc_ref["mc_by_task"].items()) + ")", ""]
    cand = _candidate_rows(result)
    if cand[1]:
        out += ["## Latent candidates", "", markdown_table(*cand), ""]
    out += ["## Operating points (chosen on dev by mean H, reported on test)", ""]
    out += [markdown_table(*steer_summary_rows(summary)), ""]
    out += ["## Sign symmetry", ""]
    out += [markdown_table(*_symmetry_rows(summary)), ""]
    out += ["## Dose–response (test, mean concept score)", ""]
    strengths = sorted({p["strength"] for p in summary["points"]
                        if p["method"] not in ("none", "prompt")})
    rows = []
    for axis in dict.fromkeys(p["axis"] for p in summary["points"]):
        none = next(p for p in summary["points"] if p["axis"] == axis
                    and p["split"] == "test" and p["method"] == "none")
        for method in dict.fromkeys(p["method"] for p in summary["points"]):
            if method in ("none", "prompt"):
                continue
            pts = {p["strength"]: p for p in summary["points"] if p["axis"] == axis
                   and p["split"] == "test" and p["method"] == method}
            if pts:
                rows.append([axis, method] + [f"{pts[s]['concept']:+.2f}" if s in pts else "–"
                                              for s in strengths if s < 0]
                            + [f"{none['concept']:+.2f}"]
                            + [f"{pts[s]['concept']:+.2f}" if s in pts else "–"
                               for s in strengths if s > 0])
    out += [markdown_table(["axis", "method"] + [f"{s:+g}" for s in strengths if s < 0] + ["0"]
                           + [f"{s:+g}" for s in strengths if s > 0], rows), ""]
    return "\n".join(out)


def dose_response_plot(summary: Mapping[str, Any], path: str | Path, *,
                       split: str = "test", dpi: int = 120) -> Path:
    """One panel per axis: mean concept score (95% CI band) against signed strength, a line
    per method (the unsteered mean at 0 joins every line); prompt baseline as two markers."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..files import atomic_write_bytes

    points = [p for p in summary["points"] if p["split"] == split]
    axes = list(dict.fromkeys(p["axis"] for p in points))
    fig, axs = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.6), squeeze=False)
    for ax, axis in zip(axs[0], axes, strict=True):
        pts = [p for p in points if p["axis"] == axis]
        none = next(p for p in pts if p["method"] == "none")
        for method in dict.fromkeys(p["method"] for p in pts):
            if method == "none":
                continue
            mp = sorted([p for p in pts if p["method"] == method], key=lambda p: p["strength"])
            color = METHOD_COLORS.get(method)
            if method == "prompt":
                ax.errorbar([p["strength"] for p in mp], [p["concept"] for p in mp],
                            yerr=_yerr(mp), fmt="s", color=color, label="prompt (±1 = end)")
                continue
            mp = sorted(mp + [none], key=lambda p: p["strength"])
            xs = [p["strength"] for p in mp]
            ax.plot(xs, [p["concept"] for p in mp], "-o", ms=3, color=color, label=method)
            ax.fill_between(xs, [p["concept_lo"] for p in mp], [p["concept_hi"] for p in mp],
                            color=color, alpha=0.12, lw=0)
        ax.axhline(none["concept"], color="#999999", lw=0.8, ls=":")
        ax.set_title(axis)
        ax.set_xlabel("strength (× typical magnitude)")
        ax.set_ylim(-1.05, 1.05)
    axs[0][0].set_ylabel("concept score (+ = end A)")
    axs[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _yerr(mp: Sequence[Mapping]) -> list[list[float]]:
    return [[p["concept"] - p["concept_lo"] for p in mp], [p["concept_hi"] - p["concept"]
                                                           for p in mp]]


def refusal_markdown(res: Mapping[str, Any], *, provenance: Mapping[str, Any] | None = None
                     ) -> str:
    """The refusal table (the paper's Table 1 layout) and the per-layer DiM selection."""
    out = ["# Refusal steering", ""]
    for k, v in (provenance or {}).items():
        out.append(f"- {k}: {v}")
    n = res["data"]["n"]
    out += [f"- harmful: {res['data']['harmful']}; harmless: {res['data']['harmless']}; "
            f"train/dev/test per side {n['train']}/{n['dev']}/{n['test']}",
            f"- chosen layer {res['chosen_layer']} (typical magnitude m {res['scale']:.2f}); "
            f"refusal tokens {res['refusal_token_ids']}", "", "## Layer selection (dev)", ""]
    out += [markdown_table(["layer", "‖r‖", "harmful log-odds", "ablated", "harmless KL (ablated)"],
                           [[str(r["layer"]), f"{r['norm']:.2f}",
                             f"{r['harmful_logodds_none']:+.2f}",
                             f"{r['harmful_logodds_ablated']:+.2f}",
                             f"{r['kl_harmless_ablated']:.3f}"] for r in res["layers"]]), ""]
    out += ["## Test", ""]
    out += [markdown_table(
        ["method", "latent", "harmful refusal %", "harmful log-odds", "harmless refusal %",
         "harmless log-odds", "harmless KL"],
        [[r["method"], "–" if r["latent"] is None else str(r["latent"]),
          f"{100 * r['harmful_refusal']:.0f}", f"{r['harmful_logodds']:+.2f}",
          f"{100 * r['harmless_refusal']:.0f}", f"{r['harmless_logodds']:+.2f}",
          f"{r['harmless_kl']:.3f}"] for r in res["rows"]]), ""]
    return "\n".join(out)
