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
rows. Also printed: tokenise+pack alone (contexts/s), for headroom.

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

    def bare() -> float:
        sync()
        t = time.perf_counter()
        for b in batches:
            out = run_to_layer(model, b, None, [args.layer], args.site)
            out[args.layer].to("cpu")
        sync()
        return time.perf_counter() - t

    def harvested() -> float:
        with tempfile.TemporaryDirectory(prefix="abstopk-bench-harvest-") as d:
            cfg = HarvestConfig(model=args.model, layers=[args.layer], site=args.site,
                                tokens=rows, context_size=args.context_size,
                                batch_size=args.batch_size, dtype=args.dtype,
                                out=str(Path(d) / "cache"), shard_rows=args.shard_rows,
                                device=args.device, progress=False)
            res = harvest(cfg, model=model, tokenizer=tok, info=info, log=lambda s: None)
            assert res.total_rows == rows, (res.total_rows, rows)
            return res.seconds

    bare()                      # warm-up (allocator, first-call overheads)
    t_bare, t_harv = [], []
    for r in range(args.rounds):
        t_bare.append(bare())
        t_harv.append(harvested())
        print(f"round {r}: bare {t_bare[-1]:.2f} s, harvest {t_harv[-1]:.2f} s",
              file=sys.stderr, flush=True)
    mb, mh = statistics.median(t_bare), statistics.median(t_harv)
    print(f"\nmodel {args.model} ({info.revision[:12]}), layer {args.layer} {args.site}, "
          f"{args.batches} batches x {args.batch_size} x {args.context_size} tokens = {rows} rows "
          f"(BOS dropped), storage {args.dtype}, shards of ~{args.shard_rows} rows, "
          f"device {device}, torch threads {torch.get_num_threads()}, rounds {args.rounds}")
    print(f"{'path':<34}{'median s':>10}{'rows/s':>12}{'ratio':>8}")
    print(f"{'bare truncated forward':<34}{mb:>10.2f}{rows / mb:>12,.0f}{1.0:>8.2f}")
    print(f"{'harvest -> cache':<34}{mh:>10.2f}{rows / mh:>12,.0f}{mb / mh:>8.2f}")
    print(f"tokenise+pack alone: {len(contexts) / t_tok:,.0f} contexts/s "
          f"({len(contexts) * args.context_size / t_tok:,.0f} tokens/s, first call incl. "
          f"corpus open)")
    print(f"harvest / bare = {mb / mh:.3f} (goal >= 0.90)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
