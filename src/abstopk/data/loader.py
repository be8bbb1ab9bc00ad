"""Streaming, shuffled, resumable fp32 batches from an on-disk activation cache.

The cache (CACHE_FORMAT: ``manifest.json`` + safetensors shards holding ``activations``
[rows, d_in]) is read lazily through memory maps; RAM holds one shuffle buffer (reused for
every group) plus the few batches prepared ahead, whatever the cache size.

Order (all of it a function of ``seed``; nothing depends on timing):

* Every shard is cut into *chunks* of ``chunk_rows`` consecutive rows (the last chunk of a
  shard may be shorter). Let N be the total number of rows.
* Epoch e draws a permutation of all chunks from ``numpy.random.default_rng([seed, e])``
  and cuts it into *groups* of ``group_chunks`` consecutive chunks (the shuffle buffer:
  ``group_chunks ≈ buffer_mb / (chunk_rows · d_in · bytes per value)``). A group's rows are
  read (chunks of one shard in file order), then served in the order of a permutation drawn
  from ``default_rng([seed, e, g])``. So a batch mixes rows from up to ``group_chunks`` random
  places of the whole cache, and every row is served exactly once per epoch.
* The served row stream is the concatenation epoch 0, epoch 1, …; batches are consecutive
  slices of B rows of it. The final partial batch of an epoch is completed with the first rows
  of the next epoch (nothing is dropped), so after ``k·N`` rows exactly k epochs were served.
* Skipped rows: with ``skip_nonfinite`` rows holding NaN/Inf, with ``min_position`` p > 0 rows
  whose stored context position (the shards' ``positions``, format version 2) is below p (p =
  1 drops each context's first token, the attention sink of mid layers) are dropped from the
  stream and the batch is refilled from the rows after them. The remaining rows keep their
  order; each is still served once per epoch. The positions are read with the group's
  activations (4 bytes per row); with p = 0 they are not read at all.

Position = number of rows of the stream consumed, skipped ones included
(``state_dict()["position"]``); restoring it
recomputes the epoch's chunk permutation and the current group and skips to the row, so a
resumed loader yields bit-identical batches. The chunk table costs 16 bytes per chunk
(≈ 3e-6 of the cache size for 512-row chunks of d_in 576 fp16) — the only state that grows
with the cache.

``CacheLoader`` follows the :class:`~abstopk.data.sources.BatchSource` protocol: ``d_in``,
``__iter__`` (endless fp32 CPU tensors [B, d_in]), ``state_dict()``, ``load_state_dict()``.
Shards are read through the package's one safetensors reader (``ActivationCache.open_shard``,
:func:`abstopk.files.mmap_safetensors`) and batches are read ahead by
:func:`abstopk.data.prefetch.prefetch`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CacheError, NonFiniteError
from .cache import ActivationCache
from .prefetch import prefetch as read_ahead

__all__ = ["CacheLoader", "check_min_position", "require_positions", "with_min_position"]

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16, "float64": torch.float64}


def check_min_position(min_position: int) -> int:
    """``min_position`` as an int ≥ 0 (``ValueError`` otherwise)."""
    if isinstance(min_position, bool) or int(min_position) != min_position or min_position < 0:
        raise ValueError(f"min_position must be an integer ≥ 0, got {min_position!r}")
    return int(min_position)


def require_positions(cache, min_position: int) -> None:
    """:class:`~abstopk.errors.CacheError` naming ``cache`` when ``min_position`` > 0 asks to
    skip rows by context position but the cache records none (format version 1)."""
    if min_position and not getattr(cache, "has_positions", False):
        raise CacheError(
            f"{getattr(cache, 'path', 'cache')}: the cache records no per-row context "
            f"positions (format version {getattr(cache, 'version', '?')}), so rows at positions "
            f"below {min_position} cannot be skipped; harvest it again")


def with_min_position(identity: str, min_position: int) -> str:
    """A cache identity naming the rows served: ``identity`` itself for ``min_position`` 0,
    else ``identity[positions>=p]`` (e.g. ``m/L15/resid_post@0123456789ab[positions>=1]``)."""
    return f"{identity}[positions>={int(min_position)}]" if min_position else identity


class CacheLoader:
    """Endless shuffled batches [batch_size, d_in] (float32, CPU) from an activation cache.

    Args:
        cache: a cache folder or an opened ``ActivationCache``.
        batch_size: rows per batch B.
        seed: defines the whole order (see the module docstring).
        shuffle: False serves rows in cache order (still epoch-aware and resumable).
        buffer_mb: memory of the shuffle buffer (one group of chunks) in the cache's dtype.
        chunk_rows: rows read contiguously from a shard (smaller = better mixing, more reads).
        skip_nonfinite: rows with NaN/Inf are skipped (batch refilled from the stream);
            otherwise such a row raises :class:`~abstopk.errors.NonFiniteError`.
        prefetch: batches prepared ahead by a background thread (0 = synchronous).
        pin_memory: pin the prepared batches (CUDA training: asynchronous host-to-device copies).
        progress: accepted for ``open_source`` compatibility (opening scans nothing).
        readers: threads that read a shuffle group from the shards (the order is the same).
        max_rows: serve only the cache's first ``max_rows`` rows (shards after them unused),
            e.g. the head of a cache that a harvest is still growing; its identity names them.
        min_position: skip rows whose context position is below this (1: each context's
            first token, the attention sink); needs a cache with positions (format version 2,
            else :class:`~abstopk.errors.CacheError`). The identity names it.

    Attributes: ``d_in``, ``total_rows``, ``batch_size``, ``position`` (rows consumed),
    ``epoch`` (= position // total_rows), ``min_position``.
    """

    def __init__(self, cache, batch_size: int, seed: int = 0, *, shuffle: bool = True,
                 buffer_mb: float = 256.0, chunk_rows: int = 512,
                 skip_nonfinite: bool = False, prefetch: int = 4, pin_memory: bool = False,
                 progress: bool = False, readers: int = 1, max_rows: int | None = None,
                 min_position: int = 0):
        self.cache = cache if hasattr(cache, "open_shard") else ActivationCache(cache)
        self.min_position = check_min_position(min_position)
        name = getattr(self.cache, "path", "cache")
        require_positions(self.cache, self.min_position)
        ctx = getattr(self.cache, "context_size", None)
        if self.min_position and ctx is not None and self.min_position >= int(ctx):
            raise ValueError(f"{name}: min_position {self.min_position} would skip every row "
                             f"(its contexts hold {ctx} positions)")
        self.d_in = int(self.cache.d_in)
        self.dtype = _TORCH_DTYPES[str(self.cache.dtype)]
        self.shard_rows = np.array([int(s["rows"]) for s in self.cache.shards], dtype=np.int64)
        self.total_rows = int(self.shard_rows.sum())
        if self.total_rows == 0:
            raise ValueError(f"{getattr(self.cache, 'path', 'cache')}: the cache holds no rows")
        self.identity = str(self.cache.identity())
        if max_rows is not None:  # serve the first max_rows rows only (a growing cache's head)
            if not 0 < int(max_rows) <= self.total_rows:
                raise ValueError(f"{getattr(self.cache, 'path', 'cache')}: asked for its first "
                                 f"{max_rows} rows, it holds {self.total_rows}")
            ends = np.cumsum(self.shard_rows)
            n = int(np.searchsorted(ends, int(max_rows))) + 1
            self.shard_rows = self.shard_rows[:n].copy()
            self.shard_rows[-1] -= int(ends[n - 1]) - int(max_rows)
            self.total_rows = int(max_rows)
            h = hashlib.sha256("".join(s.get("sha256", "") for s in self.cache.shards[:n])
                               .encode()).hexdigest()[:12]
            self.identity = f"{self.identity.split('@')[0]}@{h}[:{int(max_rows)}]"
        self.identity = with_min_position(self.identity, self.min_position)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.skip_nonfinite = skip_nonfinite
        self.prefetch = int(prefetch)
        self.pin_memory = pin_memory
        self.progress = progress
        if int(readers) < 1:
            raise ValueError(f"readers must be >= 1, got {readers}")
        self.readers = int(readers)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        group_chunks = int(buffer_mb * 2**20 // (max(1, chunk_rows) * self.d_in * itemsize))
        self._configure(int(seed), bool(shuffle), int(chunk_rows), max(1, group_chunks))
        self.position = 0

    # ------------------------------------------------------------------ layout and order
    def _configure(self, seed: int, shuffle: bool, chunk_rows: int, group_chunks: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.seed, self.shuffle = seed, shuffle
        self.chunk_rows, self.group_chunks = chunk_rows, group_chunks
        n_per = (self.shard_rows + chunk_rows - 1) // chunk_rows
        self._chunk_shard = np.repeat(np.arange(len(self.shard_rows)), n_per).astype(np.int32)
        first = np.concatenate([[0], np.cumsum(n_per)[:-1]]).astype(np.int64)
        local = np.arange(int(n_per.sum()), dtype=np.int64) - np.repeat(first, n_per)
        self._chunk_start = local * chunk_rows
        self._chunk_len = np.minimum(chunk_rows, self.shard_rows[self._chunk_shard]
                                     - self._chunk_start).astype(np.int64)
        self._plan_epoch: int | None = None

    @property
    def n_chunks(self) -> int:
        return len(self._chunk_start)

    @property
    def buffer_rows(self) -> int:
        """Upper bound on the rows of one shuffle group."""
        return self.group_chunks * self.chunk_rows

    @property
    def epoch(self) -> int:
        return self.position // self.total_rows

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk order, group start rows incl. the end) of ``epoch``; cached."""
        if self._plan_epoch != epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.n_chunks)
            else:
                order = np.arange(self.n_chunks)
            lens = self._chunk_len[order]
            ends = np.cumsum(lens)
            idx = np.arange(self.group_chunks - 1, self.n_chunks, self.group_chunks)
            if len(idx) == 0 or idx[-1] != self.n_chunks - 1:
                idx = np.append(idx, self.n_chunks - 1)
            self._plan_cache = (order, np.concatenate([[0], ends[idx]]).astype(np.int64))
            self._plan_epoch = epoch
        return self._plan_cache

    def _group_reads(self, epoch: int, g: int) -> tuple[int, list[tuple[int, int, int, int]]]:
        """(rows, reads) of group g of ``epoch``: ``reads`` = (shard, start, rows, offset in
        the group buffer), the group's chunks sorted by shard and start (file order)."""
        order, _ = self._plan(epoch)
        ids = order[g * self.group_chunks:(g + 1) * self.group_chunks]
        ids = ids[np.lexsort((self._chunk_start[ids], self._chunk_shard[ids]))]
        lens = self._chunk_len[ids]
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
        reads = [(int(self._chunk_shard[c]), int(self._chunk_start[c]), int(m), int(o))
                 for c, m, o in zip(ids, lens, offs, strict=True)]
        return int(lens.sum()), reads

    def _read_into(self, buf: Tensor, reads: list[tuple[int, int, int, int]],
                   positions: Tensor | None = None) -> None:
        """Copy ``reads`` (see :meth:`_group_reads`) from the shards' memory maps into
        ``buf`` [rows, d_in]; one contiguous copy per chunk. ``positions`` [rows] int32:
        also copy the rows' context positions into it (same offsets)."""
        # numpy view of the buffer with the file's element type (bf16 as raw 16-bit words)
        dst = buf.view(torch.int16).numpy().view(np.uint16) if self.dtype == torch.bfloat16 \
            else buf.numpy()
        pdst = None if positions is None else positions.numpy()
        i = 0
        while i < len(reads):
            s = reads[i][0]
            shard = self.cache.open_shard(s)
            arr = shard["activations"].array  # memory map
            if arr.shape[1:] != (self.d_in,) or arr.dtype.itemsize != buf.element_size():
                raise ValueError(f"shard {s}: activations {arr.shape} {arr.dtype} do not match "
                                 f"the manifest (d_in {self.d_in}, {self.cache.dtype})")
            pos = None
            if pdst is not None:
                if "positions" not in shard:
                    raise CacheError(f"{getattr(self.cache, 'path', 'cache')}: shard {s} holds "
                                     "no positions")
                pos = shard["positions"].array
                if pos.shape != arr.shape[:1]:
                    raise CacheError(f"{getattr(self.cache, 'path', 'cache')}: shard {s} holds "
                                     f"positions {pos.shape} for {arr.shape[0]} rows")
            del shard
            while i < len(reads) and reads[i][0] == s:
                _, a, m, o = reads[i]
                dst[o:o + m] = arr[a:a + m]  # one contiguous read into the buffer
                if pos is not None:
                    pdst[o:o + m] = pos[a:a + m]
                i += 1
            del arr, pos  # unmap: the touched pages leave this process's RSS

    def group_order(self, epoch: int, g: int) -> Tensor:
        """Serving order [n] of group g's buffer rows: ``default_rng([seed, epoch, g])``'s
        permutation (``arange`` without shuffling)."""
        n = self._group_reads(epoch, g)[0]
        if self.shuffle:
            return torch.from_numpy(np.random.default_rng([self.seed, epoch, g]).permutation(n))
        return torch.arange(n)

    def _load_group(self, epoch: int, g: int, out: Tensor | None = None, readers=None,
                    positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Rows of group g of ``epoch`` [n, d_in] (cache dtype) and their serving order [n].

        The rows are read into ``out[:n]`` when given (the reused shuffle buffer), their
        context positions into ``positions[:n]`` when given (int32).
        ``readers``: a thread pool that splits the chunk reads (numpy releases the GIL
        during the copies), else they run in this thread."""
        n, reads = self._group_reads(epoch, g)
        buf = out[:n] if out is not None and out.shape[0] >= n else \
            torch.empty(n, self.d_in, dtype=self.dtype)
        pos = None if positions is None else positions[:n]
        if readers is None or len(reads) < 2:
            self._read_into(buf, reads, pos)
        else:
            w = readers._max_workers
            parts = [reads[i::w] for i in range(w)]
            for f in [readers.submit(self._read_into, buf, p, pos) for p in parts if p]:
                f.result()
        return buf, self.group_order(epoch, g)

    def _segments(self, position: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """(group buffer, row indices to serve next, the group's context positions or None
        when ``min_position`` is 0) from ``position`` on, endlessly."""
        epoch, offset = divmod(position, self.total_rows)
        # one buffer for the whole run: a group is read into it after the previous one was
        # served (the consumer copies rows out), so RAM holds one group and no allocator churn
        store = torch.empty(min(self.buffer_rows, self.total_rows), self.d_in, dtype=self.dtype)
        pstore = torch.empty(store.shape[0], dtype=torch.int32) if self.min_position else None
        pool = None
        if self.readers > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(self.readers, thread_name_prefix="abstopk-group-reader")
        try:
            while True:
                _, starts = self._plan(epoch)
                g = int(np.searchsorted(starts, offset, side="right") - 1)
                while g < len(starts) - 1:
                    buf, perm = self._load_group(epoch, g, store, pool, pstore)
                    pos = None if pstore is None else pstore[:buf.shape[0]]
                    yield buf, perm[offset - int(starts[g]):], pos
                    del buf, perm
                    g += 1
                    offset = int(starts[g])
                epoch, offset = epoch + 1, 0
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def _batches(self, position: int) -> Iterator[tuple[Tensor, int]]:
        """(batch [B, d_in] float32, stream position after it), endlessly."""
        B = self.batch_size
        segs = self._segments(position)
        buf, idx, pos = next(segs)
        pending: list[Tensor] = []
        have = 0
        last_kept = position  # stream position of the last row kept by min_position
        while True:
            need = B - have
            while idx.numel() == 0:
                buf = idx = pos = None  # every row of the group was copied out: reuse it
                buf, idx, pos = next(segs)
            take, idx = idx[:need], idx[need:]
            position += take.numel()
            if pos is not None:  # min_position: drop the rows at earlier context positions
                take = take[pos.index_select(0, take) >= self.min_position]
                if take.numel():
                    last_kept = position
                elif position - last_kept > self.total_rows:  # a whole epoch, none kept
                    raise ValueError(
                        f"{getattr(self.cache, 'path', 'cache')}: no row is at a context "
                        f"position ≥ {self.min_position}")
            rows = buf.index_select(0, take).to(torch.float32)
            # one cheap reduction; the exact per-row test only when it is not finite
            if not torch.isfinite(rows.sum()) and not torch.isfinite(rows).all():
                if not self.skip_nonfinite:
                    raise NonFiniteError(
                        f"{getattr(self.cache, 'path', 'cache')}: NaN/Inf rows near stream "
                        f"position {position}")
                rows = rows[torch.isfinite(rows).all(dim=1)]
            pending.append(rows)
            have += rows.shape[0]
            if have == B:
                x = pending[0] if len(pending) == 1 else torch.cat(pending)
                pending, have = [], 0
                yield x, position

    # ------------------------------------------------------------------ protocol
    def __iter__(self) -> Iterator[Tensor]:
        """Endless batches from ``self.position``; ``position`` advances as they are yielded
        (batches read ahead do not count)."""
        batches = read_ahead(self._batches(self.position), self.prefetch,
                             pin_memory=self.pin_memory, name="abstopk-cache-loader")
        try:
            for x, self.position in batches:
                yield x
        finally:
            batches.close()

    def state_dict(self) -> dict[str, Any]:
        """Position after the last yielded batch, plus what defines the order."""
        return {"kind": "cache", "position": self.position, "epoch": self.epoch,
                "seed": self.seed, "shuffle": self.shuffle, "chunk_rows": self.chunk_rows,
                "group_chunks": self.group_chunks, "total_rows": self.total_rows,
                "batch_size": self.batch_size, "cache": self.identity,
                "min_position": self.min_position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; the order parameters (seed, chunking, group size) are taken
        from the state so the continuation is identical. A different cache is an error."""
        if state.get("kind", "cache") != "cache":
            raise ValueError(f"checkpointed data position is of kind {state.get('kind')!r}, "
                             "not an activation cache")
        saved = int(state.get("min_position", 0))  # states before the option: 0
        if saved != self.min_position:
            raise ValueError(
                f"checkpointed data position was taken skipping context positions below "
                f"{saved}; this loader skips those below {self.min_position} (a different "
                f"row stream), so it cannot resume it")
        if int(state["total_rows"]) != self.total_rows or \
                state.get("cache", self.identity) != self.identity:
            raise ValueError(
                f"checkpointed data position belongs to cache {state.get('cache')} with "
                f"{state['total_rows']} rows; this cache is {self.identity} with "
                f"{self.total_rows} rows")
        self._configure(int(state["seed"]), bool(state["shuffle"]), int(state["chunk_rows"]),
                        int(state["group_chunks"]))
        self.position = int(state["position"])
