"""Data-parallel scaling: 1 process against N processes at the same global batch.

Each configuration is one ``abstopk train`` run (a subprocess; ``--nproc N`` launches
torchrun with gloo on CPU) on the same activation matrix, SAE and seed; its rows/s is the
median of the ``tokens_per_s`` the trainer logs every ``--log-every`` steps (measured inside
the training loop, so process start-up, torchrun rendezvous and the final save are not
counted; the first window, which holds the initialisation, is skipped). Configurations:

* ``1 proc × T threads``: today's path, one process using all T cores;
* ``1 proc × 1 thread``: the same with one core (the per-rank baseline);
* ``N procs × 1 thread``: data parallel, each rank one core and B/N rows of every batch.

Data: X = Z·A + 0.3·ε + μ (Z [n, 64] standard normal, A [64, d_in] std 2/8, μ std 0.5),
seed 0, the W1 family of ``bench/train_step.py``; default W1 itself (d_in 576, d_sae 9216,
k 32, batch 4096, abstopk, AuxK idle: no latent is dead in so few steps).

Usage::

    python bench/ddp_scaling.py                       # W1, 30 steps, 2 repeats (~15 min on 2 cores)
    python bench/ddp_scaling.py --quick               # small smoke run
    python bench/ddp_scaling.py --json runs/ddp_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(path: Path, rows: int, d_in: int) -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((rows, 64)).astype(np.float32)
    a = (rng.standard_normal((64, d_in)) * 0.25).astype(np.float32)
    mu = (rng.standard_normal(d_in) * 0.5).astype(np.float32)
    x = z @ a + 0.3 * rng.standard_normal((rows, d_in)).astype(np.float32) + mu
    np.save(path, x.astype(np.float32))


def run(data: Path, out: Path, *, nproc: int, threads: int, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "abstopk.cli", "train", "--activations", str(data),
           "--out", str(out), "--force", "--architecture", "abstopk", "--k", str(a.k),
           "--d-sae", str(a.d_sae), "--batch-size", str(a.batch), "--steps", str(a.steps),
           "--log-every", str(a.log_every), "--checkpoint-every", "0", "--no-progress",
           "--seed", "0", "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    recs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r and r["step"] > a.log_every]
    return {"nproc": nproc, "threads": threads, "rows_per_s": statistics.median(rates),
            "windows": rates, "wall_s": round(wall, 1), "final_fvu": recs[-1]["fvu"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=9216)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="d_sae 1152, batch 1024, 10 steps")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.quick:
        a.d_sae, a.batch, a.steps, a.log_every, a.repeats = 1152, 1024, 10, 2, 1
    cores = os.cpu_count() or 1
    configs = [(1, cores), (1, 1), (a.nproc, max(1, cores // a.nproc))]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        make_data(data, a.batch * 8, a.d_in)
        for rep in range(a.repeats):   # configurations interleaved: contention hits all alike
            for nproc, threads in configs:
                load = os.getloadavg()[0]
                r = run(data, Path(tmp) / f"run_{nproc}_{threads}", nproc=nproc, threads=threads,
                        a=a)
                r.update(repeat=rep, load_before=round(load, 2))
                results.append(r)
                print(json.dumps(r), flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                if ln.startswith("Model name")), "unknown")
    print(f"\nCPU {cpu}, {cores} cores; W: d_in {a.d_in}, d_sae {a.d_sae}, k {a.k}, "
          f"global batch {a.batch}, {a.steps} steps, abstopk fp32\n")
    print("| configuration | rows/s (median of windows, per repeat) | wall incl. start-up (s) |")
    print("|---|---|---|")
    for nproc, threads in configs:
        rs = [r for r in results if (r["nproc"], r["threads"]) == (nproc, threads)]
        rates = ", ".join(f"{r['rows_per_s']:,.0f}" for r in rs)
        walls = ", ".join(f"{r['wall_s']:.0f}" for r in rs)
        print(f"| {nproc} proc × {threads} thread(s) | {rates} | {walls} |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"cpu": cpu, "cores": cores, "args": vars(a) | {
            "json": str(a.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
