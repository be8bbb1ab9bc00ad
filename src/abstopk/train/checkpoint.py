"""Checkpoint folders of a training run: atomic writes, the ``latest.json`` pointer, RNG state.

Layout under ``OUT/checkpoint/``::

    step_XXXXXXXXX/state.safetensors   tensors (model, Adam moments, RNG, counters, …)
    step_XXXXXXXXX/state.json          the JSON-serialisable rest
    latest.json                        {"step": …, "dir": "step_XXXXXXXXX"}

A checkpoint is written into a temporary folder, renamed into place, then published by an
atomic rewrite of ``latest.json``; older step folders are removed afterwards. No pickle.
What goes into the two files is the caller's business (:meth:`Trainer.checkpoint_state`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..files import atomic_save_safetensors, atomic_write_json

__all__ = ["CHECKPOINT_DIR", "LATEST", "latest_checkpoint", "read_checkpoint",
           "restore_rng_state", "rng_state", "write_checkpoint"]

CHECKPOINT_DIR = "checkpoint"
LATEST = "latest.json"


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The torch (CPU and initialised CUDA devices), numpy and python RNG states:
    tensors ``rng.torch``, ``rng.cuda.<i>`` and JSON ``{"numpy", "python", "n_cuda"}``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    n_cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
            n_cuda += 1
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "n_cuda": n_cuda,
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    n_cuda = meta.get("n_cuda", 0)
    if n_cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(n_cuda)])
    npst = meta["numpy"]
    np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), npst[2], npst[3],
                         npst[4]))
    pyst = meta["python"]
    random.setstate((pyst[0], tuple(pyst[1]), pyst[2]))


def write_checkpoint(ck_dir: Path, step: int, tensors: dict[str, Tensor],
                     meta: dict[str, Any]) -> Path:
    """Write ``ck_dir/step_<step>/`` atomically, point ``latest.json`` at it, drop older ones.

    Returns the new step folder.
    """
    ck_dir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    tmp = ck_dir / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
    atomic_save_safetensors(tmp / "state.safetensors", tensors, metadata={"format": "pt"})
    atomic_write_json(tmp / "state.json", meta)
    final = ck_dir / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ck_dir)
    atomic_write_json(ck_dir / LATEST, {"step": step, "dir": name})
    for p in ck_dir.iterdir():
        if p.is_dir() and p.name != name and (p.name.startswith("step_")
                                              or p.name.startswith(".step_")):
            shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(ck_dir: Path) -> Path:
    """The step folder ``ck_dir/latest.json`` points at."""
    latest = json.loads((ck_dir / LATEST).read_text())
    return ck_dir / latest["dir"]


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, JSON rest) of the step folder ``path``."""
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    return load_file(str(path / "state.safetensors")), meta


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
