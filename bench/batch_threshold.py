"""Batch operators at inference: held-out L0 and NMSE with the calibrated threshold and with
the training EMA it replaced (docs/benchmarks.md, "Batch operators").

Trains each architecture with :class:`abstopk.train.trainer.Trainer` (resumable: checkpoints in
``OUT/<arch>_<k>_small``), whose last act is the calibration; then evaluates the saved SAE on
every row of the held-out cache twice, with θ = the calibrated value and with θ = the EMA
recorded as ``theta_ema``. Prints one JSON line per SAE and writes them to ``OUT/results.json``.

Usage (the figures of docs/benchmarks.md)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/batch_threshold.py batchtopk batchabstopk \\
        --cache /work/shared-runs/cache-L6-1M --heldout /work/shared-runs/cache-L6-heldout-16k \\
        --out runs/batch-L6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def _rows(path: str) -> torch.Tensor:
    from abstopk.data.cache import ActivationCache

    c = ActivationCache(path)
    return torch.cat([torch.as_tensor(c.open_shard(i)["activations"].rows(0, s["rows"]))
                      for i, s in enumerate(c.shards)]).float()


def main(argv: list[str] | None = None) -> int:
    from abstopk.sae import SAE
    from abstopk.train.config import TrainConfig
    from abstopk.train.trainer import Trainer

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("architectures", nargs="+")
    p.add_argument("--cache", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--d-sae", type=int, default=2304)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=122)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    held = _rows(a.heldout)
    results = {}
    for arch in a.architectures:
        out = Path(a.out) / f"{arch}_{a.k}_small"
        cfg = TrainConfig(architecture=arch, k=a.k, d_sae=a.d_sae, batch_size=a.batch,
                          steps=a.steps, seed=a.seed, dead_tokens=1_000_000,
                          checkpoint_every=20, resume=True, progress=False, out=str(out))
        t = time.perf_counter()
        tr = Trainer(cfg, a.cache)
        tr.fit()
        rec = {"train_seconds": round(time.perf_counter() - t), "calibration": tr.calibration}
        for name, theta in (("calibrated", tr.calibration["theta"]),
                            ("ema", tr.calibration["theta_ema"])):
            sae = SAE.load(out).eval()
            sae.threshold.fill_(theta)
            l0, nmse = [], []
            with torch.no_grad():
                for i in range(0, held.shape[0], 4096):
                    x = held[i:i + 4096]
                    o = sae(x)
                    l0.append((o.z != 0).sum(1).float())
                    nmse.append((o.x_hat - x).pow(2).sum(1) / x.pow(2).sum(1))
            rec[name] = {"theta": theta, "heldout_l0": float(torch.cat(l0).mean()),
                         "heldout_nmse": float(torch.cat(nmse).mean())}
        results[arch] = rec
        print(arch, json.dumps(rec), flush=True)
        (Path(a.out) / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
