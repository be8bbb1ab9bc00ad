"""Planted-feature validation of the bidirectionality proxy, seeds 5-9 (docs/latent-stats.md)."""
import json
import sys

from abstopk.analysis.planted import PlantedConfig, planted_validation

out = {}
for name, kw in [("default", {}), ("harder", {"encoder_noise": 0.5, "tokens_per_pole": 5, "background": 1.0})]:
    for arch in ["abstopk", "topk"]:
        rs = [planted_validation(PlantedConfig(architecture=arch, seed=s, **kw)) for s in range(5, 10)]
        agg = {k: sum(r[k] for r in rs) / len(rs) for k in ("accuracy", "accuracy_bidirectional", "accuracy_unidirectional", "score_auc", "bidirectional_fraction")}
        rnd = {}
        for r in rs:
            for k, v in r["random_labels"].items():
                rnd[k] = rnd.get(k, 0) + v
        agg["random_labels"] = rnd
        out[f"{name}/{arch}"] = agg
        print(name, arch, json.dumps(agg), flush=True)
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "planted.json", "w"), indent=1)
