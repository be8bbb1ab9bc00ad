"""The table of ``abstopk eval``: one row per metric of an
:func:`abstopk.eval.run.evaluate_sae` result dict.

A metric with a bootstrap interval in the result (``{key}_ci = [lo, hi]``) is printed as
``value [lo, hi]``; the interval's level, resamples and seed follow in their own row.
"""

from __future__ import annotations

import math
from typing import Any

from .tables import rich_table

__all__ = ["METRIC_ROWS", "eval_rows", "fmt_value", "render_table"]

#: (result key, label, format) of the printed rows, in order
METRIC_ROWS = (
    ("mse", "MSE (per element)", "{:.5g}"),
    ("nmse", "normalised MSE", "{:.4f}"),
    ("explained_variance", "explained variance", "{:.4f}"),
    ("cosine", "cosine(x, x̂)", "{:.4f}"),
    ("l0", "L0 (z ≠ 0 per token)", "{:.2f}"),
    ("dead_fraction", "dead latents", "{:.2%}"),
    ("dense_fraction", "dense latents", "{:.2%}"),
    ("negative_firing_fraction", "negative firings", "{:.2%}"),
    ("n_bidirectional", "bidirectional latents", "{:d}"),
    ("ce_clean", "CE clean", "{:.4f}"),
    ("ce_spliced", "CE spliced", "{:.4f}"),
    ("ce_zero_ablated", "CE zero-ablated", "{:.4f}"),
    ("ce_mean_ablated", "CE mean-ablated", "{:.4f}"),
    ("loss_recovered", "loss recovered (zero ablation)", "{:.4f}"),
    ("loss_recovered_mean_ablation", "loss recovered (mean ablation)", "{:.4f}"),
    ("kl", "KL(clean ‖ spliced)", "{:.4f}"),
)


def fmt_value(fmt: str, v: Any) -> str:
    """``fmt.format(v)``; ``"—"`` for None, ``"nan"`` for NaN."""
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return fmt.format(v)


def eval_rows(result: dict[str, Any]) -> list[list[str]]:
    """[label, value] rows: the metrics of :data:`METRIC_ROWS` present in ``result``, the
    token and context counts, the interval, μ and source rows, then every numeric value of
    each task's result (with its ``{key}_ci`` interval when the task gives one)."""
    rows = []
    for key, label, fmt in METRIC_ROWS:
        if key not in result:
            continue
        value = fmt_value(fmt, result[key])
        ci = result.get(f"{key}_ci")
        if ci and len(ci) == 2:
            value += f" [{fmt_value(fmt, ci[0])}, {fmt_value(fmt, ci[1])}]"
        rows.append([label, value])
    if "n_tokens" in result:
        rows.append(["tokens (reconstruction)", str(result["n_tokens"])])
    if result.get("min_position"):
        rows.append(["reconstruction: context positions", f"≥ {result['min_position']}"])
    if "lr_contexts" in result:
        rows.append(["contexts (loss recovered)", str(result["lr_contexts"])])
    b = result.get("bootstrap")
    if isinstance(b, dict):
        rows.append(["intervals", f"{b.get('level', 0):.0%} bootstrap over {b.get('unit')}s, "
                                   f"B = {b.get('resamples')}, seed {b.get('seed')}"])
    if result.get("mean_ablation_source"):
        rows.append(["mean ablation: μ over", str(result["mean_ablation_source"])])
    mix = result.get("lr_source_mix")
    if isinstance(mix, dict) and mix:
        rows.append(["loss-recovered tokens by source",
                     ", ".join(f"{k} {v:.0%}" for k, v in mix.items())])
    for name, res in (result.get("tasks") or {}).items():
        if isinstance(res, dict):
            for k, v in res.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    value = fmt_value("{:.4g}", float(v))
                    ci = res.get(f"{k}_ci")
                    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
                        value += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
                    rows.append([f"{name}: {k}", value])
    return rows


def render_table(result: dict[str, Any]):
    """A rich Table of the main metrics of an :func:`abstopk.eval.run.evaluate_sae` result."""
    title = (f"{result.get('architecture')} SAE (d_sae = {result.get('d_sae')}, "
             f"k = {result.get('k')}) on {result.get('model')} "
             f"[{result.get('model_weight_format') or 'weights: format unknown'}] "
             f"{result.get('hook_name')}")
    return rich_table(["metric", "value"], eval_rows(result), title=title)
