"""On-disk activation cache: a folder of safetensors shards plus ``manifest.json``.

Layout (the contract shared with the loader and the trainer)::

    CACHE/manifest.json
    CACHE/shard_000000.safetensors   {"activations": [rows, d_in] (manifest dtype),
    CACHE/shard_000001.safetensors    "token_ids":   [rows] int64,
    ...                               "context_ids": [rows] int64   (version 2)
                                      "positions":   [rows] int32}  (version 2)

``context_ids`` is the global index (in harvest order) of the packed context a row came from,
``positions`` the position of the row's token in that context. Rows of one context are
consecutive; BOS/pad positions are not rows, so positions may skip 0. Version-1 caches (no
such tensors) stay readable for training and evaluation; asking them for a row's context
(:meth:`ActivationCache.token_context`, :meth:`ActivationCache.rows_with_context`) raises
:class:`CacheError`.

The manifest records the model (ref + revision), layer, site, hook name, ``d_in``, ``dtype``,
context size, corpus description, the corpus order (``corpus_order``: seed, rules),
``requested_tokens``, ``total_rows`` (= Σ shard rows), ``token_mix`` (rows per corpus part,
e.g. ``linux-doc`` / ``python-doc`` / ``austen``), ``contexts_consumed`` (the resume position
in the packed-context stream), ``complete`` and, per shard, ``file``, ``rows``, ``contexts``
(packed contexts it was harvested from), ``mix`` (its rows per corpus part) and the
``sha256`` of the file's bytes.

Writes are crash-safe (:class:`~abstopk.data.cache_writer.CacheWriter`): a shard is written
to a temporary name and renamed (``abstopk.files``), *then* the manifest is rewritten
atomically. A kill at any moment leaves a valid cache whose manifest lists only complete
shards; a shard file not yet in the manifest is simply rewritten (bit-identical) when the
harvest resumes.

A multi-layer harvest writes one cache per layer in ``CACHE/layer_L``; :func:`find_caches`
lists them. Format constants and the manifest check: :mod:`abstopk.data.cache_format`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ..files import sha256_file
from .cache_format import (
    FORMAT,
    MANIFEST,
    READABLE_VERSIONS,
    ST_DTYPE,
    VERSION,
    find_caches,
    read_manifest,
    shard_name,
)
from .cache_writer import CacheWriter

__all__ = [
    "FORMAT",
    "READABLE_VERSIONS",
    "VERSION",
    "ActivationCache",
    "CacheError",
    "CacheWriter",
    "TokenContext",
    "find_caches",
    "shard_name",
]


@dataclass
class TokenContext:
    """A row's neighbourhood inside its own context: ``token_ids`` and ``positions`` of the
    rows shown, ``focus`` (index of the row itself among them) and ``context_id``."""

    token_ids: list[int]
    positions: list[int]
    focus: int
    context_id: int


class ActivationCache:
    """A cache folder opened for reading (validates ``manifest.json`` on open).

    Attributes: ``path``, ``manifest`` (dict), ``d_in``, ``dtype`` (str), ``total_rows``,
    ``shards`` (list of ``{"file", "rows", "sha256", ...}``), ``layer``, ``site``,
    ``context_size``, ``complete``, ``version``, ``token_mix`` (rows per corpus part, or
    None), ``seed`` (of the corpus order, or None).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        m = self.manifest
        self.d_in = int(m["d_in"])
        self.dtype = str(m["dtype"])
        self.shards: list[dict[str, Any]] = list(m["shards"])
        self.total_rows = int(m["total_rows"])
        self.layer = int(m["layer"])
        self.site = str(m["site"])
        self.context_size = int(m["context_size"])
        self.complete = bool(m["complete"])
        self.version = int(m["version"])
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return self.total_rows

    def __repr__(self) -> str:
        return (f"ActivationCache({str(self.path)!r}, rows={self.total_rows}, d_in={self.d_in}, "
                f"dtype={self.dtype}, shards={len(self.shards)})")

    def shard_path(self, i: int) -> Path:
        return self.path / self.shards[i]["file"]

    def open_shard(self, i: int):
        """``{"activations": MappedTensor, "token_ids": MappedTensor}`` (memory-mapped)."""
        from ..files import mmap_safetensors

        return mmap_safetensors(self.shard_path(i))

    def identity(self) -> str:
        """``<model>/L<layer>/<site>@<12 hex>``: the hex is the sha256 over the shard hashes,
        so two caches with the same rows have the same identity."""
        h = hashlib.sha256("".join(s.get("sha256", "") for s in self.shards).encode())
        m = self.manifest
        return f"{m.get('model')}/L{m.get('layer')}/{m.get('site')}@{h.hexdigest()[:12]}"

    def summary(self) -> dict[str, Any]:
        """The manifest's main fields plus size on disk and identity (for ``cache info``)."""
        m = self.manifest
        n_bytes = sum(self.shard_path(i).stat().st_size for i in range(len(self.shards))
                      if self.shard_path(i).is_file())
        return {
            "path": str(self.path), "identity": self.identity(), "model": m.get("model"),
            "model_revision": m.get("model_revision"), "layer": self.layer, "site": self.site,
            "hook_name": m.get("hook_name"), "d_in": self.d_in, "dtype": self.dtype,
            "context_size": self.context_size, "keep_bos": m.get("keep_bos"),
            "total_rows": self.total_rows, "requested_tokens": m.get("requested_tokens"),
            "contexts_consumed": m.get("contexts_consumed"), "complete": self.complete,
            "shards": len(self.shards), "bytes": n_bytes,
            "corpus": (m.get("corpus") or {}).get("name") or (m.get("corpus") or {}).get("source"),
            "corpus_split": (m.get("corpus") or {}).get("split"),
            "version": self.version, "seed": self.seed, "token_mix": self.token_mix,
        }

    def verify(self, *, checksums: bool = True,
               progress: Callable[[int], None] | None = None) -> list[str]:
        """Problems found (``[]`` when the cache is sound).

        Checks, per shard: the file exists, its safetensors header holds ``activations``
        [rows, d_in] in the manifest dtype and ``token_ids`` [rows] int64, its byte length
        matches the header, and (``checksums``) its sha256 matches the manifest. Also
        ``total_rows`` = Σ rows, and a complete cache holds ``requested_tokens`` rows (unless
        the corpus ran out). Each problem names the shard file. ``progress(i)`` is called after
        each shard.
        """
        from ..files import safetensors_header

        problems: list[str] = []
        want_dtype = ST_DTYPE[self.dtype]
        for i, s in enumerate(self.shards):
            name = str(s.get("file", f"<shard {i}>"))
            p = self.path / name
            rows = s.get("rows")
            try:
                if not p.is_file():
                    problems.append(f"{name}: missing file")
                    continue
                try:
                    header, start = safetensors_header(p)
                except (ValueError, OSError) as e:
                    problems.append(f"{name}: unreadable safetensors header ({e})")
                    continue
                acts, toks = header.get("activations"), header.get("token_ids")
                if acts is None or toks is None:
                    problems.append(f"{name}: lacks 'activations' or 'token_ids'")
                    continue
                if acts["shape"] != [rows, self.d_in] or acts["dtype"] != want_dtype:
                    problems.append(
                        f"{name}: activations are {acts['dtype']} {acts['shape']}, manifest says "
                        f"{want_dtype} [{rows}, {self.d_in}]")
                if toks["shape"] != [rows] or toks["dtype"] != "I64":
                    problems.append(f"{name}: token_ids are {toks['dtype']} {toks['shape']}, "
                                    f"manifest says I64 [{rows}]")
                if self.version >= 2:
                    for key, want in (("context_ids", "I64"), ("positions", "I32")):
                        t = header.get(key)
                        if t is None or t["shape"] != [rows] or t["dtype"] != want:
                            got = "missing" if t is None else f"{t['dtype']} {t['shape']}"
                            problems.append(f"{name}: {key} is {got}, format version "
                                            f"{self.version} needs {want} [{rows}]")
                end = max(int(t["data_offsets"][1]) for k, t in header.items()
                          if k != "__metadata__")
                size = p.stat().st_size
                if size != start + end:
                    problems.append(f"{name}: file is {size} bytes, its header says {start + end}")
                if checksums:
                    got = sha256_file(p)
                    if got != s.get("sha256"):
                        problems.append(f"{name}: sha256 mismatch (file {got[:12]}…, manifest "
                                        f"{str(s.get('sha256'))[:12]}…): the shard is corrupted")
            finally:
                if progress is not None:
                    progress(i)
        total = sum(int(s.get("rows", 0)) for s in self.shards)
        if total != self.total_rows:
            problems.append(f"{MANIFEST}: total_rows is {self.total_rows} but the shards hold "
                            f"{total}")
        req = self.manifest.get("requested_tokens")
        if self.complete and req is not None and total != int(req) \
                and not self.manifest.get("corpus_exhausted"):
            problems.append(f"{MANIFEST}: complete with {total} rows, {req} were requested")
        return problems

    # -- provenance
    @property
    def token_mix(self) -> dict[str, int] | None:
        """Rows per corpus part (e.g. ``{"austen": .., "linux-doc": .., "python-doc": ..}``),
        None for a cache harvested before it was recorded."""
        mix = self.manifest.get("token_mix")
        return None if mix is None else {str(k): int(v) for k, v in mix.items()}

    @property
    def seed(self) -> int | None:
        """Seed of the corpus order the cache was harvested in (None when not recorded)."""
        order = self.manifest.get("corpus_order") or {}
        s = order.get("seed") if isinstance(order, dict) else None
        return None if s is None else int(s)

    # -- per-row contexts (format version 2)
    @property
    def has_positions(self) -> bool:
        """Whether the shards carry ``context_ids`` and ``positions`` (format version 2)."""
        return self.version >= 2

    def _require_positions(self) -> None:
        if not self.has_positions:
            raise CacheError(f"{self.path}: harvested before per-row positions were recorded "
                             f"(cache format version {self.version}); harvest it again")

    def _shard_starts(self) -> list[int]:
        if self._starts is None:
            starts, n = [], 0
            for s in self.shards:
                starts.append(n)
                n += int(s["rows"])
            self._starts = starts
        return self._starts

    def rows_with_context(self, start: int, stop: int) -> dict[str, Any]:
        """``{"token_ids" [n] int64, "context_ids" [n] int64, "positions" [n] int32}`` of the
        global rows ``start..stop-1`` (clipped to the cache; may span shards).

        Raises :class:`CacheError` for a version-1 cache (no per-row positions).
        """
        import bisect

        import torch

        self._require_positions()
        start, stop = max(0, int(start)), min(self.total_rows, int(stop))
        keys = ("token_ids", "context_ids", "positions")
        parts: dict[str, list] = {k: [] for k in keys}
        starts = self._shard_starts()
        i = max(0, bisect.bisect_right(starts, start) - 1)
        while start < stop and i < len(self.shards):
            lo = start - starts[i]
            hi = min(int(self.shards[i]["rows"]), stop - starts[i])
            shard = self.open_shard(i)
            for k in keys:
                parts[k].append(shard[k].rows(lo, hi))
            start = starts[i] + hi
            i += 1
        empty = {"token_ids": torch.int64, "context_ids": torch.int64, "positions": torch.int32}
        return {k: torch.cat(v) if v else torch.zeros(0, dtype=empty[k]) for k, v in parts.items()}

    def token_context(self, row: int, window: int = 8) -> TokenContext:
        """The rows of ``row``'s own context within ``window`` rows on either side.

        Returns a :class:`TokenContext`: their ``token_ids`` and ``positions`` (in order) and
        ``focus``, the index of ``row`` among them. Raises :class:`CacheError` for a version-1
        cache and :class:`IndexError` for a row outside the cache.
        """
        self._require_positions()
        row = int(row)
        if not 0 <= row < self.total_rows:
            raise IndexError(f"row {row} is outside the cache (0..{self.total_rows - 1})")
        lo = max(0, row - int(window))
        got = self.rows_with_context(lo, row + int(window) + 1)
        same = got["context_ids"] == got["context_ids"][row - lo]
        idx = same.nonzero().squeeze(1)
        return TokenContext(token_ids=got["token_ids"][idx].tolist(),
                            positions=got["positions"][idx].tolist(),
                            focus=int((idx < row - lo).sum()),
                            context_id=int(got["context_ids"][row - lo]))
