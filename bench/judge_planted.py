"""The local judge on planted latents of known type (abstopk.analysis.judge.planted).

    python bench/judge_planted.py N_PER_TYPE CALIB_SEED TEST_SEEDS OUT.json [--detect]
        [--test completion|question] [--split-pairs] [--related N]

Loads the embedded SmolLM2-135M-Instruct. Judges 4 × N_PER_TYPE planted latents (and N
``related`` ones) of CALIB_SEED, picks the opposite threshold there (``choose_threshold``),
then judges those of each of TEST_SEEDS (comma-separated) with that threshold and prints the
accuracies (95 % Wilson intervals), the confusion, the AUCs and the timing; OUT.json gets every
run. ``--test``: the opposite test (default: the judge's default, completion).
``--split-pairs``: calibrate on latents drawn from the even-numbered minimal pairs only and
test on the odd-numbered ones, so that no word pair is shared. ``--detect`` adds the detection
prompts (8 more prompts a latent).
"""

from __future__ import annotations

import json
import sys
import time

from abstopk.analysis.judge import JudgeConfig, load_prompts, make_scorers, validate
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
    print("  detection AUC", res["detection_auc"], "opposite AUC (vs unrelated)",
          res["opposite_auc"], "(vs related)", res["opposite_auc_related"], flush=True)


def _opt(name: str, default: str) -> str:
    args = sys.argv[5:]
    return args[args.index(name) + 1] if name in args else default


def main() -> None:
    n, calib, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
    tests = [int(s) for s in sys.argv[3].split(",")]
    detect = "--detect" in sys.argv[5:]
    split = "--split-pairs" in sys.argv[5:]
    related = int(_opt("--related", "0"))
    test = _opt("--test", JudgeConfig().opposite_test)
    prompts = load_prompts()
    scorer, completer = make_scorers(JudgeConfig(opposite_test=test), prompts)
    kw = {"prompts": prompts, "n_per_type": n, "detect": detect, "related": related,
          "completer": completer}
    t0, c0 = time.perf_counter(), time.process_time()
    cal = validate(scorer, JudgeConfig(opposite_test=test), seed=calib,
                   pairs="even" if split else "all", **kw)
    thr = choose_threshold(cal)
    print(f"calibration seed {calib} ({cal['pairs']} pairs, {test} test): opposite threshold "
          f"{thr:+.3f}")
    _show(cal)
    res = {}
    for s in tests:
        res[s] = validate(scorer, JudgeConfig(opposite_test=test, opposite_threshold=thr),
                          seed=s, pairs="odd" if split else "all", **kw)
        print(f"test seed {s} ({res[s]['pairs']} pairs, threshold {thr:+.3f}):")
        _show(res[s])
    secs = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    tokens = scorer.tokens_run + (completer.tokens_run if completer is not None else 0)
    print(f"{secs['wall']:.1f} s wall, {secs['cpu']:.1f} s CPU, {tokens} tokens run")
    atomic_write_json(out, {"threshold": thr, "opposite_test": test, "split_pairs": split,
                            "calibration": cal, "test": res, "seconds": secs,
                            "tokens_run": tokens})


if __name__ == "__main__":
    main()
