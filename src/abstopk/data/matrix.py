"""Batches of the rows of one activation matrix [N, d_in]: :class:`MatrixSource`.

The matrix is a torch tensor, a numpy array, or a ``.npy`` / ``.safetensors`` file opened by
:func:`load_matrix` as a memory map (never read whole; safetensors through the package's one
reader, :func:`abstopk.files.mmap_tensor`).

Order: each epoch visits every (finite) row once in an order drawn from ``(seed, epoch)``;
batches have a fixed size B and the last ``N mod B`` rows of an epoch's order are left out of
that epoch (they are visited in other epochs, whose orders differ). Rows are gathered in sorted
order inside a batch, which keeps memory-mapped reads local; the loss does not depend on the
row order.

Non-finite rows are found by one chunked scan (:func:`scan_nonfinite`); with
``skip_nonfinite`` they are dropped, otherwise :class:`~abstopk.errors.NonFiniteError` says
how many there are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import NonFiniteError
from ..files import BF16Array, mmap_tensor, rows_as_float32

__all__ = ["MatrixSource", "load_matrix", "scan_nonfinite"]


def load_matrix(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Open a ``.npy`` or ``.safetensors`` activation matrix [N, d_in], memory-mapped.

    ``key`` names the tensor of a safetensors file holding several. A bf16 tensor comes back
    as a :class:`~abstopk.files.BF16Array` (its bit patterns). Raises ``FileNotFoundError``
    for a missing file and ``ValueError`` for an unknown suffix or a tensor that is not a
    non-empty 2-D matrix of numbers.
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
        arr = mmap_tensor(path, key).array
    else:
        raise ValueError(f"{path}: unsupported activation file type {suffix!r} "
                         "(expected .npy or .safetensors, or a cache folder)")
    if arr.ndim != 2:
        raise ValueError(
            f"{path}: expected a 2-D matrix [N, d_in], got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "fiu" and not isinstance(arr, BF16Array):
        raise ValueError(f"{path}: unsupported dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path}: empty matrix of shape {tuple(arr.shape)}")
    return arr


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
    if matrix.dtype.kind in "iu" and not isinstance(matrix, BF16Array):
        return np.zeros(0, dtype=np.int64)
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=n, desc=desc, unit="row", disable=not progress, leave=False) as bar:
        for s in range(0, n, chunk_rows):
            e = min(n, s + chunk_rows)
            block = rows_as_float32(matrix, slice(s, e))
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                out.append(np.flatnonzero(bad) + s)
            bar.update(e - s)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


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

    Yields float32 CPU tensors [B, d_in], without end (epoch after epoch). The position is
    ``(epoch, batches of it served)``.
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
                f"{name}: {self.n_nonfinite} of {self.n_total} rows hold NaN/Inf values"
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
        #: rows [lo, hi) of each (sorted) batch to read, or None for all: a data-parallel rank
        #: reads only its part of every batch (the position stays the whole stream's)
        self.row_slice: tuple[int, int] | None = None

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
        return torch.from_numpy(np.ascontiguousarray(rows_as_float32(self.matrix, rows)))

    def __iter__(self) -> Iterator[Tensor]:
        B = self.batch_size
        while True:
            order = self._order(self.epoch)
            while self.batch < self.batches_per_epoch:
                rows = np.sort(order[self.batch * B:(self.batch + 1) * B])
                if self.row_slice is not None:
                    rows = rows[self.row_slice[0]:self.row_slice[1]]
                x = self._take(rows)
                self.batch += 1
                yield x
            self.epoch += 1
            self.batch = 0
