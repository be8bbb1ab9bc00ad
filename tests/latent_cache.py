"""Test helper: small activation caches with per-row ``context_ids`` and ``positions``
(the version-2 cache tensors), written with ``CacheWriter`` and completed by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from abstopk.data.cache import CacheWriter


def header(d_in: int, model: str = "toy", layer: int = 3) -> dict:
    return {"model": model, "model_revision": "x", "layer": layer, "site": "resid_post",
            "hook_name": f"blocks.{layer}.hook_resid_post", "d_in": d_in, "dtype": "float32",
            "context_size": 16, "keep_bos": False, "corpus": {"name": "toy", "split": "train"},
            "requested_tokens": 0, "batch_size": 1}


def write_cache(path: Path, acts: torch.Tensor, token_ids: torch.Tensor, context_len: int,
                shard_rows: int, *, positions: bool = True, model: str = "toy") -> Path:
    """Rows come from consecutive contexts of ``context_len`` rows (positions 1 … len: BOS is
    not a row); shards of ``shard_rows`` rows. ``positions=False`` writes a version-1 cache."""
    n = acts.shape[0]
    ctx = torch.arange(n) // context_len
    pos = (torch.arange(n) % context_len + 1).to(torch.int32)
    w = CacheWriter(path, {**header(acts.shape[1], model), "requested_tokens": n})
    for a in range(0, n, shard_rows):
        b = min(n, a + shard_rows)
        w.write_shard(acts[a:b], token_ids[a:b], contexts=int(ctx[b - 1] - ctx[a]) + 1)
    w.set(complete=True)
    if positions:
        m = json.loads((path / "manifest.json").read_text())
        start = 0
        for s in m["shards"]:
            p = path / s["file"]
            t = load_file(str(p))
            rows = int(s["rows"])
            t["context_ids"] = ctx[start:start + rows].clone()
            t["positions"] = pos[start:start + rows].clone()
            data = save(t)
            p.write_bytes(data)
            s["sha256"] = hashlib.sha256(data).hexdigest()
            start += rows
        (path / "manifest.json").write_text(json.dumps(m))
    return path
