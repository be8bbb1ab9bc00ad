"""Summarise judge files: the bidirectional fraction (95 % CI), how many latents with two
coherent poles were judged opposite, and the latents judged opposite with their words.

    python bench/judge_examples.py JUDGE.json [JUDGE.json ...] [--show N]
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    args = sys.argv[1:]
    show = int(args[args.index("--show") + 1]) if "--show" in args else 8
    files = [a for i, a in enumerate(args) if a != "--show" and (i == 0 or args[i - 1] != "--show")]
    for f in files:
        d = json.load(open(f, encoding="utf-8"))
        recs = d["latents"]
        test = d.get("opposite_test", "question")
        thr = d.get("opposite_threshold", d["config"].get("opposite_threshold"))
        both = [r for r in recs if r["coherent_pos"] and r["coherent_neg"]]
        opp = [r for r in recs if r["opposite"]]
        lo, hi = d["ci95"]
        print(f"{f}: {test} test, threshold {thr:+.3f}, {d['sample']['n']} of "
              f"{d['sample']['of_live']} live; bidirectional {100 * d['bidirectional_fraction']:.1f} % "
              f"({100 * lo:.1f}–{100 * hi:.1f}), counts {d['counts']}; both poles coherent "
              f"{len(both)}, of them opposite {sum(r['opposite'] for r in both)}; judged "
              f"opposite (any poles) {len(opp)}; opposite axis "
              f"{100 * d['opposite_axis_fraction']:.1f} %; {d.get('cpu_seconds', 0):.0f} s CPU, "
              f"{d['tokens_run']} tokens")
        key = "opposite_score" if "opposite_score" in recs[0] else "opposite_logodds"
        for r in sorted(opp, key=lambda r: -r[key])[:show]:
            print(f"  latent {r['index']:>5} {r['label']:<15} score {r[key]:+6.2f}  "
                  f"+ {', '.join(r['words_pos'])}  |  − {', '.join(r['words_neg'])}")


if __name__ == "__main__":
    main()
