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
manifest records the seed and order (``corpus_order``) and the rows per corpus part
(``token_mix``).

Exactly ``tokens`` rows are written: the last shard is cut after the row that reaches the
count. Resuming: the manifest's ``contexts_consumed`` is the number of contexts already
turned into shards; a rerun skips that many contexts of the same deterministic stream and
continues with the same batch size, so the resumed cache is bit-identical to an uninterrupted
one (shard writes are atomic and the manifest is updated after each shard). Shards are
serialised, hashed and written by one background thread while the next batches run.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CacheError, OutputExistsError, UserError
from ..fields import doc_field

__all__ = ["HarvestConfig", "HarvestResult", "harvest", "parse_layers"]

#: test/debug aid: seconds to sleep after each batch (lets a test interrupt a harvest)
_DELAY_ENV = "ABSTOPK_HARVEST_DELAY_S"


@dataclass
class HarvestConfig:
    """Settings of ``abstopk harvest`` (the field docs are the CLI help)."""

    model: str = doc_field("Model: 'smollm2-135m' (embedded default), a hub id "
                    "(from your HF cache), a local folder or a .gguf file.", "smollm2-135m")
    layers: list[int] = doc_field("Decoder block(s) L whose activations are harvested; several "
                           "(e.g. 3,9) harvest in one pass into OUT/layer_L.", [9])
    site: str = doc_field("Hook site: resid_post (output of block L, the paper's), "
                   "resid_pre, attn_out or mlp_out.", "resid_post")
    tokens: int = doc_field("Rows (token positions) to harvest per layer; the cache holds "
                     "exactly this many.", 1_000_000)
    context_size: int = doc_field("Tokens per packed context (the paper uses 128).", 128)
    batch_size: int = doc_field("Contexts per forward pass.", 16)
    dtype: str = doc_field("Storage dtype of the activations: float32, float16 or bfloat16.", "float32")
    out: str = doc_field("Cache folder to write (created; resumed when it holds a partial cache).", "")
    corpus: str = doc_field("Text: 'embedded' (default corpus), a .txt/.jsonl/.parquet "
                     "file, a folder of .txt files, or a Hugging Face dataset (owner/name).", "embedded")
    split: str = doc_field("Corpus split: train or heldout (they never share a document); all "
                           "(every document of a local file, not the embedded corpus).", "train")
    keep_bos: bool = doc_field("Keep the BOS positions (excluded by default, like pad).", False)
    seed: int = doc_field("Seed of the corpus order: documents shuffled, contexts mixed in "
                          "windows of 1024 (Hugging Face datasets: stream order).", 0)
    device: str = doc_field("Device of the model forward: cpu, cuda, cuda:1, ...", "cpu")
    model_dtype: str = doc_field("Dtype the model runs in (float32, bfloat16, float16).", "float32")
    shard_rows: int = doc_field("Approximate rows per shard (shards hold whole contexts).", 65536)
    resume: bool = doc_field("Continue a partial cache in OUT (--no-resume starts over, "
                      "deleting its shards).", True)
    progress: bool = doc_field("Show a progress bar with tokens/s.", True)

    def __post_init__(self) -> None:
        from ..lm.hooks import SITES

        if isinstance(self.layers, int):
            self.layers = [self.layers]
        self.layers = [int(x) for x in self.layers]
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct, got {self.layers}")
        if self.site not in SITES:
            raise ValueError(f"site must be one of {', '.join(SITES)}, got {self.site!r}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.model_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"model dtype must be float32, float16 or bfloat16, "
                             f"got {self.model_dtype!r}")
        for name in ("tokens", "context_size", "batch_size", "shard_rows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be train or heldout, got {self.split!r}")
        if self.split == "all" and self.corpus == "embedded":
            raise ValueError("split 'all' would mix the embedded corpus's train and held-out "
                             "documents; harvest train or heldout")
        if not self.out:
            raise ValueError("out (the cache folder) is required")


@dataclass
class HarvestResult:
    """Outcome of :func:`harvest`: the cache folders (one per layer), rows per layer, rows
    harvested by this call, seconds and tokens/s of this call (rows of one layer / s)."""

    paths: list[Path]
    total_rows: int
    new_rows: int
    seconds: float
    tokens_per_s: float
    resumed: bool


