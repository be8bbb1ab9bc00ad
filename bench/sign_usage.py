"""How SAEs use signs on a cache's rows: alive latents, the share firing with both signs, the
share of firings that are negative, and the share of alive latents with an antipodal decoder
partner (``abstopk.analysis.sign_usage``).

Usage::

    PYTHONPATH=src python bench/sign_usage.py CACHE [--rows N] --sae DIR [--sae DIR ...]

Evaluates each SAE on the cache's first N rows in cache order
(:func:`abstopk.eval.metrics.evaluate_reconstruction`, whose per-latent counts it reads) and
prints one Markdown row per SAE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from abstopk.analysis.sign_usage import sign_usage
from abstopk.data.cache import ActivationCache
from abstopk.eval.metrics import evaluate_reconstruction
from abstopk.sae import load_sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--sae", action="append", required=True, help="an SAE folder (repeatable)")
    a = ap.parse_args()
    cache = ActivationCache(a.cache)
    n = min(a.rows, cache.total_rows)
    print(f"{cache.path}: layer {cache.layer} {cache.site}, first {n:,} rows in cache order\n")
    head = ["SAE", "alive", "fire with both signs (5–95 % negative)", "negative firings",
            "antipodal partner, cos < −0.9", "cos < −0.5"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for d in a.sae:
        sae = load_sae(d).eval()
        m = evaluate_reconstruction(sae, cache.path, max_rows=n)
        s = sign_usage(m.fire_count, m.neg_count, sae.W_dec.detach())
        print(f"| {Path(d).name} | {s['alive']:,} | {s['two_sided']:.3f} | "
              f"{s['negative_firings']:.3f} | {s['antipodal'][-0.9]:.4f} | "
              f"{s['antipodal'][-0.5]:.4f} |")


if __name__ == "__main__":
    main()
