"""Sharded harvesting under torchrun: which rank harvests what, and the one manifest at the end.

``torchrun --nproc-per-node N -m abstopk.cli harvest …`` starts N processes (ranks) with
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set; :func:`current` joins them in a
``torch.distributed`` process group (gloo: only barriers travel through it).

The split (what "the same rows as a single-process harvest" means):

* every rank reads the *whole* seeded packed-context stream of the single-process harvest
  (:class:`abstopk.data.tokens.ContextStream`: tokenising is cheap next to the model forward)
  and cuts it into the same batches of ``batch_size`` contexts;
* batch ``b`` (0-based, in stream order) is forwarded by rank ``b mod N`` only; the others
  just count its rows (the BOS/pad mask depends on the token ids alone), so every rank knows
  the global row count before each batch;
* the row budget is global: the batch that reaches ``tokens`` rows is cut after that row,
  exactly as in a single process, and every rank stops there.

So the sharded cache holds exactly the rows of the single-process cache with the same
settings: the same (context id, position) pairs, token ids and corpus mix, and, each batch
being the same batch of contexts, the same activations bit for bit (same device, dtype and
thread count). Only their order across shard files differs: rank r writes
``shard_r{r}_NNNNNN.safetensors`` (shards of whole batches of its own) and its own progress
manifest ``manifest.rank{r}.json`` (:class:`~abstopk.data.cache_writer.CacheWriter`). Documents
are therefore not split by rank: a context packs the end of one document with the start of
the next, and splitting documents would change the contexts (and the rows).

Resume is per rank: a killed rank restarts from its own manifest (its shards are skipped
batch by batch, their rows still counted); the other ranks find theirs done or continue. A
partial sharded harvest resumes only with the same number of processes (the split depends
on it; the rank manifests record ``world_size``).

When every rank has finished, they meet at a barrier; rank 0 writes the one ``manifest.json``
(all shards, rank 0's first; ``total_rows``, ``contexts_consumed`` and ``token_mix`` summed;
``complete``) and removes the rank manifests. The process-group timeout
(``ABSTOPK_DIST_TIMEOUT_S``, default 3600 s) turns a rank that never arrives into an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import CacheError, OutputExistsError
from .cache_format import MANIFEST, read_manifest

__all__ = ["Ranks", "check_folders", "current", "merge_rank_manifests", "rank_files",
           "rank_manifest", "rank_prefix"]

_TIMEOUT_ENV = "ABSTOPK_DIST_TIMEOUT_S"
#: test aid: "R:N" makes rank R kill itself (SIGKILL) after writing its N-th shard
_KILL_ENV = "ABSTOPK_HARVEST_KILL"
_RANK_FILE = re.compile(r"^manifest\.rank(\d+)\.json$")


def rank_manifest(rank: int) -> str:
    """File name of rank ``rank``'s progress manifest: ``manifest.rank{rank}.json``."""
    return f"manifest.rank{int(rank)}.json"


def rank_prefix(rank: int) -> str:
    """Shard-file prefix of rank ``rank``: ``shard_r{rank}_``."""
    return f"shard_r{int(rank)}_"


