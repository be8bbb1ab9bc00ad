"""Benchmark: rows/s the cache loaders deliver (no training), against a GPU W1 step's needs.

A GPU W1 step (d_in 576, d_sae 9216, AbsTopK k 32, batch 4096) takes 3.5–4.4 ms on an H100
(issue 13), so a loader must deliver ≥ ~1.0–1.2 M rows/s to keep it busy. Measured here, on
a synthetic cache (low-rank + noise rows, bench/loader.py's ``make_cache``; hot page cache:
the shards were just written), per cache dtype:

* ``group read``: one shuffle group from the shards' memory maps into a host buffer (the
  contiguous chunk copies), with 1 and several reader threads;
* ``host loader``: :class:`abstopk.data.loader.CacheLoader` as the trainer uses it (per batch
  a gather of B rows from the shuffle buffer and a float32 conversion in one prefetch
  thread), shuffled and in cache order, pinned or not;
* ``device loader``: :class:`abstopk.data.device_loader.DeviceCacheLoader` with ``--device``
  (default cpu: the batch gather then runs on the CPU too, so on a CPU-only machine this
  measures the host side only; on a GPU it is the real feed).

Each figure is the median of ``--repeats`` timed runs of ``--batches`` batches after one
warm-up batch: rows per wall-clock second, and rows per CPU second of the whole process (all
its threads; robust to other jobs sharing the cores — the cost a feed puts on the host). Usage::

    python bench/loader_feed.py                  # W1 shape, float16 and float32 caches
    python bench/loader_feed.py --quick          # small, seconds
    python bench/loader_feed.py --device cuda    # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rate(make_iter, batches: int, B: int, repeats: int, sync=None) -> tuple[float, float]:
    """Median (rows per wall second, rows per CPU second of the whole process)."""
    rates, cpu = [], []
    for _ in range(repeats):
        it = make_iter()
        next(it)
        if sync:
            sync()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(it)
        if sync:
            sync()
        rates.append(batches * B / (time.perf_counter() - t))
        cpu.append(batches * B / max(1e-9, time.process_time() - c))
        it.close()
    return statistics.median(rates), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtypes", default="float16,float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--readers", default="1,2")
    ap.add_argument("--batches", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--buffer-mb", type=float, default=64.0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)

    import torch
    from loader import make_cache

    from abstopk.data.device_loader import DeviceCacheLoader
    from abstopk.data.loader import CacheLoader

    d_in, B = (96, 512) if args.quick else (576, 4096)
    n_rows = 16 * B if args.quick else 64 * B
    batches = args.batches or (8 if args.quick else 40)
    readers = [int(r) for r in args.readers.split(",")]
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}, "
          f"load average {os.getloadavg()[0]:.1f}; d_in {d_in}, B {B}, cache {n_rows} rows, "
          f"buffer {args.buffer_mb:g} MiB, {batches} batches x {args.repeats} repeats "
          f"(median)", flush=True)
    print("| cache dtype | feed | readers | shuffle | pinned | rows/s (wall) | rows per CPU-s |")
    print("|---|---|---:|---|---|---:|---:|")
    for dtype in args.dtypes.split(","):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            cache = Path(tmp) / "cache"
            make_cache(cache, n_rows, d_in, dtype, shard_rows=max(B, n_rows // 8))
            base = CacheLoader(cache, B, seed=0, buffer_mb=args.buffer_mb)

            def row(feed, r, shuffle, pinned, rates, _dt=dtype):
                print(f"| {_dt} | {feed} | {r} | {shuffle} | {pinned} | {rates[0]:,.0f} | "
                      f"{rates[1]:,.0f} |", flush=True)

            # group read alone: mmap -> host buffer
            from concurrent.futures import ThreadPoolExecutor

            store = torch.empty(base.buffer_rows, d_in, dtype=base.dtype)
            n_groups = len(base._plan(0)[1]) - 1
            for r in readers:
                pool = ThreadPoolExecutor(r) if r > 1 else None
                times, cpu = [], []
                for rep in range(args.repeats):
                    t, c = time.perf_counter(), time.process_time()
                    rows = 0
                    for g in range(n_groups):
                        buf, _ = base._load_group(rep, g, store, pool)
                        rows += buf.shape[0]
                    times.append(rows / (time.perf_counter() - t))
                    cpu.append(rows / max(1e-9, time.process_time() - c))
                if pool is not None:
                    pool.shutdown()
                row("group read", r, "-", "no", (statistics.median(times), statistics.median(cpu)))
            for shuffle in (True, False):
                for r in readers:
                    def host(_s=shuffle, _r=r, _c=cache):
                        return iter(CacheLoader(_c, B, seed=0, shuffle=_s, readers=_r,
                                                buffer_mb=args.buffer_mb, prefetch=4))

                    row("host loader", r, shuffle, "no",
                        _rate(host, batches, B, args.repeats))
            for r in readers:
                def device(_r=r, _c=cache):
                    return iter(DeviceCacheLoader(_c, B, seed=0, device=dev, readers=_r,
                                                  buffer_mb=args.buffer_mb))

                pinned = "yes" if dev.type == "cuda" else "no"
                row(f"device loader ({dev.type})", r, True, pinned,
                    _rate(device, batches, B, args.repeats, sync))
    return 0


if __name__ == "__main__":
    sys.exit(main())
