"""The :class:`BatchSource` protocol the trainer reads from, and :class:`IterableSource`.

Protocol (duck-typed): an object with

* ``d_in`` — the input width;
* ``__iter__()`` — yields float32 tensors [B, d_in] (CPU; the trainer moves them);
* ``state_dict()`` — a JSON-serialisable dict: the position *after the last yielded batch*;
* ``load_state_dict(d)`` — restore such a position; the next ``iter()`` then yields exactly
  the batches that would have followed it (this is what makes resume bit-identical).

The other sources: :class:`~abstopk.data.matrix.MatrixSource` (rows of a matrix or matrix
file), :class:`~abstopk.data.loader.CacheLoader` (an activation cache folder) and
:class:`~abstopk.data.prefetch.PrefetchSource` (any source, read ahead in a thread);
:func:`~abstopk.data.open.open_source` picks one for what the user gave.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import NonFiniteError

__all__ = ["BatchSource", "IterableSource", "is_batch_source"]


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer reads batches from.

    Attributes:
        d_in: width of every batch.

    ``__iter__`` yields float32 tensors of shape [B, d_in] with a fixed B (a final short batch
    is allowed only when the source is exhausted). ``state_dict()`` returns a JSON-serialisable
    dict describing the position after the last batch yielded so far; after
    ``load_state_dict(state)`` a new ``iter()`` continues from that position, yielding the same
    batches, bit for bit, that the original iterator would have yielded next.
    """

    d_in: int

    def __iter__(self) -> Iterator[Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def is_batch_source(obj: Any) -> bool:
    """Whether ``obj`` follows the :class:`BatchSource` protocol (has all four members)."""
    return all(hasattr(obj, a) for a in ("d_in", "state_dict", "load_state_dict", "__iter__"))


class IterableSource:
    """Re-cut any iterable of [b, d_in] arrays/tensors into float32 batches [B, d_in].

    A re-iterable (list, dataset, …) is cycled epoch after epoch; a one-shot iterator ends the
    source when it is exhausted (a final short batch is served). The position is
    ``(epoch, rows consumed in the epoch)``; restoring it re-iterates the epoch and skips that
    many rows, so resume is exact only if the iterable yields the same data again.
    """

    def __init__(self, batches: Iterable[Any], batch_size: int, d_in: int | None = None) -> None:
        self.batches = batches
        self.batch_size = int(batch_size)
        self.one_shot = iter(batches) is batches
        self._peeked: list[Tensor] = []
        if d_in is None:
            if self.one_shot:
                first = next(iter(batches), None)
                if first is None:
                    raise ValueError("the batch iterator is empty")
                self._peeked = [self._as_tensor(first, None)]
                d_in = self._peeked[0].shape[1]
            else:
                first = next(iter(batches), None)
                if first is None:
                    raise ValueError("the batch iterable is empty")
                d_in = self._as_tensor(first, None).shape[1]
        self.d_in = int(d_in)
        self.epoch = 0
        self.rows = 0

    def _as_tensor(self, b: Any, d_in: int | None) -> Tensor:
        t = b if isinstance(b, Tensor) else torch.as_tensor(np.asarray(b))
        t = t.detach().to("cpu", torch.float32)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2 or (d_in is not None and t.shape[1] != d_in):
            raise ValueError(f"expected batches of shape [b, {d_in or 'd_in'}], "
                             f"got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise NonFiniteError("a batch from the iterable holds NaN/Inf values")
        return t

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "iterable", "epoch": self.epoch, "rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.one_shot and (state["epoch"] or state["rows"]):
            raise ValueError("cannot restore the position of a one-shot iterator")
        self.epoch, self.rows = int(state["epoch"]), int(state["rows"])

    def _epoch_rows(self) -> Iterator[Tensor]:
        it: Iterable[Any] = self.batches
        if self._peeked:
            peeked, self._peeked = self._peeked, []
            yield from peeked
        for b in it:
            yield self._as_tensor(b, self.d_in)

    def __iter__(self) -> Iterator[Tensor]:
        B = self.batch_size
        while True:
            skip = self.rows
            buf: list[Tensor] = []
            n = 0
            got_any = False
            for t in self._epoch_rows():
                got_any = True
                if skip:
                    drop = min(skip, t.shape[0])
                    t, skip = t[drop:], skip - drop
                    if t.shape[0] == 0:
                        continue
                buf.append(t)
                n += t.shape[0]
                while n >= B:
                    cat = torch.cat(buf) if len(buf) > 1 else buf[0]
                    x, rest = cat[:B].contiguous(), cat[B:]
                    buf, n = ([rest] if rest.shape[0] else []), rest.shape[0]
                    self.rows += B
                    yield x
            if not got_any:
                return
            if self.one_shot:
                if n:
                    self.rows += n
                    yield torch.cat(buf)
                return
            # leftover rows (< B) of a re-iterable epoch are dropped
            self.epoch += 1
            self.rows = 0
