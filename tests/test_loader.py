"""Streaming shuffled cache loader: exact coverage per epoch, determinism, resume, flat RAM."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from abstopk.data.cache import ActivationCache
from abstopk.data.loader import CacheLoader
from abstopk.files import atomic_save_safetensors, atomic_write_json


def write_cache(path: Path, shard_rows: list[int], d_in: int, dtype: str = "float32",
                nan_rows: tuple[int, ...] = (), fill=None) -> Path:
    """A cache folder exactly as CACHE_FORMAT.md describes. Column 0 of row r (global index
    over shards in order) holds r; the other columns hold sin(r + j) (or ``fill(r0, n)``)."""
    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    path.mkdir(parents=True, exist_ok=True)
    shards, r0 = [], 0
    for i, n in enumerate(shard_rows):
        ids = torch.arange(r0, r0 + n, dtype=torch.int64)
        if fill is None:
            acts = torch.sin(ids[:, None].double() + torch.arange(d_in)[None, :]).float()
            acts[:, 0] = ids.float()
        else:
            acts = fill(r0, n)
        for r in nan_rows:
            if r0 <= r < r0 + n:
                acts[r - r0, 1] = float("nan")
        name = f"shard_{i:06d}.safetensors"
        atomic_save_safetensors(path / name, {"activations": acts.to(tdt), "token_ids": ids})
        sha = hashlib.sha256((path / name).read_bytes()).hexdigest()
        shards.append({"file": name, "rows": n, "sha256": sha})
        r0 += n
    atomic_write_json(path / "manifest.json", {
        "format": "abstopk-activation-cache", "version": 1, "model": "test-model",
        "model_revision": "0", "layer": 3, "site": "resid_post",
        "hook_name": "blocks.3.hook_resid_post", "d_in": d_in, "dtype": dtype,
        "context_size": 16, "keep_bos": False, "batch_size": 4,
        "corpus": {"name": "synthetic"}, "requested_tokens": r0, "total_rows": r0,
        "contexts_consumed": r0 // 16, "complete": True, "shards": shards,
        "abstopk_version": "0.1.0"})
    return path


SHARDS = [700, 333, 1024, 5, 900, 610]  # uneven sizes, N = 3572
N = sum(SHARDS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"), SHARDS, d_in=8)


def ids_of(batches) -> np.ndarray:
    return torch.cat([b[:, 0] for b in batches]).numpy().astype(np.int64)


def take(loader, n_batches):
    return list(itertools.islice(iter(loader), n_batches))


def shard_of(ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(SHARDS), ids, side="right")


@pytest.mark.parametrize("prefetch", [0, 3])
def test_every_row_exactly_once_per_epoch(cache, prefetch):
    B = 96  # N / B is not an integer: batches straddle epoch boundaries
    loader = CacheLoader(cache, B, seed=1, buffer_mb=8 * 4 * 64 * 4 / 2**20, chunk_rows=64,
                         prefetch=prefetch)
    assert loader.group_chunks == 4 and loader.d_in == 8 and loader.total_rows == N
    n_batches = -(-3 * N // B)
    batches = take(loader, n_batches)
    assert all(b.shape == (B, 8) and b.dtype == torch.float32 for b in batches)
    ids = ids_of(batches)
    for e in range(3):
        epoch_ids = ids[e * N:(e + 1) * N]
        assert np.array_equal(np.sort(epoch_ids), np.arange(N)), f"epoch {e}"
    assert not np.array_equal(ids[:N], np.arange(N))            # shuffled
    assert not np.array_equal(ids[:N], ids[N:2 * N])            # a new order every epoch
    # rows of one batch come from several shards (shuffling across shards)
    assert np.mean([len(set(shard_of(ids_of([b])))) for b in batches[:20]]) >= 2.5
    assert loader.position == n_batches * B and loader.epoch == n_batches * B // N
    # the other columns are the stored values of those rows, exactly
    r = torch.from_numpy(ids[:B]).double()
    expect = torch.sin(r[:, None] + torch.arange(8)[None, :]).float()
    assert torch.equal(batches[0][:, 1:], expect[:, 1:])


def test_unshuffled_order_is_cache_order(cache):
    loader = CacheLoader(cache, 100, shuffle=False, prefetch=0)
    ids = ids_of(take(loader, 40))
    assert np.array_equal(ids[:N], np.arange(N)) and np.array_equal(ids[N:], np.arange(4000 - N))


def test_deterministic_given_seed(cache):
    kw = dict(buffer_mb=0.01, chunk_rows=32)
    a = ids_of(take(CacheLoader(cache, 64, seed=7, **kw), 30))
    b = ids_of(take(CacheLoader(cache, 64, seed=7, prefetch=0, **kw), 30))
    c = ids_of(take(CacheLoader(cache, 64, seed=8, **kw), 30))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("stop", [1, 17, 56, 57, 90])  # mid-group, mid-epoch, epoch edge
def test_resume_from_state_gives_identical_continuation(cache, stop):
    kw = dict(buffer_mb=0.01, chunk_rows=50)
    ref = CacheLoader(cache, 64, seed=3, **kw)
    full = take(ref, stop + 40)
    first = CacheLoader(cache, 64, seed=3, **kw)
    it = iter(first)
    for _ in range(stop):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert state["position"] == stop * 64
    # a loader built with other order settings adopts the checkpoint's
    resumed = CacheLoader(cache, 64, seed=99, buffer_mb=1.0, chunk_rows=7)
    resumed.load_state_dict(state)
    rest = take(resumed, 40)
    for x, y in zip(full[stop:], rest, strict=True):
        assert torch.equal(x, y)


def test_state_of_another_cache_is_refused(cache, tmp_path):
    other = write_cache(tmp_path / "other", [100, 200], d_in=8)
    state = CacheLoader(cache, 16).state_dict()
    with pytest.raises(ValueError, match="belongs to cache"):
        CacheLoader(other, 16).load_state_dict(state)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_caches_are_served_as_exact_fp32(tmp_path, dtype):
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    vals = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)).to(tdt)

    def fill(r0, n):
        return vals[r0:r0 + n].float()

    path = write_cache(tmp_path / dtype, [200, 300], d_in=16, dtype=dtype, fill=fill)
    loader = CacheLoader(path, 50, shuffle=False, prefetch=0)
    got = torch.cat(take(loader, 10))
    assert got.dtype == torch.float32 and torch.equal(got, vals.float())


def test_nonfinite_rows(tmp_path):
    from abstopk.errors import NonFiniteError

    path = write_cache(tmp_path / "nan", [300, 300], d_in=4, nan_rows=(5, 333, 599))
    with pytest.raises(NonFiniteError):
        take(CacheLoader(path, 64, prefetch=2), 20)
    loader = CacheLoader(path, 64, skip_nonfinite=True, chunk_rows=16, buffer_mb=0.001)
    batches = take(loader, 2 * 597 // 64)
    assert all(b.shape == (64, 4) and torch.isfinite(b).all() for b in batches)
    ids = ids_of(batches)[:597]
    assert np.array_equal(np.sort(ids), np.setdiff1d(np.arange(600), [5, 333, 599]))


def test_trainer_open_source_serves_a_cache(cache):
    from abstopk.data.open import open_source
    from abstopk.data.sources import BatchSource

    src = open_source(cache, batch_size=32, seed=0)
    assert isinstance(src, CacheLoader) and isinstance(src, BatchSource)
    assert next(iter(src)).shape == (32, 8)
    assert ActivationCache(cache).total_rows == N


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_memory_stays_flat_over_a_cache_much_larger_than_the_buffer(tmp_path):
    d_in, rows_per_shard, n_shards = 512, 10240, 15  # 15 x 20 MiB = 300 MiB of fp32

    def fill(r0, n):
        x = torch.empty(n, d_in).uniform_(-1, 1)
        x[:, 0] = torch.arange(r0, r0 + n, dtype=torch.float32)
        return x

    path = write_cache(tmp_path / "big", [rows_per_shard] * n_shards, d_in, fill=fill)
    cache_mb = sum(p.stat().st_size for p in path.glob("*.safetensors")) / 2**20
    assert cache_mb > 299
    loader = CacheLoader(path, 1024, seed=0, buffer_mb=16, chunk_rows=256, prefetch=2)
    n_total = rows_per_shard * n_shards
    seen = np.zeros(n_total, dtype=np.int64)
    base = _rss_mb()  # before the loader allocates anything
    it = iter(loader)
    next(it)
    samples = []
    for i, x in enumerate(it, start=1):
        seen[x[:, 0].numpy().astype(np.int64)] += 1
        if i % 10 == 0:
            samples.append(_rss_mb() - base)
        if loader.position >= n_total:
            break
    it.close()
    print(f"cache {cache_mb:.0f} MiB, buffer 16 MiB: RSS growth (MiB) every 10 batches "
          f"{[round(s) for s in samples]}")
    # one 16 MiB shuffle buffer + a few 2 MiB batches (prefetch queue), far below 300 MiB
    assert max(samples) < 48, f"RSS grew by {max(samples):.0f} MiB over a {cache_mb:.0f} MiB cache"
    # flat: the second half of the stream adds (almost) nothing over the first quarter
    q = len(samples) // 4
    assert max(samples[2 * q:]) - max(samples[:q]) < 8
    assert loader.position == n_total
    assert seen.max() == 1 and seen.sum() == n_total - 1024  # each row once (first batch aside)


@pytest.mark.parametrize("max_rows", [700, 1500, N - 1])  # a shard edge, mid-shard, all but one
def test_max_rows_serves_exactly_the_first_rows(cache, tmp_path, max_rows):
    """The head of a cache (what a growing harvest has written first): every one of the
    first max_rows rows once per epoch, never a later one; resumable; and the same rows with
    the same identity after more shards were appended."""
    B = 64
    loader = CacheLoader(cache, B, seed=2, buffer_mb=0.01, chunk_rows=50, max_rows=max_rows)
    assert loader.total_rows == max_rows
    ids = ids_of(take(loader, -(-2 * max_rows // B)))
    for e in range(2):
        assert np.array_equal(np.sort(ids[e * max_rows:(e + 1) * max_rows]),
                              np.arange(max_rows))
    assert ids.max() == max_rows - 1 and not np.array_equal(ids[:max_rows],
                                                            np.arange(max_rows))
    # a cache holding the same first shards and more rows after them: same head, same identity
    bigger = write_cache(tmp_path / "bigger", SHARDS + [400, 400], d_in=8)
    other = CacheLoader(bigger, B, seed=2, buffer_mb=0.01, chunk_rows=50, max_rows=max_rows)
    assert other.identity == loader.identity and f"[:{max_rows}]" in loader.identity
    assert np.array_equal(ids_of(take(other, 20)), ids[:20 * B])
    fresh = CacheLoader(bigger, B, seed=2, buffer_mb=0.01, chunk_rows=50, max_rows=max_rows)
    it = iter(fresh)
    for _ in range(11):
        next(it)
    again = CacheLoader(bigger, B, max_rows=max_rows)
    again.load_state_dict(json.loads(json.dumps(fresh.state_dict())))
    assert np.array_equal(ids_of(take(again, 5)), ids[11 * B:16 * B])
    with pytest.raises(ValueError, match="belongs to cache"):
        CacheLoader(bigger, B).load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match=f"holds {N}"):
        CacheLoader(cache, B, max_rows=N + 1)
