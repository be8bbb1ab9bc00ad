"""On-disk activation cache: a folder of safetensors shards plus ``manifest.json``.

Layout (the contract shared with the loader and the trainer)::

    CACHE/manifest.json
    CACHE/shard_000000.safetensors   {"activations": [rows, d_in] (manifest dtype),
    CACHE/shard_000001.safetensors    "token_ids":   [rows] int64}
    ...

The manifest records the model (ref + revision), layer, site, hook name, ``d_in``, ``dtype``,
context size, corpus description, ``requested_tokens``, ``total_rows`` (= Σ shard rows),
``contexts_consumed`` (the resume position in the packed-context stream), ``complete`` and,
per shard, ``file``, ``rows``, ``contexts`` (packed contexts it was harvested from) and the
``sha256`` of the file's bytes.

Writes are crash-safe: a shard is written to a temporary name and renamed (``abstopk.files``),
*then* the manifest is rewritten atomically. A kill at any moment leaves a valid cache whose
manifest lists only complete shards; a shard file not yet in the manifest is simply rewritten
(bit-identical) when the harvest resumes.

A multi-layer harvest writes one cache per layer in ``CACHE/layer_L``; :func:`find_caches`
lists them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CacheError
from ..files import sha256_file

__all__ = [
    "FORMAT",
    "VERSION",
    "ActivationCache",
    "CacheError",
    "CacheWriter",
    "find_caches",
    "shard_name",
]

FORMAT = "abstopk-activation-cache"
VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")
_ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_REQUIRED = ("format", "version", "model", "layer", "site", "d_in", "dtype", "context_size",
             "total_rows", "contexts_consumed", "complete", "shards")



def shard_name(i: int) -> str:
    """``shard_{i:06d}.safetensors``."""
    return f"shard_{i:06d}.safetensors"


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


def _read_manifest(path: Path) -> dict:
    mp = path / MANIFEST
    if not path.is_dir():
        raise CacheError(f"{path}: no such cache folder")
    try:
        text = mp.read_text()
    except FileNotFoundError:
        subs = find_caches(path)
        hint = f" (it holds per-layer caches: {', '.join(s.name for s in subs)})" if subs else ""
        raise CacheError(f"{path}: not an activation cache, no {MANIFEST}{hint}") from None
    try:
        m = json.loads(text)
    except ValueError as e:
        raise CacheError(f"{mp}: invalid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CacheError(f"{mp}: not an abstopk activation cache manifest")
    if int(m.get("version", -1)) != VERSION:
        raise CacheError(f"{mp}: unsupported cache version {m.get('version')} (expected {VERSION})")
    missing = [k for k in _REQUIRED if k not in m]
    if missing:
        raise CacheError(f"{mp}: manifest lacks {', '.join(missing)}")
    if m["dtype"] not in DTYPES:
        raise CacheError(f"{mp}: unsupported dtype {m['dtype']!r}")
    return m


class ActivationCache:
    """A cache folder opened for reading (validates ``manifest.json`` on open).

    Attributes: ``path``, ``manifest`` (dict), ``d_in``, ``dtype`` (str), ``total_rows``,
    ``shards`` (list of ``{"file", "rows", "sha256", ...}``), ``layer``, ``site``,
    ``context_size``, ``complete``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        m = self.manifest
        self.d_in = int(m["d_in"])
        self.dtype = str(m["dtype"])
        self.shards: list[dict[str, Any]] = list(m["shards"])
        self.total_rows = int(m["total_rows"])
        self.layer = int(m["layer"])
        self.site = str(m["site"])
        self.context_size = int(m["context_size"])
        self.complete = bool(m["complete"])

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
        want_dtype = _ST_DTYPE[self.dtype]
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


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON; for dicts (e.g. the corpus description) only the keys both have count,
    so a newer version describing more does not block resuming an older cache."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same(old[k], new[k]) for k in old.keys() & new.keys())
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


