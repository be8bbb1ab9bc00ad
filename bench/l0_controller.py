"""The target-L0 controller on real activations: one JumpReLU run, L0 logged every step.

Trains a JumpReLU SAE (d_sae 4608, target L0 32, θ initialised at 1.0, lr 4e-4, seed 0) on the
first rows of an activation cache with the trainer's :class:`~abstopk.train.schedule.L0Controller`
and the chosen gains, logs ``OUT/metrics.jsonl`` every step (``l0``, ``l0_ema``,
``penalty_coeff``) and prints the held-out L0 on the first 4,096 rows of ``--heldout`` as one
JSON line. The rows of the table in docs/pipeline.md ("The target-L0 controller")::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/l0_controller.py runs/l0-base --ki 0.02 --band 2
    ... runs/l0-ki10 --ki 0.1 --band 2                      # the fast integral, no band
    ... runs/l0-beta2 --ki 0.02 --band 2 --threshold-beta2 0.99
    ... runs/l0-A --ki 0.1 --band 0.5 --strict             # the table's band rows: --strict
    ... runs/l0-D --ki 0.2 --band 0.5 --strict

``--strict``: the integral waits whenever |e| ≥ band (the first form of the band, used for the
table); without it the committed rule (it also moves when the EMA stalls or moves away).
≈ 250k tokens per run (batch 1,024 × 244 steps); ≈ 3.5 CPU-minutes on one AMD EPYC core.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from abstopk.data.cache import ActivationCache
from abstopk.train.config import TrainConfig
from abstopk.train.schedule import L0Controller
from abstopk.train.trainer import Trainer


class StrictBandController(L0Controller):
    """The integral moves only while |e| < band (no escape when the L0 stalls outside it)."""

    @torch.no_grad()
    def update(self, l0: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.ema.mul_(self.beta).add_((1 - self.beta) * l0.to(self.ema.dtype))
        ema_hat = self.ema / (1 - self.beta ** self.t)
        err = (torch.log(ema_hat + 1e-3) - math.log(self.target)).clamp(-2.0, 2.0)
        inside = (err.abs() < self.band).to(err.dtype)
        self.integral.add_(self.ki * err * inside).clamp_(self.lo, self.hi)
        self.coeff.copy_(torch.exp((self.integral + self.kp * err).clamp(self.lo, self.hi)))
        return self.coeff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--ki", type=float, required=True)
    ap.add_argument("--band", type=float, required=True, help="2 or more: off")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--threshold-beta2", type=float, default=0.999)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=244)
    ap.add_argument("--cache", default="/work/shared-runs/cache-L6-1M")
    ap.add_argument("--heldout", default="/work/shared-runs/cache-L6-heldout-16k")
    a = ap.parse_args()
    cfg = TrainConfig(architecture="jumprelu", d_sae=4608, target_l0=32.0,
                      jumprelu_init_threshold=1.0, l0_controller_ki=a.ki,
                      l0_controller_band=a.band, batch_size=a.batch, steps=a.steps, seed=0,
                      dead_tokens=1_000_000, checkpoint_every=0, log_every=1, progress=False,
                      activations=a.cache, out=a.out)
    tr = Trainer(cfg, cfg.activations)
    if a.strict:
        c = tr.state.controller
        tr.state.controller = StrictBandController(
            cfg.target_l0, cfg.initial_penalty_coeff, ki=c.ki, kp=c.kp, beta=c.beta,
            band=c.band)
    for g in tr.state.optimizer.param_groups:
        if g.get("lr_factor", 1.0) != 1.0:   # the threshold's group
            g["betas"] = (g["betas"][0], a.threshold_beta2)
    t0 = time.time()
    sae = tr.fit()
    sae.eval()
    x = ActivationCache(a.heldout).open_shard(0)["activations"].rows(0, 4096)
    with torch.no_grad():
        l0 = float((sae.encode(torch.as_tensor(x).float()) != 0).sum(-1).float().mean())
    print(json.dumps({"out": a.out, "heldout_l0_4096": l0, "last": tr.last_metrics,
                      "seconds": time.time() - t0}))


if __name__ == "__main__":
    main()
