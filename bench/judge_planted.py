"""The local judge on planted latents of known type (abstopk.analysis.judge.planted).

    python bench/judge_planted.py [N_PER_TYPE] [SEED] [OUT.json] [OPPOSITE_THRESHOLD]

Loads the embedded SmolLM2-135M-Instruct, judges 4 × N_PER_TYPE planted latents, prints the
accuracies (95 % Wilson intervals), AUCs and timing, and writes the full result to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time

from abstopk.analysis.judge import JudgeConfig, load_prompts, make_scorer, validate
from abstopk.files import atomic_write_json


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    out = sys.argv[3] if len(sys.argv) > 3 else None
    thr = float(sys.argv[4]) if len(sys.argv) > 4 else JudgeConfig().opposite_threshold
    cfg = JudgeConfig(opposite_threshold=thr)
    prompts = load_prompts()
    scorer = make_scorer(cfg, prompts)
    t0, c0 = time.perf_counter(), time.process_time()
    res = validate(scorer, cfg, prompts=prompts, n_per_type=n, seed=seed)
    res["seconds"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    res["tokens_run"] = scorer.tokens_run
    for who in ("judge_coherence_poles", "judge_detection_poles", "proxy"):
        for k in ("accuracy", "bidirectional_accuracy"):
            a = res[who][k]
            print(f"{who} {k}: {a['correct']}/{a['n']} = {a['accuracy']:.3f} "
                  f"(95 % CI {a['ci95'][0]:.3f}–{a['ci95'][1]:.3f})")
        print(f"{who} confusion", json.dumps(res[who]["confusion"]))
    print("detection AUC", res["detection_auc"], "opposite AUC", res["opposite_auc"])
    print(f"{res['seconds']['wall']:.1f} s wall, {res['seconds']['cpu']:.1f} s CPU, "
          f"{res['tokens_run']} tokens run")
    if out:
        atomic_write_json(out, res)


if __name__ == "__main__":
    main()
