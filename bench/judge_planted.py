"""The local judge on planted latents of known type (abstopk.analysis.judge.planted).

    python bench/judge_planted.py N_PER_TYPE CALIB_SEED TEST_SEED OUT.json [--detect]

Loads the embedded SmolLM2-135M-Instruct. Judges 4 × N_PER_TYPE planted latents of
CALIB_SEED, picks the opposite threshold there (``choose_threshold``), then judges those of
TEST_SEED with that threshold and prints the accuracies (95 % Wilson intervals), the AUCs and
the timing; OUT.json gets both runs. ``--detect`` adds the detection prompts (9 prompts a
latent instead of 1).
"""

from __future__ import annotations

import json
import sys
import time

from abstopk.analysis.judge import JudgeConfig, load_prompts, make_scorer, validate
from abstopk.analysis.judge.planted import choose_threshold
from abstopk.files import atomic_write_json


def _show(res: dict) -> None:
    for who in ("judge_coherence_poles", "judge_detection_poles", "proxy"):
        if not res.get(who):
            continue
        for k in ("accuracy", "bidirectional_accuracy"):
            a = res[who][k]
            print(f"  {who} {k}: {a['correct']}/{a['n']} = {a['accuracy']:.3f} "
                  f"(95 % CI {a['ci95'][0]:.3f}–{a['ci95'][1]:.3f})")
        print(f"  {who} confusion", json.dumps(res[who]["confusion"]))
    print("  detection AUC", res["detection_auc"], "opposite AUC", res["opposite_auc"])


def main() -> None:
    n, calib, test, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    detect = "--detect" in sys.argv[5:]
    prompts = load_prompts()
    scorer = make_scorer(JudgeConfig(), prompts)
    t0, c0 = time.perf_counter(), time.process_time()
    cal = validate(scorer, JudgeConfig(), prompts=prompts, n_per_type=n, seed=calib,
                   detect=detect)
    thr = choose_threshold(cal)
    print(f"calibration seed {calib}: opposite threshold {thr:+.3f}")
    _show(cal)
    res = validate(scorer, JudgeConfig(opposite_threshold=thr), prompts=prompts, n_per_type=n,
                   seed=test, detect=detect)
    secs = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    print(f"test seed {test} (threshold {thr:+.3f}):")
    _show(res)
    print(f"{secs['wall']:.1f} s wall, {secs['cpu']:.1f} s CPU, {scorer.tokens_run} tokens run")
    atomic_write_json(out, {"threshold": thr, "calibration": cal, "test": res, "seconds": secs,
                            "tokens_run": scorer.tokens_run})


if __name__ == "__main__":
    main()
