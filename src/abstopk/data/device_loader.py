"""Cache batches made on the training device: whole shuffle groups go over, rows are picked there.

:class:`~abstopk.data.loader.CacheLoader` builds every batch on the host: a gather of B random
rows from the shuffle buffer and a conversion to float32, in one prefetch thread. That is
~1.2 MB of scattered reads and 9 MB of writes per 4096 × 576 batch, and it caps a CPU
thread at a few hundred thousand rows/s. A GPU W1 step consumes ~1M rows/s.
:class:`DeviceCacheLoader` serves **the same rows in the same order** (same ``seed``, chunk
and group sizes; same ``state_dict`` positions, so a checkpoint of one resumes the other) and
moves the per-batch work to the device:

* a background thread reads the next shuffle group (contiguous chunks of the shards, in the
  cache dtype, e.g. float16) into one of two host buffers — pinned when the device is CUDA —
  split over ``readers`` threads (one contiguous copy per chunk);
* when the current group is served out, the next host buffer is copied to one device buffer
  with ``non_blocking=True`` (asynchronous from pinned memory, ordered on the device's
  current stream before the batches that read it) with its serving order;
* each batch is ``buffer.index_select(0, order[i:i+B]).float()`` on the device.

Per batch the host only slices an index tensor; the bytes cross the bus once, in the cache
dtype, in one transfer per group. A host buffer is refilled only after its copy finished (a
CUDA event). Non-finite rows: on CUDA the group is checked when it arrives (one sync per
group), on the CPU each float32 batch (a float16 ``isfinite`` over a whole group costs more
than the batches); a NaN/Inf raises :class:`~abstopk.errors.NonFiniteError`; skipping them is
the host loader's option only (``skip_nonfinite`` raises ``ValueError`` here).

``min_position`` (skip rows at context positions below it) is passed through: the reader
thread also reads the group's positions (int32, host) and drops those rows from the group's
serving order before it goes to the device, together with the stream position after each
kept row, so batches and ``state_dict`` positions stay those of the host loader.

Follows the :class:`~abstopk.data.sources.BatchSource` protocol; batches are float32 on
``device``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import NonFiniteError
from .loader import CacheLoader

__all__ = ["DeviceCacheLoader"]

_END = object()


class DeviceCacheLoader:
    """Endless shuffled float32 batches [batch_size, d_in] on ``device`` from a cache.

    Args:
        cache, batch_size, seed, shuffle, buffer_mb, chunk_rows: as
            :class:`~abstopk.data.loader.CacheLoader` (they define the same order).
        device: where batches are made ("cuda", "cuda:1", "cpu", ...).
        readers: threads reading a group from the shards (≥ 1).
        pin_memory: page-locked host buffers (default: when ``device`` is CUDA).
        min_position: skip rows at context positions below it (as the host loader).
    """

    def __init__(self, cache, batch_size: int, seed: int = 0, *, device="cpu",
                 shuffle: bool = True, buffer_mb: float = 256.0, chunk_rows: int = 512,
                 readers: int = 2, pin_memory: bool | None = None,
                 skip_nonfinite: bool = False, min_position: int = 0) -> None:
        if skip_nonfinite:
            raise ValueError("the device loader does not skip non-finite rows; use the host "
                             "cache loader for a cache that holds some")
        if int(readers) < 1:
            raise ValueError(f"readers must be >= 1, got {readers}")
        self.host = CacheLoader(cache, batch_size, seed, shuffle=shuffle, buffer_mb=buffer_mb,
                                chunk_rows=chunk_rows, prefetch=0, min_position=min_position)
        self.device = torch.device(device)
        self.readers = int(readers)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.d_in, self.batch_size = self.host.d_in, self.host.batch_size
        self.total_rows = self.host.total_rows
        self.min_position = self.host.min_position

    @property
    def position(self) -> int:
        return self.host.position

    def state_dict(self) -> dict[str, Any]:
        return self.host.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.host.load_state_dict(state)

    def _name(self) -> str:
        return str(getattr(self.host.cache, "path", "cache"))

    # ------------------------------------------------------------------ groups
    def _groups(self, position: int, stop: threading.Event, q: queue.Queue) -> None:
        """Producer thread: (epoch, group, host buffer, order, event slot, stream positions
        after the order's rows or None) of every group from ``position`` on, into ``q``; two
        host buffers in turn. The positions (int64, host) come with ``min_position`` only."""
        h = self.host
        rows = min(h.buffer_rows, h.total_rows)
        bufs = [torch.empty(rows, self.d_in, dtype=h.dtype, pin_memory=self.pin_memory)
                for _ in range(2)]
        pstore = torch.empty(rows, dtype=torch.int32) if h.min_position else None
        last_kept = position
        done = [threading.Event(), threading.Event()]
        for d in done:
            d.set()
        pool = ThreadPoolExecutor(self.readers, thread_name_prefix="abstopk-group-reader") \
            if self.readers > 1 else None
        epoch = position // h.total_rows
        offset = position - epoch * h.total_rows
        i = 0
        try:
            while not stop.is_set():
                _, starts = h._plan(epoch)
                g = int(np.searchsorted(starts, offset, side="right") - 1)
                while g < len(starts) - 1 and not stop.is_set():
                    while not done[i].wait(0.1):       # its last copy to the device ended
                        if stop.is_set():
                            return
                    done[i].clear()
                    n, reads = h._group_reads(epoch, g)
                    buf = bufs[i][:n]
                    pos = None if pstore is None else pstore[:n]
                    if pool is None or len(reads) < 2:
                        h._read_into(buf, reads, pos)
                    else:
                        parts = [reads[j::self.readers] for j in range(self.readers)]
                        for f in [pool.submit(h._read_into, buf, p, pos) for p in parts if p]:
                            f.result()
                    order = h.group_order(epoch, g)[offset - int(starts[g]):]
                    after = None
                    if pos is not None:  # drop rows at early positions; note where each is
                        keep = pos.index_select(0, order) >= h.min_position
                        base = epoch * h.total_rows + offset + 1
                        after = keep.nonzero().squeeze(1) + base
                        order = order[keep]
                        if order.numel():
                            last_kept = int(after[-1])
                        elif base + keep.numel() - 1 - last_kept > h.total_rows:
                            raise ValueError(f"{self._name()}: no row is at a context "
                                             f"position ≥ {h.min_position}")
                    if self.pin_memory:
                        order = order.pin_memory()
                    _put(q, (epoch, g, buf, order, done[i], after), stop)
                    i = 1 - i
                    g += 1
                    offset = int(starts[g])
                epoch, offset = epoch + 1, 0
        except BaseException as e:  # handed to the consumer
            _put(q, e, stop)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def _segments(self, position: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """(device group buffer, device row indices to serve next, host stream positions
        after those rows or None without ``min_position``), endlessly. Only the producer
        thread touches the host loader's epoch plan (it caches one epoch)."""
        q: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        t = threading.Thread(target=self._groups, args=(position, stop, q), daemon=True,
                             name="abstopk-device-loader")
        t.start()
        dev_buf = torch.empty(min(self.host.buffer_rows, self.total_rows), self.d_in,
                              dtype=self.host.dtype, device=self.device)
        cuda = self.device.type == "cuda"
        try:
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                epoch, g, host, order, done, after = item
                buf = dev_buf[:host.shape[0]]
                buf.copy_(host, non_blocking=self.pin_memory)
                if cuda:
                    ev = torch.cuda.Event()
                    ev.record()
                    threading.Thread(target=_set_when_done, args=(ev, done), daemon=True).start()
                else:
                    done.set()
                if cuda and not bool(torch.isfinite(buf).all()):   # one sync per group
                    raise NonFiniteError(f"{self._name()}: NaN/Inf rows in shuffle group {g} "
                                         f"of epoch {epoch}")
                yield buf, order.to(self.device, non_blocking=self.pin_memory), after
        finally:
            stop.set()
            t.join(timeout=10)

    def __iter__(self) -> Iterator[Tensor]:
        """Endless batches from ``position``; ``position`` advances as they are yielded."""
        B = self.batch_size
        cuda = self.device.type == "cuda"
        segs = self._segments(self.host.position)
        pending: list[Tensor] = []
        have = 0
        try:
            for buf, idx, after in segs:
                used = 0  # rows of this segment's order served so far
                while idx.numel():
                    take, idx = idx[:B - have], idx[B - have:]
                    used += take.numel()
                    rows = buf.index_select(0, take).to(torch.float32)
                    # CPU: float16 isfinite over a whole group is slow; check each batch in
                    # float32 (one sum, the exact test only when it is not finite)
                    if not cuda and not torch.isfinite(rows.sum()) \
                            and not torch.isfinite(rows).all():
                        raise NonFiniteError(f"{self._name()}: NaN/Inf rows near stream "
                                             f"position {self.host.position + have}")
                    pending.append(rows)
                    have += take.numel()
                    if have == B:
                        x = pending[0] if len(pending) == 1 else torch.cat(pending)
                        pending, have = [], 0
                        if after is None:
                            self.host.position += B
                        else:  # skipped rows count: the position after the batch's last row
                            self.host.position = int(after[used - 1])
                        yield x
        finally:
            segs.close()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _set_when_done(ev, done: threading.Event) -> None:
    ev.synchronize()
    done.set()
