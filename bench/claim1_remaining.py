"""Core-hours left of a claim-1 run (``abstopk experiment claim1``), step by step.

Reads the run folder (``plan.json``'s layer and sizes, the rows of ``cache-train``,
``cache-val``, ``cache-test``, the finished SAEs and evaluations under ``saes/``) and prices
what is left with per-core rates:

* harvest: ``--harvest-rate`` tokens per CPU-second of the truncated forward to layer 6,
  times 7 / (L + 1) for layer L (the forward to L runs L + 1 of the 30 blocks);
* training: the median ``tokens_per_s`` of the finished 1M-token TopK/AbsTopK runs in
  ``--timings`` (a ``timings.jsonl``; default: the run's own), times the ratio of
  ``bench/claim1_speed.py``'s speeds for the other architectures (BatchTopK 0.77, batch
  AbsTopK 0.64, JumpReLU 0.19 of TopK; k 16 and 64 priced as k 32);
* evaluation: ``--val-eval-s`` CPU-seconds per validation evaluation; a test evaluation is
  the reconstruction of the test rows (``--recon-s``) and loss recovered over 64 contexts,
  i.e. 4 LM runs (clean, spliced, zero- and mean-ablated) of ``--lm-run-s`` each; with
  ``--shared-lm`` (the evaluation that shares the clean and ablated runs among a step's
  SAEs) a step of n SAEs on test costs (3 + n) LM runs instead of 4n.

A partly trained SAE counts as not started (an upper bound: its checkpoint is ignored).
Prints one Markdown table. Usage::

    python bench/claim1_remaining.py /work/shared-runs/claim1/run
    python bench/claim1_remaining.py /work/shared-runs/claim1/run-L15 --layer 15 \\
        --timings /work/shared-runs/claim1/run/timings.jsonl   # before it has started
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from abstopk.experiments.claim1 import Claim1Config, plan_runs

RATIO = {"topk": 1.0, "abstopk": 1.0, "batchtopk": 0.77, "batchabstopk": 0.64,
         "jumprelu": 0.19}


def _rows(path: Path) -> int:
    m = path / "manifest.json"
    return int(json.loads(m.read_text())["total_rows"]) if m.is_file() else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--layer", type=int, default=None, help="when the run has no plan.json")
    ap.add_argument("--timings", type=Path, default=None)
    ap.add_argument("--harvest-rate", type=float, default=1140.0)
    ap.add_argument("--val-eval-s", type=float, default=16.0)
    ap.add_argument("--recon-s", type=float, default=32.0)
    ap.add_argument("--lm-run-s", type=float, default=46.0)
    ap.add_argument("--shared-lm", action="store_true")
    a = ap.parse_args()
    plan = json.loads((a.run / "plan.json").read_text()) if (a.run / "plan.json").is_file() \
        else {}
    layer = a.layer if a.layer is not None else int(plan.get("layer", 6))
    cfg = Claim1Config(**{k: v for k, v in plan.get("sizes", {}).items()})
    timings = a.timings or a.run / "timings.jsonl"
    rates = [json.loads(line)["tokens_per_s"] for line in timings.read_text().splitlines()
             if '"train ' in line and "_1M_" in line and "k32" in line]
    train_rate = statistics.median(rates)
    harvest_rate = a.harvest_rate * 7 / (layer + 1)
    best = json.loads((a.run / "best_lr.json").read_text()) \
        if (a.run / "best_lr.json").is_file() else {}
    left: dict[str, float] = {}
    shared: set[str] = set()

    def add(step: str, seconds: float) -> None:
        left[step] = left.get(step, 0.0) + seconds / 3600

    first = min(cfg.first_rows, cfg.train_rows)
    add("harvest-1M", max(0, first - _rows(a.run / "cache-train")) / harvest_rate)
    add("heldout", (max(0, cfg.val_rows - _rows(a.run / "cache-val"))
                    + max(0, cfg.test_rows - _rows(a.run / "cache-test"))) / harvest_rate)
    add("harvest-10M", (cfg.train_rows - max(first, _rows(a.run / "cache-train")))
        / harvest_rate)
    for r in plan_runs(layer):
        name = r.name
        if r.step == "scaling" and r.tokens == "1M" and r.seed == 0 and r.arch in best:
            name = f"{r.arch}_k32_1M_s0_lr{best[r.arch]['lr']:g}"    # the sweep's SAE
        d = a.run / "saes" / name
        if not (d / "sae_weights.safetensors").is_file() and not (
                r.step == "scaling" and r.tokens == "1M" and r.seed == 0):
            add(r.step, cfg.steps[r.tokens] * cfg.batch_size / (train_rate * RATIO[r.arch]))
        ev = "val" if r.step == "lr-sweep" else "test"
        if not (d / f"eval_{ev}.json").is_file():
            add(r.step, a.val_eval_s if ev == "val" else
                a.recon_s + a.lm_run_s * (1 if a.shared_lm else 4))
            if ev == "test" and a.shared_lm and r.step not in shared:
                shared.add(r.step)
                add(r.step, 3 * a.lm_run_s)
    print(f"layer {layer}; train rate {train_rate:,.0f} tokens/s (median of {len(rates)} "
          f"1M runs in {timings}); harvest {harvest_rate:,.0f} tokens per CPU-second; LM runs "
          f"{'shared per step' if a.shared_lm else 'per SAE'}\n")
    print("| step | core-hours left |\n|---|---|")
    for step, h in left.items():
        print(f"| {step} | {h:.2f} |")
    print(f"| **total** | **{sum(left.values()):.1f}** |")


if __name__ == "__main__":
    main()
