"""The claim-1 plan's ``lr-10M`` step: is the 1M sweep's learning rate still the best at 10M
tokens?

The ``k32-10M`` pair trains at the learning rate the 1M sweep chose. A rate that wins a short
run can lose a long one (a higher rate gains more per step but settles on a higher noise
floor), and the two architectures need not move alike, so this step trains TopK and AbsTopK
k 32, seed 0, 10M tokens at every rate of :data:`~abstopk.experiments.claim1_runs.LRS_10M`
(the one equal to the 1M best is the ``k32-10M`` SAE itself), evaluates each on the
validation split (``eval_val.json``) and writes ``best_lr_10M.json`` (per architecture: the
rate with the lowest validation nmse among these runs and the ``k32-10M`` one). From then on
every 10M run of the plan trains at that rate (:meth:`Plan.best_lr`), the table's 10M seed-0
row is the chosen SAE (:meth:`Plan.resolved`), which is evaluated on test here, and the
``k32-10M`` SAE stays as a sweep point when another rate wins.
"""

from __future__ import annotations

from ..files import atomic_write_json
from .claim1_runs import Run, plan_runs

__all__ = ["run_lr10m_step"]


def run_lr10m_step(plan) -> None:
    """Train and validate the step's runs, write ``best_lr_10M.json``, evaluate the chosen
    pair on test (module docstring)."""
    # the k32-10M SAEs (trained by their step already) and the grid, in the plan's order
    runs = [Run("k32-10M", a, 32, "10M", 0) for a in ("abstopk", "topk")]
    runs += [plan.resolved(r) for r in plan_runs(plan.layer) if r.step == "lr-10M"]
    runs = list({r.name: r for r in runs}.values())
    for r in runs:
        plan.train(r)
    best: dict[str, dict] = {}
    for arch in ("topk", "abstopk"):
        cands = [r for r in runs if r.arch == arch]
        for r, ev in zip(cands, plan.evaluate_many(cands, "val"), strict=True):
            if arch not in best or ev["nmse"] < best[arch]["val_nmse"]:
                best[arch] = {"lr": ev["lr"], "val_nmse": ev["nmse"], "run": r.name}
    atomic_write_json(plan.out / "best_lr_10M.json", best)
    plan.evaluate_many([plan.resolved(Run("k32-10M", a, 32, "10M", 0))
                        for a in ("topk", "abstopk")], "test")
