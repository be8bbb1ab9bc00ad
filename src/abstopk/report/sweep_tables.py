"""Tables of a sparsity sweep: ``sweep.csv`` (one row per SAE × evaluation) and the summary
(mean ± std over seeds) as Markdown (``sweep.md``) and rich tables.

Summary dicts are those of :func:`abstopk.experiments.sweep_summary.summarize`: the group keys
``architecture, mode ("trained" / "inference_k"), sparsity, k_eval``, ``n_seeds`` and
``<metric>_mean`` / ``<metric>_std``. A trained row with a ``k_eval`` is a TopK-family SAE
(its sparsity is k); one without is a penalised SAE (its sparsity is the target L0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .tables import markdown_table as _markdown
from .tables import rich_table, table_console
from .tables import write_csv as _write_csv

__all__ = ["CSV_COLUMNS", "TABLE_HEADER", "fmt_pm", "markdown_table", "print_table",
           "results_table_rows", "sweep_markdown", "write_csv"]

#: columns of sweep.csv, in order
CSV_COLUMNS = (
    "name", "architecture", "mode", "sparsity", "k_train", "k_eval", "target_l0", "seed",
    "d_sae", "steps", "batch_size", "l0", "mse", "nmse", "fvu", "explained_variance", "cosine",
    "dead_fraction", "dense_fraction", "negative_firing_fraction", "n_bidirectional",
    "ce_clean", "ce_spliced", "ce_zero_ablated", "loss_recovered", "ce_mean_ablated",
    "loss_recovered_mean_ablation", "kl", "train_l0",
    "train_fvu", "train_seconds", "sae_dir",
)

#: nmse = mean over tokens of ‖x−x̂‖²/‖x‖² (the paper's); fvu = ‖x−x̂‖²/‖x−x̄‖²; loss recovered
#: against zero ablation (the paper's) and against mean ablation
TABLE_HEADER = ["architecture", "sparsity", "L0", "MSE", "NMSE", "FVU", "dead frac.",
                "loss rec. (zero abl.)", "loss rec. (mean abl.)", "KL", "seeds"]

_TITLES = {"trained": "Sparsity sweep: held-out evaluation (mean ± std over seeds)",
           "inference_k": "Inference-time k (no retraining)"}


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write sweep ``rows`` with the columns :data:`CSV_COLUMNS` (missing values empty),
    atomically."""
    return _write_csv(rows, CSV_COLUMNS, path)


def fmt_pm(mean: float, std: float, digits: int = 4) -> str:
    """``"m ± s"`` with ``digits`` significant digits (``"—"`` for NaN)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.{digits}g} ± {std:.2g}"


def _has_k(value: Any) -> bool:
    return value not in (None, "")


def _label(s: dict[str, Any], mode: str) -> str:
    sp = s["sparsity"]
    if mode != "trained":
        return f"k={int(s['k_eval'])} (trained k={int(sp)})"
    return f"k={int(sp)}" if _has_k(s["k_eval"]) else f"target L0={sp:g}"


def results_table_rows(summary: Sequence[dict[str, Any]], mode: str = "trained"
                       ) -> list[list[str]]:
    """Rows [architecture, sparsity, L0, MSE, NMSE, FVU, dead, loss rec. (zero / mean
    ablation), KL, seeds] as strings, for the summaries of ``mode``, ordered by (k or target L0, architecture)."""
    rows = []
    for s in sorted((s for s in summary if s["mode"] == mode),
                    key=lambda s: (s["k_eval"] if _has_k(s["k_eval"]) else s["sparsity"],
                                   s["architecture"])):
        rows.append([
            s["architecture"], _label(s, mode),
            fmt_pm(s["l0_mean"], s["l0_std"], 3),
            fmt_pm(s["mse_mean"], s["mse_std"]),
            fmt_pm(s["nmse_mean"], s["nmse_std"]),
            fmt_pm(s.get("fvu_mean"), s.get("fvu_std", math.nan)),
            fmt_pm(s["dead_fraction_mean"], s["dead_fraction_std"], 3),
            fmt_pm(s["loss_recovered_mean"], s["loss_recovered_std"]),
            fmt_pm(s.get("loss_recovered_mean_ablation_mean"),
                   s.get("loss_recovered_mean_ablation_std", math.nan)),
            fmt_pm(s["kl_mean"], s["kl_std"]),
            str(s["n_seeds"]),
        ])
    return rows


def markdown_table(summary: Sequence[dict[str, Any]], mode: str = "trained") -> str:
    """The summaries of ``mode`` as a GitHub-flavoured Markdown table."""
    return _markdown(TABLE_HEADER, results_table_rows(summary, mode))


def sweep_markdown(summary: Sequence[dict[str, Any]]) -> str:
    """The document ``sweep.md``: the trained table, then the inference-time k one (if any)."""
    md = "# Sparsity sweep\n\n" + markdown_table(summary, "trained")
    if any(s["mode"] == "inference_k" for s in summary):
        md += "\n## Inference-time k\n\n" + markdown_table(summary, "inference_k")
    return md


def print_table(summary: Sequence[dict[str, Any]], console: Any = None,
                title: str | None = None) -> None:
    """Print the trained (and inference-k) summaries as rich tables (mean ± std over seeds);
    ``title`` replaces the trained table's title."""
    console = console or table_console(180)   # 11 columns: too wide for 80
    for mode in ("trained", "inference_k"):
        rows = results_table_rows(summary, mode)
        if not rows:
            continue
        ttl = (title or _TITLES[mode]) if mode == "trained" else _TITLES[mode]
        console.print(rich_table(TABLE_HEADER, rows, left_columns=2, title=ttl))
