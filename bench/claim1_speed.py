"""Training speed of the claim-1 plan's architectures on this machine, as it is loaded now.

For each architecture: a ``Trainer`` (d_in 576, d_sae 4608, batch 4096, k 32 / target L0
32, fp32, Adam, one torch thread unless OMP_NUM_THREADS says otherwise) on the first rows of
an activation cache, ``--warmup`` steps, then ``--steps`` timed steps; prints tokens/s (wall)
and the process's CPU utilisation over the timed steps (CPU time / wall: < 1 means other
jobs took the core). One JSON line per architecture.

Usage::

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/claim1_speed.py \\
        --cache /work/shared-runs/cache-L6-1M --steps 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from abstopk.data.loader import CacheLoader
from abstopk.train import TrainConfig
from abstopk.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--archs", default="topk,abstopk,batchtopk,batchabstopk,jumprelu")
    a = ap.parse_args()
    for arch in a.archs.split(","):
        kw = {"target_l0": 32.0, "jumprelu_init_threshold": 1.0} if arch == "jumprelu" \
            else {"k": 32}
        n = a.warmup + a.steps
        cfg = TrainConfig(architecture=arch, d_sae=4608, steps=n + 10, batch_size=4096,
                          lr=1e-3, seed=0, progress=False, init_batches=1, **kw)
        tr = Trainer(cfg, CacheLoader(a.cache, 4096, 0, max_rows=(n + 2) * 4096))
        tr.fit(until=a.warmup)
        t, c = time.perf_counter(), time.process_time()
        tr.fit(until=n)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        print(json.dumps({"architecture": arch, "steps": a.steps, "seconds": round(wall, 2),
                          "tokens_per_s": round(a.steps * 4096 / wall, 1),
                          "cpu_utilisation": round(cpu / wall / torch.get_num_threads(), 2),
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
