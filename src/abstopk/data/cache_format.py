"""The activation cache format: names, versions and the manifest check (shared by the reader
:mod:`abstopk.data.cache` and the writer :mod:`abstopk.data.cache_writer`).

Version 1 shards hold ``activations`` [rows, d_in] and ``token_ids`` [rows] int64. Version 2
shards also hold ``context_ids`` [rows] int64 (global index, in harvest order, of the packed
context the row came from) and ``positions`` [rows] int32 (position of the row's token in its
context). Rows of one context are consecutive; BOS/pad positions are not rows, so positions
may skip 0. Both versions are readable; only version 2 can give a row's context.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CacheError

__all__ = ["DTYPES", "FORMAT", "MANIFEST", "READABLE_VERSIONS", "ST_DTYPE", "VERSION",
           "find_caches", "read_manifest", "shard_name"]

FORMAT = "abstopk-activation-cache"
#: the version a writer gives a cache whose shards carry context ids and positions
VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")
ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_REQUIRED = ("format", "version", "model", "layer", "site", "d_in", "dtype", "context_size",
             "total_rows", "contexts_consumed", "complete", "shards")


def shard_name(i: int, prefix: str = "shard_") -> str:
    """``{prefix}{i:06d}.safetensors`` (``shard_000000.safetensors``, ...)."""
    return f"{prefix}{i:06d}.safetensors"


def find_caches(path: str | os.PathLike) -> list[Path]:
    """The cache folders at ``path``: itself if it holds a manifest, else its ``layer_*``
    sub-folders that do (sorted by layer). Empty list when there are none."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return [p]
    subs = [d for d in p.glob("layer_*") if (d / MANIFEST).is_file()]

    def key(d: Path):
        tail = d.name[len("layer_"):]
        return (0, int(tail), "") if tail.isdigit() else (1, 0, tail)

    return sorted(subs, key=key)


def read_manifest(path: Path, name: str = MANIFEST) -> dict:
    """The validated manifest of the cache folder ``path`` (:class:`CacheError` otherwise);
    ``name``: another manifest file of the folder (a rank's, in a sharded harvest)."""
    mp = path / name
    if not path.is_dir():
        raise CacheError(f"{path}: no such cache folder")
    try:
        text = mp.read_text()
    except FileNotFoundError:
        subs = find_caches(path)
        hint = f" (it holds per-layer caches: {', '.join(s.name for s in subs)})" if subs else ""
        raise CacheError(f"{path}: not an activation cache, no {name}{hint}") from None
    try:
        m = json.loads(text)
    except ValueError as e:
        raise CacheError(f"{mp}: invalid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CacheError(f"{mp}: not an abstopk activation cache manifest")
    if int(m.get("version", -1)) not in READABLE_VERSIONS:
        raise CacheError(f"{mp}: unsupported cache version {m.get('version')} (this version "
                         f"reads {', '.join(map(str, READABLE_VERSIONS))})")
    missing = [k for k in _REQUIRED if k not in m]
    if missing:
        raise CacheError(f"{mp}: manifest lacks {', '.join(missing)}")
    if m["dtype"] not in DTYPES:
        raise CacheError(f"{mp}: unsupported dtype {m['dtype']!r}")
    return m
