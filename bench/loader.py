"""Benchmark: SAE training throughput fed by the on-disk cache loader vs an in-memory tensor.

Workload W1-like: d_in 576, d_sae 9216, AbsTopK k 32, batch 4096, fp32 Adam
(``abstopk.train.step.train_step`` + ``make_optimizer``). The data is low-rank + noise
(X = Z·A + 0.3·ε + μ, as bench/train_step.py), written once to a temporary activation cache
(CACHE_FORMAT: manifest + safetensors shards, ``--dtype`` float16 by default) whose size is
several shuffle buffers, so the loader keeps reading, shuffling across shards and converting
to fp32 while training runs.

Two feeds, stepping in turn in one process (so both see the same machine load):

* ``memory``: consecutive [B, d_in] slices of one fp32 tensor already in RAM (the floor: no
  data cost at all);
* ``cache``: ``abstopk.data.loader.CacheLoader`` (memory-mapped shards, shuffle buffer
  ``--buffer-mb``, background prefetch).

Printed: median step time and training tokens/s of each feed, and the ratio cache / memory
(goal ≥ 0.90); also the loader's own rate without training (rows/s), for headroom.

Usage::

    python bench/loader.py            # W1 (several minutes on 2 CPU cores)
    python bench/loader.py --quick    # small shape, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_cache(path: Path, n_rows: int, d_in: int, dtype: str, shard_rows: int) -> None:
    """Low-rank + noise rows (seed 0) as a cache folder (manifest.json + shards)."""
    import hashlib

    import torch

    from abstopk.files import atomic_save_safetensors, atomic_write_json

    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    g = torch.Generator().manual_seed(0)
    A = torch.randn(64, d_in, generator=g) * (2 / 8)
    mu = torch.randn(d_in, generator=g) * 0.5
    shards, r0, i = [], 0, 0
    while r0 < n_rows:
        n = min(shard_rows, n_rows - r0)
        x = torch.randn(n, 64, generator=g) @ A + 0.3 * torch.randn(n, d_in, generator=g) + mu
        name = f"shard_{i:06d}.safetensors"
        atomic_save_safetensors(path / name, {"activations": x.to(tdt),
                                              "token_ids": torch.zeros(n, dtype=torch.int64)})
        shards.append({"file": name, "rows": n,
                       "sha256": hashlib.sha256((path / name).read_bytes()).hexdigest()})
        r0, i = r0 + n, i + 1
    atomic_write_json(path / "manifest.json", {
        "format": "abstopk-activation-cache", "version": 1, "model": "synthetic-lowrank",
        "model_revision": "seed0", "layer": 0, "site": "resid_post",
        "hook_name": "blocks.0.hook_resid_post", "d_in": d_in, "dtype": dtype,
        "context_size": 128, "keep_bos": False, "batch_size": 0, "corpus": {"name": "none"},
        "requested_tokens": n_rows, "total_rows": n_rows, "contexts_consumed": 0,
        "complete": True, "shards": shards, "abstopk_version": "0.1.0"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shape, a few seconds")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per feed")
    ap.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--buffer-mb", type=float, default=None, help="loader shuffle buffer")
    ap.add_argument("--cache-rows", type=int, default=None, help="rows in the cache")
    ap.add_argument("--dir", default=None, help="where to write the cache (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    from abstopk.data.loader import CacheLoader
    from abstopk.sae import SAE, SAEConfig
    from abstopk.train.step import make_optimizer, train_step

    if args.quick:
        d_in, d_sae, k, B = 96, 768, 16, 512
        steps, buffer_mb, n_rows = args.steps or 30, 1.0, 16 * 512
    else:
        d_in, d_sae, k, B = 576, 9216, 32, 4096
        steps, buffer_mb, n_rows = args.steps or 20, 32.0, 48 * 4096
    buffer_mb = args.buffer_mb or buffer_mb
    n_rows = args.cache_rows or n_rows

    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    cache_dir = Path(tmp.name) / "cache"
    t0 = time.perf_counter()
    make_cache(cache_dir, n_rows, d_in, args.dtype, shard_rows=max(B, n_rows // 12))
    cache_mb = sum(p.stat().st_size for p in cache_dir.glob("*.safetensors")) / 2**20
    print(f"cache: {n_rows} rows x {d_in} {args.dtype} = {cache_mb:.0f} MiB in "
          f"{len(list(cache_dir.glob('*.safetensors')))} shards (written in "
          f"{time.perf_counter() - t0:.1f} s); buffer {buffer_mb:g} MiB; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    loader = CacheLoader(cache_dir, B, seed=0, buffer_mb=buffer_mb)
    # the in-memory floor: the same rows as one fp32 tensor, served as consecutive slices
    from abstopk.files import mmap_safetensors

    X = torch.cat([mmap_safetensors(cache_dir / s["file"])["activations"].rows(0, s["rows"])
                   for s in loader.cache.shards])
    n_mem = X.shape[0] // B

    def make():
        torch.manual_seed(0)
        sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="abstopk", k=k))
        return sae, make_optimizer(sae, 1e-4)

    feeds = {}
    sae_m, opt_m = make()
    sae_c, opt_c = make()
    mem_i = [0]

    def mem_batch():
        i = mem_i[0] % n_mem
        mem_i[0] += 1
        return X[i * B:(i + 1) * B]

    cache_it = iter(loader)
    feeds["memory"] = (sae_m, opt_m, mem_batch)
    feeds["cache"] = (sae_c, opt_c, lambda: next(cache_it))
    times: dict[str, list[float]] = {name: [] for name in feeds}
    for sae, opt, get in feeds.values():  # warm-up
        for _ in range(2):
            train_step(sae, opt, get())
    for _ in range(steps):  # one step of each feed in turn: same machine load
        for name, (sae, opt, get) in feeds.items():
            t = time.perf_counter()
            x = get()
            r = train_step(sae, opt, x)
            r.loss.item()  # the step is complete (CPU: synchronous anyway)
            times[name].append(time.perf_counter() - t)
    cache_it.close()

    # the loader alone (no training): rows/s it can sustain on this machine
    solo = CacheLoader(cache_dir, B, seed=1, buffer_mb=buffer_mb)
    it = iter(solo)
    next(it)
    t = time.perf_counter()
    n = 0
    while n < max(4, min(2 * n_rows // B, 64)):
        next(it)
        n += 1
    solo_rate = n * B / (time.perf_counter() - t)
    it.close()

    med = {name: statistics.median(v) for name, v in times.items()}
    tps = {name: B / m for name, m in med.items()}
    ratio = tps["cache"] / tps["memory"]
    shape = f"d_in {d_in}, d_sae {d_sae}, abstopk k {k}, B {B}"
    print(f"\n{shape}; {steps} timed steps per feed, feeds alternating step by step")
    print("| feed | median step (ms) | training tokens/s |")
    print("|---|---:|---:|")
    for name in feeds:
        print(f"| {name} | {med[name] * 1e3:.1f} | {tps[name]:,.0f} |")
    print(f"\ncache / memory = {ratio:.3f}  (goal >= 0.90)")
    print(f"loader alone: {solo_rate:,.0f} rows/s ({solo_rate / tps['memory']:.1f}x the "
          f"training rate): at most {100 * tps['memory'] / solo_rate:.1f} % of the step time "
          f"would be data loading if none of it overlapped")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
