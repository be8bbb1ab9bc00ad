"""Benchmark: harvest throughput versus a bare truncated forward on the same batches.

Both sides process the same packed contexts of the embedded corpus (``--batches`` batches of
``--batch-size`` contexts of ``--context-size`` tokens) with the embedded model:

* ``bare``: ``abstopk.lm.run_to_layer`` on pre-tokenised batches already in RAM — the floor
  (model work only: embeddings + blocks 0..L, no LM head);
* ``harvest``: ``abstopk.data.harvest.harvest`` into a fresh temporary cache — tokenising and
  packing the text, the same truncated forward, dropping BOS positions, conversion to the
  storage dtype, shards serialised + sha256-hashed + written atomically by the background
  writer, manifest updates, and the final flush.

Rounds alternate bare / harvest in one process so both see the same machine load; the
table reports the median of ``--rounds`` rounds and the ratio harvest / bare (goal ≥ 0.90).
Rates are rows (harvested token positions) per second; the bare side is credited with the same
rows. Two clocks: wall time (what a user waits; noisy on a shared machine) and the process's
CPU time (``time.process_time``, all threads: robust to other load, and conservative for the
harvest, whose writer thread's work counts even when it overlaps the forward). Also printed:
tokenise+pack alone (contexts/s), for headroom.

Usage::

    python bench/harvest.py                 # layer 9, 8 batches of 16 x 128 tokens, 3 rounds
    python bench/harvest.py --quick         # seconds: layer 3, 4 batches of 4 x 64
    python bench/harvest.py --dtype float16 --shard-rows 8192
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--site", default="resid_post")
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--dtype", default="float32", help="cache storage dtype")
    ap.add_argument("--shard-rows", type=int, default=4096,
                    help="rows per shard (several shards per round, as in a long harvest)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.layer, args.context_size, args.batch_size, args.batches = 3, 64, 4, 4
        args.shard_rows = 512

    import torch

    from abstopk.data.harvest import HarvestConfig, harvest
    from abstopk.data.tokens import iter_contexts
    from abstopk.lm import load_model, run_to_layer

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, info = load_model(args.model, device=args.device)
    device = next(model.parameters()).device

    t0 = time.perf_counter()
    it = iter_contexts(tok, "embedded", "train", args.context_size, prepend_bos=True)
    contexts = list(itertools.islice(it, args.batches * args.batch_size))
    t_tok = time.perf_counter() - t0
    batches = [torch.stack(contexts[i:i + args.batch_size]).to(device)
               for i in range(0, len(contexts), args.batch_size)]
    rows = sum(int((b != tok.bos_token_id).sum()) for b in batches)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> tuple[float, float]:
        sync()
        t, c = time.perf_counter(), time.process_time()
        for b in batches:
            out = run_to_layer(model, b, None, [args.layer], args.site)
            out[args.layer].to("cpu")
        sync()
        return time.perf_counter() - t, time.process_time() - c

    def harvested() -> tuple[float, float]:
        c = time.process_time()
        with tempfile.TemporaryDirectory(prefix="abstopk-bench-harvest-") as d:
            cfg = HarvestConfig(model=args.model, layers=[args.layer], site=args.site,
                                tokens=rows, context_size=args.context_size,
                                batch_size=args.batch_size, dtype=args.dtype,
                                out=str(Path(d) / "cache"), shard_rows=args.shard_rows,
                                device=args.device, progress=False)
            res = harvest(cfg, model=model, tokenizer=tok, info=info, log=lambda s: None)
            assert res.total_rows == rows, (res.total_rows, rows)
        return res.seconds, time.process_time() - c

    bare()                      # warm-up (allocator, first-call overheads)
    tb, th = [], []
    for r in range(args.rounds):
        tb.append(bare())
        th.append(harvested())
        print(f"round {r}: bare {tb[-1][0]:.2f} s wall / {tb[-1][1]:.2f} s cpu, harvest "
              f"{th[-1][0]:.2f} s wall / {th[-1][1]:.2f} s cpu", file=sys.stderr, flush=True)
    print(f"\nmodel {args.model} ({info.revision[:12]}), layer {args.layer} {args.site}, "
          f"{args.batches} batches x {args.batch_size} x {args.context_size} tokens = {rows} rows "
          f"(BOS dropped), storage {args.dtype}, shards of ~{args.shard_rows} rows, "
          f"device {device}, torch threads {torch.get_num_threads()}, rounds {args.rounds}")
    print(f"{'path':<26}{'wall s':>9}{'rows/s':>9}{'ratio':>7}{'cpu s':>9}{'rows/cpu-s':>12}"
          f"{'ratio':>7}")
    med = [[statistics.median(x[i] for x in t) for i in (0, 1)] for t in (tb, th)]
    for name, (w, c) in zip(("bare truncated forward", "harvest -> cache"), med, strict=True):
        print(f"{name:<26}{w:>9.2f}{rows / w:>9,.0f}{med[0][0] / w:>7.2f}{c:>9.2f}"
              f"{rows / c:>12,.0f}{med[0][1] / c:>7.2f}")
    print(f"tokenise+pack alone: {len(contexts) / t_tok:,.0f} contexts/s "
          f"({len(contexts) * args.context_size / t_tok:,.0f} tokens/s, first call incl. "
          f"corpus open)")
    print(f"harvest / bare: wall {med[0][0] / med[1][0]:.3f}, cpu {med[0][1] / med[1][1]:.3f} "
          f"(goal >= 0.90)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
