"""Read batches ahead in a background thread: :func:`prefetch` and :class:`PrefetchSource`.

:func:`prefetch` runs an iterator of ``(batch, position)`` pairs in a thread that fills a
bounded queue (at most ``depth`` pairs wait), so reading, shuffling and converting the next
batches overlaps the training step. The consumer sees the pairs in the producer's order, so
each batch arrives with the position *after* it and a source can report the position of the
last batch handed out (not of the last one read ahead): checkpoints stay exact.

* ``pin_memory``: batches are pinned in the thread (CUDA training) so host-to-device copies
  can be asynchronous;
* an exception in the producer is raised in the consumer, at the point where the failing
  batch would have been;
* closing the consumer (``close()``, ``del`` or breaking out of a ``for``) stops the thread
  and waits for it; threads still running at interpreter exit are stopped too (a daemon
  thread killed inside a torch op during finalisation aborts the process).

Both the matrix files (:class:`PrefetchSource` around a
:class:`~abstopk.data.matrix.MatrixSource`) and the activation cache loader
(:class:`~abstopk.data.loader.CacheLoader`) read ahead through :func:`prefetch`.
"""

from __future__ import annotations

import atexit
import copy
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from torch import Tensor

from .sources import BatchSource

__all__ = ["PrefetchSource", "prefetch"]

P = TypeVar("P")

_END = object()
_JOIN_TIMEOUT_S = 10.0
# prefetch threads still running, with their stop events
_LIVE_THREADS: dict[threading.Thread, threading.Event] = {}


@atexit.register
def _stop_prefetch_threads() -> None:
    for t, stop in list(_LIVE_THREADS.items()):
        stop.set()
        t.join(timeout=_JOIN_TIMEOUT_S)


def prefetch(items: Iterable[tuple[Tensor, P]], depth: int, *, pin_memory: bool = False,
             name: str = "abstopk-prefetch") -> Iterator[tuple[Tensor, P]]:
    """Yield the ``(batch, position)`` pairs of ``items``, produced ahead in a thread.

    ``depth``: pairs read ahead at most (≤ 0: no thread, ``items`` is read in the caller).
    ``items`` is iterated in the thread only; the caller must not touch what it reads from
    until this generator is closed (which waits for the thread).
    """
    if depth <= 0:
        for x, pos in items:
            yield (x.pin_memory() if pin_memory else x), pos
        return
    q: queue.Queue = queue.Queue(maxsize=int(depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x, pos in items:
                if pin_memory:
                    x = x.pin_memory()
                if not put((x, pos)):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer
            put(e)

    t = threading.Thread(target=produce, name=name, daemon=True)
    _LIVE_THREADS[t] = stop
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=_JOIN_TIMEOUT_S)
        _LIVE_THREADS.pop(t, None)


class PrefetchSource:
    """Read batches of ``source`` ahead in a background thread (at most ``depth`` waiting).

    The position it reports is that of the last batch *handed to the caller* (a snapshot of
    ``source.state_dict()`` taken right after the producer received that batch), so
    checkpoints stay exact. A new ``iter()`` first rewinds ``source`` to that position
    (``source.load_state_dict``), dropping whatever had been read ahead. ``pin_memory``: pin
    the batches (CUDA training) so the host-to-device copies can be asynchronous.
    """

    def __init__(self, source: BatchSource, depth: int = 2, *, pin_memory: bool = False) -> None:
        self.source = source
        self.d_in = source.d_in
        self.depth = max(1, int(depth))
        self.pin_memory = pin_memory
        self._state = copy.deepcopy(source.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
        self._state = copy.deepcopy(self.source.state_dict())

    def _with_positions(self) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        for x in self.source:
            yield x, copy.deepcopy(self.source.state_dict())

    def __iter__(self) -> Iterator[Tensor]:
        self.source.load_state_dict(self._state)
        batches = prefetch(self._with_positions(), self.depth, pin_memory=self.pin_memory,
                           name="abstopk-prefetch")
        try:
            for x, self._state in batches:
                yield x
        finally:
            batches.close()  # stops the thread before anyone rewinds the source
