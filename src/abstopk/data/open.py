"""The one dispatcher from what the user gave to a :class:`~abstopk.data.sources.BatchSource`.

* a folder holding ``manifest.json`` (an activation cache) →
  :class:`~abstopk.data.loader.CacheLoader`, or, with a CUDA ``device``,
  :class:`~abstopk.data.device_loader.DeviceCacheLoader` (the same batches, gathered on the
  GPU; not when skipping non-finite rows); ``min_position`` > 0 (skip rows at earlier context
  positions) is for caches only, every other source raises ``ValueError``;
* a ``.npy`` / ``.safetensors`` file [N, d_in] → :class:`~abstopk.data.matrix.MatrixSource`
  over the memory-mapped matrix;
* a torch tensor or numpy array [N, d_in] → :class:`~abstopk.data.matrix.MatrixSource`;
* an object already following the BatchSource protocol → itself;
* any other iterable of [b, d_in] batches → :class:`~abstopk.data.sources.IterableSource`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .loader import CacheLoader, check_min_position
from .matrix import MatrixSource, load_matrix
from .sources import BatchSource, IterableSource, is_batch_source

__all__ = ["open_source"]


def open_source(data: Any, batch_size: int, seed: int = 0, *, skip_nonfinite: bool = False,
                progress: bool = False, key: str | None = None,
                device: str | None = None, min_position: int = 0) -> BatchSource:
    """Turn what the user gave into a :class:`BatchSource` (see the module docstring).

    ``batch_size`` and ``seed`` define the batches and their order; ``skip_nonfinite`` drops
    rows holding NaN/Inf instead of raising :class:`~abstopk.errors.NonFiniteError`;
    ``progress`` shows the scan of a matrix file; ``key`` names the tensor of a safetensors
    file holding several; ``device``: where training runs (a CUDA device makes a cache's
    batches on the device, see the module docstring); ``min_position``: skip cache rows at
    context positions below it (1: each context's first token, the attention sink).
    Raises ``FileNotFoundError`` / ``ValueError`` with one-line messages.
    """
    min_position = check_min_position(min_position)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            if (path / "manifest.json").is_file():
                if device is not None and torch.device(device).type == "cuda" \
                        and not skip_nonfinite:
                    from .device_loader import DeviceCacheLoader

                    return DeviceCacheLoader(path, batch_size, seed, device=device,
                                             min_position=min_position)
                return CacheLoader(path, batch_size, seed, skip_nonfinite=skip_nonfinite,
                                   progress=progress, min_position=min_position)
            raise ValueError(f"{path}: a folder without manifest.json is not an activation cache")
        _no_positions(min_position, str(path))
        return MatrixSource(load_matrix(path, key), batch_size, seed,
                            skip_nonfinite=skip_nonfinite, progress=progress, name=str(path))
    if isinstance(data, (Tensor, np.ndarray)):
        _no_positions(min_position, f"a {type(data).__name__}")
        return MatrixSource(data, batch_size, seed, skip_nonfinite=skip_nonfinite,
                            progress=progress, name="tensor")
    if is_batch_source(data):
        if getattr(data, "min_position", 0) != min_position:
            raise ValueError(f"the data source skips context positions below "
                             f"{getattr(data, 'min_position', 0)}, not {min_position}")
        return data
    _no_positions(min_position, f"a {type(data).__name__}")
    if isinstance(data, Iterable):
        return IterableSource(data, batch_size)
    raise ValueError(f"cannot read training data from a {type(data).__name__}")


def _no_positions(min_position: int, what: str) -> None:
    """``ValueError`` when rows should be skipped by context position but ``what`` (a source
    other than an activation cache) records no positions."""
    if min_position:
        raise ValueError(f"{what}: rows carry no context positions (only an activation cache "
                         f"records them), so positions below {min_position} cannot be skipped")
