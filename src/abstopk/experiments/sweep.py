"""Sparsity sweeps (the paper's Figure 3): NMSE and loss recovered versus L0, per architecture.

One SAE is trained per (architecture, sparsity, seed) on the same activation cache and each is
evaluated on held-out activations; TopK/AbsTopK SAEs are also evaluated at other k *at
inference* (``cfg.k`` changed, no retraining). Sparsity is matched across architectures:

* ``topk`` / ``abstopk`` / ``batch*`` — trained with ``k`` latents per token;
* ``jumprelu`` / ``absjumprelu`` / ``relu`` — trained with ``target_l0 = k`` (or an explicit
  ``jumprelu_targets`` list): the trainer's PI controller adapts the penalty coefficient until
  the SAE lands at that mean L0. This *is* the coefficient sweep of these architectures, indexed
  by the L0 it produces instead of by an opaque coefficient.

Efficiency — one pass over the data per seed (:class:`MultiTrainer`). All SAEs of one seed read
the same batch stream (the cache loader seeded with that seed): each batch is read from disk
once and every SAE takes one optimisation step on it before the next batch is read. Per SAE the
step is exactly :class:`abstopk.train.Trainer`'s (same LR schedule, AuxK bookkeeping, target-L0
controller, initialisation from the first ``init_batches`` batches), so an SAE trained here has
the same weights as one trained alone by ``Trainer.fit`` on the same batches (tested). SAEs of
the same seed differ only in their architecture/sparsity, which makes the comparison paired:
same initial decoder (same seed), same data order.

Evaluation (:func:`abstopk.eval.heldout.evaluate_saes`): reconstruction metrics
(:mod:`abstopk.eval.metrics`: MSE, NMSE, explained variance, L0, dead fraction, ...) on
``eval_tokens`` held-out activations kept in memory
(:func:`abstopk.data.heldout.heldout_activations`, or read from ``eval_cache``), and loss
recovered / KL on ``eval_contexts`` held-out contexts with the clean and zero-ablated LM runs
computed once and shared by all SAEs (:func:`abstopk.eval.loss_recovered.evaluate_loss_recovered`
given every SAE of the seed).

Settings and the SAEs of a sweep: :mod:`.sweep_config`; mean ± std over seeds:
:mod:`.sweep_summary`; tables: :mod:`abstopk.report.sweep_tables`.

Outputs (:func:`run_sweep`): ``OUT/sweep.csv`` (one row per SAE × evaluation),
``OUT/sweep.json`` (config + rows + mean ± std summary), ``OUT/sweep.png`` (NMSE vs L0 and loss
recovered vs L0, one line per architecture, error bars = std over seeds), the trained SAEs in
``OUT/saes/<arch>_k<k>_s<seed>/``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..report.sweep_tables import CSV_COLUMNS, print_table, sweep_markdown, write_csv
from ..train.multi import MultiTrainer
from .sweep_config import SweepConfig, SweepSpec, sweep_specs, train_config_for
from .sweep_summary import summarize

__all__ = ["run_sweep"]


def _metadata_from_cache(cache: Any) -> dict[str, Any]:
    m = cache.manifest
    return {
        "model_name": m.get("model"), "model_revision": m.get("model_revision"),
        "model_weight_format": m.get("model_weight_format"), "model_dtype": m.get("model_dtype"),
        "hook_layer": m.get("layer"), "hook_site": m.get("site"),
        "hook_name": m.get("hook_name"), "context_size": m.get("context_size"),
        "keep_bos": m.get("keep_bos"), "dataset": cache.identity(),
    }


def _row(spec: SweepSpec, cfg: SweepConfig, metrics: dict[str, Any], *, mode: str,
         k_eval: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": spec.name if mode == "trained" else f"{spec.name}@k{k_eval}",
        "architecture": spec.architecture, "mode": mode, "sparsity": spec.sparsity,
        "k_train": int(spec.sparsity) if spec.uses_k else None,
        "k_eval": k_eval, "target_l0": None if spec.uses_k else spec.sparsity,
        "seed": spec.seed, "d_sae": cfg.d_sae, "steps": cfg.steps,
        "batch_size": cfg.batch_size,
    }
    for c in CSV_COLUMNS:
        if c not in r and c in metrics:
            v = metrics[c]
            r[c] = None if isinstance(v, float) and math.isnan(v) else v
    r.update(extra)
    return r


def _source_name(manifest: dict[str, Any]) -> str:
    """The text source a cache was harvested from (its held-out split is evaluated on)."""
    corpus = manifest.get("corpus") or {}
    if not isinstance(corpus, dict):
        return "embedded"
    return str(corpus.get("source") or corpus.get("name") or "embedded")


def _heldout_x(cfg: SweepConfig, cache: Any, get_lm: Callable[[], tuple],
               log: Callable[[str], None]) -> torch.Tensor:
    """The held-out activations [eval_tokens, d_in] every SAE is evaluated on: read from
    ``cfg.eval_cache``, or computed with the cache's model on held-out text."""
    from ..data.cache import ActivationCache
    from ..data.heldout import heldout_activations
    from ..eval.metrics import iter_activation_batches

    m = cache.manifest
    layer, site = int(m["layer"]), str(m["site"])
    if cfg.eval_cache:
        x_eval = torch.cat(list(iter_activation_batches(cfg.eval_cache, 8192, cfg.eval_tokens)))
        ec = ActivationCache(cfg.eval_cache)
        if (ec.manifest.get("layer"), ec.manifest.get("site")) != (layer, site):
            raise ValueError(f"eval cache {cfg.eval_cache} is not at layer {layer} {site}")
    else:
        model, tok = get_lm()[:2]
        log(f"computing {cfg.eval_tokens} held-out activations at layer {layer} ({site})")
        x_eval = heldout_activations(model, tok, layer=layer, site=site,
                                     n_tokens=cfg.eval_tokens,
                                     context_size=int(m.get("context_size") or 128),
                                     source=_source_name(m),
                                     keep_bos=bool(m.get("keep_bos", False)),
                                     progress=cfg.progress)
    if x_eval.shape[1] != cache.d_in:
        raise ValueError(f"held-out activations have width {x_eval.shape[1]}, cache {cache.d_in}")
    return x_eval


