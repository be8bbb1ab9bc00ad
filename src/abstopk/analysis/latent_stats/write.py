"""``compute_and_write``: the stats folder the dashboard reads (format in docs/latent-stats.md).

Folder::

    OUT/index.json               format, version, sae, cache, negative_side, one row per latent
    OUT/latents/{i:06d}.json     per latent that fired at least once: frequencies, extremes,
                                 histogram, top ± contexts, quantile samples, ± logits,
                                 bidirectionality score and label

``index.json`` is written last, so a folder holding it is finished. All files are written
atomically (:mod:`abstopk.files`).

Quantile samples: the signed range is cut into equal-width bins, ``n_quantile_bins`` in all,
split evenly between the two sides when both have rows (negative side [max_neg, 0), positive
(0, max_pos]), else all on the one side; each bin shows up to ``examples_per_bin`` rows drawn
from the side's uniform reservoir (then its top-N) whose value lies in the bin.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ...data.cache import ActivationCache
from ...errors import OutputExistsError, UserError
from ...files import atomic_write_json
from ..bidirectionality import BidirConfig, fraction_with_ci
from .collect import LatentStats, collect
from .contexts import RowIndex, TokenDecoder
from .labels import label_all
from .logits import final_norm_gain, logit_effects, unembedding
from .stream import TopN

__all__ = ["FORMAT", "VERSION", "compute_and_write", "latent_record", "quantile_bins"]

FORMAT = "abstopk-latent-stats"
VERSION = 1


def _load_sae(path: Path):
    from ...sae import load_sae

    try:
        return load_sae(path)      # this project's folders and SAELens folders alike
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None


def quantile_bins(pos: list[tuple[float, int]], neg: list[tuple[float, int]], max_pos: float,
                  max_neg: float, n_bins: int, per_bin: int) -> list[dict[str, Any]]:
    """Bins ``[{"lo", "hi", "examples": [(value, row)]}]`` from most negative to most positive.

    ``pos``/``neg``: candidate ``(value, row)`` pairs of each side in preference order.
    """
    sides = [(neg, max_neg, True)] if neg else []
    sides += [(pos, max_pos, False)] if pos else []
    if not sides or n_bins < 1:
        return []
    out = []
    for s, (cands, extreme, is_neg) in enumerate(sides):
        nb = n_bins // len(sides) + (1 if s < n_bins % len(sides) else 0)
        if nb == 0:
            continue
        edges = [extreme * (1 - j / nb) for j in range(nb + 1)] if is_neg else \
            [extreme * j / nb for j in range(nb + 1)]
        for j in range(nb):
            lo, hi = edges[j], edges[j + 1]
            ex, seen = [], set()
            for v, r in cands:
                inside = (lo <= v < hi) if is_neg else (lo < v <= hi)
                if inside and r not in seen:
                    seen.add(r)
                    ex.append((v, r))
                    if len(ex) >= per_bin:
                        break
            out.append({"lo": lo, "hi": hi, "examples": ex})
    return out


def _merge(first: TopN, second: TopN, i: int) -> list[tuple[float, int]]:
    return first.entries(i) + second.entries(i)


def latent_record(st: LatentStats, i: int, *, n_bins: int, per_bin: int) -> dict[str, Any]:
    """Latent ``i``'s record without contexts (rows only), logits and label."""
    pos, neg = st.top_pos.entries(i), st.top_neg.entries(i)
    edges, counts = st.hist.edges_counts(i)
    max_pos = pos[0][0] if pos else 0.0
    max_neg = neg[0][0] if neg else 0.0
    q = quantile_bins(_merge(st.sample_pos, st.top_pos, i), _merge(st.sample_neg, st.top_neg, i),
                      max_pos, max_neg, n_bins, per_bin)
    return {"index": i, "freq_pos": float(st.freq_pos[i]), "freq_neg": float(st.freq_neg[i]),
            "count_pos": int(st.count_pos[i]), "count_neg": int(st.count_neg[i]),
            "max_pos": max_pos, "max_neg": max_neg, "negative_side": st.negative_side,
            "histogram": {"edges": edges, "counts": counts},
            "top_pos": pos, "top_neg": neg, "quantiles": q}


