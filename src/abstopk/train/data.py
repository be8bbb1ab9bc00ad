"""Where training batches come from: the :class:`BatchSource` protocol and its file sources.

Protocol (duck-typed, see :class:`BatchSource`): an object with

* ``d_in`` — the input width;
* ``__iter__()`` — yields float32 tensors [B, d_in] (CPU; the trainer moves them);
* ``state_dict()`` — a JSON-serialisable dict: the position *after the last yielded batch*;
* ``load_state_dict(d)`` — restore such a position; the next ``iter()`` then yields exactly
  the batches that would have followed it (this is what makes resume bit-identical).

Sources here:

* :class:`MatrixSource` — rows of a [N, d_in] matrix (torch tensor, numpy array or a
  memory-mapped ``.npy`` / ``.safetensors`` file, never loaded whole). Each epoch visits every
  (finite) row once in an order drawn from ``(seed, epoch)``; batches have a fixed size and
  the last ``N mod B`` rows of an epoch's order are left out of that epoch (they are visited in
  other epochs, whose orders differ). Rows are gathered in sorted order inside a batch, which
  keeps memory-mapped reads local; the loss does not depend on the row order.
* :class:`IterableSource` — any iterable of [b, d_in] arrays, re-cut into fixed-size batches.
* :func:`open_source` — dispatch on what the user gave (path or object). An activation cache
  folder (``manifest.json``) is served by ``abstopk.data.loader`` once it exists.

Non-finite rows of a file are found by one chunked scan (:func:`scan_nonfinite`); with
``skip_nonfinite`` they are dropped, otherwise :class:`NonFiniteError` says how many there are.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import NonFiniteError

__all__ = [
    "BatchSource",
    "IterableSource",
    "MatrixSource",
    "NonFiniteError",
    "PrefetchSource",
    "load_matrix",
    "memmap_safetensors",
    "open_source",
    "read_safetensors_header",
    "scan_nonfinite",
]


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



# ---------------------------------------------------------------------- file readers
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
}


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header: 8-byte little-endian length n, then n bytes of JSON.

    Returns ``(header, data_start)``; each tensor entry has ``dtype``, ``shape`` and
    ``data_offsets`` [begin, end) relative to ``data_start = 8 + n``.
    """
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(f.fileno()).st_size
        if n > size - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {n} > file size)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, 8 + n


