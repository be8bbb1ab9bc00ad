"""The claim-1 plan's ablation steps: ``ablation`` (1M tokens, variants ``aux`` and ``nosink``,
seeds 0–1) and ``nosink-10M`` (10M tokens, ``nosink``, seeds 0–1), each against the plain
runs of the same architecture, tokens and seed.

Per SAE, on the test split:

* ``eval_ablation.json`` (every run): nmse, fvu, L0 and dead fraction over every row of
  ``cache-test`` and, with the suffix ``_pos1``, over its rows at context positions ≥ 1
  (each context's first row, the attention sink, left out);
* ``eval_ablation_lr.json`` (plain and ``nosink`` runs): loss recovered (zero and mean
  ablation) and KL over the plan's test contexts with the first position of every context
  kept clean (``evaluate_loss_recovered(min_position=1)``), so an SAE trained without it and
  one trained with it are asked the same question; one call per step, so the clean and
  ablated LM runs are shared. ``aux`` runs get none (their reconstruction already decides).

``ablation.md`` (:mod:`abstopk.report.claim1_ablation`) is rewritten from every SAE of the
run folder that has ``eval_ablation.json``, so both steps land in one table.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..files import atomic_write_json
from .claim1_runs import CONTEXT, SITE, Run, plan_runs, sae_lr

__all__ = ["ablation_eval", "ablation_loss_recovered", "ablation_rows", "run_ablation_step"]

#: the keys of ``eval_ablation_lr.json`` copied into the table rows, with the suffix ``_pos1``
LR_KEYS = ("loss_recovered", "loss_recovered_mean_ablation", "kl", "loss_recovered_ci",
           "loss_recovered_mean_ablation_ci")


def plain_of(plan, run: Run) -> Run:
    """The plain-recipe run that ``run`` (a variant) is compared with: the plan's run of the
    same architecture, k, tokens and seed at its best lr (outside the learning-rate sweeps)."""
    for r in plan_runs(plan.layer):
        if (r.variant, r.arch, r.k, r.tokens, r.seed, r.lr) == ("", run.arch, run.k,
                                                                run.tokens, run.seed, None):
            return plan.resolved(r)
    raise ValueError(f"the plan has no plain run to compare {run.name} with")


def run_ablation_step(plan, step: str) -> None:
    """Train the step's variants and their plain counterparts (those of another step are
    trained here when that step has not run yet), evaluate them (``eval_ablation.json``; loss
    recovered at positions ≥ 1 for plain and ``nosink`` runs) and rewrite ``ablation.md``."""
    from ..report.claim1_ablation import write_ablation_report

    runs = [r for r in plan_runs(plan.layer) if r.step == step]
    base: list[Run] = []
    for r in runs:
        p = plain_of(plan, r)
        if p not in base:
            base.append(p)
    for r in base + runs:
        plan.train(r)
    for r in base + runs:
        ablation_eval(plan, r)
    ablation_loss_recovered(plan, [r for r in base + runs if r.variant in ("", "nosink")])
    write_ablation_report(plan.out, ablation_rows(plan.out), layer=plan.layer)


def ablation_eval(plan, run: Run) -> dict:
    """The run's ``eval_ablation.json`` (written when missing): test nmse, fvu, L0 and dead
    fraction over every row of ``cache-test`` and over its rows at positions ≥ 1."""
    from ..eval.metrics import evaluate_reconstruction
    from ..sae import SAE

    d = plan.sae_dir(run)
    path = d / "eval_ablation.json"
    if path.is_file():
        return json.loads(path.read_text())
    sae = SAE.load(d).eval()
    cfg = json.loads((d / "train_config.json").read_text())
    res: dict[str, Any] = {
        "run": run.name, "variant": run.variant or "plain", "architecture": run.arch,
        "k": run.k, "tokens": run.tokens, "seed": run.seed, "lr": sae_lr(d), "split": "test",
        "train_dead_tokens": cfg.get("dead_tokens"),
        "train_min_position": int(cfg.get("min_position", 0))}
    for suffix, min_pos in (("", 0), ("_pos1", 1)):
        rec = evaluate_reconstruction(sae, plan.out / "cache-test", batch_size=4096,
                                      min_position=min_pos)
        for m in ("nmse", "fvu", "l0", "dead_fraction"):
            res[m + suffix] = rec.summary[m]
    atomic_write_json(path, res)
    return res


def ablation_loss_recovered(plan, runs: list[Run]) -> None:
    """``eval_ablation_lr.json`` of each run that lacks it: loss recovered and KL with the
    first position of every test context kept clean, all missing runs in one call."""
    from ..data.tokens import bos_token_id, iter_contexts
    from ..eval.loss_recovered import evaluate_loss_recovered
    from ..sae import SAE

    todo = {r.name: r for r in runs if not (plan.sae_dir(r) / "eval_ablation_lr.json").is_file()}
    if not todo:
        return
    model, tok, _ = plan.lm()
    ctx = iter_contexts(tok, source=str(plan.out / "valtest" / "test.jsonl"), split="all",
                        context_size=CONTEXT)
    t = time.perf_counter()
    res = evaluate_loss_recovered(
        {name: SAE.load(plan.sae_dir(r)).eval() for name, r in todo.items()}, model, ctx,
        layer=plan.layer, site=SITE, n_contexts=plan.cfg.lr_contexts, batch_size=4,
        skip_token_ids={bos_token_id(tok)}, min_position=1)
    plan.timing(f"loss recovered at positions >= 1 of {len(todo)} SAE(s)", saes=sorted(todo),
                seconds=round(time.perf_counter() - t, 1))
    for name, r in todo.items():
        atomic_write_json(plan.sae_dir(r) / "eval_ablation_lr.json",
                          {"run": name, "split": "test", **res[name]})


def ablation_rows(out) -> list[dict[str, Any]]:
    """The table rows: every ``saes/*/eval_ablation.json`` under ``out``, with the keys of
    :data:`LR_KEYS` of its ``eval_ablation_lr.json`` (when there is one) as ``<key>_pos1``.
    Rows written before the 10M step have no ``tokens``: they are 1M runs."""
    rows = []
    for p in sorted(out.glob("saes/*/eval_ablation.json")):
        row = {"tokens": "1M", **json.loads(p.read_text())}
        lr = p.with_name("eval_ablation_lr.json")
        if lr.is_file():
            got = json.loads(lr.read_text())
            row.update({f"{k}_pos1": got[k] for k in LR_KEYS if k in got})
        rows.append(row)
    return rows