def compute_and_write(sae_dir: str | Path, cache_dir: str | Path, out_dir: str | Path, *,
                      model: str | None = None, top_n: int = 20, context_window: int = 8,
                      n_quantile_bins: int = 8, examples_per_bin: int = 5, n_logits: int = 10,
                      max_rows: int | None = None, force: bool = False,
                      progress: bool = True, bidir: BidirConfig | None = None,
                      batch_rows: int = 4096, seed: int = 0) -> Path:
    """One streaming pass of the SAE at ``sae_dir`` over the cache at ``cache_dir``; writes the
    stats folder ``out_dir`` and returns it.

    ``model``: where the unembedding and tokenizer come from (default: the SAE's
    ``model_name``, else the cache's model). Raises :class:`OutputExistsError` when
    ``out_dir`` already holds a finished stats folder (unless ``force``) and
    :class:`~abstopk.errors.CacheError` for a cache without per-row positions.
    """
    from ...lm import load_model

    sae_dir, cache_dir, out = Path(sae_dir), Path(cache_dir), Path(out_dir)
    if (out / "index.json").exists() and not force:
        raise OutputExistsError(f"{out} already holds latent statistics")
    sae = _load_sae(sae_dir)
    cache = ActivationCache(cache_dir)
    index = RowIndex(cache, max_rows)          # fails early for a cache without positions
    ref = model or sae.cfg.model_name or cache.manifest.get("model")
    if not ref:
        raise UserError(f"{sae_dir}: the SAE records no model_name; name the model to decode with")
    lm, tok, _ = load_model(ref)
    decode = TokenDecoder.from_tokenizer(tok)

    def report(done: int, total: int) -> None:
        if progress:
            print(f"\r  {done:,}/{total:,} rows", end="", file=sys.stderr, flush=True)

    st = collect(sae, cache, top_n=top_n, max_rows=max_rows, progress=report,
                 batch_rows=batch_rows, seed=seed)
    if progress:
        print(f"\r  {st.rows_read:,} rows in {st.seconds:.1f} s", file=sys.stderr)
    W_dec = sae.folded_state()["W_dec"]
    tv, ti, bv, bi = logit_effects(W_dec, unembedding(lm), final_norm_gain(lm), n_logits)
    del lm

    def ctx(v: float, r: int) -> dict[str, Any]:
        ids, focus = index.window(r, context_window)
        return {"value": v, "tokens": decode(ids), "focus": focus, "row": r}

    cfg = bidir or BidirConfig()
    scores, labels = label_all(st, index.token_ids, sae.op.signed, cfg)
    (out / "latents").mkdir(parents=True, exist_ok=True)
    summary = []
    for i in range(sae.cfg.d_sae):
        rec = latent_record(st, i, n_bins=n_quantile_bins, per_bin=examples_per_bin)
        score, label = scores[i], labels[i]
        row = {k: rec[k] for k in ("index", "freq_pos", "freq_neg", "max_pos", "max_neg")}
        row.update(bidir_score=score, label=label, explanation=None)
        summary.append(row)
        if rec["count_pos"] + rec["count_neg"] == 0:
            continue
        rec["top_pos"] = [ctx(v, r) for v, r in rec["top_pos"]]
        rec["top_neg"] = [ctx(v, r) for v, r in rec["top_neg"]]
        for b in rec["quantiles"]:
            b["examples"] = [ctx(v, r) for v, r in b["examples"]]
        rec["logits_pos"] = [{"token": t, "value": float(v)}
                             for t, v in zip(decode(ti[i].tolist()), tv[i], strict=False)]
        rec["logits_neg"] = [{"token": t, "value": float(v)}
                             for t, v in zip(decode(bi[i].tolist()), bv[i], strict=False)]
        rec.update(bidir_score=score, label=label, explanation=None, minimal_pairs=[])
        atomic_write_json(out / "latents" / f"{i:06d}.json", rec, fsync=False,
                          indent=None)  # derived, cheap to rebuild
    c = sae.cfg
    idx = {
        "format": FORMAT, "version": VERSION,
        "sae": {"path": str(sae_dir), "architecture": c.architecture, "d_sae": c.d_sae,
                "d_in": c.d_in, "k": c.k, "signed": bool(sae.op.signed),
                "hook_name": c.hook_name, "model_name": c.model_name},
        "cache": {"path": str(cache_dir), "rows_read": st.rows_read, "identity": cache.identity()},
        "negative_side": st.negative_side,
        "bidirectionality": {**fraction_with_ci([r["label"] for r in summary]),
                             "config": {"min_examples": cfg.min_examples,
                                        "min_coherence": cfg.min_coherence,
                                        "min_distinct": cfg.min_distinct}},
        "seconds": {"pass": st.seconds},
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None,
        "latents": summary,
    }
    atomic_write_json(out / "index.json", idx)
    return out
