"""The steering comparison behind ``abstopk steer``: every method at every signed strength on
every axis, each continuation scored by the axis's offline scorer and its costs.

For each axis (:mod:`~abstopk.steer.axes`): the DiM direction v (mean-pooled train texts,
BOS/pad excluded) with its held-out AUC and typical magnitude m on held-out corpus tokens;
each SAE's steering latent(s) (:func:`~abstopk.steer.methods.choose_latents` with the
config's ``latent_rule``; for ``output`` each candidate is applied at ``effect_strength`` on
the dev prompts, generation seed 0). Then for each condition (method, strength): one sampling
call over the axis's dev and test prompts × ``seeds`` generation seeds, inside the
condition's intervention; the row of prompt p and generation seed g samples with its own
generator seeded from (``seed``, g, crc32(p's id)) (:class:`~abstopk.steer.generate.RowSampler`),
so every condition sees the same random draws for the same (prompt, g). Every continuation is
kept with its scores: concept (the scorer), NLL under the unsteered model, distinct-2 and
3-gram repetition. Per condition, with the intervention on every position: the capability
loss (held-out LM loss) and, when ``mc_tasks`` are given, multiple-choice accuracy
(:mod:`~abstopk.steer.mc`, each question right or wrong). :mod:`~abstopk.steer.summary` turns
these records into the dev-chosen operating points and the test table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .config import SteerConfig

__all__ = ["prepare_axis", "prompt_seed", "run_axis", "run_steer"]


def prompt_seed(cfg: SteerConfig, generation_seed: int, prompt_id: str) -> int:
    """The generator seed of one (prompt, generation seed) row."""
    import zlib

    from .generate import row_seed

    return row_seed(cfg.seed, generation_seed, zlib.crc32(prompt_id.encode()))


def _generate(model, tokenizer, cfg: SteerConfig, inputs: list[str], seeds: list[int]):
    from .generate import sample_continuations

    return sample_continuations(model, tokenizer, inputs, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, top_p=cfg.top_p, row_seeds=seeds)


def prepare_axis(model, tokenizer, cfg: SteerConfig, name: str, saes: Mapping[str, Any],
                 corpus_rows: torch.Tensor) -> dict[str, Any]:
    """The axis, its DiM direction and every method (with SAE latent choices)."""
    from .axes import build_axis
    from .directions import (
        Direction,
        diff_in_means,
        pooled_activations,
        projection_auc,
        token_activations,
        typical_magnitude,
    )
    from .methods import Method, choose_latents

    axis = build_axis(name, seed=cfg.seed, n_train=cfg.n_train, n_prompts=cfg.n_prompts)
    L = cfg.layer
    pa = pooled_activations(model, tokenizer, axis.train_a, L)
    pb = pooled_activations(model, tokenizer, axis.train_b, L)
    v = diff_in_means(pa, pb)
    auc = projection_auc(v, pooled_activations(model, tokenizer, axis.held_a, L),
                         pooled_activations(model, tokenizer, axis.held_b, L))
    scale = typical_magnitude(corpus_rows, v)
    direction = Direction(v, L, "resid_post", f"{name}: {axis.end_a} − {axis.end_b}", scale, auc)
    methods = [Method(m) for m in cfg.methods if m in ("none", "prompt", "dim")]
    if cfg.sae_methods:
        from .interventions import LatentEdit, edit_latents

        ta = token_activations(model, tokenizer, axis.train_a, L)
        tb = token_activations(model, tokenizer, axis.train_b, L)
        dev = [p for _, p in axis.dev]
        seeds = [prompt_seed(cfg, 0, pid) for pid, _ in axis.dev]
        ref = None
        if cfg.latent_rule == "output":
            texts = [tokenizer.decode(c) for c in _generate(model, tokenizer, cfg, dev, seeds)]
            ref = sum(axis.scorer(texts)) / len(texts)
        for m in cfg.sae_methods:
            sae = saes[m]

            def measure(latent: int, value: float, sae=sae) -> float:
                edit = LatentEdit(latent, value * cfg.effect_strength * scale, "add")
                with edit_latents(model, sae, [edit], layer=L, site="resid_post",
                                  positions=cfg.positions):
                    cont = _generate(model, tokenizer, cfg, dev, seeds)
                sc = axis.scorer([tokenizer.decode(c) for c in cont])
                return sum(sc) / len(sc)

            choice = choose_latents(sae, ta, tb, v, corpus_rows[:512], rule=cfg.latent_rule,
                                    n=cfg.candidates, measure=measure, reference=ref)
            methods.append(Method(m, sae, choice))
    return {"axis": axis, "direction": direction, "methods": methods}


def _conditions(cfg: SteerConfig, methods) -> list[tuple[Any, float]]:
    out = []
    for m in methods:
        if m.name == "none":
            out.append((m, 0.0))
        elif m.name == "prompt":
            out += [(m, 1.0), (m, -1.0)]
        else:
            out += [(m, s) for s in cfg.strengths]
    return out


def run_axis(model, tokenizer, cfg: SteerConfig, prep: dict[str, Any], contexts: torch.Tensor,
             *, tick: Callable[[], None] = lambda: None, mc_questions: list | None = None
             ) -> dict[str, Any]:
    """Records (one per continuation) and per-condition capability costs of one axis."""
    from .costs import lm_loss
    from .generate import continuation_nll, distinct_n, repetition_rate
    from .mc import mc_accuracy
    from .methods import make_intervention

    axis, direction = prep["axis"], prep["direction"]
    prompts = [("dev", pid, p) for pid, p in axis.dev] + [("test", pid, p) for pid, p in axis.test]
    rows = [(sp, pid, p, g) for sp, pid, p in prompts for g in range(cfg.seeds)]
    base = [p for _, _, p, _ in rows]
    seeds = [prompt_seed(cfg, g, pid) for _, pid, _, g in rows]
    records, conditions = [], []
    loss_ref = lm_loss(model, tokenizer, contexts)

    def mc() -> dict[str, Any]:
        if not mc_questions:
            return {}
        correct, by_task = [], {}
        for task, qs in mc_questions:
            r = mc_accuracy(model, tokenizer, qs)
            by_task[task] = r["accuracy"]
            correct += r["correct"]
        return {"mc_accuracy": sum(correct) / len(correct), "mc_by_task": by_task,
                "mc_correct": correct}

    mc_ref = mc()
    for method, s in _conditions(cfg, prep["methods"]):
        steer, latent = make_intervention(model, method, s, direction=direction,
                                          scale=direction.scale, positions=cfg.positions,
                                          latent_mode=cfg.latent_mode)
        if method.name == "prompt":
            instr = axis.instructions[0 if s > 0 else 1]
            inputs = [instr + p for p in base]
        else:
            inputs = base
        with steer():
            cont = _generate(model, tokenizer, cfg, inputs, seeds)
        texts = [tokenizer.decode(c) for c in cont]
        scores = axis.scorer(texts)
        nll = continuation_nll(model, tokenizer, base, cont)
        if method.name in ("none", "prompt"):
            loss, mcr = loss_ref, mc_ref
        else:
            cap, _ = make_intervention(model, method, s, direction=direction,
                                       scale=direction.scale, positions="all",
                                       latent_mode=cfg.latent_mode)
            with cap():
                loss = lm_loss(model, tokenizer, contexts)
                mcr = mc()
        conditions.append({"axis": axis.name, "method": method.name, "strength": s,
                           "latent": latent, "capability_loss": loss,
                           "capability_loss_ref": loss_ref, **mcr,
                           **({"mc_accuracy_ref": mc_ref["mc_accuracy"]} if mc_ref else {})})
        for (sp, pid, p, g), c, t, sc, n in zip(rows, cont, texts, scores, nll, strict=True):
            records.append({"axis": axis.name, "split": sp, "method": method.name,
                            "strength": s, "latent": latent, "seed": g,
                            "prompt_id": pid, "prompt": p, "continuation": t,
                            "n_tokens": len(c), "concept": sc, "nll": n,
                            "distinct2": distinct_n(c, 2), "repetition3": repetition_rate(c, 3)})
        tick()
    return {"records": records, "conditions": conditions}


def axis_info(prep: dict[str, Any]) -> dict[str, Any]:
    """The axis's direction and latent choices as plain values (for the JSON)."""
    axis, d = prep["axis"], prep["direction"]
    out = {"axis": axis.name, "end_a": axis.end_a, "end_b": axis.end_b,
           "n_train": [len(axis.train_a), len(axis.train_b)],
           "n_held": [len(axis.held_a), len(axis.held_b)], "dim_norm": float(d.vector.norm()),
           "dim_auc": d.auc, "scale": d.scale, "instructions": list(axis.instructions),
           "scorer": getattr(axis.scorer, "name", ""), "info": axis.info, "latents": {}}
    for m in prep["methods"]:
        if m.choice is not None:
            c = m.choice
            out["latents"][m.name] = {"pos": c.pos, "neg": c.neg, "sign_pos": c.sign_pos,
                                      "sign_neg": c.sign_neg, "unit_pos": c.unit_pos,
                                      "unit_neg": c.unit_neg, "n_latents": c.n_latents,
                                      **c.scores}
    return out


