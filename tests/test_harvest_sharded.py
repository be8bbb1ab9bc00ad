"""Sharded harvesting under torchrun (gloo, 2 processes) on the real embedded model: the
sharded cache equals the single-process cache as a multiset of rows, also after one rank was
killed and the job rerun. What "equal" means: abstopk.data.harvest_ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from abstopk.data.cache import ActivationCache
from abstopk.data.harvest import HarvestConfig, harvest
from abstopk.errors import CacheError

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
ENV.pop("WORLD_SIZE", None)
SETTINGS = dict(layers=[1], tokens=1500, context_size=32, batch_size=4, shard_rows=150)


def _args(out: Path) -> list[str]:
    return ["harvest", "--model", "smollm2-135m", "--layer", "1", "--tokens", "1500",
            "--context-size", "32", "--batch-size", "4", "--shard-rows", "150",
            "--out", str(out), "--no-progress"]


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abstopk.cli", *args], env=env or ENV,
                          capture_output=True, text=True, timeout=300)


def _torchrun(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", "-m", "abstopk.cli", *args], env=env or ENV,
                          capture_output=True, text=True, timeout=300)


def _rows(path: Path) -> dict[str, torch.Tensor]:
    """Every row of the cache, sorted by (context id, position): a canonical order, so two
    caches hold the same multiset of rows iff these tensors are equal."""
    c = ActivationCache(path)
    keys = ("activations", "token_ids", "context_ids", "positions")
    parts = {k: [] for k in keys}
    for i, s in enumerate(c.shards):
        sh = c.open_shard(i)
        for k in keys:
            parts[k].append(sh[k].rows(0, int(s["rows"])))
    rows = {k: torch.cat(v) for k, v in parts.items()}
    key = rows["context_ids"] * 1_000_000 + rows["positions"].long()
    assert key.unique().numel() == key.numel()   # (context, position) pairs are unique
    order = torch.argsort(key)
    return {k: v[order] for k, v in rows.items()}


@pytest.fixture(scope="module")
def single(lm, tmp_path_factory):
    model, tok, info = lm
    out = tmp_path_factory.mktemp("single") / "cache"
    harvest(HarvestConfig(out=str(out), progress=False, **SETTINGS), model=model,
            tokenizer=tok, info=info, log=lambda s: None)
    return out


def _same_rows(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert ra["activations"].shape[0] == 1500
    for k in ra:
        assert torch.equal(ra[k], rb[k]), k
    ma, mb = ActivationCache(a).manifest, ActivationCache(b).manifest
    for k in ("total_rows", "contexts_consumed", "token_mix", "complete", "requested_tokens"):
        assert ma[k] == mb[k], k


def test_two_ranks_equal_one_process(single, tmp_path):
    out = tmp_path / "sharded"
    r = _cli(*_args(out), "--nproc", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[rank 1/2]" in r.stderr
    _same_rows(out, single)
    m = ActivationCache(out).manifest
    assert m["world_size"] == 2 and not list(out.glob("manifest.rank*.json"))
    files = [s["file"] for s in m["shards"]]
    assert any(f.startswith("shard_r0_") for f in files)
    assert any(f.startswith("shard_r1_") for f in files)
    # rank r holds exactly the contexts of its batches: batch b = contexts 4b..4b+3, b mod 2 = r
    c = ActivationCache(out)
    for i, s in enumerate(c.shards):
        rank = int(s["file"][len("shard_r")])
        cids = c.open_shard(i)["context_ids"].rows(0, int(s["rows"]))
        assert torch.all((cids // 4) % 2 == rank)
    assert c.verify() == []   # sizes, dtypes and sha256 of every shard as the manifest says


def test_killed_rank_resumes_to_the_same_rows(lm, single, tmp_path):
    out = tmp_path / "killed"
    env = {**ENV, "ABSTOPK_HARVEST_KILL": "1:1"}   # rank 1 dies after its first shard
    r = _torchrun(*_args(out), env=env)
    assert r.returncode != 0
    part = json.loads((out / "manifest.rank1.json").read_text())
    assert not part["complete"] and len(part["shards"]) == 1
    assert not (out / "manifest.json").exists()
    # a single process refuses the partial sharded harvest
    model, tok, info = lm
    with pytest.raises(CacheError, match="partial sharded harvest"):
        harvest(HarvestConfig(out=str(out), progress=False, **SETTINGS), model=model,
                tokenizer=tok, info=info, log=lambda s: None)
    r = _torchrun(*_args(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[rank 1/2] resuming" in r.stderr
    _same_rows(out, single)
