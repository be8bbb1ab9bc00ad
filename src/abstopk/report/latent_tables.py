"""Tables of the latent analyses: the bidirectional fraction per SAE (the analogue of the
paper's Table 2) and minimal-pair coverage. Inputs are plain dicts: an ``index.json`` of a
stats folder (:mod:`abstopk.analysis.latent_stats`) and the result of
``abstopk.analysis.minimal_pairs.analyze_sae``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .tables import markdown_table, rich_table

__all__ = ["bidir_rows", "pairs_rows", "render_bidir", "render_pairs", "BIDIR_COLUMNS",
           "PAIRS_COLUMNS"]

BIDIR_COLUMNS = ("SAE", "architecture", "negative side", "live", "bidirectional",
                 "fraction (95 % CI)", "unidirectional", "unclear", "dead")
PAIRS_COLUMNS = ("SAE", "architecture", "pairs", "covered", "max by one latent",
                 "latents needed", "antipodal covered", "split on/off",
                 "latents needed (split)")


def bidir_rows(indexes: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[str]]:
    """``(name, index.json dict)`` → table rows."""
    rows = []
    for name, ix in indexes:
        b = ix["bidirectionality"]
        c = b["counts"]
        lo, hi = b["ci95"]
        rows.append([name, ix["sae"]["architecture"], ix["negative_side"], str(b["live"]),
                     str(c["bidirectional"]),
                     f"{100 * b['bidirectional_fraction']:.1f} % ({100 * lo:.1f}–{100 * hi:.1f})",
                     str(c["unidirectional"]), str(c["unclear"]), str(c["dead"])])
    return rows


def pairs_rows(results: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[str]]:
    """``(name, analyze_sae result)`` → table rows."""
    return [[name, r["architecture"], str(r["pairs"]), str(r["covered"]),
             str(r["max_pairs_one_latent"]), str(r["latents_needed"]),
             "–" if r.get("signed") else str(r.get("antipodal_covered", "–")),
             str(r.get("split_covered", "–")), str(r.get("split_latents_needed", "–"))]
            for name, r in results]


def render_bidir(indexes, *, markdown: bool = False):
    rows = bidir_rows(indexes)
    return markdown_table(BIDIR_COLUMNS, rows) if markdown else rich_table(BIDIR_COLUMNS, rows)


def render_pairs(results, *, markdown: bool = False):
    rows = pairs_rows(results)
    return markdown_table(PAIRS_COLUMNS, rows) if markdown else rich_table(PAIRS_COLUMNS, rows)
