"""How much of a cache's activation energy, and of SAEs' reconstruction error, sits at the
first position of each context (the attention sink of mid layers).

Usage::

    PYTHONPATH=src python bench/position_share.py CACHE [--rows N] [--sae DIR ...]

Reads the cache's first N rows in cache order (``CacheLoader(shuffle=False)``, positions from
``ActivationCache.rows_with_context``) and prints a Markdown table: for position 0 and for
positions ≥ 1 the row count, the median ‖x‖, the share of Σ‖x‖², and per SAE the share of
Σ‖x − x̂‖² and the nmse (mean over rows of ‖x − x̂‖²/‖x‖²) of those rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from abstopk.data.cache import ActivationCache
from abstopk.data.loader import CacheLoader
from abstopk.sae import load_sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--sae", action="append", default=[], help="an SAE folder (repeatable)")
    a = ap.parse_args()
    cache = ActivationCache(a.cache)
    n = min(a.rows, cache.total_rows)
    x = next(iter(CacheLoader(cache, n, shuffle=False, prefetch=0)))
    pos = cache.rows_with_context(0, n)["positions"]
    groups = {"position 0": pos == 0, "positions ≥ 1": pos >= 1}
    sq = x.pow(2).sum(1)
    head = ["rows", "count", "median ‖x‖", "share of Σ‖x‖²"]
    errs = []
    for d in a.sae:
        sae = load_sae(d).eval()
        with torch.no_grad():
            e = torch.cat([(xb - sae(xb).x_hat).pow(2).sum(1) for xb in x.split(4096)])
        errs.append((Path(d).name, e))
        head += [f"{Path(d).name}: share of Σ‖x−x̂‖²", f"{Path(d).name}: nmse"]
    print(f"{cache.path}: layer {cache.layer} {cache.site}, first {n:,} rows in cache order\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, m in groups.items():
        row = [name, f"{int(m.sum()):,}", f"{float(sq[m].sqrt().median()):.0f}",
               f"{float(sq[m].sum() / sq.sum()):.3f}"]
        for _, e in errs:
            row += [f"{float(e[m].sum() / e.sum()):.3f}", f"{float((e[m] / sq[m]).mean()):.4f}"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
