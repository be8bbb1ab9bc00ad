"""A small latent-statistics folder (format ``abstopk-latent-stats`` v1) for the dashboard
tests, written the way the contract in docs/dashboard.md says the producer writes it.

Values are drawn from a seeded RNG; the tests read expectations back from the written JSON
(the strongest context is the first of ``top_pos`` / ``top_neg``), never from constants.
Tokens include HTML metacharacters (``<``, ``&``, quotes) and whitespace tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

VOCAB = [" the", " man", " woman", " king", " queen", " <b>", " &amp;", ' "quoted"', " it's",
         "\n", " hot", " cold", " good", " bad", " he", " she", " </script>", " x<y", " A&B"]


def _context(rng: random.Random, value: float, window: int = 4) -> dict[str, Any]:
    toks = [rng.choice(VOCAB) for _ in range(2 * window + 1)]
    return {"value": value, "tokens": toks, "focus": window, "row": rng.randrange(1_000_000)}


def _examples(rng: random.Random, n: int, lo: float, hi: float, desc: bool) -> list[dict]:
    vals = sorted((rng.uniform(lo, hi) for _ in range(n)), reverse=desc)
    return [_context(rng, round(v, 4)) for v in vals]


def make_latent(rng: random.Random, index: int, *, pos: bool = True, neg: bool = True,
                label: str | None = "bidirectional", explanation: str | None = None
                ) -> dict[str, Any]:
    """One latent's statistics: ``pos`` / ``neg`` say which signs fire."""
    top_pos = _examples(rng, 6, 0.5, 4.0, desc=True) if pos else []
    top_neg = _examples(rng, 6, -4.0, -0.5, desc=False) if neg else []
    max_pos = top_pos[0]["value"] if pos else 0.0
    max_neg = top_neg[0]["value"] if neg else 0.0
    lo, hi = (max_neg if neg else 0.0), (max_pos if pos else 0.0)
    edges = [lo + (hi - lo) * j / 8 for j in range(9)]
    counts = [0 if (edges[j] < 0 < edges[j + 1]) else rng.randrange(1, 50) for j in range(8)]
    quantiles = [{"lo": edges[j], "hi": edges[j + 1],
                  "examples": [_context(rng, round(rng.uniform(edges[j], edges[j + 1]), 4))
                               for _ in range(2)]} for j in range(0, 8, 2)]
    freq_pos = rng.uniform(1e-4, 1e-2) if pos else 0.0
    freq_neg = rng.uniform(1e-4, 1e-2) if neg else 0.0
    return {
        "index": index, "freq_pos": freq_pos, "freq_neg": freq_neg,
        "max_pos": max_pos, "max_neg": max_neg, "negative_side": "activation",
        "histogram": {"edges": edges, "counts": counts},
        "top_pos": top_pos, "top_neg": top_neg, "quantiles": quantiles,
        "logits_pos": [{"token": rng.choice(VOCAB), "value": round(rng.uniform(0.1, 1), 3)}
                       for _ in range(5)] if pos else [],
        "logits_neg": [{"token": rng.choice(VOCAB), "value": round(-rng.uniform(0.1, 1), 3)}
                       for _ in range(5)] if neg else [],
        "bidir_score": round(rng.uniform(0, 1), 3) if pos and neg else 0.0,
        "label": label, "explanation": explanation,
        "minimal_pairs": ([{"a": "man", "b": "woman", "template": "The {} walked <in>.",
                            "z_a": round(max_pos / 2, 3), "z_b": round(max_neg / 2, 3)}]
                          if pos and neg else []),
        "extra_key_the_consumer_ignores": {"x": 1},
    }


def write_stats(folder: Path, *, seed: int = 0, n_random: int = 5) -> dict[str, Any]:
    """Write the folder; returns ``{"index": index dict, "latents": {i: stats}}``.

    Latent 0: bidirectional (both signs, an explanation with markup); latent 1: positive only;
    latent 2: dead (no file); latents 3 … 3 + n_random − 1: random labels.
    """
    rng = random.Random(seed)
    folder = Path(folder)
    (folder / "latents").mkdir(parents=True, exist_ok=True)
    lats: dict[int, dict[str, Any]] = {
        0: make_latent(rng, 0, explanation='gender: man <-> woman & "he"/"she"'),
        1: make_latent(rng, 1, neg=False, label="unidirectional"),
    }
    labels = ["bidirectional", "unidirectional", "unclear", None]
    for i in range(3, 3 + n_random):
        lats[i] = make_latent(rng, i, label=labels[i % len(labels)])
    rows = []
    for i in range(3 + n_random):
        lat = lats.get(i)
        if lat is None:
            rows.append({"index": i, "freq_pos": 0.0, "freq_neg": 0.0, "max_pos": 0.0,
                         "max_neg": 0.0, "bidir_score": None, "label": "dead",
                         "explanation": None})
            continue
        rows.append({k: lat[k] for k in ("index", "freq_pos", "freq_neg", "max_pos", "max_neg",
                                         "bidir_score", "label", "explanation")})
        (folder / "latents" / f"{i:06d}.json").write_text(json.dumps(lat), encoding="utf-8")
    index = {"format": "abstopk-latent-stats", "version": 1,
             "sae": {"path": "/tmp/sae-fixture", "architecture": "abstopk", "d_sae": len(rows),
                     "d_in": 16, "k": 2, "signed": True,
                     "hook_name": "blocks.6.hook_resid_post", "model_name": "smollm2-135m"},
             "cache": {"path": "/tmp/cache-fixture", "rows_read": 4096, "identity": "fixture"},
             "negative_side": "activation", "latents": rows}
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
    return {"index": index, "latents": lats}


def direction(name: str = "man→woman <DiM>", seed: int = 1) -> dict[str, Any]:
    """A DiM / steering direction in the dashboard's direction format."""
    rng = random.Random(seed)
    lat = make_latent(rng, 0)
    return {"name": name, "layer": 9, **{k: lat[k] for k in ("top_pos", "top_neg",
                                                             "logits_pos", "logits_neg")}}
