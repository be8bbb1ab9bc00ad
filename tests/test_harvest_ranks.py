"""The pieces of a sharded harvest without a model: rank manifests and shard names, the merge
into one manifest, the folder checks, the batch split."""

from __future__ import annotations

import pytest
import torch

from abstopk.data.cache import ActivationCache, CacheWriter
from abstopk.data.harvest_ranks import (
    Ranks,
    check_folders,
    merge_rank_manifests,
    rank_files,
    rank_manifest,
    rank_prefix,
)
from abstopk.errors import CacheError, OutputExistsError

HEADER = {"model": "m", "model_revision": "0", "layer": 1, "site": "resid_post", "d_in": 3,
          "dtype": "float32", "context_size": 4, "keep_bos": False, "corpus": {"name": "x"},
          "requested_tokens": 10, "batch_size": 2, "world_size": 2}


def _rank_writer(path, r, header=HEADER):
    return CacheWriter(path, header, manifest=rank_manifest(r), prefix=rank_prefix(r))


def _shard(w, rows, first_context, mix):
    n = len(rows)
    w.write_shard(torch.tensor(rows, dtype=torch.float32).repeat(3, 1).t(),
                  torch.arange(n), 2, context_ids=torch.full((n,), first_context),
                  positions=torch.arange(n, dtype=torch.int32), mix=mix)


def test_merge_sums_ranks_into_one_manifest(tmp_path):
    w0, w1 = _rank_writer(tmp_path, 0), _rank_writer(tmp_path, 1)
    _shard(w0, [0.0, 1.0, 2.0], 0, {"a": 3})
    _shard(w1, [3.0, 4.0], 2, {"a": 1, "b": 1})
    _shard(w0, [5.0, 6.0, 7.0, 8.0, 9.0], 4, {"b": 5})
    assert [p.name for p in rank_files(tmp_path)] == ["manifest.rank0.json",
                                                      "manifest.rank1.json"]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "shard_r0_000000.safetensors", "shard_r0_000001.safetensors",
        "shard_r1_000000.safetensors"]
    w0.set(complete=True)
    with pytest.raises(CacheError, match="rank 1 of 2 has not finished"):
        merge_rank_manifests(tmp_path, 2)
    w1.set(complete=True)
    m = merge_rank_manifests(tmp_path, 2)
    assert m["total_rows"] == 10 and m["contexts_consumed"] == 6 and m["complete"]
    assert m["token_mix"] == {"a": 4, "b": 6}
    assert not rank_files(tmp_path)
    c = ActivationCache(tmp_path)
    assert c.verify() == []
    acts = torch.cat([c.open_shard(i)["activations"].rows(0, s["rows"])
                      for i, s in enumerate(c.shards)])
    assert sorted(acts[:, 0].tolist()) == [float(i) for i in range(10)]


def test_resuming_with_another_world_size_is_refused(tmp_path):
    _rank_writer(tmp_path, 0)
    with pytest.raises(CacheError, match="world_size differs"):
        _rank_writer(tmp_path, 0, {**HEADER, "world_size": 3})


def test_folder_checks(tmp_path, monkeypatch):
    _rank_writer(tmp_path, 1)
    with pytest.raises(CacheError, match="partial sharded harvest"):
        check_folders([tmp_path], 10, True, Ranks())
    monkeypatch.setattr(Ranks, "barrier", lambda self: None)   # no process group here
    rank1 = Ranks(rank=1, world=2)
    assert check_folders([tmp_path], 10, True, rank1) is None   # partial: go on
    single = tmp_path / "single"
    CacheWriter(single, {k: v for k, v in HEADER.items() if k != "world_size"})
    with pytest.raises(CacheError, match="partial single-process harvest"):
        check_folders([single], 10, True, rank1)
    w = CacheWriter(single, {k: v for k, v in HEADER.items() if k != "world_size"})
    _shard(w, [1.0] * 10, 0, {"a": 10})
    w.set(complete=True)
    assert check_folders([single], 10, True, rank1) == 10          # complete: nothing to do
    with pytest.raises(OutputExistsError):
        check_folders([single], 12, True, rank1)
    # starting over (rank 0) clears manifests and shards, the ranks' too
    check_folders([tmp_path, single], 10, False, Ranks(rank=0, world=2))
    assert not list(tmp_path.glob("manifest*.json")) and not list(single.iterdir())


def test_batches_split_round_robin():
    owners = [[b for b in range(10) if Ranks(rank=r, world=3).owns(b)] for r in range(3)]
    assert owners == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert all(Ranks().owns(b) for b in range(5))


def test_nproc_refuses_a_complete_cache_of_another_size_before_launching(tmp_path, capsys):
    from cli_runner import run_cli

    w = CacheWriter(tmp_path, {k: v for k, v in HEADER.items() if k != "world_size"})
    _shard(w, [1.0] * 10, 0, {"a": 10})
    w.set(complete=True)
    code, _, err = run_cli(["harvest", "--tokens", "12", "--nproc", "2", "--out", tmp_path],
                           capsys)
    assert code == 2 and "complete cache of 10 rows, not the 12 requested" in err
    assert "torchrun" not in err   # refused before any process was started