def run_sweep(cfg: SweepConfig, *, console: Any = None, loaded: tuple | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, evaluate and report a sweep (see the module docstring). Returns
    ``{"config", "rows", "summary", "files", "seconds"}`` (also written to OUT/sweep.json).

    ``loaded``: an already loaded ``(model, tokenizer, info)`` of the cache's model (reused for
    held-out activations and loss recovered; loaded on demand otherwise).
    """
    from ..data.cache import ActivationCache
    from ..data.open import open_source
    from ..eval.heldout import evaluate_saes
    from ..eval.inference_k import inference_k
    from ..eval.run import json_safe
    from ..files import atomic_write_bytes, atomic_write_json
    from ..report.plots import plot_sweep

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = ActivationCache(cfg.cache)
    meta = _metadata_from_cache(cache)
    specs = sweep_specs(cfg)
    layer, site = int(cache.manifest["layer"]), str(cache.manifest["site"])
    ctx_size = int(cache.manifest.get("context_size") or 128)
    keep_bos = bool(cache.manifest.get("keep_bos", False))
    source_name = _source_name(cache.manifest)

    lm = loaded

    def get_lm():
        nonlocal lm
        if lm is None:
            from ..lm.load import load_model

            log(f"loading {meta['model_name']} for held-out evaluation")
            lm = load_model(str(meta["model_name"]), device=cfg.device)
        return lm

    # held-out activations (in memory; the same rows for every SAE)
    x_eval = _heldout_x(cfg, cache, get_lm, log)
    eval_kw = dict(layer=layer, site=site, context_size=ctx_size, source=source_name,
                   keep_bos=keep_bos)

    rows: list[dict[str, Any]] = []
    ref_k = cfg.reference_k()
    seeds = list(cfg.seeds)
    for i_seed, seed in enumerate(seeds):
        group = [s for s in specs if s.seed == seed]
        tcfgs = [train_config_for(s, cfg) for s in group]
        log(f"seed {seed} ({i_seed + 1}/{len(seeds)}): training {len(group)} SAEs in one pass "
            f"over the cache ({cfg.steps} steps × {cfg.batch_size} tokens): "
            + ", ".join(s.name for s in group))
        source = open_source(str(cache.path), cfg.batch_size, seed)
        mt = MultiTrainer(tcfgs, source, sae_metadata=meta)
        t_train = time.perf_counter()
        mt.fit(progress=cfg.progress, desc=f"train seed {seed}")
        train_s = (time.perf_counter() - t_train) / len(group)
        saes = {}
        for spec, tr in zip(group, mt.trainers, strict=True):
            d = out / "saes" / spec.name
            tr.sae.save(d)
            atomic_write_json(d / "train_config.json", tr.cfg.to_dict())
            saes[spec.name] = tr.sae.eval()
        log(f"seed {seed}: evaluating {len(saes)} SAEs on {x_eval.shape[0]} held-out tokens"
            + (f" and {cfg.eval_contexts} held-out contexts" if cfg.eval_contexts else ""))
        need_lm = cfg.eval_contexts > 0
        ev = evaluate_saes(saes, x_eval, lm=get_lm()[:2] if need_lm else None,
                           eval_contexts=cfg.eval_contexts, progress=cfg.progress, **eval_kw)
        for spec, tr in zip(group, mt.trainers, strict=True):
            lm_ = tr.last_metrics or {}
            rows.append(_row(spec, cfg, ev[spec.name], mode="trained",
                             k_eval=int(spec.sparsity) if spec.uses_k else None,
                             extra={"train_l0": lm_.get("l0"), "train_fvu": lm_.get("fvu"),
                                    "train_seconds": round(train_s, 2),
                                    "sae_dir": str(out / "saes" / spec.name)}))
        # inference-time k on the reference TopK/AbsTopK SAEs of this seed
        if cfg.inference_k:
            with_loss = need_lm and cfg.inference_k_loss
            for spec in group:
                if not spec.uses_k or int(spec.sparsity) != ref_k:
                    continue
                sae = saes[spec.name]
                for k in cfg.k:
                    if k == ref_k:
                        continue
                    with inference_k(sae, k):
                        ev_k = evaluate_saes(
                            {spec.name: sae}, x_eval, lm=get_lm()[:2] if with_loss else None,
                            eval_contexts=cfg.eval_contexts if cfg.inference_k_loss else 0,
                            **eval_kw)[spec.name]
                    rows.append(_row(spec, cfg, ev_k, mode="inference_k", k_eval=int(k),
                                     extra={"sae_dir": str(out / "saes" / spec.name)}))
        write_csv(rows, out / "sweep.csv")  # partial results survive an interruption

    summary = summarize(rows)
    files = {"csv": str(write_csv(rows, out / "sweep.csv"))}
    files["png"] = str(plot_sweep(rows, out / "sweep.png",
                                  title=f"{meta['model_name']} L{layer} {site}, d_sae {cfg.d_sae}"))
    files["md"] = str(out / "sweep.md")
    atomic_write_bytes(Path(files["md"]), sweep_markdown(summary).encode())
    result = {
        "config": dataclasses.asdict(cfg), "cache": cache.identity(),
        "eval_tokens": int(x_eval.shape[0]), "rows": rows, "summary": summary, "files": files,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    files["json"] = str(out / "sweep.json")
    atomic_write_json(out / "sweep.json", json_safe(result))
    print_table(summary, console)
    return result
