"""Claim 1 on several layers side by side: the ``claim1.csv`` of one run per layer as one
table (layer, architecture, k, tokens, seeds, nmse, fvu, L0, loss recovered with zero and mean
ablation, KL), the AbsTopK − TopK gap per layer (absolute and in % of TopK's nmse) and its
scaling plot with one line per layer (:func:`layers_plot`).

Input: run folders of ``abstopk experiment claim1`` (or their ``claim1.csv`` files). A row's
layer is the csv's ``layer`` column; a csv written before that column existed takes the
``layer`` of the ``plan.json`` beside it (a plan without it is layer 6's). Groups are
(layer, architecture, k, training tokens), mean ± sd over seeds as in
:func:`~abstopk.report.claim1_report.group_rows`; the gap pairs TopK and AbsTopK by seed
within one layer (:func:`~abstopk.report.claim1_report.gap_rows`). Rows of one configuration
on different layers sit next to each other (sorted by tokens, k, architecture, layer).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataUnavailable, RunMismatchError
from .claim1_report import COLUMNS, _f, gap_rows, group_rows, plot_gap_scaling
from .tables import markdown_table

__all__ = ["layers_gap_rows", "layers_markdown", "layers_plot", "layers_rows",
           "read_claim1_csv"]

_INT = ("layer", "k", "train_tokens", "seed", "lr_contexts")
_TEXT = ("run", "architecture", "tokens")
# every other column the report writes is a float: a new metric column is parsed as a number
_FLOAT = tuple(c for c in COLUMNS if c not in _INT + _TEXT)


def _cell(key: str, v: str) -> Any:
    if v == "":
        return None
    if key in _INT:
        return int(float(v))
    if key in _FLOAT:
        return float(v)
    return v


def read_claim1_csv(path: str | Path) -> tuple[int, list[dict[str, Any]]]:
    """(layer, rows) of one run: ``path`` is its folder or its ``claim1.csv``; numbers are
    parsed (empty cells are None)."""
    p = Path(path)
    csv_path = p / "claim1.csv" if p.is_dir() else p
    if not csv_path.is_file():
        raise DataUnavailable(f"no claim1.csv at {csv_path}: the run has written no summary yet")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [{k: _cell(k, v) for k, v in r.items()} for r in csv.DictReader(f)]
    layers = {r["layer"] for r in rows if r.get("layer") is not None}
    if not layers:
        plan = csv_path.parent / "plan.json"
        if not plan.is_file():
            raise RunMismatchError(f"{csv_path} has no layer column and no plan.json beside it")
        layers = {int(json.loads(plan.read_text()).get("layer", 6))}
    if len(layers) != 1:
        raise RunMismatchError(f"{csv_path} mixes layers {sorted(layers)}")
    layer = layers.pop()
    return layer, [{**r, "layer": layer} for r in rows]


def _runs(paths: Sequence[str | Path]) -> dict[int, list[dict[str, Any]]]:
    runs: dict[int, list[dict[str, Any]]] = {}
    for p in paths:
        layer, rows = read_claim1_csv(p)
        if layer in runs:
            raise RunMismatchError(f"two claim-1 runs of layer {layer} given ({p} and another)")
        runs[layer] = rows
    return runs


def layers_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One group row per (layer, architecture, k, training tokens) over all runs."""
    out = [{"layer": layer, **g} for layer, rows in _runs(paths).items()
           for g in group_rows(rows)]
    return sorted(out, key=lambda g: (g["train_tokens"], g["k"], g["architecture"], g["layer"]))


def layers_gap_rows(paths: Sequence[str | Path], k: int = 32) -> list[dict[str, Any]]:
    """AbsTopK − TopK at k per layer and training tokens, paired by seed within a layer."""
    out = [{"layer": layer, **g} for layer, rows in _runs(paths).items()
           for g in gap_rows(rows, k)]
    return sorted(out, key=lambda g: (g["train_tokens"], g["layer"]))


def _pm(g: dict[str, Any], m: str) -> str:
    sd = g[m + "_sd"]
    one = len(g["seeds"]) < 2 or not math.isfinite(sd)
    return _f(g[m]) if one else f"{_f(g[m])} ± {_f(sd)}"


def _gap(g: dict[str, Any], m: str) -> str:
    return _f(g[m + "_gap"]) if g["n"] < 2 else f"{_f(g[m + '_gap'])} ± {_f(g[m + '_se'])}"


def layers_markdown(paths: Sequence[str | Path]) -> str:
    """The side-by-side table (nmse, fvu, L0, loss recovered with zero and mean ablation, KL:
    mean ± sd over seeds; no ± for one seed) and the gap table
    (mean ± standard error over paired seeds; none for one seed), as Markdown."""
    md = [markdown_table(
        ["layer", "architecture", "k", "tokens", "seeds", "nmse", "fvu", "L0",
         "loss rec. (zero abl.)", "loss rec. (mean abl.)", "KL"],
        [[str(g["layer"]), g["architecture"], str(g["k"]), f"{g['train_tokens']:,}",
          ",".join(map(str, g["seeds"])), _pm(g, "nmse"), _pm(g, "fvu"), _f(g["l0"], 1),
          _pm(g, "loss_recovered"), _pm(g, "loss_recovered_mean_ablation"), _pm(g, "kl")]
         for g in layers_rows(paths)])]
    gaps = layers_gap_rows(paths)
    if gaps:
        md.append("\nAbsTopK − TopK at k 32 (paired by seed; ± standard error):\n\n")
        md.append(markdown_table(
            ["layer", "tokens", "seeds", "Δ nmse", "Δ nmse (% of TopK)", "Δ loss recovered"],
            [[str(g["layer"]), f"{g['train_tokens']:,}", ",".join(map(str, g["seeds"])),
              _gap(g, "nmse"), _rel(g), _gap(g, "loss_recovered")] for g in gaps]))
    return "".join(md)


def _rel(g: dict[str, Any]) -> str:
    m = _f(g["nmse_rel_gap"], 1)
    return m if g["n"] < 2 else f"{m} ± {_f(g['nmse_rel_se'], 1)}"


def layers_plot(paths: Sequence[str | Path], out: str | Path) -> Path:
    """The scaling plot of :func:`~abstopk.report.claim1_report.plot_gap_scaling` with one
    line per layer (AbsTopK − TopK at k 32 against training tokens) written to ``out``
    (PNG); :class:`~abstopk.errors.DataUnavailable` when no layer has a paired gap yet."""
    series = {layer: gap_rows(rows) for layer, rows in _runs(paths).items()}
    series = {layer: g for layer, g in series.items() if g}
    if not series:
        raise DataUnavailable("no run has a TopK/AbsTopK pair at k 32 on test yet: nothing to plot")
    layers = ", ".join(map(str, sorted(series)))
    plot_gap_scaling(series, Path(out), title=(
        f"SmolLM2-135M-Instruct (Q4_1), layers {layers} resid_post, k 32, d_sae 4608: "
        "AbsTopK − TopK on test (± s.e. over paired seeds)"))
    return Path(out)