def rank_files(path: Path) -> list[Path]:
    """The rank manifests in the cache folder ``path`` (sorted by rank)."""
    found = [(int(m.group(1)), p) for p in path.glob("manifest.rank*.json")
             if (m := _RANK_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


@dataclass
class Ranks:
    """This process's place in a sharded harvest: ``rank`` of ``world`` (1: not sharded)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False   # this module started the process group (and ends it)

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def owns(self, batch: int) -> bool:
        """Whether batch ``batch`` (0-based, in stream order) is this rank's to forward."""
        return batch % self.world == self.rank

    def barrier(self) -> None:
        if self.sharded:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.sharded and self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def current() -> Ranks:
    """The ranks of this process from torchrun's environment; joins the gloo process group
    when ``WORLD_SIZE`` > 1 (once). ``Ranks()`` (rank 0 of 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        timeout = float(os.environ.get(_TIMEOUT_ENV, "3600") or 3600)
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0") or 0), owns_group=owns)


def clear_folder(path: Path) -> None:
    """Delete a cache's manifests (the one and the ranks') and shard files in ``path``."""
    for p in (path / MANIFEST, *rank_files(path)):
        p.unlink(missing_ok=True)
    for p in path.glob("shard_*.safetensors"):
        p.unlink()


def merge_rank_manifests(path: Path, world: int) -> dict[str, Any]:
    """Rank 0's last act: the ``world`` complete rank manifests of ``path`` become the one
    ``manifest.json`` (written atomically, then the rank manifests are removed). Returns it."""
    from ..files import atomic_write_json

    parts = [read_manifest(path, rank_manifest(r)) for r in range(world)]
    for r, m in enumerate(parts):
        if int(m.get("world_size", 1)) != world or not m["complete"]:
            raise CacheError(f"{path / rank_manifest(r)}: rank {r} of {world} has not finished "
                             f"(world size {m.get('world_size')}, complete {m['complete']})")
    merged = dict(parts[0])
    shards = [s for m in parts for s in m["shards"]]
    mix: dict[str, int] = {}
    for s in shards:
        for k, v in (s.get("mix") or {}).items():
            mix[k] = mix.get(k, 0) + int(v)
    versions = {int(m["version"]) for m in parts if m["shards"]}
    if len(versions) > 1:
        raise CacheError(f"{path}: the ranks wrote shards of different format versions "
                         f"{sorted(versions)}")
    merged.update(
        shards=shards, total_rows=sum(int(s["rows"]) for s in shards),
        contexts_consumed=sum(int(m["contexts_consumed"]) for m in parts),
        complete=True, corpus_exhausted=any(bool(m.get("corpus_exhausted")) for m in parts),
        version=versions.pop() if versions else int(merged["version"]))
    if mix:
        merged["token_mix"] = dict(sorted(mix.items()))
    atomic_write_json(path / MANIFEST, merged)
    for r in range(world):
        (path / rank_manifest(r)).unlink(missing_ok=True)
    return merged


def prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    """``log`` with every line prefixed (``[rank r/N] ``)."""
    return lambda s: log(prefix + s)


def kill_hook(rank: int) -> int:
    """Test aid: shards after which this rank kills itself (0: never); see ``_KILL_ENV``."""
    spec = os.environ.get(_KILL_ENV, "")
    if not spec:
        return 0
    r, _, n = spec.partition(":")
    return int(n or 1) if int(r) == rank else 0


def check_folders(paths: list[Path], tokens: int, resume: bool, ranks: Ranks) -> int | None:
    """Before any writer opens the cache folders ``paths``: start over (``resume`` False:
    rank 0 deletes, then a barrier) or refuse to mix a sharded and a single-process partial
    harvest in one folder. For a sharded harvest whose cache is already complete, its rows
    (every rank returns them; ``OutputExistsError`` if ``tokens`` asks for another count);
    else None."""
    if ranks.rank == 0 and not resume:
        for p in paths:
            if p.is_dir():
                clear_folder(p)
    ranks.barrier()
    complete = []
    for p in paths:
        parts = rank_files(p) if p.is_dir() else []
        if not ranks.sharded and parts:
            raise CacheError(f"{p}: holds a partial sharded harvest ({len(parts)} rank "
                             f"manifests); resume it under torchrun with as many processes, "
                             f"or start it over")
        if ranks.sharded and (p / MANIFEST).exists():
            m = read_manifest(p)
            if not m["complete"]:
                raise CacheError(f"{p}: holds a partial single-process harvest; resume it "
                                 f"without torchrun, or start it over")
            complete.append(int(m["total_rows"]))
            if tokens not in (complete[-1], int(m.get("requested_tokens", -1))):
                raise OutputExistsError(f"{p} is a complete cache of {complete[-1]} rows, "
                                        f"not the {tokens} requested")
    if ranks.sharded and len(complete) == len(paths):
        return complete[0]
    return None
