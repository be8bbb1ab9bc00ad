"""One harvest for the train caches of several claim-1 runs (one layer each).

The truncated forward to layer L computes every layer below it, so continuing the layer-15
and layer-20 caches in one pass costs what layer 20's alone costs: the shallower layer's rows
come free. :func:`joint_harvest` takes run folders made by ``abstopk experiment claim1`` on
different layers (each past its ``harvest-1M`` step, so each has ``plan.json`` and a partial
``cache-train``), and

1. checks that they are one plan on different layers: the same sizes, site, context,
   storage, corpus seed and precision (the dtype of the shared forward), distinct layers;
2. **catches up**: a cache holding fewer rows than the most advanced one is harvested alone
   (the plan's own harvest, ``stop_after`` = the leader's rows) to the leader's row count;
   the caches then stand at the same context (same documents, same order, the shard
   boundaries of one deterministic stream), which is checked;
3. continues all of them to the plan's ``train_rows`` in one pass
   (:func:`abstopk.data.harvest.harvest` with one cache folder per layer).

Every cache ends as the plan's own harvest would have left it (the same rows, shards and
sha256s: the harvest is deterministic and resumes bit-identically), so each run's
``harvest-10M`` step then finds its cache complete and moves on. Resumable: a killed joint
harvest is continued by the same call. The runs' own ``abstopk experiment claim1`` processes
must be stopped while it runs (two writers on one cache would corrupt it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

__all__ = ["joint_harvest"]


def _read_plan(out: Path) -> dict:
    """``out/plan.json`` with its layer and precision filled in; refused without a train
    cache."""
    from .claim1_plan import DEFAULT_LAYER, DEFAULT_PRECISION

    if not (out / "plan.json").is_file():
        raise FileNotFoundError(f"{out}: no plan.json (not a claim-1 run folder)")
    plan = {"layer": DEFAULT_LAYER, "precision": DEFAULT_PRECISION,
            **json.loads((out / "plan.json").read_text())}
    if not (out / "cache-train" / "manifest.json").is_file():
        raise FileNotFoundError(f"{out}: no cache-train yet; run its harvest-1M step first")
    return plan


def joint_harvest(outs: list[str | Path], *, log: Callable[[str], None] | None = None) -> None:
    """Bring the ``cache-train`` of every claim-1 run in ``outs`` (≥ 2, distinct layers) to the
    plan's ``train_rows`` in one forward pass per batch (module docstring)."""
    from ..data.cache import ActivationCache
    from ..data.harvest import harvest
    from ..lm import load_model
    from .claim1 import Plan
    from .claim1_runs import Claim1Config

    log = log or print
    if len(outs) < 2:
        raise ValueError("a joint harvest needs at least two claim-1 runs")
    outs = [Path(o) for o in outs]
    read = [_read_plan(o) for o in outs]
    layers = [int(plan["layer"]) for plan in read]
    if len(set(layers)) != len(layers):
        raise ValueError(f"the runs must hold different layers, got {layers}")
    first = {k: v for k, v in read[0].items() if k not in ("layer", "lrs")}
    for o, plan in zip(outs[1:], read[1:], strict=True):
        if {k: v for k, v in plan.items() if k not in ("layer", "lrs")} != first:
            raise ValueError(f"{o} is a claim-1 run with other settings than "
                             f"{outs[0]}; only runs of one plan can share a harvest")
    cfg0 = Claim1Config(**first["sizes"])
    train_rows = cfg0.train_rows
    caches = [ActivationCache(o / "cache-train") for o in outs]
    if all(c.complete for c in caches):
        log(f"every train cache is complete ({train_rows} rows); nothing to do")
        return
    lead = max(c.total_rows for c in caches)
    shared = load_model(cfg0.model, dtype=first["precision"])   # one model for every plan
    plans = [Plan(o, cfg0, log, layer, shared, precision=first["precision"])
             for o, layer in zip(outs, layers, strict=True)]
    for p, c in zip(plans, caches, strict=True):
        if c.total_rows < lead:
            log(f"layer {p.layer}: catching up from {c.total_rows} to {lead} rows")
            p.harvest("cache-train", train_rows, stop_after=lead)
    man = [json.loads((p.out / "cache-train" / "manifest.json").read_text()) for p in plans]
    consumed = {p.layer: int(m["contexts_consumed"]) for p, m in zip(plans, man, strict=True)}
    if len(set(consumed.values())) != 1:
        raise RuntimeError(f"the caches do not stand at the same context after catching up "
                           f"(contexts consumed per layer: {consumed}); nothing was dropped")
    order = sorted(range(len(plans)), key=lambda i: layers[i])
    cfg = plans[order[0]].harvest_config("cache-train", train_rows,
                                         layers=[layers[i] for i in order])
    model, tok, info = shared
    log(f"joint harvest of layers {sorted(layers)} from {lead} to {train_rows} rows")
    r = harvest(cfg, model=model, tokenizer=tok, info=info, log=log,
                cache_dirs=[plans[i].out / "cache-train" for i in order])
    for p in plans:
        p.timing(f"joint harvest cache-train (layers {sorted(layers)})", rows=r.new_rows,
                 seconds=r.seconds)
