"""Harvest a language model's activations into a resumable on-disk cache.

Pipeline: text (``abstopk.data.text``, documents of every corpus part in a seeded, shuffled,
document-level order) → packed contexts of ``context_size`` tokens with BOS before each
document, mixed in windows of 1024 contexts (``abstopk.data.tokens.ContextStream``,
deterministic given ``seed``) → batches of
``batch_size`` contexts → truncated forward to the last requested layer
(``abstopk.lm.run_to_layer``) → rows = positions that are not BOS/pad (``keep_bos`` keeps BOS)
→ shards of about ``shard_rows`` rows, always made of whole contexts → one cache per layer
(``abstopk.data.cache``). Each row records its context id (global index of its packed
context in this order) and its position in that context (cache format version 2); the
manifest records the seed and order (``corpus_order``), the rows per corpus part
(``token_mix``), how the model's weights were stored (``model_weight_format``, e.g. "GGUF Q4_1
(dequantised to float32)") and the dtype its forward ran in (``model_dtype``, resolved when
``auto`` was asked: ``model_dtype_requested``).

Exactly ``tokens`` rows are written: the last shard is cut after the row that reaches the
count. Resuming: the manifest's ``contexts_consumed`` is the number of contexts already
turned into shards; a rerun skips that many contexts of the same deterministic stream and
continues with the same batch size, so the resumed cache is bit-identical to an uninterrupted
one (shard writes are atomic and the manifest is updated after each shard). Shards are
serialised, hashed and written by one background thread while the next batches run.

Under torchrun (``WORLD_SIZE`` > 1) the batches are split by rank (batch b to rank
b mod N), each rank writes its own shards and progress manifest into the same folder and rank
0 writes the one manifest at the end: the same rows as a single process, see
:mod:`abstopk.data.harvest_ranks`. Every rank reads the whole context stream and counts the
rows of every batch (the single-process path is the case N = 1: a resumed run re-reads the
skipped contexts and counts their rows too).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import CacheError, OutputExistsError, UserError
from . import harvest_ranks
from .harvest_config import HarvestConfig, HarvestResult, config_dict, parse_layers

__all__ = ["HarvestConfig", "HarvestResult", "config_dict", "harvest", "parse_layers"]

#: test/debug aid: seconds to sleep after each batch (lets a test interrupt a harvest)
_DELAY_ENV = "ABSTOPK_HARVEST_DELAY_S"


def _cache_dirs(cfg: HarvestConfig) -> list[Path]:
    out = Path(cfg.out)
    if len(cfg.layers) == 1:
        return [out]
    return [out / f"layer_{L}" for L in cfg.layers]


def keep_positions(ids, tokenizer, keep_bos: bool):
    """Bool mask [B, T]: positions whose activations become rows.

    BOS and pad positions (:func:`abstopk.data.tokens.special_position_mask`) are dropped;
    ``keep_bos`` keeps the BOS ones (pad is still dropped unless it is the BOS id).
    """
    from .tokens import bos_token_id, special_position_mask

    special = special_position_mask(ids, tokenizer)
    if keep_bos:
        special = special & (ids != bos_token_id(tokenizer))
    return ~special


def _batches(contexts: Iterator, batch_size: int) -> Iterator[list]:
    while True:
        batch = list(itertools.islice(contexts, batch_size))
        if not batch:
            return
        yield batch


def harvest(cfg: HarvestConfig, *, model=None, tokenizer=None, info=None,
            log: Callable[[str], None] | None = None,
            stop_after_rows: int | None = None,
            cache_dirs: list | None = None) -> HarvestResult:
    """Run (or resume) a harvest as configured; returns a :class:`HarvestResult`.

    ``stop_after_rows``: return at the first shard boundary with at least this many rows on
    disk, leaving a partial cache (not ``complete``) that a later call resumes exactly; the
    rows already written never change (experiments train on a growing cache's first rows).

    ``cache_dirs``: one cache folder per layer of ``cfg.layers``, in order (default: ``cfg.out``
    for one layer, ``cfg.out/layer_<L>`` for several); lets one forward pass continue caches
    that live in separate run folders (they must stand at the same context: the harvest brings
    them in step by dropping the trailing shards of any that is ahead).

    ``model``/``tokenizer``/``info`` may be passed (already loaded with
    :func:`abstopk.lm.load_model`) to skip loading; they must match ``cfg.model``.
    """
    import torch

    from ..lm import hook_name, load_model, run_to_layer
    from ..precision import resolve_dtype
    from .cache import CacheWriter
    from .cache_format import read_manifest
    from .doc_order import ORDER_RULE
    from .text import describe_source, resolve_source
    from .tokens import MIX_WINDOW, ContextStream

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    ranks = harvest_ranks.current()
    model_device = cfg.device
    if ranks.sharded and cfg.device == "cuda":
        model_device = f"cuda:{ranks.local_rank}"   # one GPU per process of the node
    model_dtype = resolve_dtype(cfg.model_dtype, model_device)   # "auto" → bfloat16 | float32
    if model is None:
        model, tokenizer, info = load_model(cfg.model, device=model_device, dtype=model_dtype)
    if info.n_layers <= max(cfg.layers) or min(cfg.layers) < 0:
        raise UserError(f"no layer {','.join(map(str, cfg.layers))}: {cfg.model} has "
                        f"{info.n_layers} blocks (0..{info.n_layers - 1})")
    device = next(model.parameters()).device
    corpus = describe_source(cfg.corpus, cfg.split)
    streamed = resolve_source(cfg.corpus)[0] == "hf"
    order = {"seed": cfg.seed,
             "documents": "stream order (not indexable)" if streamed else ORDER_RULE,
             "mix_window": MIX_WINDOW,
             "contexts": "window w of mix_window packed contexts in the order "
                         "numpy.random.default_rng([seed, 1, w]).permutation(len(window))"}

    # d_in from a one-context probe (mlp_out/attn_out of some models may differ from d_model)
    probe = torch.full((1, 2), int(tokenizer.bos_token_id or 0), dtype=torch.long, device=device)
    d_in = int(run_to_layer(model, probe, None, cfg.layers[:1], cfg.site)[cfg.layers[0]]
               .shape[-1])

    if ranks.sharded:
        log = harvest_ranks.prefixed(log, f"[rank {ranks.rank}/{ranks.world}] ")
    paths = _cache_dirs(cfg) if cache_dirs is None else [Path(p) for p in cache_dirs]
    if len(paths) != len(cfg.layers):
        raise ValueError(f"{len(paths)} cache folders for {len(cfg.layers)} layers")
    finished = harvest_ranks.check_folders(paths, cfg.tokens, cfg.resume, ranks)
    if finished is not None:
        log(f"{cfg.out}: already complete ({finished} rows); nothing to do")
        ranks.close()
        return HarvestResult(paths, finished, 0, 0.0, 0.0, True)

    writers: list[CacheWriter] = []
    for L, path in zip(cfg.layers, paths, strict=True):
        header = {
            "model": cfg.model, "model_revision": info.revision, "model_kind": info.kind,
            "model_architecture": info.architecture, "n_layers": info.n_layers,
            "layer": L, "site": cfg.site, "hook_name": hook_name(L, cfg.site), "d_in": d_in,
            "dtype": cfg.dtype, "model_dtype": getattr(info, "dtype", model_dtype),
            "context_size": cfg.context_size,
            "keep_bos": cfg.keep_bos, "prepend_bos": True, "corpus": corpus,
            "corpus_order": order,
            "requested_tokens": cfg.tokens, "batch_size": cfg.batch_size,
            "shard_rows": cfg.shard_rows,
        }
        names = {}
        if ranks.sharded:
            header["world_size"] = ranks.world
            names = {"manifest": harvest_ranks.rank_manifest(ranks.rank),
                     "prefix": harvest_ranks.rank_prefix(ranks.rank)}
        # starting over (cfg.resume False) already cleared the folder (harvest_ranks.check_folders)
        w = CacheWriter(path, header, resume=True, **names)
        if w.resumed and w.manifest["shards"] and int(w.manifest["version"]) < 2:
            raise CacheError(f"{path}: harvested before per-row positions were recorded "
                             f"(cache format version {w.manifest['version']}); it cannot be "
                             f"resumed, harvest it again")
        writers.append(w)

    # bring the per-layer caches in step (a kill may fall between two manifest updates)
    consumed = min(w.contexts_consumed for w in writers)
    for w in writers:
        w.rollback_to(consumed)
    done = writers[0].total_rows
    resumed = any(w.resumed for w in writers) and (consumed > 0 or done > 0)
    batch_size = cfg.batch_size
    if resumed:
        prev = int(writers[0].manifest.get("batch_size", batch_size))
        if prev != batch_size:
            log(f"resuming with the cache's batch size {prev} (not {batch_size}) so that the "
                f"rows are bit-identical to an uninterrupted harvest")
            batch_size = prev
    if all(w.complete for w in writers) and not ranks.sharded:
        req = int(writers[0].manifest.get("requested_tokens", done))
        if cfg.tokens == req or (cfg.tokens == done):
            log(f"{cfg.out}: already complete ({done} rows); nothing to do")
            return HarvestResult(paths, done, 0, 0.0, 0.0, resumed)
        raise OutputExistsError(f"{cfg.out} is a complete cache of {done} rows, not the "
                                f"{cfg.tokens} requested")
    if done > cfg.tokens:
        raise OutputExistsError(f"{cfg.out} already holds {done} rows, more than the "
                                f"{cfg.tokens} requested")
    for w in writers:   # the weight format follows from model_revision (checked on resume)
        w.set(requested_tokens=cfg.tokens, batch_size=batch_size, shard_rows=cfg.shard_rows,
              model_weight_format=getattr(info, "weight_format", "unknown"),
              model_dtype_requested=cfg.model_dtype)
    if resumed:
        log(f"resuming {cfg.out}: {done} rows from {consumed} contexts already harvested")

    store_dtype = getattr(torch, cfg.dtype)
    stream = ContextStream(tokenizer, cfg.corpus, cfg.split, cfg.context_size,
                           prepend_bos=True, seed=cfg.seed, mix_window=MIX_WINDOW)
    delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
    kill_after = harvest_ranks.kill_hook(ranks.rank)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abstopk-shard-writer")
    pending: Future | None = None
    buf_acts: list[list] = [[] for _ in writers]
    buf_toks: list = []
    buf_cids: list = []
    buf_pos: list = []
    buf_src: list = []
    buf_rows = 0
    buf_ctx = 0
    target = cfg.tokens
    pbar = None
    if cfg.progress and ranks.rank == 0:
        from tqdm import tqdm

        pbar = tqdm(total=target, initial=0, unit="tok", unit_scale=True,
                    desc=f"harvest L{','.join(map(str, cfg.layers))}", dynamic_ncols=True,
                    smoothing=0.1)

    def write_all(acts_per_layer, toks, n_ctx, cids, pos, mix):
        for w, a in zip(writers, acts_per_layer, strict=True):
            w.write_shard(a, toks, n_ctx, context_ids=cids, positions=pos, mix=mix)
        if kill_after and len(writers[0].manifest["shards"]) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def flush(final: bool) -> None:
        nonlocal pending, buf_acts, buf_toks, buf_cids, buf_pos, buf_src, buf_rows, buf_ctx
        if pending is not None:
            pending.result()
            pending = None
        if buf_rows:
            toks = torch.cat(buf_toks)
            acts = [torch.cat(b) for b in buf_acts]
            codes = torch.cat(buf_src).long()
            counts = torch.bincount(codes, minlength=len(stream.labels)).tolist()
            mix = {stream.labels[j]: int(n) for j, n in enumerate(counts) if n}
            pending = pool.submit(write_all, acts, toks, buf_ctx, torch.cat(buf_cids),
                                  torch.cat(buf_pos), mix)
        buf_acts, buf_toks, buf_rows, buf_ctx = [[] for _ in writers], [], 0, 0
        buf_cids, buf_pos, buf_src = [], [], []
        if final and pending is not None:
            pending.result()
            pending = None

    new_rows = 0
    exhausted = True
    g_rows = 0          # rows of the whole stream (every rank's) before the current batch
    skipped = 0         # contexts of this rank's batches already in its shards (resume)
    stopped = False
    t_start = time.perf_counter()
    try:
        for bi, batch in enumerate(_batches(iter(stream), batch_size)):
            ids = torch.stack([b[0] for b in batch])
            keep = keep_positions(ids, tokenizer, cfg.keep_bos)
            n_all = min(int(keep.sum()), target - g_rows)
            first_context = bi * batch_size
            last = g_rows + n_all >= target
            if not ranks.owns(bi) or skipped < consumed:
                if ranks.owns(bi):
                    skipped += len(batch)
                    if skipped > consumed:
                        raise CacheError(f"{paths[0]}: its shards end inside a batch of "
                                         f"{batch_size} contexts; harvest it again")
                g_rows += n_all
                if pbar is not None:
                    pbar.update(n_all)
                if last:
                    exhausted = False
                    break
                continue
            ids = ids.to(device)
            src = torch.stack([b[1] for b in batch])
            T = ids.shape[1]
            acts = run_to_layer(model, ids, None, cfg.layers, cfg.site)
            flat = keep.reshape(-1).nonzero().squeeze(1)[:n_all]
            flat_dev = flat.to(device)
            for j, L in enumerate(cfg.layers):
                a = acts[L].reshape(-1, d_in).index_select(0, flat_dev)
                buf_acts[j].append(a.to("cpu", store_dtype))
            buf_toks.append(ids.reshape(-1).index_select(0, flat_dev).to("cpu"))
            buf_cids.append(first_context + torch.div(flat, T, rounding_mode="floor"))
            buf_pos.append((flat % T).to(torch.int32))
            buf_src.append(src.reshape(-1).index_select(0, flat))
            n = int(flat.numel())
            g_rows += n
            buf_rows += n
            buf_ctx += len(batch)
            new_rows += n
            if pbar is not None:
                pbar.update(n)
            if last:
                exhausted = False
                break
            if buf_rows >= cfg.shard_rows:
                done += buf_rows
                flush(final=False)
                if stop_after_rows is not None and done >= stop_after_rows:
                    flush(final=True)
                    stopped = True
                    break
            if delay:
                time.sleep(delay)
        if not stopped:
            done += buf_rows
            flush(final=True)
    finally:
        if pending is not None and not pending.done():
            pending.result()
        pool.shutdown(wait=True)
        if pbar is not None:
            pbar.close()
    if exhausted and not stopped:
        log(f"warning: the corpus ran out after {g_rows} of {target} rows")
    for w in writers:
        if not stopped:
            w.set(complete=True, corpus_exhausted=exhausted)
    secs = time.perf_counter() - t_start
    rate = new_rows / secs if secs > 0 else 0.0
    if ranks.sharded:
        log(f"harvested {new_rows} rows x {len(writers)} layer(s) in {secs:.1f} s "
            f"({rate:,.0f} tokens/s on this rank); waiting for the other ranks")
        ranks.barrier()
        if ranks.rank == 0:
            for path in paths:
                harvest_ranks.merge_rank_manifests(path, ranks.world)
        ranks.barrier()
        done = int(read_manifest(paths[0])["total_rows"])
        ranks.close()
    log(f"harvested {new_rows} rows x {len(writers)} layer(s) in {secs:.1f} s "
        f"({rate:,.0f} tokens/s); cache: {', '.join(str(p) for p in paths)} "
        f"({done} rows)")
    return HarvestResult(paths, done, new_rows, secs, rate, resumed)