def parse_layers(text: str | int | list[int]) -> list[int]:
    """``"3,9"`` -> ``[3, 9]``; also accepts an int or a list."""
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        return [int(x) for x in text]
    try:
        return [int(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UserError(f"layers: expected integers separated by commas, got {text!r}") from None


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
            stop_after_rows: int | None = None) -> HarvestResult:
    """Run (or resume) a harvest as configured; returns a :class:`HarvestResult`.

    ``stop_after_rows``: return at the first shard boundary with at least this many rows on
    disk, leaving a partial cache (not ``complete``) that a later call resumes exactly; the
    rows already written never change (experiments train on a growing cache's first rows).

    ``model``/``tokenizer``/``info`` may be passed (already loaded with
    :func:`abstopk.lm.load_model`) to skip loading; they must match ``cfg.model``.
    """
    import torch

    from ..lm import hook_name, load_model, run_to_layer
    from .cache import CacheWriter
    from .doc_order import ORDER_RULE
    from .text import describe_source, resolve_source
    from .tokens import MIX_WINDOW, ContextStream

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if model is None:
        model, tokenizer, info = load_model(cfg.model, device=cfg.device, dtype=cfg.model_dtype)
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

    writers: list[CacheWriter] = []
    for L, path in zip(cfg.layers, _cache_dirs(cfg), strict=True):
        header = {
            "model": cfg.model, "model_revision": info.revision, "model_kind": info.kind,
            "model_architecture": info.architecture, "n_layers": info.n_layers,
            "layer": L, "site": cfg.site, "hook_name": hook_name(L, cfg.site), "d_in": d_in,
            "dtype": cfg.dtype, "model_dtype": cfg.model_dtype, "context_size": cfg.context_size,
            "keep_bos": cfg.keep_bos, "prepend_bos": True, "corpus": corpus,
            "corpus_order": order,
            "requested_tokens": cfg.tokens, "batch_size": cfg.batch_size,
            "shard_rows": cfg.shard_rows,
        }
        w = CacheWriter(path, header, resume=cfg.resume)
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
    if all(w.complete for w in writers):
        req = int(writers[0].manifest.get("requested_tokens", done))
        if cfg.tokens == req or (cfg.tokens == done):
            log(f"{cfg.out}: already complete ({done} rows); nothing to do")
            return HarvestResult(_cache_dirs(cfg), done, 0, 0.0, 0.0, resumed)
        raise OutputExistsError(f"{cfg.out} is a complete cache of {done} rows, not the "
                                f"{cfg.tokens} requested")
    if done > cfg.tokens:
        raise OutputExistsError(f"{cfg.out} already holds {done} rows, more than the "
                                f"{cfg.tokens} requested")
    for w in writers:
        w.set(requested_tokens=cfg.tokens, batch_size=batch_size, shard_rows=cfg.shard_rows)
    if resumed:
        log(f"resuming {cfg.out}: {done} rows from {consumed} contexts already harvested")

    store_dtype = getattr(torch, cfg.dtype)
    stream = ContextStream(tokenizer, cfg.corpus, cfg.split, cfg.context_size,
                           prepend_bos=True, seed=cfg.seed, mix_window=MIX_WINDOW)
    contexts = itertools.islice(iter(stream), consumed, None)
    next_context = consumed          # global id of the next context of the stream
    delay = float(os.environ.get(_DELAY_ENV, "0") or 0)

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
    if cfg.progress:
        from tqdm import tqdm

        pbar = tqdm(total=target, initial=done, unit="tok", unit_scale=True,
                    desc=f"harvest L{','.join(map(str, cfg.layers))}", dynamic_ncols=True,
                    smoothing=0.1)

    def write_all(acts_per_layer, toks, n_ctx, cids, pos, mix):
        for w, a in zip(writers, acts_per_layer, strict=True):
            w.write_shard(a, toks, n_ctx, context_ids=cids, positions=pos, mix=mix)

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
    stopped = False
    t_start = time.perf_counter()
    try:
        for batch in _batches(contexts, batch_size):
            ids = torch.stack([b[0] for b in batch]).to(device)
            src = torch.stack([b[1] for b in batch])
            T = ids.shape[1]
            acts = run_to_layer(model, ids, None, cfg.layers, cfg.site)
            keep = keep_positions(ids, tokenizer, cfg.keep_bos)
            flat = keep.reshape(-1).nonzero().squeeze(1)
            need = target - done - buf_rows
            if flat.numel() > need:
                flat = flat[:need]
            for j, L in enumerate(cfg.layers):
                a = acts[L].reshape(-1, d_in).index_select(0, flat)
                buf_acts[j].append(a.to("cpu", store_dtype))
            flat_cpu = flat.to("cpu")
            buf_toks.append(ids.reshape(-1).index_select(0, flat).to("cpu"))
            buf_cids.append(next_context + torch.div(flat_cpu, T, rounding_mode="floor"))
            buf_pos.append((flat_cpu % T).to(torch.int32))
            buf_src.append(src.reshape(-1).index_select(0, flat_cpu))
            next_context += len(batch)
            n = int(flat.numel())
            buf_rows += n
            buf_ctx += len(batch)
            new_rows += n
            if pbar is not None:
                pbar.update(n)
            if done + buf_rows >= target:
                done += buf_rows
                flush(final=True)
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
        else:
            done += buf_rows
            flush(final=True)
    finally:
        if pending is not None and not pending.done():
            pending.result()
        pool.shutdown(wait=True)
        if pbar is not None:
            pbar.close()
    if exhausted and not stopped:
        log(f"warning: the corpus ran out after {done} of {target} rows")
    for w in writers:
        if not stopped:
            w.set(complete=True, corpus_exhausted=exhausted)
    secs = time.perf_counter() - t_start
    rate = new_rows / secs if secs > 0 else 0.0
    log(f"harvested {new_rows} rows x {len(writers)} layer(s) in {secs:.1f} s "
        f"({rate:,.0f} tokens/s); cache: {', '.join(str(p) for p in _cache_dirs(cfg))} "
        f"({done} rows)")
    return HarvestResult(_cache_dirs(cfg), done, new_rows, secs, rate, resumed)


def config_dict(cfg: HarvestConfig) -> dict[str, Any]:
    return asdict(cfg)
