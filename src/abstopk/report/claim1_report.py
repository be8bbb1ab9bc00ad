"""The claim-1 pipeline's summary: a Markdown + CSV table of the finished SAEs, the scaling
plot (AbsTopK − TopK gap in test nmse, in % of TopK's, and in loss recovered against
training tokens) and the frontier plot (the paper's Figure 3 at the largest token count:
test nmse and loss recovered against test L0, one line per architecture over its k values).

Rows are plain dicts as written to ``eval_test.json`` (``architecture, k, tokens,
train_tokens, seed, lr, nmse, fvu, l0, loss_recovered, loss_recovered_mean_ablation, kl``;
loss recovered against zero ablation, the paper's, and against mean ablation) plus the run's ``layer`` (the
first column of ``claim1.csv``; the heading and the plot title state it too). Groups (architecture, k,
tokens) report mean ± standard deviation over seeds (n = number of seeds). The gap at a
token count pairs TopK and AbsTopK by seed (same seed = same data order and init seed) and
reports the mean gap ± its standard error over the paired seeds; the same pairing is made
for each signed operator and its unsigned twin (:data:`PAIRS`) at every k. A partial run
(fewer SAEs than planned) is marked as such in the heading of every output.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from .tables import markdown_table, write_csv

__all__ = ["PAIRS", "all_gap_rows", "gap_rows", "group_rows", "plot_frontier", "plot_gap_scaling",
           "write_claim1_report"]

COLUMNS = ["layer", "run", "architecture", "k", "tokens", "train_tokens", "seed", "lr", "nmse",
           "fvu", "l0", "loss_recovered", "loss_recovered_mean_ablation", "kl", "lr_contexts"]


def _ms(vals: list[float]) -> tuple[float, float, int]:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan"), 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def _mean_se(vals: list[float]) -> tuple[float, float, int]:
    """(mean, standard error = sd/√n (0 for one value), n) of the finite ``vals``."""
    m, sd, n = _ms(vals)
    return m, (sd / math.sqrt(n) if n > 1 else 0.0), n


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/sd over seeds per (architecture, k, tokens), sorted by tokens then name."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["architecture"], r["k"], r["train_tokens"]), []).append(r)
    out = []
    for (arch, k, tokens), rs in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0],
                                                                        kv[0][1])):
        g: dict[str, Any] = {"architecture": arch, "k": k, "train_tokens": tokens,
                             "lr": rs[0].get("lr"), "seeds": sorted(r["seed"] for r in rs)}
        for m in ("nmse", "fvu", "l0", "loss_recovered", "loss_recovered_mean_ablation", "kl"):
            g[m], g[m + "_sd"], g["n"] = _ms([r.get(m) for r in rs])
        out.append(g)
    return out


#: (signed, unsigned) operators compared by seed, with the label of their difference
PAIRS = {("abstopk", "topk"): "AbsTopK − TopK",
         ("batchabstopk", "batchtopk"): "batch AbsTopK − BatchTopK"}


def gap_rows(rows: list[dict[str, Any]], k: int = 32,
             pair: tuple[str, str] = ("abstopk", "topk")) -> list[dict[str, Any]]:
    """``pair[0]`` − ``pair[1]`` (AbsTopK − TopK by default) at each training-token count (k
    given), paired by seed: ``nmse_gap``, ``loss_recovered_gap`` (mean of the per-seed
    differences) with ``_se`` (standard error over the seeds, 0 for one seed),
    ``nmse_rel_gap`` / ``nmse_rel_se`` (the per-seed difference in % of ``pair[1]``'s nmse),
    ``n`` seeds, and ``pair``, ``k``."""
    signed, unsigned = pair
    by = {(r["architecture"], r["train_tokens"], r["seed"]): r for r in rows if r["k"] == k}
    out = []
    for tokens in sorted({t for (_, t, _) in by}):
        seeds = sorted(s for (a, t, s) in by if a == signed and t == tokens
                       and (unsigned, t, s) in by)
        if not seeds:
            continue
        g: dict[str, Any] = {"pair": pair, "k": k, "train_tokens": tokens, "seeds": seeds}
        pairs = [(by[(signed, tokens, s)], by[(unsigned, tokens, s)]) for s in seeds]
        for m in ("nmse", "loss_recovered"):
            d = [a.get(m) - t.get(m) for a, t in pairs
                 if a.get(m) is not None and t.get(m) is not None]
            g[m + "_gap"], g[m + "_se"], g["n"] = _mean_se(d)
        # the relative nmse gap, (AbsTopK − TopK) / TopK per seed, in % of TopK's nmse
        rel = [100.0 * (a["nmse"] - t["nmse"]) / t["nmse"] for a, t in pairs
               if a.get("nmse") is not None and t.get("nmse")]
        g["nmse_rel_gap"], g["nmse_rel_se"], _ = _mean_se(rel)
        out.append(g)
    return out


def all_gap_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`gap_rows` of every pair of :data:`PAIRS` at every k of ``rows``, in the order
    pair, k, training tokens."""
    return [g for pair in PAIRS for k in sorted({r["k"] for r in rows})
            for g in gap_rows(rows, k, pair)]


def _f(v: Any, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) \
        else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_claim1_report(out: Path, rows: list[dict[str, Any]], sweep: list[dict[str, Any]], *,
                        n_planned: int, layer: int = 6) -> None:
    """``out/claim1.md``, ``out/claim1.csv``, ``out/scaling.png`` (when ≥ 1 AbsTopK − TopK gap
    point at k 32) and ``out/frontier.png`` (see :func:`plot_frontier`) of
    the run on ``layer`` (``resid_post``)."""
    partial = len(rows) < n_planned
    head = (f"**PARTIAL: {len(rows)} of {n_planned} planned SAEs evaluated on test.**\n\n"
            if partial else f"All {n_planned} planned SAEs evaluated on test.\n\n")
    md = [f"# Claim 1 at scale, layer {layer} `resid_post`: test-split results\n", head]
    if sweep:
        md.append("## Learning-rate sweeps (validation split: 1M tokens, then the 10M check)\n\n")
        md.append(markdown_table(["train tokens", "architecture", "lr", "val nmse", "val fvu",
                                  "L0"], [
            [f"{r['train_tokens']:,}", r["architecture"], f"{r['lr']:g}", _f(r["nmse"]),
             _f(r["fvu"]), _f(r["l0"], 1)]
            for r in sorted(sweep, key=lambda r: (r["train_tokens"], r["architecture"],
                                                  r["lr"] or 0))]))
    groups = group_rows(rows)
    md.append("\n## Test split (mean ± sd over seeds)\n\n")
    md.append(markdown_table(
        ["architecture", "k / L0 target", "train tokens", "lr", "seeds", "nmse", "fvu", "L0",
         "loss rec. (zero abl.)", "loss rec. (mean abl.)", "KL"],
        [[g["architecture"], str(g["k"]), f"{g['train_tokens']:,}", _f(g["lr"], 5),
          ",".join(map(str, g["seeds"])),
          f"{_f(g['nmse'])} ± {_f(g['nmse_sd'])}", f"{_f(g['fvu'])} ± {_f(g['fvu_sd'])}",
          _f(g["l0"], 1), f"{_f(g['loss_recovered'])} ± {_f(g['loss_recovered_sd'])}",
          f"{_f(g['loss_recovered_mean_ablation'])} ± "
          f"{_f(g['loss_recovered_mean_ablation_sd'])}",
          _f(g["kl"])] for g in groups]))
    every_gap = all_gap_rows(rows)
    if every_gap:
        md.append("\n## Signed − unsigned operator (paired by seed; ± standard error)\n\n")
        md.append(markdown_table(
            ["pair", "k", "train tokens", "seeds", "Δ nmse", "Δ nmse (% of unsigned)",
             "Δ loss recovered"], [
                [PAIRS[g["pair"]], str(g["k"]), f"{g['train_tokens']:,}",
                 ",".join(map(str, g["seeds"])), f"{_f(g['nmse_gap'])} ± {_f(g['nmse_se'])}",
                 f"{_f(g['nmse_rel_gap'], 1)} ± {_f(g['nmse_rel_se'], 1)}",
                 f"{_f(g['loss_recovered_gap'])} ± {_f(g['loss_recovered_se'])}"]
                for g in every_gap]))
    gaps = [g for g in every_gap if g["pair"] == ("abstopk", "topk") and g["k"] == 32]
    atomic_write_bytes(out / "claim1.md", "".join(md).encode())
    write_csv(sorted(({"layer": layer, **r} for r in rows), key=lambda r: r["run"]), COLUMNS,
              out / "claim1.csv")
    if gaps:
        _plot(gaps, out / "scaling.png", partial, layer)
    plot_frontier(rows, out / "frontier.png", layer=layer, partial=partial)


def _plot(gaps: list[dict[str, Any]], path: Path, partial: bool, layer: int) -> None:
    plot_gap_scaling({layer: gaps}, path, title=(
        f"SmolLM2-135M-Instruct (Q4_1) layer {layer}, k 32, d_sae 4608"
        + (" — PARTIAL" if partial else "")))


def plot_gap_scaling(series: dict[int, list[dict[str, Any]]], path: Path, *, title: str) -> None:
    """Two panels against training tokens (log x), one line per layer of ``series``
    (layer → :func:`gap_rows`): the nmse gap in % of TopK's nmse and the loss-recovered gap
    (zero ablation), each mean ± standard error over paired seeds; written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    panels = ((axes[0], "nmse_rel_gap", "nmse_rel_se",
               "Δ nmse, % of TopK's (< 0: AbsTopK better)"),
              (axes[1], "loss_recovered_gap", "loss_recovered_se",
               "Δ loss recovered (> 0: AbsTopK better)"))
    for ax, key, se, label in panels:
        for layer, gaps in sorted(series.items()):
            ax.errorbar([g["train_tokens"] for g in gaps], [g[key] for g in gaps],
                        yerr=[g[se] for g in gaps], marker="o", capsize=3,
                        label=f"layer {layer}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens per SAE")
        ax.set_ylabel(label, fontsize=8)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_frontier(rows: list[dict[str, Any]], path: Path, *, layer: int,
                  partial: bool = False) -> bool:
    """The paper's Figure 3 from the test ``rows`` at their largest training-token count: test
    nmse and loss recovered against test L0, one line per architecture through its k values
    (mean ± sd over seeds), drawn by :func:`~abstopk.report.plots.plot_sweep` into ``path``.
    Nothing is drawn (returns False) unless that token count has two architectures."""
    from .plots import plot_sweep

    if not rows:
        return False
    tokens = max(r["train_tokens"] for r in rows)
    top = [r for r in rows if r["train_tokens"] == tokens]
    if len({r["architecture"] for r in top}) < 2:
        return False
    plot_sweep([{**r, "mode": "trained", "sparsity": r["k"]} for r in top], path, title=(
        f"SmolLM2-135M-Instruct (Q4_1) layer {layer} resid_post, {tokens:,} training tokens per "
        f"SAE; test split" + (" — PARTIAL" if partial else "")))
    return True