def memmap_safetensors(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Memory-map one tensor of a safetensors file as a read-only numpy array.

    ``key``: the tensor's name; may be omitted when the file holds exactly one tensor. BF16 is
    mapped as ``uint16`` (bit pattern); :class:`MatrixSource` converts it to float32.
    """
    header, start = read_safetensors_header(path)
    names = [k for k in header if k != "__metadata__"]
    if key is None:
        if len(names) != 1:
            raise ValueError(
                f"{path}: holds {len(names)} tensors ({', '.join(sorted(names)[:5])}); "
                "name the activation matrix (key)"
            )
        key = names[0]
    if key not in header:
        raise ValueError(f"{path}: no tensor named {key!r} (has {', '.join(sorted(names))})")
    info = header[key]
    if info["dtype"] not in _ST_DTYPES:
        raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    shape = tuple(int(s) for s in info["shape"])
    begin, end = (int(o) for o in info["data_offsets"])
    if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"{path}: tensor {key!r} data size does not match its shape")
    if begin == end:
        return np.zeros(shape, dtype=dtype)
    arr = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
    if info["dtype"] == "BF16":
        arr = _BF16Array(arr)
    return arr


class _BF16Array(np.ndarray):
    """Marker subclass: a uint16 memmap holding bfloat16 bit patterns."""

    def __new__(cls, arr: np.ndarray) -> _BF16Array:
        return arr.view(cls)


def load_matrix(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Open a ``.npy`` or ``.safetensors`` activation matrix, memory-mapped (not read whole).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unknown suffix or
    a tensor that is not a 2-D matrix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: cannot read as .npy ({e})") from None
    elif suffix == ".safetensors":
        arr = memmap_safetensors(path, key)
    else:
        raise ValueError(f"{path}: unsupported activation file type {suffix!r} "
                         "(expected .npy or .safetensors, or a cache folder)")
    if arr.ndim != 2:
        raise ValueError(
            f"{path}: expected a 2-D matrix [N, d_in], got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "fiu" and not isinstance(arr, _BF16Array):
        raise ValueError(f"{path}: unsupported dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path}: empty matrix of shape {tuple(arr.shape)}")
    return arr


def _rows_to_f32(arr: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """``arr[rows]`` as a float32 numpy array (bf16 bit patterns converted)."""
    if isinstance(arr, _BF16Array):
        bits = np.asarray(arr.view(np.ndarray)[rows], dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    return np.asarray(arr[rows], dtype=np.float32)


def scan_nonfinite(matrix: np.ndarray | Tensor, chunk_rows: int = 65536,
                   progress: bool = False, desc: str = "scanning rows") -> np.ndarray:
    """Indices (int64, sorted) of the rows of ``matrix`` [N, d] holding any NaN or ±Inf.

    Reads the matrix once in chunks of ``chunk_rows`` rows (a memory map stays flat in RAM).
    """
    if isinstance(matrix, Tensor):
        if not matrix.is_floating_point():
            return np.zeros(0, dtype=np.int64)
        bad = (~torch.isfinite(matrix).all(dim=1)).nonzero().flatten()
        return bad.cpu().numpy().astype(np.int64)
    n = matrix.shape[0]
    if matrix.dtype.kind in "iu" and not isinstance(matrix, _BF16Array):
        return np.zeros(0, dtype=np.int64)
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=n, desc=desc, unit="row", disable=not progress, leave=False) as bar:
        for s in range(0, n, chunk_rows):
            e = min(n, s + chunk_rows)
            block = _rows_to_f32(matrix, slice(s, e))
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                out.append(np.flatnonzero(bad) + s)
            bar.update(e - s)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------- matrix source
class MatrixSource:
    """Fixed-size, deterministically shuffled, epoch-aware batches of matrix rows.

    Args:
        matrix: [N, d_in] torch tensor, numpy array or memory map (see :func:`load_matrix`).
        batch_size: rows per batch B (≤ number of usable rows).
        seed: the order of epoch e is a permutation drawn from ``numpy.random.default_rng
            ([seed, e])`` (platform independent).
        skip_nonfinite: drop rows holding NaN/Inf; otherwise they raise :class:`NonFiniteError`.
        shuffle: False serves rows in file order (still epoch-aware).
        name: shown in messages (e.g. the file path).

    Yields float32 CPU tensors [B, d_in], without end (epoch after epoch).
    """

    def __init__(self, matrix: np.ndarray | Tensor, batch_size: int, seed: int = 0, *,
                 skip_nonfinite: bool = False, shuffle: bool = True, progress: bool = False,
                 name: str = "matrix") -> None:
        if isinstance(matrix, Tensor):
            matrix = matrix.detach()
            if matrix.dim() != 2:
                raise ValueError(f"{name}: expected a 2-D matrix [N, d_in], "
                                 f"got shape {tuple(matrix.shape)}")
            matrix = matrix.cpu()
        elif matrix.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D matrix [N, d_in], "
                             f"got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.name = name
        self.n_total, self.d_in = int(matrix.shape[0]), int(matrix.shape[1])
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        bad = scan_nonfinite(matrix, progress=progress, desc=f"checking {Path(name).name}")
        self.n_nonfinite = int(bad.size)
        if self.n_nonfinite and not skip_nonfinite:
            raise NonFiniteError(
                f"{name}: {self.n_nonfinite} of {self.n_total} rows hold NaN/Inf values "
                "(use --skip-nonfinite to drop them)"
            )
        if self.n_nonfinite:
            keep = np.ones(self.n_total, dtype=bool)
            keep[bad] = False
            self._rows: np.ndarray | None = np.flatnonzero(keep)
        else:
            self._rows = None  # all rows
        self.n_rows = self.n_total - self.n_nonfinite
        if self.n_rows < self.batch_size:
            raise ValueError(
                f"{name}: {self.n_rows} usable rows, fewer than one batch of {self.batch_size}"
            )
        self.batches_per_epoch = self.n_rows // self.batch_size
        self.epoch = 0
        self.batch = 0  # batches of the current epoch already served

    # -- position
    def state_dict(self) -> dict[str, Any]:
        return {"kind": "matrix", "epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "n_rows": self.n_rows, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "n_rows", "batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"{self.name}: checkpointed data position has {key} = {state[key]}, "
                    f"this source has {getattr(self, key)} (different data?)"
                )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    # -- iteration
    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            order = np.arange(self.n_rows, dtype=np.int64)
        else:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
        return order if self._rows is None else self._rows[order]

    def _take(self, rows: np.ndarray) -> Tensor:
        if isinstance(self.matrix, Tensor):
            return self.matrix[torch.from_numpy(rows)].to(torch.float32).contiguous()
        return torch.from_numpy(np.ascontiguousarray(_rows_to_f32(self.matrix, rows)))

    def __iter__(self) -> Iterator[Tensor]:
        B = self.batch_size
        while True:
            order = self._order(self.epoch)
            while self.batch < self.batches_per_epoch:
                rows = np.sort(order[self.batch * B:(self.batch + 1) * B])
                x = self._take(rows)
                self.batch += 1
                yield x
            self.epoch += 1
            self.batch = 0


# ---------------------------------------------------------------------- iterable source
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


# ---------------------------------------------------------------------- prefetch
_END = object()


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

    def __iter__(self) -> Iterator[Tensor]:
        self.source.load_state_dict(self._state)
        q: queue.Queue = queue.Queue(maxsize=self.depth)
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
                for x in self.source:
                    st = copy.deepcopy(self.source.state_dict())
                    if self.pin_memory:
                        x = x.pin_memory()
                    if not put((x, st)):
                        return
                put(_END)
            except BaseException as e:  # handed to the consumer
                put(e)

        t = threading.Thread(target=produce, name="abstopk-prefetch", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                x, self._state = item
                yield x
        finally:
            stop.set()
            t.join(timeout=10.0)


# ---------------------------------------------------------------------- dispatch
def open_source(data: Any, batch_size: int, seed: int = 0, *, skip_nonfinite: bool = False,
                progress: bool = False, key: str | None = None) -> BatchSource:
    """Turn what the user gave into a :class:`BatchSource`.

    ``data``: a path (``.npy`` / ``.safetensors`` matrix [N, d_in]; a folder with
    ``manifest.json`` is an activation cache, served by ``abstopk.data.loader``), a torch
    tensor or numpy array [N, d_in], an object already following the protocol, or any iterable
    of [b, d_in] batches. Raises ``FileNotFoundError`` / ``ValueError`` with one-line messages.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            if (path / "manifest.json").is_file():
                try:
                    from ..data import loader  # activation cache (pipeline issue)
                except ImportError:
                    raise ValueError(
                        f"{path}: activation caches are not supported by this version"
                    ) from None
                return loader.open_cache(path, batch_size=batch_size, seed=seed,
                                         skip_nonfinite=skip_nonfinite, progress=progress)
            raise ValueError(f"{path}: a folder without manifest.json is not an activation cache")
        return MatrixSource(load_matrix(path, key), batch_size, seed,
                            skip_nonfinite=skip_nonfinite, progress=progress, name=str(path))
    if isinstance(data, (Tensor, np.ndarray)):
        return MatrixSource(data, batch_size, seed, skip_nonfinite=skip_nonfinite,
                            progress=progress, name="tensor")
    if all(hasattr(data, a) for a in ("d_in", "state_dict", "load_state_dict", "__iter__")):
        return data
    if isinstance(data, Iterable):
        return IterableSource(data, batch_size)
    raise ValueError(f"cannot read training data from a {type(data).__name__}")