def run_steer(model, tokenizer, cfg: SteerConfig, saes: Mapping[str, Any], *,
              progress: bool = False, log: Callable[[str], None] = lambda _m: None,
              mc_cache: str | None = None) -> dict[str, Any]:
    """Run the comparison on every axis; returns {"config", "axes", "records", "conditions"}
    (plain values; :func:`abstopk.steer.summary.summarize` adds the tables). ``mc_cache``:
    the cache root holding ``mc/`` (default: the abstopk cache)."""
    import dataclasses

    from ..data.heldout import heldout_activations
    from .costs import heldout_contexts

    missing = [m for m in cfg.sae_methods if m not in saes]
    if missing:
        from ..errors import SteeringError

        raise SteeringError(f"no SAE given for {', '.join(missing)}")
    mc_questions = None
    if cfg.mc_tasks:
        from ..data.bigbench import load_mc

        mc_questions = [(t, load_mc(t, mc_cache, cfg.mc_questions)) for t in cfg.mc_tasks]
        log(f"multiple choice: {', '.join(f'{t} ({len(q)})' for t, q in mc_questions)}")
    log(f"held-out activations at layer {cfg.layer} ({cfg.magnitude_tokens} tokens)")
    rows = heldout_activations(model, tokenizer, layer=cfg.layer, site="resid_post",
                               n_tokens=cfg.magnitude_tokens, context_size=128)
    contexts = heldout_contexts(tokenizer, cfg.capability_contexts, cfg.capability_context_size)
    n_cond = sum(1 if m == "none" else 2 if m == "prompt" else len(cfg.strengths)
                 for m in cfg.methods)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_cond * len(cfg.axes), desc="steer", unit="condition")
    out: dict[str, Any] = {"config": dataclasses.asdict(cfg), "axes": [], "records": [],
                           "conditions": []}
    try:
        for name in cfg.axes:
            log(f"axis {name}: directions and latents")
            prep = prepare_axis(model, tokenizer, cfg, name, saes, rows)
            out["axes"].append(axis_info(prep))
            res = run_axis(model, tokenizer, cfg, prep, contexts, mc_questions=mc_questions,
                           tick=(bar.update if bar is not None else lambda *_: None))
            out["records"] += res["records"]
            out["conditions"] += res["conditions"]
    finally:
        if bar is not None:
            bar.close()
    return out
