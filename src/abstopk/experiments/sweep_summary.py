"""Mean ± std over seeds of a sweep's rows (the numbers of the summary tables and sweep.json)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SUMMARY_METRICS", "summarize"]

#: metrics summarised as mean ± std over seeds
SUMMARY_METRICS = ("l0", "mse", "nmse", "fvu", "explained_variance", "dead_fraction",
                   "loss_recovered", "loss_recovered_mean_ablation", "kl")


def _mean_std(vals: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0 for one value) of the values that are not None/NaN."""
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group rows by (architecture, mode, sparsity, k_eval) and give mean/std over seeds.

    Each output dict: the group keys, ``n_seeds``, and ``<metric>_mean`` / ``<metric>_std``
    (sample std, ddof = 1; 0 for one seed) for the metrics in :data:`SUMMARY_METRICS`.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["architecture"], r["mode"], float(r["sparsity"]), r.get("k_eval"))
        groups.setdefault(key, []).append(r)
    out = []
    for (arch, mode, sp, k_eval), rs in groups.items():
        d: dict[str, Any] = {"architecture": arch, "mode": mode, "sparsity": sp,
                             "k_eval": k_eval, "n_seeds": len(rs)}
        for m in SUMMARY_METRICS:
            d[f"{m}_mean"], d[f"{m}_std"] = _mean_std([r.get(m) for r in rs])
        out.append(d)
    return out