class CacheWriter:
    """Appends shards to one cache folder (used by the harvest).

    ``CacheWriter(path, header, resume=True)`` opens or creates the cache. ``header`` holds
    the fields that define the content (model, model_revision, layer, site, d_in, dtype,
    context_size, keep_bos, corpus, ...). On resume they must equal the existing manifest's
    (``requested_tokens`` and ``batch_size`` may differ; the caller decides on them);
    otherwise :class:`CacheError`. ``resume=False`` deletes an existing manifest and its
    shard files first. Leftover temporary files of a killed run are removed.
    """

    #: manifest keys that may legitimately change between runs
    MUTABLE = ("requested_tokens", "batch_size", "shard_rows", "abstopk_version", "model")

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], *, resume: bool = True):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        mp = self.path / MANIFEST
        if mp.exists() and not resume:
            old = _read_manifest(self.path)
            for s in old["shards"]:
                (self.path / s["file"]).unlink(missing_ok=True)
            for p in self.path.glob("shard_*.safetensors"):
                p.unlink()
            mp.unlink()
        if mp.exists():
            m = _read_manifest(self.path)
            diffs = [k for k, v in header.items()
                     if k not in self.MUTABLE and not _same(m.get(k), v)]
            if diffs:
                k = diffs[0]
                raise CacheError(
                    f"{self.path}: cannot resume, {k} differs (cache: {json.dumps(m.get(k))[:80]}, "
                    f"now: {json.dumps(header[k])[:80]}); write to another folder or start the cache over")
            self.manifest = m
            self.resumed = True
        else:
            self.manifest = {
                "format": FORMAT, "version": VERSION, **header,
                "total_rows": 0, "contexts_consumed": 0, "complete": False, "shards": [],
            }
            self.resumed = False
            self._save()

    # -- state
    @property
    def total_rows(self) -> int:
        return int(self.manifest["total_rows"])

    @property
    def contexts_consumed(self) -> int:
        return int(self.manifest["contexts_consumed"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def set(self, **fields) -> None:
        """Update manifest fields and save atomically."""
        self.manifest.update(fields)
        self._save()

    def _save(self) -> None:
        from .. import __version__
        from ..files import atomic_write_json

        self.manifest["abstopk_version"] = __version__
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def rollback_to(self, contexts: int) -> None:
        """Drop trailing shards so that ``contexts_consumed == contexts`` (used to bring the
        per-layer caches of a multi-layer harvest back in step after a kill)."""
        shards = list(self.manifest["shards"])
        c = self.contexts_consumed
        while c > contexts and shards:
            s = shards.pop()
            c -= int(s["contexts"])
        if c != contexts:
            raise CacheError(f"{self.path}: cannot roll back to {contexts} contexts "
                             f"(shard boundaries do not match)")
        if len(shards) != len(self.manifest["shards"]):
            self.manifest.update(shards=shards, contexts_consumed=c, complete=False,
                                 total_rows=sum(int(s["rows"]) for s in shards))
            self._save()

    # -- writing
    def write_shard(self, activations, token_ids, contexts: int) -> dict[str, Any]:
        """Write the next shard (atomically), then record it in the manifest.

        ``activations`` [rows, d_in] (converted to the manifest dtype), ``token_ids`` [rows];
        ``contexts``: how many packed contexts these rows came from (advances the resume
        position). Returns the shard's manifest entry.
        """
        import torch
        from safetensors.torch import save

        from ..files import atomic_write_bytes

        dtype = getattr(torch, self.manifest["dtype"])
        acts = activations.detach().to("cpu", dtype).contiguous()
        toks = token_ids.detach().to("cpu", torch.int64).contiguous()
        if acts.ndim != 2 or acts.shape[1] != int(self.manifest["d_in"]) \
                or toks.shape != (acts.shape[0],):
            raise ValueError(f"shard shapes {tuple(acts.shape)} / {tuple(toks.shape)} do not "
                             f"match d_in={self.manifest['d_in']}")
        i = len(self.manifest["shards"])
        name = shard_name(i)
        # one metadata key: safetensors writes a multi-key metadata map in random order, and
        # the bytes (hence the sha256) must be reproducible for resumed harvests
        meta = json.dumps({"format": FORMAT, "layer": self.manifest["layer"],
                           "site": self.manifest["site"], "index": i}, sort_keys=True)
        data = save({"activations": acts, "token_ids": toks}, metadata={"abstopk": meta})
        entry = {"file": name, "rows": int(acts.shape[0]), "contexts": int(contexts),
                 "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_bytes(self.path / name, data)
        self.manifest["shards"].append(entry)
        self.manifest["total_rows"] = self.total_rows + entry["rows"]
        self.manifest["contexts_consumed"] = self.contexts_consumed + int(contexts)
        self._save()
        return entry
