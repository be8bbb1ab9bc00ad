"""Tables of the synthetic ground-truth benchmark (:mod:`abstopk.analysis.synthetic`): one row
per architecture, as Markdown (``--markdown``, ``synthetic.md``) and as a rich table.

``results`` are plain dicts with the fields of ``ArchResult`` (``ArchResult.to_dict()``);
fractions are in [0, 1] and printed as percentages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .tables import markdown_table as _markdown
from .tables import rich_table

__all__ = ["MARKDOWN_COLUMNS", "TABLE_COLUMNS", "caption", "markdown_table", "metric_cells",
           "render_table", "results_table_rows"]

TABLE_COLUMNS = ("architecture", "NMSE", "FVU", "L0", "dead%", "rec.bi", "rec.uni",
                 "bi:1 signed", "bi:± pair", "bi:1 side", "bi:missed", "lat/bi")

MARKDOWN_COLUMNS = ("architecture", "NMSE", "FVU", "L0", "dead %", "recovery bi", "recovery uni",
                    "bi: one signed latent", "bi: ± pair", "bi: one side", "bi: missed",
                    "latents / bi feature")

_BOLD = ("bi:1 signed", "bi:± pair")


def _num(v: float, fmt: str = ".2f") -> str:
    """Format a number; NaN (e.g. no captured feature to average over) as an en dash."""
    return "–" if math.isnan(v) else format(v, fmt)


def metric_cells(r: Mapping[str, Any], pct: str = " %") -> list[str]:
    """The formatted metric cells of one result (everything after the architecture)."""
    return [f"{r['nmse']:.3f}", f"{r['fvu']:.3f}", f"{r['l0']:.2f}", f"{100 * r['dead_frac']:.1f}",
            f"{r['recovery_bi']:.3f}", f"{r['recovery_uni']:.3f}",
            f"{100 * r['bi_one_latent']:.0f}{pct}", f"{100 * r['bi_pair']:.0f}{pct}",
            f"{100 * r['bi_one_side']:.0f}{pct}", f"{100 * r['bi_missed']:.0f}{pct}",
            _num(r["latents_per_bi"])]


def results_table_rows(results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of formatted cells under :data:`TABLE_COLUMNS` (the rich table)."""
    return [[r["architecture"], *metric_cells(r, "%")] for r in results]


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table under :data:`MARKDOWN_COLUMNS` (architecture in backticks)."""
    return _markdown(MARKDOWN_COLUMNS,
                     [[f"`{r['architecture']}`", *metric_cells(r, " %")] for r in results])


def caption(setup: Mapping[str, Any]) -> str:
    """The caption under the rich table: data and training setup of the run.

    ``setup`` keys: ``d, n_features, n_bidirectional, mean_active_test`` (data), ``k, d_sae,
    steps, seed, tau`` (benchmark), ``seconds``.
    """
    s = setup
    return (f"d={s['d']}, {s['n_features']} features ({s['n_bidirectional']} bidirectional), "
            f"~{s['mean_active_test']:.1f} active/sample, k={s['k']}, "
            f"d_sae={s['d_sae']}, {s['steps']} steps, seed={s['seed']}, τ={s['tau']}; "
            f"{s['seconds']:.0f} s")


def render_table(results: Sequence[Mapping[str, Any]], setup: Mapping[str, Any],
                 title: str | None = None):
    """A rich Table with one row per architecture; ``setup`` as for :func:`caption`."""
    from rich import box

    return rich_table(TABLE_COLUMNS, results_table_rows(results), no_wrap=True,
                      bold_columns=_BOLD, box=box.SIMPLE_HEAD,
                      title=title or "Synthetic ground truth: bidirectional feature recovery",
                      caption=caption(setup))
