"""The device loader serves exactly the host loader's batches (same rows, same order, same
positions) with whole groups read by several threads; a checkpoint of one resumes the other."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_loader import SHARDS, N, write_cache

from abstopk.data.device_loader import DeviceCacheLoader
from abstopk.data.loader import CacheLoader
from abstopk.errors import NonFiniteError

KW = dict(buffer_mb=8 * 4 * 64 * 4 / 2**20, chunk_rows=64)   # 4 chunks of 64 rows per group


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"), SHARDS, d_in=8, dtype="float16")


def _take(loader, n):
    it = iter(loader)
    try:
        return [b.clone() for b in itertools.islice(it, n)]
    finally:
        it.close()


@pytest.mark.parametrize("readers,shuffle", [(1, True), (3, True), (2, False)])
def test_same_batches_as_the_host_loader(cache, readers, shuffle):
    B = 96   # N / B is not an integer: batches straddle groups and epochs
    n = -(-3 * N // B)
    host = _take(CacheLoader(cache, B, seed=5, shuffle=shuffle, prefetch=2, **KW), n)
    dev_loader = DeviceCacheLoader(cache, B, seed=5, shuffle=shuffle, readers=readers, **KW)
    dev = _take(dev_loader, n)
    assert all(torch.equal(a, b) for a, b in zip(host, dev, strict=True))
    assert dev[0].dtype == torch.float32 and dev[0].shape == (B, 8)
    assert dev_loader.position == n * B
    ids = torch.cat([b[:, 0] for b in dev]).long()
    # every row once per epoch (column 0 holds the row id; exact in float16 below 2048 only,
    # so compare the multiset of the first epoch against the host's)
    first = torch.cat([b[:, 0] for b in host]).long()[:N]
    assert torch.equal(ids[:N].sort().values, first.sort().values)


def test_resume_across_loaders(cache):
    B = 50
    a = DeviceCacheLoader(cache, B, seed=2, readers=2, **KW)
    _take(a, 37)
    state = a.state_dict()
    rest_host = CacheLoader(cache, B, seed=0, prefetch=0, **KW)
    rest_host.load_state_dict(state)
    rest_dev = DeviceCacheLoader(cache, B, seed=0, readers=1, **KW)
    rest_dev.load_state_dict(state)
    straight = _take(CacheLoader(cache, B, seed=2, prefetch=0, **KW), 37 + 40)[37:]
    for got in (_take(rest_host, 40), _take(rest_dev, 40)):
        assert all(torch.equal(x, y) for x, y in zip(got, straight, strict=True))


def test_nonfinite_rows_raise(tmp_path):
    bad = write_cache(tmp_path / "bad", [300, 200], d_in=4, nan_rows=(250,))
    with pytest.raises(NonFiniteError):
        _take(DeviceCacheLoader(bad, 64, buffer_mb=1.0), 20)
    with pytest.raises(ValueError, match="non-finite"):
        DeviceCacheLoader(bad, 64, skip_nonfinite=True)


def test_host_loader_reader_threads_keep_the_order(cache):
    one = _take(CacheLoader(cache, 70, seed=3, prefetch=0, **KW), 60)
    three = _take(CacheLoader(cache, 70, seed=3, prefetch=2, readers=3, **KW), 60)
    assert all(torch.equal(a, b) for a, b in zip(one, three, strict=True))


def test_open_source_picks_the_loader(cache):
    from abstopk.data.open import open_source

    assert type(open_source(str(cache), 32)) is CacheLoader
    assert type(open_source(str(cache), 32, device="cpu")) is CacheLoader
    got = open_source(str(cache), 32, device="cuda:0")   # constructing touches no GPU
    assert type(got) is DeviceCacheLoader and got.device == torch.device("cuda:0")
    assert type(open_source(str(cache), 32, device="cuda", skip_nonfinite=True)) is CacheLoader
