"""Markdown tables of docs/results.md (bidirectional fraction, minimal pairs) from
runs/stats-L6/ARCH and runs/pairs-L6.json; usage: python bench/bidir_tables.py abstopk,topk,jumprelu

Also counts the latents whose dominant + and − focus words form one of the listed minimal
pairs (a crude check that the two sides are opposites)."""

import json
import sys
from collections import Counter
from pathlib import Path

from abstopk.analysis.minimal_pairs import load_pairs
from abstopk.report.latent_tables import render_bidir, render_pairs

archs = sys.argv[1].split(",")
ix = [(a, json.loads(Path(f"runs/stats-L6/{a}/index.json").read_text())) for a in archs
      if Path(f"runs/stats-L6/{a}/index.json").exists()]
print(render_bidir(ix, markdown=True))
pairs_file = Path("runs/pairs-L6.json")
if pairs_file.exists():
    res = json.loads(pairs_file.read_text())
    print(render_pairs([(Path(k).name, r) for k, r in res.items()], markdown=True))
words: dict[str, set] = {}
for p in load_pairs():
    words.setdefault(p.a.lower(), set()).add(p.b.lower())
    words.setdefault(p.b.lower(), set()).add(p.a.lower())


def top_words(entries):
    return [w for w, _ in Counter(e["tokens"][e["focus"]].strip().lower()
                                  for e in entries).most_common(3)]


for a, x in ix:
    hits = []
    for r in x["latents"]:
        if r["label"] != "bidirectional" and (x["sae"]["signed"] or r["bidir_score"] < 0.5):
            continue
        d = json.loads(Path(f"runs/stats-L6/{a}/latents/{r['index']:06d}.json").read_text())
        tp, tn = top_words(d["top_pos"]), top_words(d["top_neg"])
        if any(w2 in words.get(w1, ()) for w1 in tp for w2 in tn):
            hits.append((r["index"], tp, tn))
    print(a, "score >= 0.5:", sum(1 for r in x["latents"] if r["bidir_score"] >= 0.5),
          "| bidirectional (or score >= 0.5 if non-negative) with a listed pair as poles:",
          len(hits), hits[:8])
