"""Writing an activation cache: :class:`CacheWriter` appends crash-safe shards to a folder.

Format and manifest: :mod:`abstopk.data.cache_format` (and :mod:`abstopk.data.cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CacheError
from .cache_format import FORMAT, MANIFEST, VERSION, read_manifest, shard_name

__all__ = ["CacheWriter", "corpus_change"]


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON; for dicts (e.g. the corpus description) only the keys both have count,
    so a newer version describing more does not block resuming an older cache."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same(old[k], new[k]) for k in old.keys() & new.keys())
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def corpus_change(old: Any, new: Any) -> str:
    """One line naming how the corpus a cache was harvested from differs from the current one
    (processing version and file checksum of the embedded corpus, else the description)."""
    old, new = old or {}, new or {}
    if isinstance(old, dict) and isinstance(new, dict) and "processing_version" in old \
            and "processing_version" in new:
        sha = lambda d: ",".join(f"{k} {v[:12]}" for k, v in sorted((d.get("sha256") or {}).items()))  # noqa: E731
        return (f"it was harvested from the embedded corpus version {old['processing_version']} "
                f"({sha(old)}), the corpus now is version {new['processing_version']} "
                f"({sha(new)}): its document order and contexts differ, so it cannot be "
                "continued; harvest into another folder (the finished rows stay valid)")
    return (f"corpus differs (cache: {json.dumps(old)[:80]}, now: {json.dumps(new)[:80]}); "
            "write to another folder or start the cache over")


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

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], *, resume: bool = True,
                 manifest: str = MANIFEST, prefix: str = "shard_"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest_name, self.prefix = manifest, prefix
        own = manifest == MANIFEST   # the folder's one writer: every temp file is its own
        temps = self.path.glob(".*.tmp") if own else \
            [*self.path.glob(f".{prefix}*.tmp"), *self.path.glob(f".{manifest}.*.tmp")]
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        mp = self.path / manifest
        if mp.exists() and not resume:
            old = read_manifest(self.path, manifest)
            for s in old["shards"]:
                (self.path / s["file"]).unlink(missing_ok=True)
            for p in self.path.glob(f"{prefix}*.safetensors"):
                p.unlink()
            mp.unlink()
        if mp.exists():
            m = read_manifest(self.path, manifest)
            diffs = [k for k, v in header.items()
                     if k not in self.MUTABLE and not _same(m.get(k), v)]
            if diffs:
                k = diffs[0]
                if k == "corpus":
                    raise CacheError(f"{self.path}: cannot resume, {corpus_change(m.get(k), header[k])}")
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
        atomic_write_json(self.path / self.manifest_name, self.manifest)

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
            self._update_mix()
            self._save()

    # -- writing
    def write_shard(self, activations, token_ids, contexts: int, *, context_ids=None,
                    positions=None, mix: dict[str, int] | None = None) -> dict[str, Any]:
        """Write the next shard (atomically), then record it in the manifest.

        ``activations`` [rows, d_in] (converted to the manifest dtype), ``token_ids`` [rows];
        ``contexts``: how many packed contexts these rows came from (advances the resume
        position). ``context_ids`` [rows] (int64) and ``positions`` [rows] (int32), given
        together, make a version-2 shard; a cache whose first shard has none is version 1 and
        every shard of a cache must agree. ``mix`` (label -> rows of this shard) is added to
        the manifest's ``token_mix``. Returns the shard's manifest entry.
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
        tensors = {"activations": acts, "token_ids": toks}
        if (context_ids is None) != (positions is None):
            raise ValueError("context_ids and positions go together")
        v2 = context_ids is not None
        if v2:
            tensors["context_ids"] = torch.as_tensor(context_ids).to("cpu", torch.int64) \
                .contiguous()
            tensors["positions"] = torch.as_tensor(positions).to("cpu", torch.int32).contiguous()
            for k in ("context_ids", "positions"):
                if tensors[k].shape != toks.shape:
                    raise ValueError(f"{k} has shape {tuple(tensors[k].shape)}, expected "
                                     f"({toks.shape[0]},)")
        i = len(self.manifest["shards"])
        if i == 0:
            self.manifest["version"] = VERSION if v2 else 1
        elif v2 != (int(self.manifest["version"]) >= 2):
            raise ValueError("every shard of a cache must have context_ids/positions, or none")
        name = shard_name(i, self.prefix)
        # one metadata key: safetensors writes a multi-key metadata map in random order, and
        # the bytes (hence the sha256) must be reproducible for resumed harvests
        meta = json.dumps({"format": FORMAT, "layer": self.manifest["layer"],
                           "site": self.manifest["site"], "index": i}, sort_keys=True)
        data = save(tensors, metadata={"abstopk": meta})
        entry: dict[str, Any] = {"file": name, "rows": int(acts.shape[0]),
                                 "contexts": int(contexts),
                                 "sha256": hashlib.sha256(data).hexdigest()}
        if mix is not None:
            entry["mix"] = {str(k): int(v) for k, v in mix.items()}
        atomic_write_bytes(self.path / name, data)
        self.manifest["shards"].append(entry)
        self.manifest["total_rows"] = self.total_rows + entry["rows"]
        self.manifest["contexts_consumed"] = self.contexts_consumed + int(contexts)
        self._update_mix()
        self._save()
        return entry

    def _update_mix(self) -> None:
        """``token_mix`` = Σ over shards of their ``mix`` (absent when no shard has one)."""
        total: dict[str, int] = {}
        for s in self.manifest["shards"]:
            for k, v in (s.get("mix") or {}).items():
                total[k] = total.get(k, 0) + int(v)
        if total:
            self.manifest["token_mix"] = dict(sorted(total.items()))
        else:
            self.manifest.pop("token_mix", None)
