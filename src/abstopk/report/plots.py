"""Plots (matplotlib, Agg backend: no display needed), written atomically as PNG.

:func:`plot_sweep` draws the paper's Figure 3 from sweep rows
(:func:`abstopk.experiments.sweep.run_sweep`): two panels, NMSE versus L0 and loss recovered
versus L0. One solid line per architecture for the SAEs trained at each sparsity; points are the mean over seeds with error bars of ±1 std (sample
std over seeds) in both L0 and the metric. TopK/AbsTopK SAEs evaluated at another k at
inference (no retraining) are drawn as dashed lines of the same colour.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["COLORS", "plot_sweep"]

COLORS = {
    "topk": "#1f77b4", "abstopk": "#d62728", "jumprelu": "#2ca02c", "absjumprelu": "#9467bd",
    "relu": "#7f7f7f", "batchtopk": "#17becf", "batchabstopk": "#ff7f0e",
}


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def _stats(vals: list[float]) -> tuple[float, float]:
    v = [x for x in vals if not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def _curves(rows: list[dict[str, Any]], metric: str, mode: str
            ) -> dict[str, list[tuple[float, float, float, float]]]:
    """{architecture: [(l0_mean, l0_std, metric_mean, metric_std), ...] sorted by L0}."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    if mode == "inference_k":
        # the dashed curve passes through the SAE at the k it was trained with
        refs = {(str(r["architecture"]), _num(r.get("sparsity"))) for r in rows
                if r.get("mode") == "inference_k"}
        for r in rows:
            key = (str(r["architecture"]), _num(r.get("sparsity")))
            if r.get("mode") == "trained" and key in refs:
                groups.setdefault(key, []).append(r)
    for r in rows:
        if r.get("mode") != mode:
            continue
        key_sp = _num(r.get("k_eval")) if mode == "inference_k" else _num(r.get("sparsity"))
        groups.setdefault((str(r["architecture"]), key_sp), []).append(r)
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for (arch, _), rs in groups.items():
        lm, ls = _stats([_num(r.get("l0")) for r in rs])
        mm, ms = _stats([_num(r.get(metric)) for r in rs])
        if math.isnan(lm) or math.isnan(mm):
            continue
        out.setdefault(arch, []).append((lm, ls, mm, ms))
    for v in out.values():
        v.sort()
    return out


def plot_sweep(rows: list[dict[str, Any]], path: str | Path, *, title: str | None = None,
               dpi: int = 110) -> Path:
    """Draw NMSE vs L0 and loss recovered vs L0 from sweep ``rows`` into the PNG ``path``.

    ``rows``: dicts with ``architecture``, ``mode`` ("trained" / "inference_k"), ``sparsity``,
    ``k_eval``, ``l0``, ``nmse`` and optionally ``loss_recovered`` (as written to sweep.csv).
    The loss-recovered panel says so when no row has it. Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..files import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("nmse", "NMSE  ‖x − x̂‖² / ‖x‖²  (lower is better)"),
              ("loss_recovered", "loss recovered (higher is better)"))
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        drew = False
        for mode, style in (("trained", "-"), ("inference_k", "--")):
            for arch, pts in sorted(_curves(rows, metric, mode).items()):
                xs, xe, ys, ye = zip(*pts, strict=True)
                label = arch if mode == "trained" else f"{arch} (k at inference)"
                ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt="o" + style, ms=4, capsize=3,
                            color=COLORS.get(arch), label=label,
                            alpha=1.0 if mode == "trained" else 0.6)
                drew = True
        ax.set_xlabel("L0 (active latents per token, held-out)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        if drew:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {metric} values", ha="center", va="center",
                    transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
